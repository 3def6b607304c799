"""Correlation-driven posterior collapse in conditional VAEs (the linear-CVAE setting of 2306.05023).

Data per setting: y ~ N(0, I_dy) and a condition x in R^dx (dx = dy):

* ``rho = r``: x = r y + sqrt(1 - r^2) xi, xi ~ N(0, I) (the published values
  r = 1/8, 1/4, 1/2, plus r = 0.8, 0.85, 0.9 added here to cross the
  threshold, which the published values do not reach);
* ``x = y``; ``x independent`` (x = xi).

Model (no biases, matching :mod:`hcjax.theory.conditional`): encoder
q(z|x,y) = N(mu(x,y), diag(s^2)), decoder p(y|x,z) = N(g(z,x), eta_dec^2 I)
with eta_dec = 0.5 (fixed), prior N(0, I), beta = 1. Two families:

* linear CVAE: mu = W1 x + W2 y, s^2 a free vector, g = U1 z + U2 x (the
  model of the closed form);
* ReLU CVAE: one hidden ReLU layer of width ``--hidden`` in the encoder
  (input (x, y), outputs mu and log s^2) and in the decoder (input (z, x)).

Prediction (:func:`hcjax.theory.conditional.optimum` on the empirical, 1/N,
uncentred moments of each training set): latent i collapses iff
theta_i <= beta eta_dec^2 = 0.25, theta the eigenvalues of
E = E[yy^T] - E[yx^T] E[xx^T]^-1 E[xy^T]. For the population moments
E = (1 - rho^2) I, so no latent collapses for rho^2 < 0.75, all do for
rho^2 > 0.75 and for x = y, none for independent x.

Training: every setting is one member of a population trained by ONE jitted
``lax.scan`` over steps of ``vmap`` over settings: Adam with an exponentially
decaying learning rate, minibatches drawn with replacement from the setting's
own training set, a 1-sample reparameterised reconstruction term and the exact
Gaussian KL. Measurement on the whole training set: latent j counts as
collapsed iff its mean KL(q(z_j|x,y) || N(0,1)) < 0.01 nats (also reported:
the (eps = 0.01, delta = 0.01)-collapse of Lucas et al.).

The published setting uses dy = 128; the default here is dy = dx = dz = 32 so
that the whole run takes a few minutes on 2 CPU cores (``--dim 128`` runs the
full size). Outputs in ``--out``: results.json, table.md, table.csv,
cvae_correlation.png, COMMAND.txt.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hcjax._constants import LOG_2PI
from hcjax.theory import conditional as lc
from _command import write_command

ETA_DEC = 0.5
BETA = 1.0
KL_COLLAPSE = 0.01
SETTINGS = [("rho=1/8", 0.125), ("rho=1/4", 0.25), ("rho=1/2", 0.5), ("rho=0.8", 0.8), ("rho=0.85", 0.85),
            ("rho=0.9", 0.9), ("x=y", "same"), ("x independent", 0.0)]
PUBLISHED = {"rho=1/8", "rho=1/4", "rho=1/2", "x=y", "x independent"}


def make_data(kind, dim: int, num_rows: int, rng: np.random.Generator):
    """(x [N, dim], y [N, dim]) float32 for one setting."""
    y = rng.standard_normal((num_rows, dim))
    if kind == "same":
        x = y.copy()
    else:
        x = kind * y + math.sqrt(1.0 - kind**2) * rng.standard_normal((num_rows, dim))
    return x.astype(np.float32), y.astype(np.float32)


# --------------------------------------------------------------------------- #
# Models: parameters are plain dicts; apply functions are pure
# --------------------------------------------------------------------------- #


def _dense(key, fan_in, fan_out, scale=1.0):
    return jax.random.normal(key, (fan_in, fan_out)) * scale / math.sqrt(fan_in)


def init_linear(key, dx, dy, dz):
    k = jax.random.split(key, 4)
    return {"W1": _dense(k[0], dx, dz), "W2": _dense(k[1], dy, dz), "log_var": jnp.zeros(dz),
            "U1": _dense(k[2], dz, dy), "U2": _dense(k[3], dx, dy)}


def apply_linear(p, x, y):
    mu = x @ p["W1"] + y @ p["W2"]
    log_var = jnp.broadcast_to(p["log_var"], mu.shape)
    return mu, log_var, lambda z: z @ p["U1"] + x @ p["U2"]


def init_relu(key, dx, dy, dz, hidden):
    k = jax.random.split(key, 5)
    return {"e1": _dense(k[0], dx + dy, hidden), "eb1": jnp.zeros(hidden),
            "e_mu": _dense(k[1], hidden, dz), "e_lv": jnp.zeros((hidden, dz)), "e_lvb": jnp.zeros(dz),
            "d1": _dense(k[2], dz + dx, hidden), "db1": jnp.zeros(hidden),
            "d_out": _dense(k[3], hidden, dy), "d_skip": _dense(k[4], dx, dy, 0.1)}


def apply_relu(p, x, y):
    h = jax.nn.relu(jnp.concatenate([x, y], -1) @ p["e1"] + p["eb1"])
    mu, log_var = h @ p["e_mu"], h @ p["e_lv"] + p["e_lvb"]

    def decode(z):
        xb = jnp.broadcast_to(x, z.shape[:-1] + x.shape[-1:])
        hd = jax.nn.relu(jnp.concatenate([z, xb], -1) @ p["d1"] + p["db1"])
        return hd @ p["d_out"] + xb @ p["d_skip"]

    return mu, jnp.clip(log_var, -14.0, 7.0), decode


def kl_per_dim(mu, log_var):
    return 0.5 * (mu**2 + jnp.exp(log_var) - log_var - 1.0)


def loss_fn(apply, params, x, y, key):
    """Negative beta-ELBO (nats per example), 1 reparameterised sample."""
    mu, log_var, decode = apply(params, x, y)
    z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, mu.shape)
    sq = jnp.sum((y - decode(z)) ** 2, -1)
    nll = 0.5 * y.shape[-1] * (LOG_2PI + 2.0 * math.log(ETA_DEC)) + sq / (2.0 * ETA_DEC**2)
    return jnp.mean(nll + BETA * jnp.sum(kl_per_dim(mu, log_var), -1))


def train_population(apply, params, data_x, data_y, key, *, steps, batch_size, lr, final_lr):
    """Train P members (leading axis of params/data) in one jitted scan of vmapped Adam steps."""
    schedule = optax.exponential_decay(lr, transition_steps=steps, decay_rate=final_lr / lr)
    opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(schedule))

    def member_step(carry, _, x_all, y_all):
        p, s, k = carry
        k, kb, kl = jax.random.split(k, 3)
        idx = jax.random.randint(kb, (batch_size,), 0, x_all.shape[0])
        loss, g = jax.value_and_grad(lambda q: loss_fn(apply, q, x_all[idx], y_all[idx], kl))(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s, k), loss

    def run(params, data_x, data_y, keys):
        def one(p, x_all, y_all, k):
            carry = (p, opt.init(p), k)
            (p, _, _), losses = jax.lax.scan(lambda c, t: member_step(c, t, x_all, y_all), carry, None, length=steps)
            return p, losses

        return jax.vmap(one)(params, data_x, data_y, keys)

    return jax.jit(run)(params, data_x, data_y, jax.random.split(key, data_x.shape[0]))


def evaluate(apply, params, data_x, data_y, key):
    """Per member: mean KL per latent [P, dz], fraction of rows with KL_j < 0.01 [P, dz], MC -ELBO [P]."""

    def one(p, x, y, k):
        mu, log_var, _ = apply(p, x, y)
        kl = kl_per_dim(mu, log_var)
        losses = jax.vmap(lambda kk: loss_fn(apply, p, x, y, kk))(jax.random.split(k, 8))
        return jnp.mean(kl, 0), jnp.mean(kl < 0.01, 0), jnp.mean(losses)

    return jax.jit(jax.vmap(one))(params, data_x, data_y, jax.random.split(key, data_x.shape[0]))


# --------------------------------------------------------------------------- #


def plot(path, names, predicted, measured_lin, measured_relu, dz):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.4, 4.0))
    pos = np.arange(len(names))
    w = 0.27
    ax.bar(pos - w, predicted, w, label="closed form (empirical moments)", color="0.35")
    ax.bar(pos, measured_lin, w, label="trained linear CVAE", color="C0")
    ax.bar(pos + w, measured_relu, w, label="trained ReLU CVAE", color="C3")
    ax.axhline(dz, color="k", lw=0.6, ls=":")
    ax.set_xticks(pos, names, fontsize=8)
    ax.set_ylabel(f"collapsed latents (of {dz})")
    ax.set_title(f"CVAE collapse vs x-y correlation (eta_dec = {ETA_DEC}, beta = {BETA}, dim = {dz})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("experiments", "results", "cvae_correlation"))
    parser.add_argument("--dim", type=int, default=32, help="dx = dy = dz (published: 128)")
    parser.add_argument("--rows", type=int, default=4096, help="training rows per setting")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=256, dest="batch_size")
    parser.add_argument("--hidden", type=int, default=64, help="ReLU CVAE hidden width")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("dim", "rows", "steps", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.rows <= 2 * args.dim:
        parser.error(f"--rows must exceed 2 * --dim = {2 * args.dim} (the moments must be full rank)")
    return args


def predictions(xs, ys, d: int) -> list[dict]:
    """Closed-form prediction per setting from the empirical moments of its training rows (x, y: [N, d])."""
    pred = []
    for x, y, (name, kind) in zip(xs, ys, SETTINGS):
        opt = lc.optimum(lc.conditional_moments(x, y), d, ETA_DEC**2, BETA)
        theta_pop = 0.0 if kind == "same" else 1.0 - kind**2
        pred.append({"name": name, "published": name in PUBLISHED, "theta_population": theta_pop,
                     "collapsed_population": d if theta_pop <= BETA * ETA_DEC**2 else 0,
                     "theta": opt.theta[:d].tolist(), "collapsed": opt.num_collapsed,
                     "collapsed_kl_criterion": int(np.sum(opt.kl < KL_COLLAPSE)), "kl": opt.kl.tolist(),
                     "elbo": opt.elbo})
    return pred


def fit(label, init, apply, keys, train, held, common):
    """Train one model family as a population (one member per setting); evaluate on train and held-out rows.

    keys: (init, train, eval) PRNG keys; train, held: (x [P, N, d], y [P, N, d]); common: train_population's
    keyword arguments. Returns (params, losses [P, T], kl [P, dz], eps-delta fraction [P, dz], -ELBO [P],
    held-out -ELBO [P], seconds).
    """
    k_init, k_train, k_eval = keys
    t0 = time.perf_counter()
    params, loss = train_population(apply, jax.vmap(init)(jax.random.split(k_init, train[0].shape[0])), *train,
                                    k_train, **common)
    kl, frac, negelbo = evaluate(apply, params, *train, k_eval)
    held_negelbo = evaluate(apply, params, *held, k_eval)[2]
    jax.block_until_ready(kl)
    seconds = time.perf_counter() - t0
    print(f"{label} CVAE population trained in {seconds:.0f}s", flush=True)
    return params, loss, kl, frac, negelbo, held_negelbo, seconds


def result_rows(pred, xs, ys, lin_fit, relu_fit) -> list[dict]:
    """One JSON row per setting: the prediction and both trained families (outputs of :func:`fit`)."""
    lin, lin_loss, lin_kl, lin_frac, lin_negelbo, lin_held, _ = lin_fit
    _, relu_loss, relu_kl, relu_frac, relu_negelbo, relu_held, _ = relu_fit
    rows = []
    for i, (name, _) in enumerate(SETTINGS):
        p = {k: np.asarray(v[i], np.float64) for k, v in lin.items()}
        moments = lc.conditional_moments(xs[i], ys[i])
        exact = -lc.negative_elbo(p["W1"].T, p["W2"].T, np.exp(np.clip(p["log_var"], -14, 7)), p["U1"].T,
                                  p["U2"].T, moments, ETA_DEC**2, BETA)
        kl_l, kl_r = np.asarray(lin_kl[i]), np.asarray(relu_kl[i])
        rows.append(pred[i] | {
            "linear": {"collapsed": int(np.sum(kl_l < KL_COLLAPSE)),
                       "collapsed_eps_delta": int(np.sum(np.asarray(lin_frac[i]) >= 0.99)),
                       "kl_sorted": np.sort(kl_l)[::-1].tolist(), "elbo_exact": exact,
                       "max_abs_kl_error": float(np.max(np.abs(np.sort(kl_l)[::-1] - np.asarray(pred[i]["kl"])))),
                       "elbo_monte_carlo": -float(lin_negelbo[i]), "elbo_held_out": -float(lin_held[i]),
                       "final_train_loss": float(lin_loss[i, -1])},
            "relu": {"collapsed": int(np.sum(kl_r < KL_COLLAPSE)),
                     "collapsed_eps_delta": int(np.sum(np.asarray(relu_frac[i]) >= 0.99)),
                     "kl_sorted": np.sort(kl_r)[::-1].tolist(), "elbo_monte_carlo": -float(relu_negelbo[i]),
                     "elbo_held_out": -float(relu_held[i]),
                     "final_train_loss": float(relu_loss[i, -1])},
        })
    return rows


def write_tables(args, command: str, rows: list[dict], d: int) -> tuple[str, list[str]]:
    """table.csv and table.md in ``args.out``; returns (the note under the table, the markdown lines)."""
    header = ["setting", "published", "theta (population)", "theta range (empirical)",
              "predicted collapsed (theta <= 0.25)", "predicted KL_i < 0.01", "linear CVAE collapsed",
              "ReLU CVAE collapsed", "linear max abs KL error", "closed-form ELBO", "linear ELBO (exact)",
              "ReLU ELBO (MC)", "linear ELBO held-out (MC)", "ReLU ELBO held-out (MC)"]
    table = []
    for r in rows:
        table.append([r["name"], "yes" if r["published"] else "added", f"{r['theta_population']:.4g}",
                      f"{min(r['theta']):.3f} .. {max(r['theta']):.3f}", f"{r['collapsed']} / {d}",
                      f"{r['collapsed_kl_criterion']} / {d}",
                      f"{r['linear']['collapsed']} / {d}", f"{r['relu']['collapsed']} / {d}",
                      f"{r['linear']['max_abs_kl_error']:.3f}",
                      f"{r['elbo']:.3f}", f"{r['linear']['elbo_exact']:.3f}", f"{r['relu']['elbo_monte_carlo']:.3f}",
                      f"{r['linear']['elbo_held_out']:.3f}", f"{r['relu']['elbo_held_out']:.3f}"])
    with open(os.path.join(args.out, "table.csv"), "w", newline="") as f:
        csv.writer(f).writerows([header, *table])
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(t) + " |" for t in table]
    note = (f"dx = dy = dz = {d} (published: 128; reduced for CPU time), N = {args.rows} rows per setting, "
            f"eta_dec = {ETA_DEC}, beta = {BETA}; collapse threshold theta <= {BETA * ETA_DEC**2}; a trained latent "
            f"counts as collapsed iff its mean KL < {KL_COLLAPSE} nats. ELBOs are beta-weighted, nats per example, "
            f"on the training rows unless marked held-out ({args.rows} fresh rows per setting).")
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"# Linear CVAE collapse vs x-y correlation\n\nCommand: `{command}`\n\n{note}\n\n" + "\n".join(md) + "\n")
    return note, md


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    command = write_command(args.out, __file__, argv)
    start = time.perf_counter()
    d = args.dim
    rng = np.random.default_rng(args.seed)
    xs, ys = zip(*(make_data(kind, d, args.rows, rng) for _, kind in SETTINGS))
    train = jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ys))
    held = [make_data(kind, d, args.rows, rng) for _, kind in SETTINGS]  # fresh rows, same distributions
    held = jnp.asarray(np.stack([h[0] for h in held])), jnp.asarray(np.stack([h[1] for h in held]))
    names = [n for n, _ in SETTINGS]
    pred = predictions(xs, ys, d)

    key = jax.random.key(args.seed)
    k_lin, k_relu, k_ev1, k_ev2, k_t1, k_t2 = jax.random.split(key, 6)
    common = dict(steps=args.steps, batch_size=args.batch_size, lr=1e-2, final_lr=1e-4)
    lin_fit = fit("linear", lambda k: init_linear(k, d, d, d), apply_linear, (k_lin, k_t1, k_ev1), train, held,
                  common)
    relu_fit = fit("ReLU", lambda k: init_relu(k, d, d, d, args.hidden), apply_relu, (k_relu, k_t2, k_ev2), train,
                   held, common)
    rows = result_rows(pred, xs, ys, lin_fit, relu_fit)
    elapsed = time.perf_counter() - start

    note, md = write_tables(args, command, rows, d)
    fig = plot(os.path.join(args.out, "cvae_correlation.png"), names, [r["collapsed"] for r in rows],
               [r["linear"]["collapsed"] for r in rows], [r["relu"]["collapsed"] for r in rows], d)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"command": command, "note": note, "dim": d, "rows": args.rows, "steps": args.steps,
                   "batch_size": args.batch_size, "hidden": args.hidden, "eta_dec": ETA_DEC, "beta": BETA,
                   "kl_collapse_threshold": KL_COLLAPSE, "seconds": {"linear": lin_fit[-1], "relu": relu_fit[-1],
                                                                      "total": elapsed},
                   "figure": os.path.basename(fig), "settings": rows}, f, indent=1)
    print(note)
    print("\n".join(md))
    print(f"\ntotal {elapsed:.0f}s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
