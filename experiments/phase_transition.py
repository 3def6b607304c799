"""Posterior collapse as a phase transition: closed form vs trained linear and MLP VAEs.

For each data set, a grid of decoder variances s2 (beta = 1 unless stated) is
trained as one population per model family with
:func:`hcjax.theory.verify.verify_threshold` (the library's training engine,
Monte Carlo objective, Adam with a decaying learning rate), and the
per-dimension KL of the trained models is compared with the exact linear-VAE
optimum on the same data (:mod:`hcjax.theory.linear`). Settings:

* ``synthetic``: Gaussian rows whose 1/N covariance has exactly the spectrum
  5, 3, 2, 1, 0.5, 0.25 (D = 6), d = 4; an s2 sweep (linear and MLP) and a
  beta sweep at s2 = 1 (linear, exact-expected-loss estimator).
* ``digits``: scikit-learn's 8x8 digits (1797 rows, pixels / 16), d = 8.
* ``mnist`` (only with ``--mnist PATH``): MNIST training images in [0, 1], d = 16,
  minibatches of 256.
* ``followup_2510_01621``: D = 8, eigenvalues exp(-0.1 (i - 1)), d = 4, a
  two-Gaussian mixture whose 1/N covariance is exactly diag(eigenvalues), s2
  swept 0.65 -> 1.05 in steps of 0.02; a latent is active iff its mean KL
  exceeds 1e-3 nats (the paper's criterion); the closed form predicts the
  active count to step 4 -> 0 at s2 = lambda_4 .. lambda_1.

The MLP VAEs (GELU, hidden widths 32, 32) are not covered by the linear
closed form; their thresholds and ELBOs are reported as measured. Outputs in
``--out`` (default experiments/results/phase_transition): ``results.json``
(every number), ``table.md``, one PNG per data set, and ``COMMAND.txt``.

Run: ``python experiments/phase_transition.py`` (a few minutes on 2 CPU cores);
``--quick`` is a smoke test with tiny budgets, not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from hcjax.theory import linear
from hcjax.theory import verify as lt
from hcjax.data import load_digits, load_mnist
from _command import write_command

HIDDEN = (32, 32)


def mixture_with_covariance(eigenvalues, num_samples: int, seed: int, share: float = 0.8) -> np.ndarray:
    """Two equal-weight Gaussians whose 1/N mean is 0 and 1/N covariance is exactly diag(eigenvalues).

    Component means are +-sqrt(share * lambda_1) e_1; the within-component
    covariance holds the rest, so the data are bimodal along e_1 (mode
    separation 2 sqrt(share / (1 - share)) within-component standard
    deviations). The sample is then affinely corrected to the exact moments.
    """
    lam = np.asarray(eigenvalues, np.float64)
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=num_samples)
    within = lam.copy()
    within[0] *= 1.0 - share
    x = rng.standard_normal((num_samples, lam.size)) * np.sqrt(within)
    x[:, 0] += sign * np.sqrt(share * lam[0])
    x -= x.mean(axis=0)
    values, vectors = np.linalg.eigh(x.T @ x / num_samples)
    x = (x @ vectors / np.sqrt(values)) @ vectors.T * np.sqrt(lam)
    return x.astype(np.float32)


def settings_for(steps: int, batch_size: int | None, final_learning_rate: float = 3e-4) -> lt.DescentSettings:
    """Adam from 0.03 down to ``final_learning_rate`` in 8 (or 10, if 8 does not divide ``steps``) phases."""
    phases = 8 if steps % 8 == 0 else 10
    return lt.DescentSettings(num_steps=steps, num_phases=phases, learning_rate=0.03,
                              final_learning_rate=final_learning_rate, num_samples=1, batch_size=batch_size)


def active_agreement(r: lt.ThresholdVerification) -> dict:
    """How well the measured active count (mean KL > 1e-3) matches the closed form over the grid.

    ``mismatch_distance``: for every grid point where they differ, its distance
    to the nearest predicted threshold in units of ln(swept value) (0 = at a threshold).
    """
    wrong = r.measured_active != r.predicted_active
    dist = np.min(np.abs(np.log(r.grid[:, None] / r.predicted_critical[None, :])), axis=1)
    return {"agree_fraction": float(np.mean(~wrong)), "mismatch_grid": r.grid[wrong].tolist(),
            "mismatch_distance": dist[wrong].tolist(),
            "mismatch_excess": (r.measured_active - r.predicted_active)[wrong].tolist()}


def run_setting(name, x, latent_dim, *, grid=None, num_grid=24, steps=4000, mlp_steps=3000, batch_size=None,
                mlp_grid=None, with_mlp=True, sweep="s2", beta=1.0, decoder_variance=1.0, estimator="engine",
                final_learning_rate=3e-4, seed=0, log=print) -> dict:
    """Linear (and MLP) verification runs on one data set; returns their JSON records."""
    out = {"name": name, "num_rows": int(x.shape[0]), "data_dim": int(x.shape[1]), "latent_dim": latent_dim}
    runs = {}
    common = dict(sweep=sweep, beta=beta, decoder_variance=decoder_variance, seed=seed)
    t0 = time.perf_counter()
    runs["linear"] = lt.verify_threshold(x, latent_dim, grid=grid, num_grid=num_grid, estimator=estimator,
                                         settings=settings_for(steps, batch_size, final_learning_rate), **common)
    log(f"  [{name}] linear ({estimator}) done in {time.perf_counter() - t0:.0f}s: relative errors "
        + ", ".join(f"{e:+.2%}" for e in runs["linear"].relative_error))
    if with_mlp:
        t0 = time.perf_counter()
        mgrid = mlp_grid if mlp_grid is not None else (None if grid is None else grid)
        runs["mlp"] = lt.verify_threshold(x, latent_dim, grid=mgrid, num_grid=max(num_grid // 2, 8), model="mlp",
                                          hidden=HIDDEN, settings=settings_for(mlp_steps, batch_size or 256),
                                          **common)
        log(f"  [{name}] mlp done in {time.perf_counter() - t0:.0f}s: measured "
            + ", ".join("nan" if not np.isfinite(c) else f"{c:.4g}" for c in runs["mlp"].measured_critical))
    out["runs"] = {k: v.to_dict() | {"active_agreement": active_agreement(v)} for k, v in runs.items()}
    out["_objects"] = runs
    return out


# --------------------------------------------------------------------------- #
# Figures and the table
# --------------------------------------------------------------------------- #


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    return plt, matplotlib.ticker


def plot_setting(entry: dict, path: str, active_panel: bool = False) -> str:
    """KL per latent vs the swept parameter; optional second panel: active count."""
    plt, ticker = _pyplot()
    runs = entry["_objects"]
    lin = runs["linear"]
    ncols = 2 if active_panel else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.6 * ncols, 4.3), squeeze=False)
    ax = axes[0, 0]
    lo = min(r.grid[0] for r in runs.values())
    hi = max(r.grid[-1] for r in runs.values())
    dense = np.geomspace(lo, hi, 400)
    cov = np.diag(lin.eigenvalues)  # the closed-form KLs depend on the data only through its spectrum
    d = lin.latent_dim
    if lin.sweep == "s2":
        kl_dense = linear.dimension_kl(cov, d, dense, lin.beta)
        xlabel = f"decoder variance s2 (beta = {lin.beta:g})"
    else:
        kl_dense = np.stack([linear.optimum(cov, d, lin.decoder_variance, b).kl for b in dense])
        xlabel = f"beta (s2 = {lin.decoder_variance:g})"
    for i in range(d):
        c = f"C{i % 10}"
        ax.plot(dense, kl_dense[:, i], "-", color=c, lw=1.4, label="closed form" if i == 0 else None)
        ax.axvline(lin.predicted_critical[i], color=c, ls="--", lw=0.8, alpha=0.7)
        ax.plot(lin.grid, lin.measured_kl[:, i], "o", color=c, ms=3.5, mfc="none",
                label="trained linear" if i == 0 else None)
        if "mlp" in runs:
            ax.plot(runs["mlp"].grid, runs["mlp"].measured_kl[:, i], "x", color=c, ms=4,
                    label="trained MLP" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_xticks(np.unique(np.round(np.geomspace(lo, hi, 7), 3)))
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(xlabel + "; dashed: lambda_i-based thresholds")
    ax.set_ylabel("mean KL per latent, sorted (nats)")
    ax.set_title(f"{entry['name']}: D = {entry['data_dim']}, d = {d}, N = {entry['num_rows']}", fontsize=9)
    ax.legend(fontsize=7)
    if active_panel:
        ax2 = axes[0, 1]
        ax2.step(lin.grid, lin.predicted_active, where="mid", color="k", label="closed form")
        ax2.plot(lin.grid, lin.measured_active, "o", mfc="none", label="trained linear (mean KL > 1e-3)")
        if "mlp" in runs:
            ax2.plot(runs["mlp"].grid, runs["mlp"].measured_active, "x", label="trained MLP (mean KL > 1e-3)")
        ax2.set_xlabel(xlabel)
        ax2.set_ylabel("active latents")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _fmt(v, pct=False):
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:+.2%}" if pct else f"{v:.4g}"


def markdown_table(entries: list[dict]) -> str:
    lines = ["| setting | latent | lambda_i | predicted critical | linear: measured | linear: rel. err | "
             "MLP: measured | MLP: rel. err |", "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        runs = e["_objects"]
        lin, mlp = runs["linear"], runs.get("mlp")
        label = f"{e['name']} ({lin.sweep} sweep)"
        for i in range(lin.latent_dim):
            lines.append(
                f"| {label} | {i + 1} | {lin.eigenvalues[i]:.4g} | {lin.predicted_critical[i]:.4g} | "
                f"{_fmt(lin.measured_critical[i])} | {_fmt(lin.relative_error[i], True)} | "
                f"{_fmt(mlp.measured_critical[i]) if mlp else 'not run'} | "
                f"{_fmt(mlp.relative_error[i], True) if mlp else ''} |")
    lines += ["", "| setting | model | max closed-form ELBO - trained ELBO (nats) | min of it | ELBO method |",
              "|---|---|---|---|---|"]
    for e in entries:
        for model, r in e["_objects"].items():
            lines.append(f"| {e['name']} ({r.sweep}) | {model} | {np.max(r.elbo_gap):.4g} | "
                         f"{np.min(r.elbo_gap):.4g} | {r.elbo_method} |")
    lines += ["", "| setting | model | grid points where active count (mean KL > 1e-3) = closed form | "
              "mismatches: s2 (measured - predicted) |", "|---|---|---|---|"]
    for e in entries:
        for model, r in e["_objects"].items():
            a = active_agreement(r)
            miss = ", ".join(f"{g:.3g} ({x:+d})" for g, x in zip(a["mismatch_grid"], a["mismatch_excess"]))
            lines.append(f"| {e['name']} ({r.sweep}) | {model} | {a['agree_fraction']:.0%} of {r.grid.size} | "
                         f"{miss or 'none'} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("experiments", "results", "phase_transition"))
    parser.add_argument("--mnist", default=None, help="MNIST directory of IDX files or .npz (optional setting)")
    parser.add_argument("--steps", type=int, default=4000,
                        help="linear-model training steps (doubled, with a 10x smaller final learning rate, "
                             "for the small-D synthetic and follow-up settings)")
    parser.add_argument("--mlp-steps", type=int, default=2000, dest="mlp_steps", help="MLP training steps")
    parser.add_argument("--skip-mlp", action="store_true", dest="skip_mlp")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke test only)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.mlp_steps = 80, 80
    for flag in ("steps", "mlp_steps"):
        if getattr(args, flag) < 8 or getattr(args, flag) % 8:
            parser.error(f"--{flag.replace('_', '-')} must be a positive multiple of 8 (learning-rate phases)")
    os.makedirs(args.out, exist_ok=True)
    command = write_command(args.out, __file__, argv)
    start = time.perf_counter()
    steps = dict(steps=args.steps, mlp_steps=args.mlp_steps, with_mlp=not args.skip_mlp, seed=args.seed)
    entries = []

    print("(a) synthetic spectrum 5,3,2,1,0.5,0.25 (D = 6, d = 4)", flush=True)
    x_syn = lt.matched_gaussian_samples([5.0, 3.0, 2.0, 1.0, 0.5, 0.25], 256, seed=args.seed)
    long = steps | {"steps": 2 * args.steps, "final_learning_rate": 3e-5}  # small D: afford more steps
    entries.append(run_setting("synthetic", x_syn, 4, num_grid=24, **long))
    print("(a') synthetic, beta sweep at s2 = 1 (linear, exact-expected-loss estimator)", flush=True)
    entries.append(run_setting("synthetic_beta", x_syn, 4, sweep="beta", decoder_variance=1.0, num_grid=24,
                               estimator="exact", **(steps | {"with_mlp": False})))

    print("(b) scikit-learn digits (D = 64, d = 8)", flush=True)
    x_dig = load_digits()[0]
    entries.append(run_setting("digits", x_dig, 8, num_grid=24, batch_size=256, **steps))

    if args.mnist:
        print("(c) MNIST (D = 784, d = 16)", flush=True)
        x_mn = load_mnist(args.mnist)[0]
        entries.append(run_setting("mnist", x_mn, 16, num_grid=16, batch_size=256, **steps))

    print("(d) 2510.01621 follow-up: D = 8, lambda_i = exp(-0.1 (i - 1)), d = 4, two-Gaussian mixture", flush=True)
    lam8 = np.exp(-0.1 * np.arange(8))
    x_mix = mixture_with_covariance(lam8, 1024, seed=args.seed)
    grid = np.round(np.arange(0.65, 1.0501, 0.02), 10)
    entries.append(run_setting("followup_2510_01621", x_mix, 4, grid=grid, batch_size=256, **long))

    elapsed = time.perf_counter() - start
    figures = {}
    for e in entries:
        path = os.path.join(args.out, f"{e['name']}.png")
        figures[e["name"]] = os.path.basename(plot_setting(e, path, active_panel=e["name"].startswith("followup")))
    table = markdown_table(entries)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"# Phase transition: measured vs predicted thresholds\n\nCommand: `{command}`\n\n{table}\n")
    record = {
        "command": command, "elapsed_seconds": elapsed, "quick": args.quick, "mlp_hidden": list(HIDDEN),
        "measurement": "zero crossing of a least-squares line through the last 4 active points "
                       "(mean KL > 0.02 nats) in the (ln swept value, KL) plane; see hcjax.theory.verify",
        "settings": [{k: v for k, v in e.items() if k != "_objects"} for e in entries], "figures": figures,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(record, f, indent=1)
    print("\n" + table)
    print(f"\ntotal {elapsed:.0f}s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
