"""Which HCT wins? Selection fitness and variants of "historical consensus" over the (s2, beta) grid, with baselines.

Issue 12, items 1, 2 and 6. For every data set and every named variant (a set
of :class:`hcjax.hct.HCTConfig` overrides, see :data:`VARIANTS`) this runs ONE
:func:`hcjax.hct.run_hct` call holding a whole (s2, beta) grid (the barrier
study's sizes, ``--replicates`` independent groups per setting), with the
fixed-prior single-objective phase. The baselines ``fixed_gmm`` (one clustering
constraint, no population, no selection), ``free_bits`` and ``vanilla`` train
in lockstep in the first variant's run only: their randomness comes from the
group seeds, not from the HCT options, so they would be the same bits in every
run.

Equal compute: every method trains P members per setting for the same number
of steps (rounds x T + final steps); a variant with a durability probe pays its
probe steps on top, and the table prints member-steps per setting for every row.
``fixed_gmm`` is shown twice: the mean over its P members (a random single
constraint of the pool) and, at the same compute as HCT's P members, the member
with the most held-out MI (an oracle's choice of the best single constraint).

Per data set, per row: settings collapsed (most replicates with MI < 0.05 nats
or no active unit), mean collapsed fraction, MI mean with its standard error
over settings, MI minimum, active units, ELBO, probe accuracy (held-out linear
probe on the latent means, data sets with labels) and member-steps.

Outputs (``--out``, default experiments/results/hct_variants):
``<dataset>__<variant>.json`` (the derived rows and the run's summary),
``table.md``, ``summary.json``, ``COMMAND.txt``. A rerun skips the
(dataset, variant) pairs whose JSON exists (``--force`` redoes them).

    python experiments/hct_variants.py --datasets digits --variants elbo,consensus
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import barrier_study  # noqa: E402
from _command import write_command  # noqa: E402
from hcjax import plotting  # noqa: E402
from hcjax._io import atomic_write_json  # noqa: E402
from hcjax.hct import run_hct  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "hct_variants")
BASELINES = ("fixed_gmm", "free_bits", "vanilla")

# every variant starts from HCT as it was before issue 12 (whatever HCTConfig's defaults are now), so each
# row differs from "elbo" only by its own overrides
BEFORE_ISSUE_12 = {"selection.fitness": "elbo", "candidates.refit_variance_scale": 1.0,
                   "candidates.constraint_history": "latest", "selection.reseed_source": "refit"}
# name -> (what it tests, config overrides on top of the barrier-study config and BEFORE_ISSUE_12)
VARIANTS = {
    "elbo": ("selection on held-out ELBO (the default before issue 12)", {"selection.fitness": "elbo"}),
    "consensus": ("selection on consensus: mean ARI of a member's clustering against the others",
                  {"selection.fitness": "consensus"}),
    "margin": ("selection on the certificate margin", {"selection.fitness": "margin"}),
    "weighted": ("selection on the standardised sum of ELBO, margin and consensus",
                 {"selection.fitness": "weighted"}),
    "mi": ("selection on held-out mutual information", {"selection.fitness": "mutual_info"}),
    "durability": ("selection on durability: MI after a short probe of the single objective",
                   {"selection.fitness": "durability"}),
    "history": ("consensus selection; the constraint term summed over every clustering in a member's history",
                {"selection.fitness": "consensus", "candidates.constraint_history": "all"}),
    "sharp_refits": ("consensus selection; refitted constraints as sharp as the pool's (variances x 0.1)",
                     {"selection.fitness": "consensus", "candidates.refit_variance_scale": 0.1}),
    "j10": ("consensus selection; up to 10 prior components (6, 8, 10) for 10-class data",
            {"selection.fitness": "consensus", "candidates.num_components": 10, "candidates.components": (6, 8, 10)}),
    "mi_history": ("MI selection and the constraint term over the whole history",
                   {"selection.fitness": "mutual_info", "candidates.constraint_history": "all"}),
    "mi_sharp": ("MI selection and refits as sharp as the pool's",
                 {"selection.fitness": "mutual_info", "candidates.refit_variance_scale": 0.1}),
    "pool": ("consensus selection; reseeds take the next PCA-GMM candidate of the pool instead of a refit",
             {"selection.fitness": "consensus", "selection.reseed_source": "pool"}),
}

# sizes per data set (the barrier study's, with mnist5k added)
SIZES = dict(barrier_study.SIZES["full"])
SIZES["mnist5k"] = dict(latent_dim=8, hidden=(128,), population_size=3, replicates=1, rounds=4,
                        steps_per_round=250, final_steps=1000, num_pruned=1, batch_size=64, eval_points=400,
                        num_candidates=8, em_iters=60, refit_points=1024, teacher_classes=(2, 3, 4, 5))
GRIDS = {
    "full": (barrier_study.S2_SCALES, barrier_study.BETAS),
    "hard": ((2.0, 4.0, 8.0), (1.0, 2.0, 4.0)),  # where HCT with ELBO fitness collapsed on digits
    "corners": ((0.5, 4.0), (1.0, 4.0)),
}


_mean, _se = barrier_study._mean, barrier_study._se  # means and standard errors that skip non-finite values


def member_steps(config) -> int:
    """Training steps one member of every method takes per setting (rounds x T + final steps)."""
    p = config.population
    return p.rounds * p.steps_per_round + config.final.steps


def probe_steps(config) -> int:
    """Extra steps of durability probes per HCT member (0 unless fitness is 'durability')."""
    if config.selection.fitness != "durability":
        return 0
    return config.population.rounds * config.selection.durability_steps


def derive(result, config, mi_threshold: float) -> list[dict]:
    """Rows per (method, s2, beta): the final slots, the end-of-rounds consensus and each baseline."""
    entries: dict[tuple, list] = {}
    for slot in result.final:
        g = result.groups[slot["group"]]
        entries.setdefault((f"hct:{slot['objective']}", g["decoder_variance_scale"], g["beta"]), []).append(
            slot["report"])
    for g in result.groups:
        if g["before"]:
            entries.setdefault(("hct:end_of_rounds", g["decoder_variance_scale"], g["beta"]), []).append(g["before"])
    for b in result.baselines:
        g = result.groups[b["group"]]
        entries.setdefault((b["method"], g["decoder_variance_scale"], g["beta"]), []).append(b["report"])
    p = config.population.size
    rows = []
    for (method, s2, beta), reps in entries.items():
        rows.append(_row(method, s2, beta, reps, mi_threshold))
        if method == "fixed_gmm":  # the oracle's best single constraint among P members of each group
            best = []
            for i in range(0, len(reps), p):
                chunk = [r for r in reps[i:i + p] if np.isfinite(r["mutual_info"])]
                if chunk:
                    best.append(max(chunk, key=lambda r: r["mutual_info"]))
            rows.append(_row("fixed_gmm:best_of_P", s2, beta, best, mi_threshold))
    return rows


def _row(method, s2, beta, reps, mi_threshold) -> dict:
    """Means over the reports ``reps`` of one (method, setting); non-finite values are left out of each mean."""
    get = lambda k: [r.get(k) for r in reps]
    return {"method": method, "s2_scale": float(s2), "beta": float(beta), "n": len(reps),
            "mutual_info": _mean(get("mutual_info")), "mutual_info_se": _se(get("mutual_info")),
            "mutual_info_estimator_se": _mean(get("mutual_info_stderr")),
            "active_units": _mean(get("active_units")), "kl": _mean(get("kl")),
            "reconstruction": _mean(get("reconstruction")), "elbo": _mean(get("elbo")),
            "nll": None if _mean(get("log_likelihood")) is None else -_mean(get("log_likelihood")),
            "probe_accuracy": _mean(get("probe_accuracy")),
            "fraction_collapsed": float(np.mean([(not np.isfinite(r["mutual_info"])) or r["mutual_info"] < mi_threshold
                                                 or r["active_units"] == 0 for r in reps]))}


def summarise(rows: list[dict]) -> list[dict]:
    """Per method over the grid's settings."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        mi = [r["mutual_info"] for r in rs]
        out.append({"method": method, "settings": len(rs),
                    "settings_collapsed": float(np.mean([r["fraction_collapsed"] > 0.5 for r in rs])),
                    "mean_fraction_collapsed": float(np.mean([r["fraction_collapsed"] for r in rs])),
                    "mutual_info_mean": _mean(mi), "mutual_info_se": _se(mi),
                    "mutual_info_min": float(np.nanmin(np.asarray(mi, float))),
                    "active_units_mean": _mean([r["active_units"] for r in rs]),
                    "elbo_mean": _mean([r["elbo"] for r in rs]),
                    "nll_mean": _mean([r.get("nll") for r in rs]),
                    "probe_accuracy_mean": _mean([r["probe_accuracy"] for r in rs])})
    return out


def make_config(dataset: str, variant: str, seed: int, grid: str, replicates: int | None, with_baselines: bool,
                quick: bool = False):
    sizes = dict(barrier_study.SIZES["quick"]["digits"] if quick else SIZES[dataset])
    if replicates is not None:
        sizes["replicates"] = replicates
    s2s, betas = GRIDS[grid]
    base = barrier_study.make_config(dataset, sizes, seed, s2s, betas)
    overrides = {"baselines.methods": BASELINES if with_baselines else (), "final.objectives": ("fixed",),
                 **BEFORE_ISSUE_12, **VARIANTS[variant][1]}
    return base.override(overrides).validate()


def run_one(dataset: str, variant: str, args, with_baselines: bool) -> dict:
    config = make_config(dataset, variant, args.seed, args.grid, args.replicates, with_baselines, args.quick)
    t0 = time.time()
    result = run_hct(config)
    rows = derive(result, config, config.selection.collapse_mi_threshold)
    steps = member_steps(config)
    for r in rows:
        r["member_steps"] = steps + (probe_steps(config) if r["method"].startswith("hct") else 0)
    record = {"dataset": dataset, "variant": variant, "description": VARIANTS[variant][0],
              "overrides": VARIANTS[variant][1], "grid": args.grid, "lambda_max": result.lambda_max,
              "sizes": SIZES[dataset], "replicates": args.replicates, "seed": args.seed,
              "elapsed_seconds": time.time() - t0, "rows": rows, "summary": summarise(rows)}
    print(f"[{dataset}/{variant}] {time.time() - t0:.0f} s: " + "; ".join(
        f"{s['method']} collapsed {s['settings_collapsed']:.2f} MI {s['mutual_info_mean']:.3f}"
        for s in record["summary"]), flush=True)
    return record


def _f(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def write_table(out: str) -> None:
    records = []
    for name in sorted(os.listdir(out)):
        if name.endswith(".json") and "__" in name:
            with open(os.path.join(out, name)) as f:
                records.append(json.load(f))
    lines = ["# HCT variants and selection fitness against baselines (issue 12)", "",
             "One `run_hct` per (data set, variant) over the grid; fixed-prior single-objective phase. Baselines "
             "come from the first variant's run of a data set (same group seeds, same bits in every run). Means "
             "over settings (each a mean over replicates and members); `MI se` is over settings. "
             "`fixed_gmm:best_of_P` is the member of each group's P `fixed_gmm` members with the most MI (an "
             "oracle's pick at HCT's compute). `steps` = training steps per member per setting.", "",
             "| data set | grid | variant | method | settings collapsed | MI mean | MI se | MI min | AU | ELBO | NLL | "
             "probe acc. | steps |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for rec in sorted(records, key=lambda r: (r["dataset"], r["grid"], list(VARIANTS).index(r["variant"]))):
        key = f"{rec['dataset']}/{rec['grid']}/{rec['variant']}"
        summary[key] = rec["summary"]
        steps = {r["method"]: r["member_steps"] for r in rec["rows"]}
        for s in rec["summary"]:
            if s["method"] in ("hct:fixed", "hct:end_of_rounds") or not s["method"].startswith("hct"):
                lines.append(f"| {rec['dataset']} | {rec['grid']} | {rec['variant']} | {s['method']} | "
                             f"{s['settings_collapsed']:.2f} | {_f(s['mutual_info_mean'])} | "
                             f"{_f(s['mutual_info_se'])} | {_f(s['mutual_info_min'])} | "
                             f"{_f(s['active_units_mean'], 2)} | {_f(s['elbo_mean'], 2)} | "
                             f"{_f(s.get('nll_mean'), 2)} | {_f(s['probe_accuracy_mean'])} | {steps[s['method']]} |")
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    atomic_write_json(os.path.join(out, "summary.json"), summary, indent=1)
    print("\n".join(lines))
    for dataset in sorted({r["dataset"] for r in records}):
        rate_distortion(dataset, [r for r in records if r["dataset"] == dataset], out)


def rate_distortion(dataset: str, records: list, out: str) -> None:
    """``rate_distortion_<dataset>.png``: MI (rate) against -E log p(x|z) (distortion), one point per setting.

    Every variant's fixed-prior HCT rows and every baseline (from the run that trained them); settings past
    the linear threshold (beta * s2 > lambda_max) filled, the others hollow.
    """
    plt = plotting._pyplot()
    series = {}
    for rec in records:
        for r in rec["rows"]:
            if r.get("reconstruction") is None or r["mutual_info"] is None:
                continue
            if r["method"] == "hct:fixed":
                name = f"hct[{rec['variant']}]"
            elif r["method"].startswith("hct"):
                continue
            else:
                name = r["method"]
            series.setdefault(name, []).append((-r["reconstruction"], r["mutual_info"], r["s2_scale"] * r["beta"] > 1))
    if not series:
        return
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = "os^vD<>pP*Xh"
    for i, (name, pts) in enumerate(sorted(series.items())):
        pts = np.asarray(pts, float)
        color = plt.cm.tab20(i % 20)
        for past, face in ((1.0, color), (0.0, "none")):
            sel = pts[:, 2] == past
            ax.scatter(pts[sel, 0], pts[sel, 1], marker=markers[i % len(markers)], s=22, facecolors=face,
                       edgecolors=color, label=name if past else None)
    positive = all(x > 0 for pts in series.values() for x, _, _ in pts)
    if positive:
        ax.set_xscale("log")
    ax.set_xlabel("distortion: -E_q log p(x|z) (nats per example" + (", log scale)" if positive else ")"))
    ax.set_ylabel("rate: mutual information I(x; z) (nats)")
    ax.set_title(f"{dataset}: rate against distortion (filled: beta * s2 > lambda_max)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    plotting._save(fig, os.path.join(out, f"rate_distortion_{dataset}.png"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="synthetic,digits", help=f"comma list among {sorted(SIZES)}")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list among {list(VARIANTS)}")
    ap.add_argument("--grid", default="full", choices=sorted(GRIDS))
    ap.add_argument("--replicates", type=int, default=1, help="independent groups per setting")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--force", action="store_true", help="rerun pairs whose JSON exists")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a result")
    args = ap.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    variants = [v for v in args.variants.split(",") if v]
    for d in datasets:
        if d not in SIZES:
            raise ValueError(f"--datasets entries must be among {sorted(SIZES)}, got {d!r}.")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"--variants entries must be among {list(VARIANTS)}, got {v!r}.")
    if args.replicates < 1:
        raise ValueError(f"--replicates must be >= 1, got {args.replicates}.")
    os.makedirs(args.out, exist_ok=True)
    for d in datasets:
        for i, v in enumerate(variants):
            path = os.path.join(args.out, f"{d}__{args.grid}__{v}.json")
            if os.path.exists(path) and not args.force:
                continue
            have_baselines = any(n.startswith(f"{d}__{args.grid}__") and n.endswith(".json")
                                 and n != os.path.basename(path)  # a forced rerun replaces this file's baselines
                                 and json.load(open(os.path.join(args.out, n))).get("with_baselines")
                                 for n in os.listdir(args.out))
            rec = run_one(d, v, args, with_baselines=not have_baselines)
            rec["with_baselines"] = not have_baselines
            atomic_write_json(path, rec, indent=1)
    write_table(args.out)
    write_command(args.out, __file__, argv, append=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
