"""Which member group size (``TrainSettings.member_chunk``) trains a population fastest, side by side.

For the two MLP shapes of benchmarks/README.md (256-256 and 64-32 hidden units; data 64, latent 8, GMM prior
J = 8, batch 256) and P in {16, 64, 256}, times ``Trainer.train`` with every group size in
{P (one vmap), 4, 8, 16, 32, 64} below P, interleaved (each configuration once per repeat, medians), and
prints milliseconds per population step with each size's ratio to one vmap. The automatic rule
(``member_chunk="auto"``, :func:`hcjax.engine.population.auto_member_chunk`) is timed beside them. Output:
benchmarks/results/member_chunk_sweep.{json,csv}.

    python benchmarks/member_chunk_sweep.py [--repeats 3] [--member-steps 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from hcjax.engine import objectives  # noqa: E402
from hcjax.engine import population as pop  # noqa: E402
from hcjax.vae import priors  # noqa: E402
from hcjax.vae.models import ModelConfig  # noqa: E402

SHAPES = {"256-256": (256, 256), "64-32": (64, 32)}
CHUNKS = (4, 8, 16, 32, 64)


def build(hidden, p, chunk):
    model = ModelConfig(kind="mlp", data_dim=64, latent_dim=8, hidden=hidden)
    trainer = pop.Trainer(model, pop.TrainSettings(batch_size=256, member_chunk=chunk))
    prior = priors.from_gmm(jnp.full(8, 1 / 8), jax.random.normal(jax.random.key(1), (8, 8)), jnp.ones((8, 8)))
    state = trainer.init_population(jax.random.key(0), priors.stack([prior] * p), objectives.objective_params(),
                                    1e-3, 1.0)
    return trainer, state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--member-steps", type=int, default=256, help="member-steps per timed call (T = this / P)")
    ap.add_argument("--populations", default="16,64,256")
    ap.add_argument("--wait-load", type=float, default=1.5)
    args = ap.parse_args(argv)
    _common.disable_persistent_cache()
    gate = _common.wait_for_quiet(args.wait_load, 1200)
    x = jax.random.normal(jax.random.key(2), (8192, 64))
    rows = []
    for shape, hidden in SHAPES.items():
        for p in (int(v) for v in args.populations.split(",")):
            steps = max(2, args.member_steps // p)
            configs = {"one vmap": None, **{str(c): c for c in CHUNKS if c < p}, "auto": "auto"}
            built = {}
            for name, chunk in configs.items():
                trainer, state = build(hidden, p, chunk)
                jax.block_until_ready(trainer.train(state, x, steps))  # compile
                built[name] = (trainer, state)
            times = {name: [] for name in configs}
            for _ in range(args.repeats):
                for name, (trainer, state) in built.items():
                    t0 = time.perf_counter()
                    jax.block_until_ready(trainer.train(state, x, steps))
                    times[name].append((time.perf_counter() - t0) / steps)
            med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
            auto = pop.auto_member_chunk(built["auto"][0].model, built["auto"][0].settings, p)
            for name in configs:
                rows.append({"shape": shape, "P": p, "group": name, "auto_resolves_to": auto,
                             "ms_per_step": 1e3 * med[name], "ratio_to_one_vmap": med["one vmap"] / med[name],
                             "seconds": times[name]})
            best = min(med, key=med.get)
            print(f"{shape:8s} P={p:4d}  " + "  ".join(f"{k}:{1e3 * v:8.1f}" for k, v in med.items()) +
                  f"  ms/step; best {best}; auto -> {auto}", flush=True)
            del built
    _common.write_outputs("member_chunk_sweep", {"machine": _common.machine_info(), "load_gate": gate,
                                                 "load_after": _common.load(), "rows": rows,
                                                 "command": "python benchmarks/member_chunk_sweep.py " +
                                                 " ".join(argv or sys.argv[1:])},
                          [{k: v for k, v in r.items() if k != "seconds"} for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
