"""HCT with a linear VAE, checked against the exact optimum of the linear theory (issue 12, item 5).

Theory (arXiv 2510.01621; RESULTS.md section 1; :mod:`hcjax.theory.linear`):
a VAE with linear encoder and decoder, a fixed decoder variance s2 and the
prior N(0, I) has, as its global optimum, probabilistic PCA with noise
variance beta * s2, and its objective has no spurious local optima; latent i
is collapsed at the optimum iff beta * s2 >= lambda_i, all of them iff
beta * s2 >= lambda_max. So past the threshold NO "historical barrier" can
survive a single N(0, I) objective for a linear model: whatever HCT's rounds
did, gradient descent on that objective can only end at the collapsed optimum.

This script runs :func:`hcjax.hct.run_hct` with ``model.kind = "linear"`` on
the barrier study's synthetic data (clustered, D = 8, 4 clusters, d = 2) at
s2 in {0.5, 2, 4} x lambda_max (0.5: below the threshold, the control) with
beta = 1, the single objectives ``fixed``, ``learnable`` and ``standard_normal``
and the baselines ``vanilla`` and ``fixed_gmm`` in lockstep: ONE run_hct call
holding every (s2, replicate) group (independent replicate seeds as in
``barrier_study.make_config``), the barrier study's sizes except a longer
single-objective phase (the exact comparison needs converged members).

For every member trained under N(0, I) at the end (``hct:standard_normal``,
``vanilla``) the exact objective F = -ELBO of its trained weights on the
training moments (:func:`hcjax.theory.exact.linear_vae_objective`, no Monte
Carlo) is compared with the closed-form optimum
(:func:`hcjax.theory.linear.optimum`) on the same moments: the gap
F - F_opt >= 0 must be ~0, and the per-latent KL must match the closed form
(0 past the threshold). Members under a GMM prior (``hct:fixed``,
``hct:learnable``, ``hct:end_of_rounds``, ``fixed_gmm``) have no closed form;
their held-out MI, active units and ELBO are reported beside it.

Outputs (``--out``, default experiments/results/linear_hct): ``<dataset>.json``
(sizes, the derived rows, the exact comparison per member and the run's
``HCTResult.to_json()``), ``table.md``, ``linear_<dataset>.png`` and ``COMMAND.txt``.

Run: ``python experiments/linear_hct.py`` (about 2 minutes on 2 shared CPU
cores); ``--datasets digits`` runs the 8x8 digits (D = 64, d = 4) instead;
``--quick`` is a smoke test (about a minute, mostly compiles; not a result).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import barrier_study  # noqa: E402
from hcjax import hct  # noqa: E402
from hcjax._io import atomic_write_json, atomic_write_text  # noqa: E402
from hcjax.theory import exact, linear  # noqa: E402
from hcjax.vae.models import ENCODER_LOG_VAR_BOUNDS  # noqa: E402
from _command import comma_floats as _floats, write_command  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "linear_hct")
DATASETS = ("synthetic", "digits")
S2_SCALES = (0.5, 2.0, 4.0)
BETAS = (1.0,)
OBJECTIVES = ("fixed", "learnable", "standard_normal")
METHODS = ("vanilla", "fixed_gmm")
STANDARD_NORMAL = ("hct:standard_normal", "vanilla")  # the rows the closed form applies to
KL_ACTIVE = 0.01  # nats: a latent whose exact KL is above this counts as active in the exact comparison

# The barrier study's sizes (barrier_study.SIZES["full"]) with more replicates and a longer final phase.
SIZES = {
    "full": {
        "synthetic": dict(barrier_study.SIZES["full"]["synthetic"], replicates=4, final_steps=5000),
        "digits": dict(barrier_study.SIZES["full"]["digits"], replicates=3, final_steps=3000),
    },
    "quick": {name: dict(barrier_study.SIZES["quick"][name], replicates=1) for name in DATASETS},
}


def make_config(dataset: str, sizes: dict, seed: int, s2_scales, betas) -> hct.HCTConfig:
    """barrier_study's config (grid x replicates) with the linear model, two baselines and no certificate."""
    return barrier_study.make_config(dataset, sizes, seed, s2_scales, betas).override({
        "model.kind": "linear", "baselines.methods": METHODS, "final.objectives": OBJECTIVES,
        "certificate.enabled": False, "run.label_metrics": "off"})


def _params(state, i: int) -> dict:
    return jax.tree.map(lambda a: np.asarray(a[i], np.float64), state.params)


def exact_kl_per_latent(params: dict, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """[d] E_x KL(q(z_j|x) || N(0, 1)) of a trained linear member, exactly from the data moments."""
    enc = params["encoder"]
    V = np.asarray(enc["mean"]["kernel"], np.float64).T  # [d, D]: the encoder mean is V x + c
    c = np.asarray(enc["mean"].get("bias", np.zeros(V.shape[0])), np.float64)
    var = np.exp(np.clip(np.asarray(enc["log_var"], np.float64), *ENCODER_LOG_VAR_BOUNDS))  # as the model clips
    e0 = V @ mean + c
    return 0.5 * (np.einsum("jd,de,je->j", V, cov, V) + e0**2 + var - 1.0 - np.log(var))


def exact_comparison(result: hct.HCTResult, mean: np.ndarray, cov: np.ndarray) -> list[dict]:
    """Per member trained under N(0, I) at the end: exact F of its weights vs the closed-form optimum."""
    d = result.model_config.latent_dim
    entries = [("hct:standard_normal", s["group"], s["slot"], result.final_state)
               for s in result.final if s["objective"] == "standard_normal"]
    entries += [("vanilla", b["group"], b["member"], result.baseline_state)
                for b in result.baselines if b["method"] == "vanilla"]
    out = []
    for method, g, i, state in entries:
        group = result.groups[g]
        s2 = float(group["decoder_variance"])
        beta = 1.0 if method == "vanilla" else float(group["beta"])
        opt = linear.optimum(cov, d, s2, beta)
        params = _params(state, i)
        f_trained = exact.linear_vae_objective(params, mean, cov, s2, beta)
        kl = exact_kl_per_latent(params, mean, cov)
        out.append({"method": method, "group": g, "member": i, "s2_scale": round(float(group["decoder_variance_scale"]),
                                                                                 6),
                    "beta": beta, "replicate": group["replicate"], "elbo_exact": -f_trained,
                    "elbo_optimum": opt.elbo, "gap": f_trained + opt.elbo,
                    "kl_exact": sorted(kl.tolist(), reverse=True), "kl_optimum": opt.kl.tolist(),
                    "active_exact": int((kl > KL_ACTIVE).sum()), "active_optimum": opt.num_active,
                    "elbo_collapsed": linear.collapsed_elbo(cov, s2)})
    return out


def derive(result: hct.HCTResult, comparison: list[dict], threshold: float) -> list[dict]:
    """barrier_study's rows per (method, s2, beta), with the exact comparison added to the N(0, I) rows."""
    rows = barrier_study.derive_rows(result, [], [], threshold)
    for r in rows:
        cs = [c for c in comparison if c["method"] == r["method"] and c["s2_scale"] == r["s2_scale"]]
        if not cs:
            continue
        gaps = [c["gap"] for c in cs]
        r.update({"elbo_exact": float(np.mean([c["elbo_exact"] for c in cs])), "elbo_optimum": cs[0]["elbo_optimum"],
                  "gap_mean": float(np.mean(gaps)), "gap_max": float(np.max(gaps)), "gap_min": float(np.min(gaps)),
                  "kl_exact": float(np.mean([sum(c["kl_exact"]) for c in cs])),
                  "kl_optimum": float(sum(cs[0]["kl_optimum"])),
                  "active_exact": float(np.mean([c["active_exact"] for c in cs])),
                  "active_optimum": cs[0]["active_optimum"], "elbo_collapsed": cs[0]["elbo_collapsed"]})
    return rows


def run_dataset(name: str, sizes: dict, seed: int, s2_scales, betas) -> dict:
    config = make_config(name, sizes, seed, s2_scales, betas)
    t0 = time.time()

    def progress(info):
        rec = info["record"]
        extra = f" median MI {np.median(rec['mutual_info']):.3f}" if "mutual_info" in rec else ""
        print(f"[{name}] unit {info['unit']}/{info['total']} ({info['phase']}) {time.time() - t0:6.1f} s{extra}",
              flush=True)

    result = hct.run_hct(config, progress=progress)
    ds = hct.load_data(config, None)
    x = ds.train.astype(np.float64)
    mean, cov = x.mean(axis=0), ds.covariance()
    comparison = exact_comparison(result, mean, cov)
    rows = derive(result, comparison, config.selection.collapse_mi_threshold)
    eig = np.linalg.eigvalsh(cov)[::-1]
    return {"dataset": name, "sizes": sizes, "seed": seed, "lambda_max": result.lambda_max,
            "eigenvalues": eig.tolist(), "latent_dim": config.model.latent_dim,
            "collapse_mi_threshold": config.selection.collapse_mi_threshold, "kl_active": KL_ACTIVE,
            "elapsed_seconds": time.time() - t0, "rows": rows, "exact": comparison, "run": result.to_json()}


# --------------------------------------------------------------------------- table and figure


def _f(v, digits=3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def write_table(out: str, records: list[dict], commands: str) -> list[str]:
    lines = ["# Linear HCT against the exact linear theory", "",
             "Produced by `experiments/linear_hct.py` (commands below). One `run_hct` call per data set with "
             "`model.kind = \"linear\"`. Per (method, s2 / lambda_max): held-out active units, MI (nats; mean and "
             "standard error over replicates), KL and ELBO (Monte Carlo, beta = 1), `collapsed` = fraction of "
             "members with MI < 0.05 nats or 0 active units. For the members trained under N(0, I) at the end "
             "(`hct:standard_normal`, `vanilla`): `exact ELBO` = -F of the trained weights on the training moments "
             "(no Monte Carlo), `optimum` = the closed-form global optimum -F_opt on the same moments, `gap` = "
             "F - F_opt (mean [min, max] over members; >= 0 up to rounding since the optimum is global), exact KL "
             f"and active latents (exact KL > {KL_ACTIVE} nats) against the closed form. `hct:end_of_rounds` is "
             "the consensus member before the single objective.", "", "```", commands.strip(), "```", ""]
    for rec in records:
        eig = ", ".join(f"{v:.3g}" for v in rec["eigenvalues"][: rec["latent_dim"] + 1])
        lines += [f"## {rec['dataset']}", "",
                  f"lambda_max = {rec['lambda_max']:.4g}; top eigenvalues {eig}; d = {rec['latent_dim']}; "
                  f"elapsed {rec['elapsed_seconds']:.0f} s; sizes `{json.dumps(rec['sizes'])}`.", "",
                  "| method | s2/lambda_max | n | AU | MI (se) | KL | ELBO | collapsed | exact ELBO | optimum | "
                  "gap mean [min, max] | exact KL / optimum KL | active exact / optimum |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rec["rows"]:
            exact_cols = ["-"] * 5
            if "gap_mean" in r:
                exact_cols = [f"{r['elbo_exact']:.4f}", f"{r['elbo_optimum']:.4f}",
                              f"{r['gap_mean']:.2e} [{r['gap_min']:.1e}, {r['gap_max']:.1e}]",
                              f"{r['kl_exact']:.4f} / {r['kl_optimum']:.4f}",
                              f"{r['active_exact']:.2f} / {r['active_optimum']}"]
            lines.append("| " + " | ".join([r["method"], f"{r['s2_scale']:g}", str(r["n"]), _f(r["active_units"], 2),
                                            f"{_f(r['mutual_info'])} ({_f(r['mutual_info_se'])})", _f(r["kl"]),
                                            _f(r["elbo"], 3), _f(r["fraction_collapsed"], 2), *exact_cols]) + " |")
        lines.append("")
    atomic_write_text(os.path.join(out, "table.md"), "\n".join(lines))
    return lines


def plot(out: str, rec: dict) -> str:
    """Left: held-out MI per method and s2 (one point per member); right: exact gap F - F_opt (N(0, I) members)."""
    from hcjax.plotting import _pyplot, _save, log_ticks

    plt = _pyplot()
    run = rec["run"]
    groups = run["groups"]
    per = {}
    for s in run["final"]:
        per.setdefault(f"hct:{s['objective']}", []).append((groups[s["group"]]["decoder_variance_scale"],
                                                            s["report"]["mutual_info"]))
    for g in groups:
        if g.get("before"):
            per.setdefault("hct:end_of_rounds", []).append((g["decoder_variance_scale"], g["before"]["mutual_info"]))
    for b in run["baselines"]:
        per.setdefault(b["method"], []).append((groups[b["group"]]["decoder_variance_scale"],
                                                b["report"]["mutual_info"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(per)
    colour = {name: f"C{k % 8}" for k, name in enumerate(names)}  # one colour per method in both panels
    width = 0.8 / len(names)
    scales = sorted({s for v in per.values() for s, _ in v})
    for k, name in enumerate(names):
        xs = [scales.index(s) + (k - (len(names) - 1) / 2) * width for s, _ in per[name]]
        axes[0].scatter(xs, [m for _, m in per[name]], s=14, color=colour[name], label=name)
    axes[0].axhline(0.05, color="k", lw=0.6, ls="--")
    axes[0].set_xticks(range(len(scales)), [f"{s:g}" for s in scales])
    axes[0].set_xlabel("s2 / lambda_max (beta = 1; threshold at 1)")
    axes[0].set_ylabel("held-out MI (nats)")
    axes[0].set_title("mutual information per member")
    axes[0].set_ylim(top=max(m for v in per.values() for _, m in v) * 1.35 + 0.1)
    axes[0].legend(fontsize=7, ncol=3, loc="upper center")
    for k, method in enumerate(STANDARD_NORMAL):
        cs = [c for c in rec["exact"] if c["method"] == method]
        xs = [scales.index(c["s2_scale"]) + (k - 0.5) * 0.25 for c in cs]
        axes[1].scatter(xs, [max(c["gap"], 1e-9) for c in cs], s=16, color=colour.get(method, "k"), label=method)
    axes[1].set_yscale("log")
    gaps = [max(c["gap"], 1e-9) for c in rec["exact"]]
    if gaps:
        log_ticks(axes[1].yaxis, min(gaps), max(gaps))
    axes[1].set_xticks(range(len(scales)), [f"{s:g}" for s in scales])
    axes[1].set_xlabel("s2 / lambda_max (beta = 1)")
    axes[1].set_ylabel("F - F_opt (nats per example; floor 1e-9)")
    axes[1].set_title("exact objective minus the closed-form optimum, N(0, I) members")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Linear VAE under HCT on {rec['dataset']} (lambda_max = {rec['lambda_max']:.3g})")
    fig.tight_layout()
    return _save(fig, os.path.join(out, f"linear_{rec['dataset']}.png"))


# --------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="synthetic", help="comma list among " + ", ".join(DATASETS))
    ap.add_argument("--s2-scales", default=",".join(map(str, S2_SCALES)),
                    help="decoder variances as multiples of lambda_max (comma list)")
    ap.add_argument("--betas", default=",".join(map(str, BETAS)), help="KL weights (comma list)")
    ap.add_argument("--replicates", type=int, default=None, help="independent seeds per setting (default: the size's)")
    ap.add_argument("--final-steps", type=int, default=None,
                    help="single-objective steps, a multiple of the steps per round (default: the size's)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (seconds), not a result")
    ap.add_argument("--seed", type=int, default=0, help="the one root seed")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--tables-only", action="store_true", help="no training: rebuild table.md and figures from --out")
    args = ap.parse_args(argv)
    names = tuple(dict.fromkeys(v.strip() for v in args.datasets.split(",") if v.strip()))
    if not names or any(n not in DATASETS for n in names):
        ap.error(f"--datasets entries must be among {', '.join(DATASETS)}, got {args.datasets!r}")
    args.datasets = names
    args.s2_scales = _floats(ap, "--s2-scales", args.s2_scales)
    args.betas = _floats(ap, "--betas", args.betas)
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    args.sizes = {}
    for name in names:
        s = dict(SIZES["quick" if args.quick else "full"][name])
        if args.replicates is not None:
            if args.replicates < 1:
                ap.error(f"--replicates must be >= 1, got {args.replicates}")
            s["replicates"] = args.replicates
        if args.final_steps is not None:
            if args.final_steps < 1 or args.final_steps % s["steps_per_round"]:
                ap.error(f"--final-steps must be a positive multiple of the steps per round ({s['steps_per_round']}), "
                         f"got {args.final_steps}")
            s["final_steps"] = args.final_steps
        args.sizes[name] = s
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not args.tables_only:
        for name in args.datasets:
            rec = run_dataset(name, args.sizes[name], args.seed, args.s2_scales, args.betas)
            atomic_write_json(os.path.join(args.out, f"{name}.json"), rec)
            print(f"[{name}] done in {rec['elapsed_seconds']:.0f} s", flush=True)
    write_command(args.out, __file__, argv, append=True)
    records = []
    for name in DATASETS:
        path = os.path.join(args.out, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                records.append(json.load(f))
    if not records:
        raise SystemExit(f"no linear_hct results in {args.out}: run without --tables-only first")
    with open(os.path.join(args.out, "COMMAND.txt")) as f:
        commands = f.read()
    lines = write_table(args.out, records, commands)
    print("\n".join(line for line in lines if line.startswith(("|", "##"))))
    for rec in records:
        print("figure:", plot(args.out, rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
