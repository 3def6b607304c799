"""Why the conv main job on mnist5k is slow on CPU: one training step of the image-default models, side by side.

Times ``Trainer.train`` steps (batch 128, dynamic binarisation, Bernoulli decoder, 16 latents) of a population
of P = 8 on mnist5k for: the MLP of the image defaults (one 256-unit hidden layer), and the conv model with 8/16
channels computed by flax's convolutions (``conv_impl="xla"``) or by tap matmuls (``conv_impl="taps"``), each
vmapped over members and with ``member_chunk=1`` (members one after another inside the compiled program),
plus a wider 32/64-channel tap model. Prints the per-member-step time of each and its ratio to the MLP's, measured in
one run. Output: benchmarks/results/conv_step_time.{json,csv}.

    python benchmarks/conv_step_time.py [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, write_outputs  # noqa: E402

from hcjax import data  # noqa: E402
from hcjax.engine import objectives  # noqa: E402
from hcjax.engine import population as pop  # noqa: E402
from hcjax.vae import priors  # noqa: E402
from hcjax.vae.models import ModelConfig  # noqa: E402

P = 8
CASES = {  # name -> (model kind, hidden, member_chunk, conv_impl)
    "mlp (256)": ("mlp", (256,), None, "taps"),
    "conv (8, 16), xla, vmapped": ("conv", (8, 16), None, "xla"),
    "conv (8, 16), xla, member_chunk=1": ("conv", (8, 16), 1, "xla"),
    "conv (8, 16), taps, vmapped": ("conv", (8, 16), None, "taps"),
    "conv (8, 16), taps, member_chunk=1": ("conv", (8, 16), 1, "taps"),
    "conv (32, 64), taps, vmapped": ("conv", (32, 64), None, "taps"),
}


def time_case(x, kind, hidden, chunk, impl, steps: int) -> dict:
    model = ModelConfig(kind=kind, data_dim=784, latent_dim=16, hidden=hidden,
                        image_shape=(28, 28, 1) if kind == "conv" else None, likelihood="bernoulli",
                        conv_impl=impl)
    trainer = pop.Trainer(model, pop.TrainSettings(batch_size=128, binarize=True, member_chunk=chunk))
    state = trainer.init_population(jax.random.key(0), priors.stack([priors.standard_normal(16)] * P),
                                    objectives.objective_params(), 1e-3, 1.0)
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(trainer.train(state, x, steps))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(trainer.train(state, x, steps))
    run = time.perf_counter() - t0
    return {"compile_and_first_call_s": first, "steps": steps, "seconds": run,
            "ms_per_member_step": 1000 * run / (steps * P)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    x = jnp.asarray(data.load_dataset("mnist5k").train)
    rows = []
    for name, (kind, hidden, chunk, impl) in CASES.items():
        rows.append({"case": name, **time_case(x, kind, hidden, chunk, impl, args.steps)})
        print(f"{name:40s} {rows[-1]['ms_per_member_step']:9.1f} ms per member-step", flush=True)
    base = rows[0]["ms_per_member_step"]
    for r in rows:
        r["ratio_to_mlp"] = r["ms_per_member_step"] / base
        print(f"{r['case']:40s} {r['ratio_to_mlp']:7.1f} x the MLP")
    write_outputs("conv_step_time", {"machine": machine_info(), "population": P, "rows": rows,
                                     "command": "python benchmarks/conv_step_time.py " + " ".join(argv or sys.argv[1:])},
                  rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
