"""The share of the machine's matmul rate that a real HCT workload reaches: the barrier study's grid run.

Runs one ``run_hct`` exactly as ``experiments/hct_variants.py`` does (data set, variant and grid as given;
default: digits, MI selection, the 9-setting ``hard`` grid, with the fixed_gmm, free bits and vanilla
populations in lockstep) under ``hcjax.profiling``, counts its member-steps (every HCT and baseline member
through the rounds and the final phase, durability probes included) and their matmul FLOPs (forward +
backward of the MLP, analytic, as in ``population_throughput.py``; MLP models only), and divides by (1) the whole
wall time and (2) the "train" sections alone (compilation excluded). The machine's float32 matmul rate is
measured in the same process before and after. Output: benchmarks/results/workload_share.{json,csv}.

    python benchmarks/workload_share.py [--dataset digits] [--variant mi] [--grid hard]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "experiments"))

import _common  # noqa: E402
from population_throughput import analytic_flops, matmul_rate  # noqa: E402


def member_steps(config, groups: int, probe_steps: int = 0) -> dict:
    """Training steps summed over members, per population.

    HCT: P members per group through the rounds (plus ``probe_steps`` per member of durability probes) and
    through the final phase (every slot of a group continues from the consensus member, under its slot's
    objective); baselines: P members per method and group through both.
    """
    p, rounds, t = config.population.size, config.population.rounds, config.population.steps_per_round
    final = config.final.steps
    return {"hct_rounds": groups * p * (rounds * t + probe_steps), "hct_final": groups * p * final,
            "baselines": groups * len(config.baselines.methods) * p * (rounds * t + final)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--variant", default="mi")
    p.add_argument("--grid", default="hard")
    p.add_argument("--wait-load", type=float, default=1.5)
    args = p.parse_args(argv)
    import hct_variants

    from hcjax import profiling
    from hcjax.hct import run_hct

    if args.variant not in hct_variants.VARIANTS or args.grid not in hct_variants.GRIDS:
        raise SystemExit(f"--variant must be among {list(hct_variants.VARIANTS)} and --grid among "
                         f"{sorted(hct_variants.GRIDS)}, got {args.variant!r} and {args.grid!r}")
    _common.disable_persistent_cache()
    gate = _common.wait_for_quiet(args.wait_load, 1200)
    config = hct_variants.make_config(args.dataset, args.variant, 0, args.grid, None, with_baselines=True)
    rate_start = matmul_rate()
    t0 = time.perf_counter()
    with profiling.active() as prof:
        result = run_hct(config)
    wall = time.perf_counter() - t0
    rate_end = matmul_rate()
    m = result.model_config
    data_dim = m.data_dim
    flops = analytic_flops(data_dim, list(m.hidden), m.latent_dim, config.train.batch_size)["total"]
    steps = member_steps(config, len(result.groups), hct_variants.probe_steps(config))
    total_flops = flops * sum(steps.values())
    calls, train_seconds, train_compile = prof.sections["train"]
    rate = min(rate_start["gflops"], rate_end["gflops"])
    shares = {"wall": total_flops / wall / 1e9, "train_sections": total_flops / (train_seconds - train_compile) / 1e9}
    payload = {"benchmark": "workload_share", "machine": _common.machine_info(), "load_gate": gate,
               "command": "python benchmarks/workload_share.py " + " ".join(argv or sys.argv[1:]),
               "dataset": args.dataset, "variant": args.variant, "grid": args.grid, "data_dim": data_dim,
               "hidden": list(m.hidden), "latent_dim": m.latent_dim, "batch": config.train.batch_size,
               "matmul_rate_start": rate_start, "matmul_rate_end": rate_end, "flops_per_member_step": flops,
               "member_steps": steps, "wall_seconds": wall, "train_seconds": train_seconds,
               "train_compile_seconds": train_compile, "train_calls": calls,
               "gflops": shares, "share_of_matmul_rate": {k: v / rate for k, v in shares.items()},
               "profile_sections": {k: list(v) for k, v in prof.sections.items()}}
    rows = [{"basis": k, "gflops": v, "share_of_matmul_rate": v / rate} for k, v in shares.items()]
    print(f"{sum(steps.values())} member-steps x {flops / 1e6:.2f} MFLOP in {wall:.1f} s wall "
          f"({train_seconds - train_compile:.1f} s training): {shares['wall']:.2f} GFLOP/s of the wall "
          f"({100 * shares['wall'] / rate:.1f}% of {rate:.0f} GFLOP/s), {shares['train_sections']:.2f} GFLOP/s "
          f"while training ({100 * shares['train_sections'] / rate:.1f}%)")
    jpath, cpath = _common.write_outputs("workload_share", payload, rows)
    print(f"wrote {jpath} and {cpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
