"""Unrolling the scan over training steps (``TrainSettings.scan_unroll``) against the per-member loop.

benchmarks/README.md found the population (a) 2-5% slower than a Python loop over members (b) at some P on
XLA:CPU, because a step inside ``lax.scan`` costs more than the same step jitted alone. This script times, side by
side in one process and interleaved (every implementation once per repeat, medians), ``Trainer.train`` with
``scan_unroll`` = 1 (the default), 2 and 4 against (b), for the 256-256 and the 64-32 MLP of
``population_throughput.py`` (same shapes, data and loop), and prints (b)/(a) per unroll. It also records how far an
unrolled round moves the members from the default's (round-off: XLA may fuse across the copies of the step).

    python benchmarks/scan_unroll.py            # ~10 min on 2 cores
    python benchmarks/scan_unroll.py --quick    # smoke test

Output: ``benchmarks/results/scan_unroll.json`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common  # noqa: E402
import population_throughput as pt  # noqa: E402

UNROLLS = (1, 2, 4)


def measure(shape, p, steps, repeats, data):
    import jax
    import numpy as np

    runners, states, first = {}, {}, {}
    for u in UNROLLS:
        trainer, state = pt.jax_setup(shape, p, scan_unroll=u)
        t, (state, _) = pt.timed(lambda: jax.block_until_ready(trainer.train(state, data, steps)))
        first[f"unroll_{u}"] = t
        box = {"state": state}

        def run(trainer=trainer, box=box):
            box["state"], _ = trainer.train(box["state"], data, steps)
            jax.block_until_ready(box["state"])

        runners[f"unroll_{u}"], states[u] = run, box
    loop_run, _ = pt.make_member_loop(shape, states[1]["state"], data)
    loop_run(1)
    runners["jax_loop"] = lambda: loop_run(steps)
    raw = {k: [] for k in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            t, _ = pt.timed(fn)
            raw[name].append(t / steps)
    ms = {k: 1e3 * _common.median(v) for k, v in raw.items()}
    # members after the same calls: the default's against each unrolled one (round-off only)
    ref = jax.tree.leaves(states[1]["state"])
    moved = {}
    for u in UNROLLS[1:]:
        pairs = [(np.asarray(a), np.asarray(b)) for a, b in zip(ref, jax.tree.leaves(states[u]["state"]))]
        diffs = [float(np.max(np.abs(a.astype(np.float64) - b)))
                 for a, b in pairs if np.issubdtype(a.dtype, np.floating)]
        moved[f"unroll_{u}"] = max(diffs)
    return {"P": p, "steps_per_call": steps, "ms_per_step": ms, "raw_seconds_per_step": raw,
            "loop_over_population": {k: ms["jax_loop"] / v for k, v in ms.items() if k != "jax_loop"},
            "first_call_seconds": first, "max_float_difference_to_unroll_1": moved}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats (smoke test)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--member-steps", type=int, default=512, help="member-steps per timed call (T = this / P)")
    ap.add_argument("--wait-load", type=float, default=1.5)
    ap.add_argument("--max-wait", type=float, default=600.0)
    args = ap.parse_args(argv)
    import jax.numpy as jnp
    import numpy as np

    _common.disable_persistent_cache()
    cases = [([256, 256], (1, 4, 16, 64)), ([64, 32], (1, 4, 16))]
    if args.quick:
        cases, args.repeats, args.member_steps = [([16], (1, 4))], 2, 16
    gate = {"skipped": True} if args.quick else _common.wait_for_quiet(args.wait_load, args.max_wait)
    payload = {"benchmark": "scan_unroll", "machine": _common.machine_info(), "load_gate": gate,
               "load_before": _common.load(), "unrolls": list(UNROLLS),
               "command": "python benchmarks/scan_unroll.py " + " ".join(argv or sys.argv[1:]), "results": []}
    data = jnp.asarray(np.random.default_rng(0).standard_normal((4096, 64), dtype=np.float32))
    rows, t0 = [], time.time()
    for hidden, populations in cases:
        shape = {"data_dim": 64, "hidden": hidden, "latent_dim": 8, "components": 8, "batch": 256,
                 "member_chunk": "auto"}
        for p in populations:
            res = measure(shape, p, max(2, args.member_steps // p), args.repeats, data) | {"hidden": hidden}
            payload["results"].append(res)
            ratios = "  ".join(f"{k}: {v:.3f}" for k, v in res["loop_over_population"].items())
            print(f"hidden {hidden} P={p:4d}  (b)/(a) {ratios}  ms/step {res['ms_per_step']}", flush=True)
            for name, ms in res["ms_per_step"].items():
                rows.append({"hidden": "-".join(map(str, hidden)), "P": p, "implementation": name, "ms_per_step": ms,
                             "loop_over_population": res["loop_over_population"].get(name, 1.0)})
    payload["load_after"], payload["wall_seconds"] = _common.load(), time.time() - t0
    name = "scan_unroll_quick" if args.quick else "scan_unroll"
    print("wrote", *_common.write_outputs(name, payload, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
