"""Host time between rounds: how much of an HCT round is not training, at P = 64 on digits.

Runs ``hcjax train --dataset digits -P 64 --profile`` (the main job's other defaults: fixed_gmm, free bits and
vanilla populations of the same size in lockstep) in a fresh process with the persistent compilation cache off,
and reads its ``profile.json``. A round is one unit of training followed by evaluation, selection, the
checkpoint and the metrics line; the between-round work is everything in that list but training. Reported per
round, in wall seconds and as a share of the round, both with compilation (the first round compiles the
evaluation and selection programs; here spread over the calls) and without it (every later round: the compile
seconds the profile attributes to each section are taken out and the rest is averaged over the section's
calls). The end-of-run evaluation (importance-sampled likelihood on the test rows) is not between rounds;
``--is-samples`` (default 100) only keeps it short. Output: benchmarks/results/host_time.{json,csv}.

    python benchmarks/host_time.py [--population-size 64] [--dataset digits]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load, machine_info, profiled_train, wait_for_quiet, write_outputs  # noqa: E402

BETWEEN_ROUNDS = ("evaluate", "select", "checkpoint", "metrics.jsonl")


def between_round_shares(sections: dict) -> dict:
    """Per-round seconds of training and of each between-round section, with and without compiling.

    ``sections``: profile.json's ``sections`` ({name: {calls, seconds, compile_seconds}}). Each of these sections
    runs once per round (training and the checkpoint and metrics line also once per final-phase unit, which
    have the same number of steps), so a section's time per round is its time per call: without compiling,
    (seconds - compile seconds) / calls; with compiling, seconds / calls (the first round's compilation spread
    over the calls).
    """
    per_round, with_compile = {}, {}
    units = sections["train"]["calls"]
    for name in ("train",) + BETWEEN_ROUNDS:
        sec = sections.get(name, {"calls": 1, "seconds": 0.0, "compile_seconds": 0.0})
        # checkpoint: its section also holds opening and closing the checkpointer; charged to the units
        calls = units if name == "checkpoint" else sec["calls"]
        per_round[name] = (sec["seconds"] - sec["compile_seconds"]) / calls
        with_compile[name] = sec["seconds"] / calls if name != "train" else per_round[name]
    out = {}
    for label, parts in (("steady", per_round), ("with_compile", with_compile)):
        host = sum(parts[n] for n in BETWEEN_ROUNDS)
        out[label] = {"per_round_seconds": parts, "between_rounds_seconds": host,
                      "share_of_round": host / (host + parts["train"])}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--population-size", type=int, default=64)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--is-samples", type=int, default=100)
    p.add_argument("--wait-load", type=float, default=1.5)
    p.add_argument("--name", default="host_time", help="output file stem in benchmarks/results")
    args = p.parse_args(argv)
    if args.population_size < 2:
        raise SystemExit(f"--population-size must be >= 2 (a population to select from), got {args.population_size}")
    gate = wait_for_quiet(args.wait_load, 1200)
    args_train = ["--dataset", args.dataset, "-P", str(args.population_size), "--is-samples", str(args.is_samples),
                  "--no-compile-cache"]
    load_before = load()
    wall, profile = profiled_train(args_train)
    shares = between_round_shares(profile["sections"])
    payload = {"benchmark": "host_time", "machine": machine_info(), "load_gate": gate, "load_before": load_before,
               "load_after": load(),
               "command": "hcjax train " + " ".join(args_train) + " --out OUT --profile --no-figures --quiet",
               "wall_seconds": wall, "profile": profile, "per_round": shares}
    rows = [{"case": label, "section": name, "seconds_per_round": v}
            for label, s in shares.items() for name, v in s["per_round_seconds"].items()]
    for label, s in shares.items():
        print(f"{label}: training {s['per_round_seconds']['train']:.2f} s per round, between rounds "
              f"{s['between_rounds_seconds']:.2f} s ({100 * s['share_of_round']:.1f}% of a round): " +
              ", ".join(f"{n} {s['per_round_seconds'][n]:.2f} s" for n in BETWEEN_ROUNDS))
    jpath, cpath = write_outputs(args.name, payload, rows)
    print(f"wrote {jpath} and {cpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
