"""Figures (matplotlib, imported lazily: install the ``plot`` extra).

Every function writes one PNG (atomically) and returns its path. They read plain results
(:class:`hcjax.hct.HCTResult`, or any object with the same attributes, such as the run view of
:mod:`hcjax.report`, and NumPy arrays), never train anything.

All figures of all commands share one style (:func:`apply_style`): the colour-blind-safe Okabe-Ito palette
(:data:`PALETTE`) as the colour cycle and for categorical scatter plots, and every axis labelled, with
units, and with tick labels (:func:`log_ticks` puts readable ticks on a log axis of any range).
"""

from __future__ import annotations

import math

import numpy as np

from hcjax._io import atomic_write_with

__all__ = ["OKABE_ITO", "PALETTE", "apply_style", "categorical_cmap", "log_ticks", "plot_rounds",
           "plot_lineage", "plot_latents"]

#: The Okabe-Ito colours (Okabe & Ito 2008), distinguishable with every common colour-vision deficiency.
OKABE_ITO = {"blue": "#0072B2", "orange": "#E69F00", "bluish_green": "#009E73", "vermillion": "#D55E00",
             "reddish_purple": "#CC79A7", "sky_blue": "#56B4E9", "yellow": "#F0E442", "black": "#000000"}
#: The colour cycle of every hcjax figure (``C0`` .. ``C7``).
PALETTE = tuple(OKABE_ITO.values())


def apply_style(matplotlib) -> None:
    """Set the shared style: the Okabe-Ito colour cycle, ticks outside, a light grid."""
    from cycler import cycler

    matplotlib.rcParams.update({"axes.prop_cycle": cycler(color=list(PALETTE)), "axes.grid": True,
                                "grid.alpha": 0.3, "xtick.direction": "out", "ytick.direction": "out",
                                "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8})


def categorical_cmap(n: int):
    """A colormap of ``n`` Okabe-Ito colours (repeated past 8) for class labels."""
    from matplotlib.colors import ListedColormap

    return ListedColormap([PALETTE[i % len(PALETTE)] for i in range(max(1, n))])


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'hcjax[plot]'") from exc
    matplotlib.use("Agg")
    apply_style(matplotlib)
    import matplotlib.pyplot as plt

    return plt


def log_ticks(axis, low: float, high: float) -> list[float]:
    """Put labelled ticks on a log-scale ``axis`` (``ax.xaxis``) spanning [low, high], whatever the range.

    Ticks are the 1-2-3-5 numbers inside the range when there are at least three; otherwise five
    geometrically spaced values rounded to two significant digits. Returns the ticks.
    """
    import matplotlib.ticker as ticker

    low, high = float(min(low, high)), float(max(low, high))
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    ticks = [m * 10.0 ** k for k in decades for m in (1, 2, 3, 5) if low <= m * 10.0 ** k <= high]
    if len(ticks) < 3:
        ticks = sorted({float(f"{v:.2g}") for v in np.geomspace(low, high, 5)})
    elif len(ticks) > 9:
        ticks = [t for t in ticks if f"{t:g}".lstrip("0.").startswith("1")] or ticks
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())
    return ticks


def plot_rounds(result, path: str) -> str:
    """Fitness, mutual information and active units of every member per round (+ final phase and baselines)."""
    plt = _pyplot()
    rounds = [r for r in result.rounds if r["phase"] == "rounds"]
    x = np.arange(1, len(rounds) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    fitness = getattr(getattr(result.config, "selection", None), "fitness", "elbo")
    panels = (("fitness", f"fitness ({fitness}; higher is better)", "fitness (nats per example)"
               if fitness == "elbo" else "fitness (score)"),
              ("mutual_info", "mutual information", "mutual information (nats)"),
              ("active_units", "active units", "active units (count)"))
    for ax, (key, title, ylabel) in zip(axes, panels):
        vals = np.asarray([[np.nan if v is None else v for v in r[key]] for r in rounds], float).reshape(len(x), -1)
        for i in range(vals.shape[1]):
            ax.plot(x, vals[:, i], "-o", ms=3, color="0.65", lw=0.8, label="members" if i == 0 else None)
        if vals.size:
            ax.plot(x, np.nanmedian(vals, axis=1), "-", color="C0", lw=2, label="median member")
        if key != "fitness" and result.final:
            ax.axhline(np.mean([s["report"][key] for s in result.final]), color="C2", ls="--",
                       label="after single objective")
        for i, method in enumerate(dict.fromkeys(b["method"] for b in result.baselines)):
            if key != "fitness":
                ax.axhline(np.mean([b["report"][key] for b in result.baselines if b["method"] == method]),
                           color=f"C{(3 + i) % len(PALETTE)}", ls=":", label=method)
        ax.set_xlabel("round (index)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(x)
        if key == "active_units":  # a count: integer ticks only
            from matplotlib.ticker import MaxNLocator

            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
    axes[1].legend()
    fig.suptitle(_run_title(result), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _run_title(result) -> str:
    s2, lam = getattr(result, "decoder_variance", None), getattr(result, "lambda_max", None)
    beta = getattr(getattr(result.config, "objective", None), "beta", None)
    where = f"s2 = {s2:.3g}" + (f" ({s2 / lam:.3g} x lambda_max)" if lam else "") if s2 is not None else "s2 n/a"
    return f"HCT on {result.dataset}: {where}, beta = {beta}"


def plot_lineage(result, path: str) -> str:
    """Which slot was pruned and which parent it copied, per round; the consensus member is marked."""
    plt = _pyplot()
    p = result.config.population.size
    n_rounds = result.config.population.rounds
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * n_rounds, 1.1 + 0.35 * p))
    for event in result.lineage:
        r = event["round"]
        for slot, parent, new_id in zip(event["pruned"], event["parents"], event["new_ids"]):
            ax.annotate("", xy=(r + 1, slot), xytext=(r, parent),
                        arrowprops=dict(arrowstyle="->", color="C1", lw=1.2))
            ax.text(r + 1.05, slot + 0.15, f"c{new_id}", fontsize=7, color="C1")
    for r in range(1, n_rounds + 1):
        ax.scatter([r] * p, range(p), s=14, color="0.4", zorder=3)
    if result.consensus_member is not None and result.consensus_member >= 0:
        ax.scatter([n_rounds], [result.consensus_member], s=120, facecolors="none", edgecolors="C2", lw=2,
                   zorder=4, label=f"consensus (constraints {result.consensus_history})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_xlabel("round (index)")
    ax.set_xticks(range(1, n_rounds + 1))
    ax.set_ylabel("population slot (index)")
    ax.set_yticks(range(p))
    ax.set_title("lineage: pruned slot <- parent (new constraint id)")
    fig.tight_layout()
    return _save(fig, path)


def plot_latents(latents: dict, colours: np.ndarray | None, path: str, title: str = "") -> str:
    """Scatter of the first two latent coordinates of each named model ([N, d] arrays)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(latents), figsize=(4 * len(latents), 3.8), squeeze=False)
    cmap = categorical_cmap(int(np.max(colours)) + 1) if colours is not None and len(colours) else None
    for ax, (name, z) in zip(axes[0], latents.items()):
        z = np.asarray(z)
        y = z[:, 1] if z.shape[1] > 1 else np.zeros(len(z))
        ax.scatter(z[:, 0], y, c=colours, s=5, cmap=cmap, vmin=-0.5 if cmap else None,
                   vmax=cmap.N - 0.5 if cmap else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("z1, encoder mean (latent units)")
        ax.set_ylabel("z2, encoder mean (latent units)" if z.shape[1] > 1 else "(1-D latent: no second axis)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    # bbox "tight": legends outside the axes are kept; atomic: a crash never leaves half a figure
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path
