"""``hcjax linear``: per-dimension collapse thresholds of the linear VAE.

From a spectrum (``--spectrum 5,3,2,1``: the covariance eigenvalues) or a data
set (``--data digits``, ``--data mnist:PATH``) it prints

* the thresholds of the top ``--latent-dim`` latents: the critical decoder
  variance ``s2_c,i = lambda_i / beta`` (at ``--beta``) and the critical KL
  weight ``beta_c,i = lambda_i / s2`` (at ``--s2``);
* the closed-form per-dimension KL (nats) over a grid of s2 at ``--beta``;
* with ``--train``: a grid of VAEs trained by :func:`hcjax.theory.verify.verify_threshold`
  (one compiled population), their measured thresholds and relative errors.
  With ``--spectrum``, the training data are ``--num-samples`` Gaussian rows
  whose empirical covariance has exactly that spectrum.

and writes to ``--out``: ``linear.json`` (every number above) and
``kl_vs_s2.png`` (closed form as lines, trained models as points, critical
values as vertical lines; needs matplotlib).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

__all__ = ["configure", "run", "plot_kl_curves"]


def _spectrum(text: str) -> np.ndarray:
    try:
        values = np.array([float(t) for t in text.split(",") if t.strip()], np.float64)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--spectrum must be comma-separated numbers like 5,3,2,1, got {text!r}") from None
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise argparse.ArgumentTypeError(
            f"--spectrum must be finite eigenvalues >= 0 (a covariance spectrum), got {text!r}")
    if not np.any(values > 0):
        raise argparse.ArgumentTypeError(f"--spectrum needs at least one positive eigenvalue, got {text!r}")
    return values


def _positive(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{name} must be finite and > 0, got {text!r}")
        return value

    return parse


def _grid(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    try:
        low, high, num = float(parts[0]), float(parts[1]), int(parts[2])
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"--s2-grid must be LOW,HIGH,NUM like 0.5,6,12, got {text!r}") from None
    if len(parts) != 3 or not (0 < low < high and math.isfinite(high)) or num < 2:
        raise argparse.ArgumentTypeError(f"--s2-grid needs 0 < LOW < HIGH and NUM >= 2, got {text!r}")
    return low, high, num


def configure(p: argparse.ArgumentParser) -> None:
    """Options of ``hcjax linear``."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--spectrum", type=_spectrum, help="covariance eigenvalues, e.g. 5,3,2,1 (default if no --data)")
    src.add_argument("--data", help="digits | mnist:PATH | fashion_mnist:PATH (all training rows, 1/N covariance)")
    p.add_argument("--latent-dim", "-d", type=int, dest="latent_dim", default=None,
                   help="d, the number of latents (default min(D, 4))")
    p.add_argument("--beta", type=_positive("--beta"), default=1.0, help="KL weight for the s2 thresholds and table")
    p.add_argument("--s2", type=_positive("--s2"), default=1.0, help="decoder variance for the critical beta values")
    p.add_argument("--s2-grid", type=_grid, dest="s2_grid", default=None,
                   help="LOW,HIGH,NUM geometric grid of s2 for the KL table "
                        "(default 0.6 lambda_d/beta .. 1.25 lambda_1/beta, 10 points)")
    p.add_argument("--train", action="store_true", help="train a grid of VAEs and measure their thresholds")
    p.add_argument("--steps", type=int, default=4000, help="training steps (with --train)")
    p.add_argument("--phases", type=int, default=8, help="learning-rate phases (must divide --steps)")
    p.add_argument("--num-grid", type=int, dest="num_grid", default=24, help="trained grid points (with --train)")
    p.add_argument("--model", choices=("linear", "mlp"), default="linear", help="trained model family")
    p.add_argument("--estimator", choices=("engine", "exact"), default="engine",
                   help="engine: the library's Monte Carlo objective; exact: linear model's exact expected loss")
    p.add_argument("--batch-size", type=int, dest="batch_size", default=None,
                   help="rows per training step (default: all N, drawn with replacement; use e.g. 256 for digits)")
    p.add_argument("--num-samples", type=int, dest="num_samples", default=256,
                   help="rows generated from --spectrum for training")
    p.add_argument("--seed", type=int, default=0, help="root seed (data generation, initialisation)")
    p.add_argument("--out", default="runs/linear", help="output directory")
    p.add_argument("--no-figure", action="store_true", dest="no_figure", help="do not write the figure")
    p.set_defaults(_parser=p)


def _load(args) -> tuple[str, np.ndarray | None, np.ndarray]:
    """(description, training rows or None, [D, D] covariance)."""
    from hcjax import data as data_lib

    if args.data is None:
        lam = args.spectrum if args.spectrum is not None else np.array([5.0, 3.0, 2.0, 1.0])
        cov = np.diag(np.sort(lam)[::-1])
        rows = None
        if args.train:
            from hcjax.theory.spectra import matched_gaussian_samples

            rows = matched_gaussian_samples(lam, args.num_samples, seed=args.seed)
            rows64 = rows.astype(np.float64) - rows.mean(axis=0)
            cov = rows64.T @ rows64 / rows.shape[0]
        return "spectrum " + ",".join(f"{v:g}" for v in lam), rows, cov
    name, _, path = args.data.partition(":")
    if args.data != "digits" and name not in ("mnist", "fashion_mnist"):
        raise ValueError(f"--data must be digits, mnist:PATH or fashion_mnist:PATH, got {args.data!r}.")
    if name != "digits" and not path:
        raise ValueError(f"--data {args.data!r} needs a path: '{name}:/path/to/idx_dir_or_file.npz'.")
    try:
        rows = data_lib.load_digits()[0] if name == "digits" else data_lib.load_mnist(path)[0]
    except (ValueError, TypeError, OSError, ImportError) as exc:
        raise ValueError(f"--data {args.data!r}: {exc}") from exc
    x = rows.astype(np.float64)
    x -= x.mean(axis=0)
    cov = x.T @ x / x.shape[0]
    if not np.all(np.isfinite(cov)):  # the loaders reject NaN/inf; this keeps eigvalsh from raising LinAlgError
        raise ValueError(f"--data {args.data!r}: the data covariance is not finite; expected finite data.")
    return args.data, rows, cov


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def plot_kl_curves(path: str, s2_dense, kl_dense, critical, trained_s2=None, trained_kl=None,
                   measured_critical=None, title: str = "", xlabel: str = "decoder variance s2") -> str:
    """KL_i vs the swept parameter: closed form (lines), trained (points), thresholds (vertical lines).

    Args:
        path: PNG file to write.
        s2_dense: [M] grid of the closed-form curves; kl_dense: [M, d] (nats).
        critical: [d] closed-form critical values (dashed vertical lines).
        trained_s2: [G] trained grid; trained_kl: [G, d] measured KL (sorted).
        measured_critical: [d] measured thresholds (dotted vertical lines).
    """
    from hcjax import plotting

    plt = plotting._pyplot()  # the shared style: Okabe-Ito colours, labelled axes
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    d = np.shape(kl_dense)[1]
    for i in range(d):
        color = plotting.PALETTE[i % len(plotting.PALETTE)]
        ax.plot(s2_dense, np.asarray(kl_dense)[:, i], "-", color=color, lw=1.5,
                label=f"latent {i + 1}: closed form" if i < 8 else None)
        ax.axvline(critical[i], color=color, ls="--", lw=0.9, alpha=0.8)
        if trained_kl is not None:
            ax.plot(trained_s2, np.asarray(trained_kl)[:, i], "o", color=color, ms=3.5, mfc="none",
                    label="trained" if i == 0 else None)
        if measured_critical is not None and np.isfinite(measured_critical[i]):
            ax.axvline(measured_critical[i], color=color, ls=":", lw=1.2)
    ax.set_xscale("log")
    low, high = float(np.min(s2_dense)), float(np.max(s2_dense))
    ax.set_xlim(low, high)
    plotting.log_ticks(ax.xaxis, low, high)  # labelled ticks whatever the range (one decade or less too)
    ax.set_xlabel(xlabel + " (squared data units, log scale)\ndashed: predicted threshold, dotted: measured")
    ax.set_ylabel("KL per latent (nats)")
    ax.set_ylim(bottom=-0.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return plotting._save(fig, path)  # atomic


def _check_arguments(parser: argparse.ArgumentParser, args, rows, lam: np.ndarray) -> int:
    """Exit with a usage error on inconsistent options; returns d, the number of latents."""
    D = lam.size
    d = args.latent_dim if args.latent_dim is not None else min(D, 4)
    if not 1 <= d <= D:
        parser.error(f"--latent-dim must be between 1 and D = {D} (the data dimension), got {d}")
    if args.train:
        if args.steps < 1 or args.phases < 1 or args.steps % args.phases:
            parser.error(f"--steps ({args.steps}) must be a positive multiple of --phases ({args.phases})")
        if args.batch_size is not None and args.batch_size < 1:
            parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.num_grid < 2:
            parser.error(f"--num-grid must be >= 2, got {args.num_grid}")
        if rows is not None and args.data is None and args.num_samples <= D:
            parser.error(f"--num-samples must exceed D = {D}, got {args.num_samples}")
    if lam[d - 1] <= 0:
        parser.error(f"eigenvalue {d} of the covariance is 0: latents beyond the rank are always collapsed; "
                     f"use --latent-dim <= {int(np.sum(lam > 0))}")
    return d


def _closed_form_tables(args, source: str, lam: np.ndarray, cov: np.ndarray, d: int):
    """Print the thresholds and the closed-form KL table; returns (s2 grid [M], KL [M, d] in nats)."""
    from hcjax.theory import linear

    beta, s2 = args.beta, args.s2
    print(f"hcjax linear: {source}, D = {lam.size}, d = {d}, beta = {beta:g}, s2 = {s2:g}")
    print("\nPer-dimension thresholds (latent i collapses iff beta * s2 >= lambda_i):")
    print(_table(["latent", "lambda_i", f"critical s2 (beta={beta:g})", f"critical beta (s2={s2:g})"],
                 [[str(i + 1), f"{lam[i]:.6g}", f"{lam[i] / beta:.6g}", f"{lam[i] / s2:.6g}"] for i in range(d)]))
    if args.s2_grid is not None:
        table_s2 = np.geomspace(*args.s2_grid)
    else:
        table_s2 = np.geomspace(0.6 * lam[d - 1] / beta, 1.25 * lam[0] / beta, 10)
    table_kl = linear.dimension_kl(cov, d, table_s2, beta)
    print(f"\nClosed-form KL per latent (nats) at beta = {beta:g}:")
    print(_table(["s2", *[f"KL_{i + 1}" for i in range(d)], "active"],
                 [[f"{s:.4g}", *[f"{k:.4f}" for k in row], str(int(np.sum(row > 0)))]
                  for s, row in zip(table_s2, table_kl)]))
    return table_s2, table_kl


def _train(parser: argparse.ArgumentParser, args, rows, d: int):
    """Train the grid with :func:`hcjax.theory.verify.verify_threshold` and print the measured thresholds."""
    from hcjax.theory.verify import DescentSettings, verify_threshold

    print(f"\nTraining {args.num_grid} {args.model} VAEs ({args.estimator} estimator, {args.steps} steps) ...",
          flush=True)
    try:
        v = verify_threshold(
            rows, d, sweep="s2", beta=args.beta, model=args.model, estimator=args.estimator,
            settings=DescentSettings(num_steps=args.steps, num_phases=args.phases, batch_size=args.batch_size),
            seed=args.seed, num_grid=args.num_grid)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    print(f"done in {v.train_seconds:.1f}s. Measured thresholds (zero crossing of the trained KL, log-s2 fit):")
    print(_table(["latent", "predicted s2_c", "measured s2_c", "rel. error", "status"],
                 [[str(i + 1), f"{v.predicted_critical[i]:.5g}", f"{v.measured_critical[i]:.5g}",
                   f"{v.relative_error[i]:+.2%}", v.status[i]] for i in range(d)]))
    print(f"max |closed-form ELBO - trained ELBO| = {np.max(np.abs(v.elbo_gap)):.3g} nats ({v.elbo_method})")
    return v


def _write_figure(args, source: str, cov: np.ndarray, lam: np.ndarray, d: int, table_s2: np.ndarray,
                  verification) -> None:
    """kl_vs_s2.png in --out: closed form (cov [D, D], eigenvalues lam [D] descending) over the table's and the
    trained grid's s2 range, the trained points and the thresholds."""
    from hcjax.theory import linear

    low = min(table_s2[0], verification.grid[0]) if verification is not None else table_s2[0]
    high = max(table_s2[-1], verification.grid[-1]) if verification is not None else table_s2[-1]
    dense = np.geomspace(low, high, 400)
    try:
        path = plot_kl_curves(
            os.path.join(args.out, "kl_vs_s2.png"), dense, linear.dimension_kl(cov, d, dense, args.beta),
            lam[:d] / args.beta,
            trained_s2=None if verification is None else verification.grid,
            trained_kl=None if verification is None else verification.measured_kl,
            measured_critical=None if verification is None else verification.measured_critical,
            title=f"{source}: KL per latent vs s2 (beta = {args.beta:g}, d = {d})")
        print(f"wrote {path}")
    except ImportError as exc:
        print(f"hcjax linear: figure skipped ({exc})", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``hcjax linear``; returns the exit status (2 for bad input)."""
    from hcjax._io import atomic_write_json
    from hcjax.theory import linear

    parser: argparse.ArgumentParser = args._parser
    try:  # every data check before any work, and before --out is created
        source, rows, cov = _load(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"hcjax linear: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    lam = np.linalg.eigvalsh(cov)[::-1].clip(min=0.0)
    d = _check_arguments(parser, args, rows, lam)
    table_s2, table_kl = _closed_form_tables(args, source, lam, cov, d)
    verification = _train(parser, args, rows, d) if args.train else None

    os.makedirs(args.out, exist_ok=True)
    record = {
        "source": source, "data_dim": lam.size, "latent_dim": d, "beta": args.beta, "s2": args.s2,
        "eigenvalues": lam.tolist(), "critical_s2": (lam[:d] / args.beta).tolist(),
        "critical_beta": (lam[:d] / args.s2).tolist(),
        "table": {"s2": table_s2.tolist(), "kl": table_kl.tolist(),
                  "elbo": [linear.optimum(cov, d, s, args.beta).elbo for s in table_s2]},
        "training": verification.to_dict() if verification is not None else None,
    }
    json_path = os.path.join(args.out, "linear.json")
    atomic_write_json(json_path, record, indent=1)
    print(f"\nwrote {json_path}")
    if not args.no_figure:
        _write_figure(args, source, cov, lam, d, table_s2, verification)
    return 0
