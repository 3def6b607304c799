"""Figures (matplotlib, imported lazily: install the ``plot`` extra).

Every function writes one PNG and returns its path. They read plain results
(:class:`hcjax.hct.HCTResult` and NumPy arrays), never train anything.
"""

from __future__ import annotations


import numpy as np

from hcjax._io import atomic_write_with

__all__ = ["plot_rounds", "plot_lineage", "plot_latents"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'hcjax[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rounds(result, path: str) -> str:
    """Fitness, mutual information and active units of every member per round (+ final phase and baselines)."""
    plt = _pyplot()
    rounds = [r for r in result.rounds if r["phase"] == "rounds"]
    x = np.arange(1, len(rounds) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(axes, ("fitness", "mutual_info", "active_units"),
                              ("fitness (held-out)", "mutual information (nats)", "active units")):
        vals = np.asarray([r[key] for r in rounds], float)  # [R, P]
        for i in range(vals.shape[1]):
            ax.plot(x, vals[:, i], "-o", ms=3, color="0.6", lw=0.8)
        ax.plot(x, np.nanmedian(vals, axis=1), "-", color="C0", lw=2, label="median member")
        if key != "fitness" and result.final:
            ax.axhline(np.mean([s["report"][key] for s in result.final]), color="C2", ls="--",
                       label="after single objective")
        for i, method in enumerate(dict.fromkeys(b["method"] for b in result.baselines)):
            if key != "fitness":
                ax.axhline(np.mean([b["report"][key] for b in result.baselines if b["method"] == method]),
                           color=f"C{3 + i}", ls=":", label=method)
        ax.set_xlabel("round")
        ax.set_xticks(x)
        ax.set_title(label, fontsize=10)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"HCT on {result.dataset}: s2 = {result.decoder_variance:.3g} "
                 f"({result.decoder_variance / result.lambda_max:.3g} x lambda_max), "
                 f"beta = {result.config.objective.beta}",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_lineage(result, path: str) -> str:
    """Which slot was pruned and which parent it copied, per round; the consensus member is marked."""
    plt = _pyplot()
    p = result.config.population.size
    n_rounds = result.config.population.rounds
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * n_rounds, 0.9 + 0.35 * p))
    for event in result.lineage:
        r = event["round"]
        for slot, parent, new_id in zip(event["pruned"], event["parents"], event["new_ids"]):
            ax.annotate("", xy=(r + 1, slot), xytext=(r, parent),
                        arrowprops=dict(arrowstyle="->", color="C1", lw=1.2))
            ax.text(r + 1.05, slot + 0.15, f"c{new_id}", fontsize=7, color="C1")
    for r in range(1, n_rounds + 1):
        ax.scatter([r] * p, range(p), s=14, color="0.4", zorder=3)
    if result.consensus_member >= 0:
        ax.scatter([n_rounds], [result.consensus_member], s=120, facecolors="none", edgecolors="C2", lw=2,
                   zorder=4, label=f"consensus (constraints {result.consensus_history})")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.12))
    ax.set_xlabel("round")
    ax.set_xticks(range(1, n_rounds + 1))
    ax.set_ylabel("population slot")
    ax.set_yticks(range(p))
    ax.set_title("lineage: pruned slot <- parent (new constraint id)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_latents(latents: dict, colours: np.ndarray | None, path: str, title: str = "") -> str:
    """Scatter of the first two latent coordinates of each named model ([N, d] arrays)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(latents), figsize=(4 * len(latents), 3.8), squeeze=False)
    for ax, (name, z) in zip(axes[0], latents.items()):
        z = np.asarray(z)
        y = z[:, 1] if z.shape[1] > 1 else np.zeros(len(z))
        ax.scatter(z[:, 0], y, c=colours, s=5, cmap="tab10")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("z1")
        ax.set_ylabel("z2" if z.shape[1] > 1 else "")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=120))  # a crash never leaves half a figure
    plt.close(fig)
    return path
