"""The HVAE sweeps of Dang et al. (arXiv 2306.05023) for the linear two-latent HVAE, trained vs closed form.

Data: ``hcjax.data.load_dataset("mnist5k")`` training digits (4,000; the paper
used the 60,000 of full MNIST), pixels in [0, 1], no centring (their
``MNISTDataset``; the model has no biases, so the theory uses E[x x^T]).

Model (their ``MNIST_HVAE_Linear_learnable_sigma_2.py``, :mod:`hcjax.theory.networks`):
d_0 = 784, d_1 = d_2 = 10, q(z1|x) with the FIXED standard deviation
sigma_1 = 0.5, q(z2|z1) with learned variances, eta_dec = 0.5; Adam lr 1e-3,
batch 128, clipping at global norm 0.1. The sweep is the full grid
beta_1 x beta_2 x eta_enc over {0.1, 0.5, 1, 2}^2 x {0.25, 0.5, 1, 2} (64 members,
ONE compiled program, :func:`hcjax.theory.fitting.train_epochs`); it contains the
README's one-at-a-time sweeps.

Closed form per member: :func:`hcjax.theory.hierarchical.optimum` (uncentred
1/N moment of the training rows). Compared: the singular values lambda_i of
W1 E[xx^T]^(1/2) and omega_i of U2 (mean absolute errors, their metrics), the
predicted z1 mean-active and z2 active counts against measured counts, and the
exact objective (:func:`hcjax.theory.hierarchical.negative_elbo`) at the trained
weights against the optimum.

The defaults are their optimiser (Adam 1e-3, constant, 100 epochs = 3,200 steps
on mnist5k instead of their 46,900). The run in RESULTS.md is
``python experiments/hvae_sweep.py --epochs 200 --lr 1e-2 --final-lr 1e-3``
(6,400 steps, the rate decaying exponentially); ``--epochs 1 --out /tmp/x`` is
a smoke test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hcjax._io import atomic_write_text
from hcjax.data import load_dataset
from hcjax.plotting import _pyplot, _save
from hcjax.theory import fitting, hierarchical, networks, published
from hcjax.vae import activity
from _command import save_and_show, write_command

H = published.MNIST_LINEAR_HVAE
SV_TOL = 1e-2  # a singular value below this counts as zero (mean-collapsed z1 mode / collapsed z2 decoder column)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("experiments", "results", "hvae_sweep"))
    parser.add_argument("--epochs", type=int, default=H["epochs"])
    parser.add_argument("--lr", type=float, default=H["learning_rate"])
    parser.add_argument("--final-lr", type=float, default=None, dest="final_lr",
                        help="decay the rate exponentially from --lr to this over the run (default: constant, theirs)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replot", action="store_true", help="only rebuild table.md and the figure from results.json")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.lr <= 0 or (args.final_lr or 1) <= 0:
        parser.error("--epochs, --lr and --final-lr must be positive")
    return args


def grid() -> list[dict]:
    return [{"beta1": b1, "beta2": b2, "eta_enc": e}
            for b1, b2, e in itertools.product(H["betas"], H["betas"], H["eta_encs"])]


def theory(M: np.ndarray, g: dict) -> dict:
    opt = hierarchical.optimum(M, H["d1"], H["d2"], H["eta_dec"] ** 2, H["sigma1"] ** 2, g["beta1"], g["beta2"],
                               g["eta_enc"])
    return {"lambda": opt.encoder_singular_values, "omega": np.sort(opt.decoder2_singular_values)[::-1],
            "z1_mean_active": int(opt.z1_mean_active.sum()), "z2_active": int(opt.z2_active.sum()),
            "kl2": opt.kl2, "objective": -opt.elbo}


def train(args, x: jax.Array, points: list[dict]):
    n = len(points)
    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    params = jax.vmap(lambda k: networks.init_linear_hvae(k, H["D"], H["d1"], H["d2"]))(jax.random.split(k_init, n))
    steps = args.epochs * -(-x.shape[0] // H["batch_size"])
    rate = args.lr if args.final_lr is None else optax.exponential_decay(args.lr, steps, args.final_lr / args.lr)
    optimizer = optax.chain(optax.clip_by_global_norm(H["grad_clip"]), optax.adam(rate))
    col = lambda name: jnp.asarray([g[name] for g in points], jnp.float32)  # noqa: E731
    hyper = {"beta": col("beta1"), "beta2": col("beta2"), "eta_enc2": col("eta_enc") ** 2,
             "eta_dec2": jnp.full(n, H["eta_dec"] ** 2), "sigma1_sq": jnp.full(n, H["sigma1"] ** 2)}
    state = fitting.init_state(params, optimizer, k_train)
    start = time.perf_counter()
    state, losses = fitting.train_epochs(state, hyper, x, loss_fn=networks.hvae_loss, optimizer=optimizer,
                                         num_epochs=args.epochs, batch_size=H["batch_size"], per_member_data=False)
    jax.block_until_ready(losses)
    return state.params, np.asarray(losses), np.asarray(state.nonfinite_steps), time.perf_counter() - start


@jax.jit
def measure(params, eta_enc2, x, key):
    """Per member: z1 He AU (Var_x W1 x), z2 activity metrics with z1 ~ q(z1|x) (one draw per row)."""

    def one(args):
        p, e2, k = args
        mu1 = x @ p["W1"].T
        z1 = mu1 + H["sigma1"] * jax.random.normal(k, mu1.shape)
        mu2 = z1 @ p["W2"].T
        kl2 = activity.gaussian_kl_per_dim(mu2, jnp.broadcast_to(p["log_s2"], mu2.shape), e2)
        return {"z1_he_active_units": activity.he_active_units(mu1), "z2_he_active_units": activity.he_active_units(mu2),
                "z2_dang_active_fraction": activity.dang_active_fraction(kl2),
                "z2_linear_collapse_count": activity.linear_collapse_count(mu2, kl2), "kl2": jnp.mean(kl2, 0)}

    return jax.lax.map(one, (params, eta_enc2, jax.random.split(key, eta_enc2.shape[0])))


def compare(M: np.ndarray, points, th, params, measured, losses, skipped) -> list[dict]:
    root = np.linalg.cholesky(M + 1e-12 * np.trace(M) * np.eye(M.shape[0]))  # M = R R^T: sv(W1 R) = sv(W1 M^1/2)
    rows = []
    for m, (g, t) in enumerate(zip(points, th)):
        p = {k: np.asarray(v[m], np.float64) for k, v in params.items()}
        lam = np.linalg.svd(p["W1"] @ root, compute_uv=False)
        omega = np.linalg.svd(p["U2"], compute_uv=False)
        objective = hierarchical.negative_elbo(p["W1"], p["U1"], p["W2"], p["U2"], np.exp(p["log_s2"]), M,
                                               H["eta_dec"] ** 2, H["sigma1"] ** 2, g["beta1"], g["beta2"],
                                               g["eta_enc"])
        got = {k: np.asarray(v[m]) for k, v in measured.items()}
        rows.append(g | {"theory": t, "trained": got | {
            "lambda": lam, "omega": omega, "objective": objective,
            "z1_mean_active_sv": int(np.sum(lam > SV_TOL)), "z2_active_sv": int(np.sum(omega > SV_TOL)),
            "z2_active_by_collapse_count": H["d2"] - int(got["z2_linear_collapse_count"])},
            "lambda_mae": float(np.mean(np.abs(lam - t["lambda"]))), "omega_mae": float(np.mean(np.abs(omega - t["omega"]))),
            "lambda_rel_mae": float(np.mean(np.abs(lam - t["lambda"])) / max(np.mean(t["lambda"]), 1e-12)),
            "objective_gap": float(objective - t["objective"]), "final_epoch_loss": float(losses[-1, m]),
            "nonfinite_steps": int(skipped[m])})
    return rows


def write_table(out: str, result: dict, command: str) -> list[str]:
    rows = result["rows"]
    lines = ["# Linear two-latent HVAE on MNIST (arXiv 2306.05023 sweeps): trained vs closed form\n",
             f"Command: `{command}`\n",
             f"Settings: {json.dumps(result['settings'])}; {result['train_rows']} training rows (mnist5k; the paper: "
             f"60,000), {result['steps']} steps (the paper: 100 epochs x 469 = 46,900).\n",
             "lambda: singular values of W1 E[xx^T]^(1/2); omega: of U2; MAE over the 10 sorted values. z1 mean-active: "
             f"#{{lambda_i > {SV_TOL}}} (trained) vs #{{m_i > sigma1^2}} (closed form). z2 active: #{{omega_i > {SV_TOL}}} "
             "(trained) vs the closed form's z2_active; '10 - collapsed' uses the linear-CVAE collapse count on z2 "
             "(mean|mu2_j| <= 1e-4 or mean KL2_j <= 1e-4, z1 drawn from q(z1|x)); He AU(z1) = #{Var_x E[z1_j|x] "
             ">= 0.01}. Objective: exact F (nats/row) at the trained weights minus the closed-form minimum.\n",
             "'z2 mean KL >= 0.01' counts z2 latents whose mean KL(q(z2_j|z1) || p(z2_j)) is >= 0.01 nats.\n",
             "| beta1 | beta2 | eta_enc | z1 mean-active pred / trained | He AU(z1) | z2 active pred / trained | "
             "z2: 10 - collapsed | z2 mean KL >= 0.01 | lambda MAE (rel) | omega MAE | objective gap |",
             "|" + "---|" * 11]
    for r in rows:
        t, g = r["theory"], r["trained"]
        lines.append(f"| {r['beta1']:g} | {r['beta2']:g} | {r['eta_enc']:g} | {t['z1_mean_active']} / "
                     f"{g['z1_mean_active_sv']} | {g['z1_he_active_units']} | {t['z2_active']} / {g['z2_active_sv']} | "
                     f"{g['z2_active_by_collapse_count']} | {int(np.sum(np.asarray(g['kl2']) >= 0.01))} | "
                     f"{r['lambda_mae']:.3f} ({r['lambda_rel_mae']:.3f}) | "
                     f"{r['omega_mae']:.3f} | {r['objective_gap']:.3f} |")
    agree_z1 = sum(r["theory"]["z1_mean_active"] == r["trained"]["z1_mean_active_sv"] for r in rows)
    agree_z2 = sum(r["theory"]["z2_active"] == r["trained"]["z2_active_sv"] for r in rows)
    agree_kl = sum(r["theory"]["z2_active"] == int(np.sum(np.asarray(r["trained"]["kl2"]) >= 0.01)) for r in rows)
    lam = np.array([r["lambda_rel_mae"] for r in rows])
    gap = np.array([r["objective_gap"] for r in rows])
    lines.append(f"\nCounts agree in {agree_z1}/{len(rows)} members (z1), {agree_z2}/{len(rows)} (z2, omega > {SV_TOL}) "
                 f"and {agree_kl}/{len(rows)} (z2, mean KL >= 0.01). "
                 f"Relative lambda MAE: median {np.median(lam):.3f}, max {lam.max():.3f}. Objective gap: median "
                 f"{np.median(gap):.3f}, max {gap.max():.3f} nats/row. Top theta_i^2 (eigenvalues of E[xx^T]): "
                 f"{', '.join(f'{v:.2f}' for v in result['eigenvalues'][:11])}. Wall time: {json.dumps(result['seconds'])} s.\n")
    atomic_write_text(os.path.join(out, "table.md"), "\n".join(lines) + "\n")
    return lines


def plot(out: str, result: dict) -> list[str]:
    plt = _pyplot()
    rows = result["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(14.0, 4.2))
    for ax, key, name in ((axes[0], "lambda", "lambda_i (encoder, sv of W1 M^1/2)"),
                          (axes[1], "omega", "omega_i (decoder p(z1|z2), sv of U2)")):
        t = np.concatenate([r["theory"][key] for r in rows])
        g = np.concatenate([r["trained"][key] for r in rows])
        c = np.concatenate([[np.log2(r["beta2"] / r["beta1"])] * len(r["theory"][key]) for r in rows])
        sc = ax.scatter(t, g, c=c, s=6, cmap="coolwarm")
        hi = max(t.max(), g.max()) * 1.05
        ax.plot([0, hi], [0, hi], "k-", lw=0.6)
        ax.set_xlabel(f"closed form {name}")
        ax.set_ylabel(f"trained {name}")
        ax.set_title(f"{key}: all 64 members x 10 modes", fontsize=9)
    fig.colorbar(sc, ax=axes[1], label="log2(beta2 / beta1)")
    ax = axes[2]
    pos = np.arange(len(rows))
    ax.plot(pos, [r["theory"]["z2_active"] for r in rows], "k_", ms=8, label="z2 active, closed form")
    ax.plot(pos, [r["trained"]["z2_active_sv"] for r in rows], "C3.", ms=4, label="z2 active, trained (omega > 0.01)")
    ax.plot(pos, [r["theory"]["z1_mean_active"] for r in rows], "C0_", ms=8, label="z1 mean-active, closed form")
    ax.plot(pos, [r["trained"]["z1_mean_active_sv"] for r in rows], "C0x", ms=3, label="z1 mean-active, trained")
    ax.set_xticks(pos[::4], [f"{r['beta1']:g},{r['beta2']:g}" for r in rows][::4], rotation=90, fontsize=6)
    ax.set_xlabel("member (beta1, beta2); 4 eta_enc values each")
    ax.set_ylabel("active latent dimensions (count, of 10)")
    ax.set_ylim(-0.5, 11)
    ax.legend(fontsize=6)
    fig.suptitle("Linear HVAE on MNIST (mnist5k), d1 = d2 = 10, sigma1 = 0.5, eta_dec = 0.5", fontsize=10)
    fig.tight_layout()
    return [_save(fig, os.path.join(out, "hvae_sweep.png"))]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.replot:
        with open(os.path.join(args.out, "results.json")) as f:
            result = json.load(f)
        write_command(args.out, __file__, argv, append=True)
        with open(os.path.join(args.out, "COMMAND.txt")) as f:
            command = "`, then `".join(f.read().splitlines())  # the training run, then the rebuild
        print("\n".join(write_table(args.out, result, command)))
        print("figure:", plot(args.out, result)[0])
        return 0
    command = write_command(args.out, __file__, argv)
    start = time.perf_counter()
    x = np.asarray(load_dataset("mnist5k").train, np.float64)
    M = x.T @ x / x.shape[0]
    points = grid()
    th = [theory(M, g) for g in points]
    params, losses, skipped, train_s = train(args, jnp.asarray(x, jnp.float32), points)
    print(f"{len(points)} members x {args.epochs} epochs trained in {train_s:.0f}s", flush=True)
    eta_enc2 = jnp.asarray([g["eta_enc"] ** 2 for g in points], jnp.float32)
    measured = jax.tree.map(np.asarray, measure(params, eta_enc2, jnp.asarray(x, jnp.float32), jax.random.key(7)))
    result = {"settings": vars(args) | {k: H[k] for k in ("D", "d1", "d2", "batch_size", "grad_clip", "eta_dec", "sigma1")},
              "train_rows": int(x.shape[0]), "steps": int(args.epochs * -(-x.shape[0] // H["batch_size"])),
              "eigenvalues": np.sort(np.linalg.eigvalsh(M))[::-1][:20],
              "rows": compare(M, points, th, params, measured, losses, skipped), "loss_curve": losses.tolist(),
              "seconds": {"train": train_s, "total": time.perf_counter() - start}}
    save_and_show(args.out, result, write_table, plot, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
