"""Barrier study: does HCT's "historical barrier" keep latents alive for every s2 and beta?

The grid of hct-design.md ("Barrier study"): decoder variance s2 in
{0.25, 0.5, 1, 2, 4, 8} x lambda_max (lambda_max = largest eigenvalue of the
training covariance) times KL weight beta in {0.5, 1, 2, 4, 8}. For every data
set the WHOLE grid is one :func:`hcjax.hct.run_hct` call: one group of P
members per (s2, beta, replicate) entry, all trained in one compiled program,
with every baseline of :data:`hcjax.hct.BASELINES` trained in lockstep on the
same path, architecture, s2 and step budget, and the single-objective phase
split over the three objectives ``fixed``, ``learnable`` and
``standard_normal`` (final slots assigned cyclically). The constant-collapse
certificate (searched PCA-GMM teacher, simplex witness) is evaluated every
round and at the end.

Replicates. Each (s2, beta) setting appears ``replicates`` times in the grid
with ``replicate = 1, 2, ...``: such groups draw ALL of their randomness
(network initialisation, minibatches, selection, refits, baseline seeds) from
their own seed, so they are independent HCT runs (only the candidate pool,
fitted once from the data, is shared). Inside a group, the P members give P
baseline replicates per method and P / 3 final-phase copies per objective;
those final copies all start from the group's ONE consensus member, so they
measure final-phase noise only. Standard errors in the table are over every
final slot (or baseline member) of a setting; the independent-run count is
the ``replicates`` number written in the output.

Outputs (``--out``, default experiments/results/barrier_study):

* ``<dataset>.json``: the sizes, the run's ``HCTResult.to_json()`` and the
  derived per-(method, s2, beta) rows;
* ``summary.md`` / ``summary.json``: per data set and method, over the
  whole grid: fraction of settings collapsed, MI mean and minimum, ELBO;
* ``table.md`` / ``table.csv``: per data set, method (``hct:<objective>``,
  ``hct:end_of_rounds`` = the consensus member before the single objective,
  and each baseline), s2 / lambda_max and beta: active units, MI and its
  standard error, KL, ELBO, certificate margin, fraction of collapsed members
  and the fraction of locally collapsed evaluation samples, all means over
  replicates;
* ``mi_<dataset>.png`` / ``margin_<dataset>.png``: heatmaps over (s2, beta)
  per method;
* ``COMMAND.txt``: the commands that produced the outputs.

Run: ``python experiments/barrier_study.py`` (both data sets; each is sized to
finish in about 25-35 minutes on 2 CPU cores); ``--datasets digits``,
``--mnist PATH`` (adds ``mnist``), ``--quick`` (a ~2 minute smoke run, not a
result).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hcjax import hct
from hcjax.vae import diagnostics  # noqa: E402
from hcjax.hct import HCTConfig, run_hct  # noqa: E402
from hcjax.vae.models import make_vae  # noqa: E402
from _command import write_command  # noqa: E402

S2_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
BETAS = (0.5, 1.0, 2.0, 4.0, 8.0)
OBJECTIVES = ("fixed", "learnable", "standard_normal")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "barrier_study")
DEFAULT_WORK = os.path.join(os.path.dirname(HERE), "runs", "barrier_study")
LOCAL_KL_THRESHOLD = 0.01  # nats: a sample with KL(q(z|x) || p(z)) below it is locally collapsed

# Sizes per data set. "full" is what the results come from; "quick" is a smoke test.
SIZES = {
    "full": {
        "synthetic": dict(num_samples=3000, latent_dim=2, hidden=(32, 32), population_size=3, replicates=2,
                          rounds=4, steps_per_round=500, final_steps=2500, num_pruned=1, batch_size=64,
                          eval_points=384, num_candidates=8, em_iters=60, refit_points=512,
                          teacher_classes=(2, 3)),
        "digits": dict(latent_dim=4, hidden=(64, 32), population_size=3, replicates=2,
                       rounds=4, steps_per_round=300, final_steps=1500, num_pruned=1, batch_size=64,
                       eval_points=359, num_candidates=8, em_iters=60, refit_points=512,
                       teacher_classes=(2, 3, 4, 5)),
        "mnist": dict(latent_dim=8, hidden=(128, 64), population_size=3, replicates=1,
                      rounds=4, steps_per_round=300, final_steps=1200, num_pruned=1, batch_size=64,
                      eval_points=512, num_candidates=8, em_iters=60, refit_points=1024,
                      teacher_classes=(2, 3, 4, 5)),
    },
    "quick": {
        name: dict(num_samples=600, latent_dim=2, hidden=(16,), population_size=3, replicates=1, rounds=2,
                   steps_per_round=40, final_steps=40, num_pruned=1, batch_size=32, eval_points=96,
                   num_candidates=4, em_iters=15, refit_points=128, teacher_classes=(2, 3))
        for name in ("synthetic", "digits", "mnist")
    },
}


def make_config(dataset: str, sizes: dict, seed: int, s2_scales=S2_SCALES, betas=BETAS) -> HCTConfig:
    """The one HCTConfig of a data set: the (s2, beta) grid x replicates, every baseline, three objectives."""
    sizes = dict(sizes)
    replicates = sizes.pop("replicates")
    grid = [{"decoder_variance_scale": float(s), "beta": float(b), "replicate": r}
            for r in range(1, replicates + 1) for s in s2_scales for b in betas]
    if dataset not in ("synthetic", "gaussian"):
        sizes.pop("num_samples", None)
    return HCTConfig.from_dict(dict(dataset=dataset, grid=grid, baselines=tuple(hct.BASELINES),
                                    final_objectives=OBJECTIVES, certificate=True, seed=seed, checkpoint_every=1,
                                    keep_checkpoints=2, **sizes))


# --------------------------------------------------------------------------- local collapse of final states


def local_collapse_fractions(result: hct.HCTResult, x_eval: np.ndarray, key: jax.Array) -> tuple[list, list]:
    """Fraction of evaluation samples with KL(q(z|x) || p(z)) < LOCAL_KL_THRESHOLD, per final slot and per baseline."""
    vae = make_vae(result.model_config)
    x = jnp.asarray(x_eval)

    @jax.jit
    def fractions(state, keys):
        def one(params, prior, analytic, k):
            rep = diagnostics.vae_local_collapse(vae, params, prior, x, k, analytic_kl=analytic,
                                                 num_kl_samples=32, kl_threshold=LOCAL_KL_THRESHOLD)
            return rep.fraction_low_kl
        return jax.vmap(one)(state.params, state.prior, state.objective.analytic_kl, keys)

    def run(state):
        if state is None:
            return []
        n = state.step.shape[0]
        out = []
        for start in range(0, n, 256):  # chunks bound the memory of the vmapped evaluation
            idx = np.arange(start, min(n, start + 256))
            sub = jax.tree.map(lambda a: a[idx], state)
            out.append(np.asarray(fractions(sub, jax.random.split(jax.random.fold_in(key, start), len(idx)))))
        return np.concatenate(out).tolist()

    return run(result.final_state), run(result.baseline_state)


# --------------------------------------------------------------------------- table


def check_layout(result: hct.HCTResult) -> None:
    """Assert the group-major layout the table relies on (hcjax.hct.layout.MemberLayout)."""
    layout = hct.MemberLayout(len(result.groups), result.config.population.size)
    methods = result.config.baselines.methods
    objectives = result.config.final.objectives
    for slot in result.final:  # final slot i: its group, objective cyclic over the slots of the group
        i = slot["slot"]
        assert slot["group"] == layout.group_of(i), slot
        assert slot["objective"] == objectives[layout.local_slot(i) % len(objectives)], slot
    for b in result.baselines:  # baseline member i: group-major, then method, then replicate
        i, copies = b["member"], len(methods)
        assert b["group"] == layout.group_of(i, copies) and b["method"] == methods[layout.copy_of(i, copies)], b


def _mean(vals):
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _se(vals):
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    return float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else None


def derive_rows(result: hct.HCTResult, local_final: list, local_base: list, mi_threshold: float) -> list[dict]:
    """One row per (method, s2 scale, beta): means over replicate groups and members."""
    check_layout(result)
    entries: dict[tuple, list] = {}
    for slot in result.final:
        g = result.groups[slot["group"]]
        entries.setdefault((f"hct:{slot['objective']}", g["decoder_variance_scale"], g["beta"]), []).append(
            (slot["report"], local_final[slot["slot"]] if local_final else None))
    for g in result.groups:  # the consensus member at the end of the rounds, before the single objective
        if g["before"]:
            entries.setdefault(("hct:end_of_rounds", g["decoder_variance_scale"], g["beta"]), []).append(
                (g["before"], None))
    for b in result.baselines:
        g = result.groups[b["group"]]
        entries.setdefault((b["method"], g["decoder_variance_scale"], g["beta"]), []).append(
            (b["report"], local_base[b["member"]] if local_base else None))
    rows = []
    for (method, s2, beta), items in entries.items():
        reps = [r for r, _ in items]
        mi = [r["mutual_info"] for r in reps]
        collapsed = [(r["mutual_info"] < mi_threshold) or (r["active_units"] == 0) for r in reps]
        rows.append({
            "method": method, "s2_scale": round(float(s2), 6), "beta": float(beta), "n": len(reps),
            "active_units": _mean([r["active_units"] for r in reps]),
            "mutual_info": _mean(mi), "mutual_info_se": _se(mi),
            "mutual_info_estimator_se": _mean([r["mutual_info_stderr"] for r in reps]),
            "kl": _mean([r["kl"] for r in reps]), "elbo": _mean([r["elbo"] for r in reps]),
            "margin": _mean([r.get("margin") for r in reps]),
            "fraction_collapsed": float(np.mean(collapsed)),
            "local_collapse_fraction": _mean([lc for _, lc in items]),
        })
    order = {m: i for i, m in enumerate([f"hct:{o}" for o in OBJECTIVES] + ["hct:end_of_rounds"]
                                        + list(hct.BASELINES))}
    rows.sort(key=lambda r: (order[r["method"]], r["s2_scale"], r["beta"]))
    return rows


COLUMNS = ("dataset", "method", "s2_scale", "beta", "n", "active_units", "mutual_info", "mutual_info_se",
           "mutual_info_estimator_se", "kl", "elbo", "margin", "fraction_collapsed", "local_collapse_fraction")


def _fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_tables(per_dataset: dict, out: str) -> None:
    with open(os.path.join(out, "table.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for name, d in per_dataset.items():
            for r in d["table"]:
                w.writerow({"dataset": name, **{k: r[k] for k in COLUMNS if k != "dataset"}})
    lines = ["# Barrier study: results table", "",
             "Means over replicates (n = final slots or baseline members per setting; see each data set's "
             "sizes). MI in nats with two standard errors: `se` over replicates, `est. se` the estimator's own "
             "(mean over replicates). `collapsed` = fraction of replicates with MI < "
             "the run's collapse threshold or 0 active units. `local` = mean fraction of evaluation samples "
             f"with KL(q(z|x)||p(z)) < {LOCAL_KL_THRESHOLD} nats (hcjax's reading of arXiv 2508.12530). "
             "`hct:end_of_rounds` is the consensus member before the single-objective phase. "
             "`vanilla` always has beta = 1 (its row's beta is the grid group it was trained with).", ""]
    for name, d in per_dataset.items():
        s = d["sizes"]
        lines += [f"## {name}", "",
                  f"lambda_max = {d['lambda_max']:.6g}; teacher I_T = {_fmt(d['teacher_information'], 4)} nats; "
                  f"sizes: {json.dumps(s)}; elapsed {d['elapsed_seconds']:.0f} s.", "",
                  "| method | s2/lambda_max | beta | n | active units | MI | MI se | MI est. se | KL | ELBO | "
                  "margin | collapsed | local |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in d["table"]:
            lines.append("| " + " | ".join([r["method"], _fmt(r["s2_scale"], 2), _fmt(r["beta"], 1), str(r["n"]),
                                            _fmt(r["active_units"], 2), _fmt(r["mutual_info"]),
                                            _fmt(r["mutual_info_se"]), _fmt(r["mutual_info_estimator_se"]),
                                            _fmt(r["kl"]), _fmt(r["elbo"], 2), _fmt(r["margin"]),
                                            _fmt(r["fraction_collapsed"], 2),
                                            _fmt(r["local_collapse_fraction"], 2)]) + " |")
        lines.append("")
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines))


def summarise(rows: list) -> list[dict]:
    """Per method, over every (s2, beta) setting of a data set: the headline numbers of the study.

    ``settings_collapsed``: fraction of settings whose replicates were collapsed
    in the majority (fraction_collapsed > 0.5); ``mean_fraction_collapsed``:
    the mean over settings of the collapsed fraction of replicates; MI mean and
    minimum over settings (each a mean over replicates); mean ELBO and margin.
    """
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        mi = [r["mutual_info"] for r in rs]
        worst = min(rs, key=lambda r: r["mutual_info"])
        out.append({
            "method": method, "settings": len(rs),
            "settings_collapsed": float(np.mean([r["fraction_collapsed"] > 0.5 for r in rs])),
            "mean_fraction_collapsed": float(np.mean([r["fraction_collapsed"] for r in rs])),
            "mutual_info_mean": float(np.mean(mi)), "mutual_info_min": float(min(mi)),
            "worst_setting": {"s2_scale": worst["s2_scale"], "beta": worst["beta"]},
            "active_units_mean": float(np.mean([r["active_units"] for r in rs])),
            "elbo_mean": float(np.mean([r["elbo"] for r in rs])),
            "margin_mean": _mean([r["margin"] for r in rs]),
            "local_collapse_mean": _mean([r["local_collapse_fraction"] for r in rs]),
        })
    return out


def write_summary(per_dataset: dict, out: str) -> None:
    """summary.md / summary.json: one line per data set and method, over the whole (s2, beta) grid."""
    summary = {name: summarise(d["table"]) for name, d in per_dataset.items()}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    lines = ["# Barrier study: summary over the (s2, beta) grid", "",
             "Per data set and method, over all 30 (s2, beta) settings (each a mean over its replicates): the "
             "fraction of settings where most replicates collapsed (MI below the collapse threshold or no active "
             "unit), the mean collapsed fraction, MI (nats) mean and minimum with the worst setting, active units, "
             "ELBO (nats per example), certificate margin and the local-collapse fraction. Rows and columns are "
             "computed by `summarise` in experiments/barrier_study.py from `<dataset>.json`.", ""]
    for name, rows in summary.items():
        lines += [f"## {name}", "",
                  "| method | settings collapsed | mean collapsed fraction | MI mean | MI min (at s2/lambda_max, beta) "
                  "| active units | ELBO | margin | local |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            w = r["worst_setting"]
            lines.append(f"| {r['method']} | {r['settings_collapsed']:.2f} | {r['mean_fraction_collapsed']:.2f} | "
                         f"{r['mutual_info_mean']:.3f} | {r['mutual_info_min']:.3f} ({w['s2_scale']:g}, "
                         f"{w['beta']:g}) | {r['active_units_mean']:.2f} | {r['elbo_mean']:.2f} | "
                         f"{_fmt(r['margin_mean'])} | {_fmt(r['local_collapse_mean'], 2)} |")
        lines.append("")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines))


def heatmaps(name: str, rows: list, key: str, out: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    s2s = sorted({r["s2_scale"] for r in rows})
    betas = sorted({r["beta"] for r in rows})
    cols = 4
    nrows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), squeeze=False, layout="constrained")
    values = [r[key] for r in rows if r[key] is not None]
    vmin, vmax = (min(values), max(values)) if values else (0, 1)
    if key == "margin":
        bound = max(abs(vmin), abs(vmax), 1e-6)
        vmin, vmax, cmap = -bound, bound, "RdBu"
    else:
        vmin, cmap = min(0.0, vmin), "viridis"
    im = None
    for ax, method in zip(axes.flat, methods):
        grid = np.full((len(betas), len(s2s)), np.nan)
        for r in rows:
            if r["method"] == method and r[key] is not None:
                grid[betas.index(r["beta"]), s2s.index(r["s2_scale"])] = r[key]
        im = ax.imshow(grid, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(len(betas)):
            for j in range(len(s2s)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="w" if key != "margin" and grid[i, j] < 0.5 * (vmin + vmax) else "k")
        ax.set_xticks(range(len(s2s)), [f"{s:g}" for s in s2s], fontsize=7)
        ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas], fontsize=7)
        ax.set_xlabel("s2 / lambda_max", fontsize=8)
        ax.set_ylabel("beta", fontsize=8)
        ax.set_title(method, fontsize=9)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label=title)
    fig.suptitle(f"{title} over (s2, beta), {name}", fontsize=11)
    path = os.path.join(out, f"{key.replace('mutual_info', 'mi')}_{name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


# HCT's selection fitness and refit sharpness before issue 12 (the committed results/barrier_study/ used them)
BEFORE_ISSUE_12 = {"selection.fitness": "elbo", "candidates.refit_variance_scale": 1.0}


def run_dataset(name: str, spec: str, sizes: dict, seed: int, out: str, work: str, resume: bool,
                s2_scales=S2_SCALES, betas=BETAS, overrides: dict | None = None) -> dict:
    config = make_config(spec, sizes, seed, s2_scales, betas).override(overrides or {})
    run_dir = os.path.join(work, name)
    t0 = time.time()

    def progress(info):
        rec = info["record"]
        extra = ""
        if "mutual_info" in rec:
            extra = f" median MI {np.median(rec['mutual_info']):.3f}"
        print(f"[{name}] unit {info['unit']}/{info['total']} ({info['phase']}) {time.time() - t0:7.1f} s{extra}",
              flush=True)

    n_groups = len(config.grid)
    p = config.population.size
    print(f"[{name}] {n_groups} groups x P={p} HCT members + "
          f"{n_groups * len(config.baselines.methods) * p} baseline members", flush=True)
    result = run_hct(config, out_dir=run_dir, resume=resume, progress=progress)
    ds = hct.load_data(config, None)
    x_eval = ds.val[: min(config.run.eval_points, ds.val.shape[0])]
    local_final, local_base = local_collapse_fractions(result, x_eval, jax.random.fold_in(jax.random.key(seed), 99))
    rows = derive_rows(result, local_final, local_base, config.selection.collapse_mi_threshold)
    record = {"dataset": name, "spec": spec, "sizes": sizes, "lambda_max": result.lambda_max,
              "teacher_information": result.teacher_information, "elapsed_seconds": time.time() - t0,
              "group_layout": "final slot i: group i // P, objective (i % P) % 3; baseline member i: "
                              "group i // (7 P), method (i % 7P) // P, replicate i % P",
              "local_collapse": {"kl_threshold": LOCAL_KL_THRESHOLD, "final": local_final, "baselines": local_base},
              "table": rows, "run": result.to_json()}
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(record, f)
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="synthetic,digits", help="comma list among synthetic, digits")
    ap.add_argument("--mnist", default=None, help="MNIST IDX directory or .npz: adds the 'mnist' data set")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (~2 min), not a result")
    ap.add_argument("--seed", type=int, default=0, help="the one root seed")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--work", default=DEFAULT_WORK, help="checkpoints (resumable with --resume)")
    ap.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    ap.add_argument("--before-issue-12", action="store_true",
                    help="HCT with the defaults the committed results used: selection on held-out ELBO and "
                         "refits with their fitted variances (today's defaults: MI selection, refits x 0.1)")
    ap.add_argument("--tables-only", action="store_true",
                    help="no training: rebuild table.md/csv and the heatmaps from the JSON files in --out")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    names = [n for n in args.datasets.split(",") if n]
    for n in names:
        if n not in ("synthetic", "digits"):
            raise ValueError(f"--datasets entries must be synthetic or digits, got {n!r} (MNIST: --mnist PATH).")
    specs = {n: n for n in names}
    if args.mnist:
        specs["mnist"] = f"mnist:{args.mnist}"
    mode = "quick" if args.quick else "full"
    s2s, betas = (S2_SCALES[::5], BETAS[::4]) if args.quick else (S2_SCALES, BETAS)
    for name, spec in ({} if args.tables_only else specs).items():
        run_dataset(name, spec, SIZES[mode][name], args.seed, args.out,
                    os.path.join(args.work, mode), args.resume, s2s, betas,
                    BEFORE_ISSUE_12 if args.before_issue_12 else None)
    # tables and figures from every data set present in --out (data sets may be run one at a time)
    per_dataset = {}
    for name in ("synthetic", "digits", "mnist"):
        path = os.path.join(args.out, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                per_dataset[name] = json.load(f)
    write_tables(per_dataset, args.out)
    write_summary(per_dataset, args.out)
    for name, d in per_dataset.items():
        heatmaps(name, d["table"], "mutual_info", args.out, "mutual information (nats)")
        heatmaps(name, d["table"], "margin", args.out, "certificate margin (nats)")
    write_command(args.out, __file__, argv, append=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
