"""The synthetic CVAE experiment of Dang et al. (arXiv 2306.05023) at the published size: theory vs training.

Settings (their ``Synthetic_CVAE_Relu_correlation.py`` and ``datasets.py``,
:data:`hcjax.theory.published.SYNTHETIC_CVAE`): y ~ N(0, I_128), N = 1,000 rows,
x per case of :data:`hcjax.theory.published.CVAE_CASES` (identical; y/8 +
(sqrt 63/8) xi; y/4 + ...; y/2 + ...; independent; quadratic x = y^2 - 1);
d_x = d_y = d_z = hidden = 128, eta_enc = 1, eta_dec = 0.5, beta = 1; Adam
lr 1e-3, batch 16 (shuffled epochs, last batch short), gradient clipping at
global norm 0.01, 1,000 epochs. Two model families
(:mod:`hcjax.theory.networks`): their ReLU CVAE and the linear CVAE of the
closed form (their linear-CVAE parameterisation, no biases).

Every (case, seed) is one member with its own data set; each family is ONE
compiled program (:func:`hcjax.theory.fitting.train_epochs`: scan over epochs
and steps of vmapped members). The loss is the beta = 1 negative ELBO in nats
(their script's loss, ||y - mu_y||^2 / eta_dec^2 + beta KL, drops the 1/2 of
the Gaussian log-likelihood, i.e. it trains at an effective beta of 1/2; see
RESULTS.md).

Prediction, per member from its own rows (:func:`hcjax.theory.conditional.optimum`,
uncentred 1/N moments as their ``calculate_ZDE_CVAE``): latent i active iff
theta_i(E) > beta eta_dec^2 = 0.25. Measurement on the training rows, three
definitions (:mod:`hcjax.vae.activity`): He et al.'s active-unit count, Dang et
al.'s active fraction, and the linear-CVAE collapse count (mean |mu| or mean KL
<= 1e-4); for the linear CVAE also the decoder singular values against the
closed form (mean absolute error, their "lambda metric") and the exact ln p(y|x);
for both, the importance-sampled NLL of p(y|x) (K samples from q(z|x,y), their
estimator) on the training rows (as theirs) and on 1,000 fresh rows.

Run one family per invocation (linear: 5 minutes; ReLU: 10 to 17 minutes on 2 shared CPU cores):
``python experiments/cvae_published.py --family linear`` then ``--family relu``;
each writes ``results_<family>.json`` and rebuilds ``table.md`` and the figures
from every results file present (without ``--family`` only that rebuild runs).
The column "predicted at their loss's beta = 1/2" counts theta_i > 0.125, the
threshold their script's loss actually has. ``--epochs 5 --seeds 1 --out /tmp/x`` is a smoke test.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hcjax._io import atomic_write_json, atomic_write_text
from hcjax.plotting import _pyplot, _save
from hcjax.theory import conditional, fitting, networks, published
from hcjax.vae import activity
from _command import write_command

S = published.SYNTHETIC_CVAE
CASES = list(published.CVAE_CASES)
FAMILIES = {"linear": (networks.linear_cvae_encode, networks.linear_cvae_decode),
            "relu": (networks.relu_cvae_encode, networks.relu_cvae_decode)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=sorted(FAMILIES),
                        help="train and measure this family; without it, only rebuild the table and figures")
    parser.add_argument("--out", default=os.path.join("experiments", "results", "cvae_published"))
    parser.add_argument("--epochs", type=int, default=S["epochs"])
    parser.add_argument("--seeds", type=int, default=2, help="data sets and initialisations per case")
    parser.add_argument("--nll-samples", type=int, default=S["nll_samples"], dest="nll_samples")
    parser.add_argument("--seed", type=int, default=S["seed"])
    args = parser.parse_args(argv)
    for name in ("epochs", "seeds", "nll_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def make_data(args) -> tuple[list[dict], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Members (case, seed) and their training and fresh rows, [P, N, 128] each."""
    members, train, fresh = [], [], []
    for s in range(args.seeds):
        for c, case in enumerate(CASES):
            rng = np.random.default_rng([args.seed, s, c])
            train.append(published.synthetic_cvae_pair(case, S["num_samples"], S["dim"], rng))
            fresh.append(published.synthetic_cvae_pair(case, S["num_samples"], S["dim"], rng))
            members.append({"case": case, "seed": s})
    stack = lambda pairs: (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))  # noqa: E731
    return members, stack(train), stack(fresh)


def theory(x: np.ndarray, y: np.ndarray) -> dict:
    """Closed form from one member's rows: theta, predicted active count, KLs, decoder singular values, NLL."""
    eta2, beta, d = S["eta_dec"] ** 2, S["beta"], S["dim"]
    opt = conditional.optimum(conditional.conditional_moments(x, y), d, eta2, beta, S["eta_enc"])
    params = {"U1": jnp.asarray(opt.U1, jnp.float32), "U2": jnp.asarray(opt.U2, jnp.float32)}
    nll = -np.mean(np.asarray(networks.linear_cvae_log_marginal(params, jnp.asarray(x), jnp.asarray(y), eta2,
                                                                S["eta_enc"] ** 2)))
    return {"theta": opt.theta[:d], "predicted_active": int(opt.active.sum()), "kl": opt.kl,
            "singular_values": np.sort(opt.decoder_singular_values)[::-1], "elbo": opt.elbo, "nll_train": nll,
            "theta_margin": float(np.min(np.abs(opt.theta[:d] - beta * eta2)))}


def train(args, family: str, data, num_members: int):
    """Train the family's population; returns (params [P, ...], per-epoch loss [E, P], skipped steps [P], s)."""
    encode, decode = FAMILIES[family]
    d = S["dim"]
    if family == "linear":
        init = lambda k: networks.init_linear_cvae(k, d, d, d)  # noqa: E731
    else:
        init = lambda k: networks.init_relu_cvae(k, d, d, d, S["hidden"])  # noqa: E731
    key = jax.random.key(args.seed)
    k_init, k_train = jax.random.split(jax.random.fold_in(key, list(FAMILIES).index(family)))
    params = jax.vmap(init)(jax.random.split(k_init, num_members))
    optimizer = optax.chain(optax.clip_by_global_norm(S["grad_clip"]), optax.adam(S["learning_rate"]))
    hyper = {"beta": jnp.full(num_members, S["beta"]), "eta_dec2": jnp.full(num_members, S["eta_dec"] ** 2),
             "eta_enc2": jnp.full(num_members, S["eta_enc"] ** 2)}
    loss_fn = functools.partial(networks.cvae_loss, encode, decode)
    state = fitting.init_state(params, optimizer, k_train)
    start = time.perf_counter()
    state, losses = fitting.train_epochs(state, hyper, tuple(map(jnp.asarray, data)), loss_fn=loss_fn,
                                         optimizer=optimizer, num_epochs=args.epochs, batch_size=S["batch_size"],
                                         per_member_data=True)
    jax.block_until_ready(losses)
    return state.params, np.asarray(losses), np.asarray(state.nonfinite_steps), time.perf_counter() - start


@functools.partial(jax.jit, static_argnames=("family", "num_samples"))
def measure(family: str, params, x, y, fresh_x, fresh_y, key, num_samples: int):
    """Per member (lax.map, bounded memory): the three activity metrics, per-dim mean KL, IS NLL (train, fresh)."""
    encode, decode = FAMILIES[family]
    eta2, eta_enc2 = S["eta_dec"] ** 2, S["eta_enc"] ** 2

    def one(args):
        p, xm, ym, fx, fy, k = args
        mu, log_var = encode(p, xm, ym)
        kl = activity.gaussian_kl_per_dim(mu, log_var, eta_enc2)
        nll = lambda a, b, kk: -jnp.mean(networks.cvae_log_marginal_is(  # noqa: E731
            encode, decode, p, a, b, kk, eta2, eta_enc2, num_samples, min(num_samples, 50)))
        k1, k2 = jax.random.split(k)
        return {"he_active_units": activity.he_active_units(mu), "dang_active_fraction":
                activity.dang_active_fraction(kl), "linear_collapse_count": activity.linear_collapse_count(mu, kl),
                "collapsed_by_mean": jnp.sum(activity.collapsed_by_mean(mu)),
                "collapsed_by_kl": jnp.sum(activity.collapsed_by_kl(kl)), "kl_per_dim": jnp.mean(kl, 0),
                "nll_is_train": nll(xm, ym, k1), "nll_is_fresh": nll(fx, fy, k2)}

    keys = jax.random.split(key, x.shape[0])
    return jax.lax.map(one, (params, x, y, fresh_x, fresh_y, keys))


def linear_extras(params, x, y, fresh_x, fresh_y) -> list[dict]:
    """Linear CVAE only: trained decoder singular values, exact NLL (train, fresh) and exact -ELBO per member."""
    eta2, eta_enc2 = S["eta_dec"] ** 2, S["eta_enc"] ** 2
    log_marg = jax.jit(jax.vmap(lambda p, a, b: networks.linear_cvae_log_marginal(p, a, b, eta2, eta_enc2)))
    nll_train = -np.asarray(log_marg(params, x, y)).mean(1)
    nll_fresh = -np.asarray(log_marg(params, fresh_x, fresh_y)).mean(1)
    out = []
    for m in range(x.shape[0]):
        p = {k: np.asarray(v[m], np.float64) for k, v in params.items()}
        moments = conditional.conditional_moments(np.asarray(x[m]), np.asarray(y[m]))
        neg = conditional.negative_elbo(p["W1"], p["W2"], np.exp(p["log_var"]), p["U1"], p["U2"], moments, eta2,
                                        S["beta"], S["eta_enc"])
        out.append({"singular_values": np.linalg.svd(p["U1"], compute_uv=False), "nll_exact_train": nll_train[m],
                    "nll_exact_fresh": nll_fresh[m], "elbo_exact": -neg})
    return out


def member_rows(members, th, measured, extras, losses, skipped) -> list[dict]:
    rows = []
    for m, member in enumerate(members):
        got = {k: np.asarray(v[m]).tolist() for k, v in measured.items()}
        row = member | {"theory": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in th[m].items()},
                        "trained": got, "final_epoch_loss": float(losses[-1, m]), "nonfinite_steps": int(skipped[m])}
        row["trained"]["active_by_collapse_count"] = S["dim"] - got["linear_collapse_count"]
        if extras is not None:
            e = extras[m]
            row["trained"] |= {k: (v.tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in e.items()}
            row["trained"]["singular_value_mae"] = float(np.mean(np.abs(e["singular_values"] - th[m]["singular_values"])))
            row["trained"]["kl_sorted_mae"] = float(np.mean(np.abs(np.sort(got["kl_per_dim"])[::-1] - th[m]["kl"])))
        rows.append(row)
    return rows


def run_family(args) -> dict:
    members, (x, y), (fx, fy) = make_data(args)
    th = [theory(x[m], y[m]) for m in range(len(members))]
    params, losses, skipped, seconds = train(args, args.family, (x, y), len(members))
    print(f"{args.family}: {len(members)} members x {args.epochs} epochs trained in {seconds:.0f}s", flush=True)
    start = time.perf_counter()
    xs = tuple(map(jnp.asarray, (x, y, fx, fy)))
    measured = measure(args.family, params, *xs, jax.random.key(args.seed + 1), args.nll_samples)
    measured = jax.block_until_ready(measured)
    extras = linear_extras(params, *xs) if args.family == "linear" else None
    eval_seconds = time.perf_counter() - start
    rows = member_rows(members, th, jax.tree.map(np.asarray, measured), extras, losses, skipped)
    return {"family": args.family, "settings": S | {"epochs": args.epochs, "seeds": args.seeds,
                                                    "nll_samples": args.nll_samples, "seed": args.seed},
            "seconds": {"train": seconds, "evaluate": eval_seconds}, "loss_curve": losses.tolist(), "members": rows}


def _by_case(results: dict, family: str, getter) -> dict[str, list]:
    rows = results.get(family, {}).get("members", [])
    return {case: [getter(r) for r in rows if r["case"] == case] for case in CASES}


def _fmt(values, spec="{:.0f}") -> str:
    if not values:
        return "-"
    return " / ".join("non-finite" if v is None or not np.isfinite(v) else spec.format(v) for v in values)


def write_tables(out: str, results: dict, commands: str) -> list[str]:
    lin, relu = results.get("linear"), results.get("relu")
    src = lin or relu
    lines = [f"# Synthetic CVAE at the published size (arXiv 2306.05023)\n\nCommands:\n```\n{commands}```\n",
             f"Settings: {json.dumps({k: src['settings'][k] for k in ('num_samples', 'dim', 'epochs', 'seeds', 'batch_size', 'learning_rate', 'grad_clip', 'eta_enc', 'eta_dec', 'beta', 'nll_samples')})}. "
             "Values per seed are separated by ' / '. Prediction: #{theta_i(E) > beta eta_dec^2 = 0.25} from each "
             "member's own rows. Metric definitions (hcjax.vae.activity): **He AU** = #{j: Var_x E[z_j|x,y] >= 0.01} "
             "(unbiased variance, a count); **128 - collapsed** = 128 minus the linear-CVAE collapse count "
             "#{j: mean|mu_j| <= 1e-4 or mean KL_j <= 1e-4}; **Dang AU** = fraction of per-sample, per-dimension "
             "KL values >= 0.01 (a fraction in [0, 1], not a count).\n",
             "## Active latent dimensions: predicted vs trained\n",
             "| case | min theta (empirical) | predicted active | predicted at their loss's beta = 1/2 | linear He AU "
             "| linear 128 - collapsed | linear Dang AU | ReLU He AU | ReLU 128 - collapsed | ReLU Dang AU |",
             "|" + "---|" * 10]
    th = _by_case(results, "linear" if lin else "relu", lambda r: r["theory"])
    for case in CASES:
        cell = lambda fam, key, spec="{:.0f}": _fmt(_by_case(results, fam, lambda r: r["trained"][key])[case], spec)  # noqa: E731
        lines.append(f"| {case} | {_fmt([min(t['theta']) for t in th[case]], '{:.3f}')} | "
                     f"{_fmt([t['predicted_active'] for t in th[case]])} | "
                     f"{_fmt([int(np.sum(np.asarray(t['theta']) > 0.5 * S['beta'] * S['eta_dec'] ** 2)) for t in th[case]])} | "
                     f"{cell('linear', 'he_active_units')} | "
                     f"{cell('linear', 'active_by_collapse_count')} | {cell('linear', 'dang_active_fraction', '{:.3f}')} | "
                     f"{cell('relu', 'he_active_units')} | {cell('relu', 'active_by_collapse_count')} | "
                     f"{cell('relu', 'dang_active_fraction', '{:.3f}')} |")
    lines += ["\n## Linear CVAE against the closed form; NLL of p(y|x) (nats per row)\n",
              "| case | decoder singular-value MAE | sorted per-dim KL MAE | ELBO closed form | ELBO trained (exact) "
              "| NLL closed form (train rows) | NLL trained exact (train / fresh) | NLL trained IS (train / fresh) "
              "| ReLU NLL IS (train / fresh) |", "|" + "---|" * 9]
    for case in CASES:
        g = lambda fam, key: _by_case(results, fam, lambda r: r["trained"][key])[case]  # noqa: E731
        pair = lambda fam, a, b: f"{_fmt(g(fam, a), '{:.2f}')} // {_fmt(g(fam, b), '{:.2f}')}" if g(fam, a) else "-"  # noqa: E731
        lines.append(f"| {case} | {_fmt(g('linear', 'singular_value_mae'), '{:.4f}')} | "
                     f"{_fmt(g('linear', 'kl_sorted_mae'), '{:.4f}')} | {_fmt([t['elbo'] for t in th[case]], '{:.2f}')} | "
                     f"{_fmt(g('linear', 'elbo_exact'), '{:.2f}')} | {_fmt([t['nll_train'] for t in th[case]], '{:.2f}')} | "
                     f"{pair('linear', 'nll_exact_train', 'nll_exact_fresh')} | {pair('linear', 'nll_is_train', 'nll_is_fresh')} | "
                     f"{pair('relu', 'nll_is_train', 'nll_is_fresh')} |")
    lines.append("\n(' // ' separates training rows from 1,000 fresh rows; ' / ' separates seeds.)")
    timing = {f: results[f]["seconds"] for f in results}
    lines.append(f"\nWall time (s): {json.dumps(timing)}\n")
    atomic_write_text(os.path.join(out, "table.md"), "\n".join(lines) + "\n")
    return lines


def plot_active(out: str, results: dict) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11.5, 4.2))
    fam0 = "linear" if "linear" in results else "relu"
    series = [("predicted (theta > 0.25)", fam0, lambda r: r["theory"]["predicted_active"], "0.3"),
              ("linear: He AU", "linear", lambda r: r["trained"]["he_active_units"], "tab:blue"),
              ("linear: 128 - collapsed", "linear", lambda r: r["trained"]["active_by_collapse_count"], "lightskyblue"),
              ("ReLU: He AU", "relu", lambda r: r["trained"]["he_active_units"], "tab:red"),
              ("ReLU: 128 - collapsed", "relu", lambda r: r["trained"]["active_by_collapse_count"], "lightsalmon")]
    pos, w = np.arange(len(CASES)), 0.16
    for i, (label, fam, get, colour) in enumerate(series):
        vals = _by_case(results, fam, get)
        if not any(vals.values()):
            continue
        mean = np.array([np.mean(vals[c]) for c in CASES])
        err = np.array([[mean[j] - min(vals[c]), max(vals[c]) - mean[j]] for j, c in enumerate(CASES)]).T
        ax.bar(pos + (i - 2) * w, mean, w, yerr=err, label=label, color=colour, edgecolor="k", lw=0.3, capsize=2)
    for fam, colour, dx in (("linear", "navy", -0.5), ("relu", "darkred", 1.5)):
        vals = _by_case(results, fam, lambda r: 128 * r["trained"]["dang_active_fraction"])
        if any(vals.values()):
            ax.plot(pos + dx * w, [np.mean(vals[c]) for c in CASES], "D", color=colour, ms=5,
                    label=f"{fam}: 128 x Dang AU fraction")
    ax.set_xticks(pos, CASES)
    ax.set_xlabel("condition x (case of datasets.py)")
    ax.set_ylabel("active latent dimensions (count, of 128)")
    ax.set_ylim(0, 132)
    ax.set_title("Synthetic CVAE, N = 1000, d = 128, eta_dec = 0.5, beta = 1 (bars: seed mean; whiskers: range)",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, os.path.join(out, "active_dimensions.png"))


def plot_singular_values(out: str, results: dict) -> str | None:
    if "linear" not in results:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 6.0), sharex=True)
    for ax, case in zip(axes.ravel(), CASES):
        row = next(r for r in results["linear"]["members"] if r["case"] == case and r["seed"] == 0)
        idx = np.arange(1, S["dim"] + 1)
        ax.plot(idx, row["theory"]["singular_values"], "k-", lw=1.5, label="closed form")
        ax.plot(idx, row["trained"]["singular_values"], "C0.", ms=3, label="trained linear CVAE")
        ax.set_title(f"{case} (seed 0)", fontsize=9)
        ax.set_xlabel("index i (descending)")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("singular value of U1\n(y units per unit of z)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Decoder singular values sqrt(max(0, theta_i - beta eta_dec^2)) / eta_enc vs trained", fontsize=10)
    fig.tight_layout()
    return _save(fig, os.path.join(out, "singular_values.png"))


def plot_loss(out: str, results: dict) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(5.0 * len(results), 3.6), squeeze=False)
    for ax, (fam, res) in zip(axes[0], sorted(results.items())):
        curve = np.asarray(res["loss_curve"], dtype=float)
        for m, row in enumerate(res["members"]):
            ax.plot(np.arange(1, curve.shape[0] + 1), curve[:, m], lw=0.8, color=f"C{CASES.index(row['case'])}",
                    label=row["case"] if row["seed"] == 0 else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss, -ELBO (nats per row)")
        ax.set_title(f"{fam} CVAE", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, os.path.join(out, "loss_curves.png"))


def load_results(out: str) -> dict:
    results = {}
    for fam in FAMILIES:
        path = os.path.join(out, f"results_{fam}.json")
        if os.path.exists(path):
            with open(path) as f:
                results[fam] = json.load(f)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    write_command(args.out, __file__, argv, append=True)
    if args.family:
        start = time.perf_counter()
        result = run_family(args)
        result["seconds"]["total"] = time.perf_counter() - start
        atomic_write_json(os.path.join(args.out, f"results_{args.family}.json"), result, indent=1)
        print(f"{args.family}: total {result['seconds']['total']:.0f}s")
    results = load_results(args.out)
    if not results:
        raise SystemExit(f"no results_<family>.json in {args.out}: run with --family first")
    with open(os.path.join(args.out, "COMMAND.txt")) as f:
        commands = f.read()
    print("\n".join(write_tables(args.out, results, commands)))
    for fig in (plot_active(args.out, results), plot_singular_values(args.out, results), plot_loss(args.out, results)):
        if fig:
            print("figure:", fig)
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
