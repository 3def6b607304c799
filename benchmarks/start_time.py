"""How long ``make demo`` takes with JAX's persistent compilation cache off, cold and warm, side by side.

Runs the main job exactly as ``make demo`` does (``hcjax train`` with its defaults, plus ``--profile
--no-figures --quiet``) in a fresh process per run, interleaved within each repeat: (1) cache off
(``HCJAX_COMPILATION_CACHE=0``), (2) cache on with an empty directory (cold), (3) cache on with the directory
run (2) filled (warm), all three with ``--no-joint-round`` (each population its own init, round and end-of-run
evaluation; the default until the joint round became it); then (4)-(6) the same three with ``--joint-round``
(the default: HCT and baseline members initialised, trained and evaluated as one population), with a cache
directory of their own. Prints wall seconds, the ratios to (1), and each
run's compile seconds and section breakdown (``--profile``). Output: benchmarks/results/start_time.{json,csv}.

    python benchmarks/start_time.py [--repeats 1] [-- extra hcjax train flags]

With several repeats each case's wall time is the median over them (the mean of the middle two for an even count).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    compile_stats, load, machine_info, median, profiled_train, wait_for_quiet, write_outputs)

JOINT = ", joint round"
CASES = ("cache off", "cache cold", "cache warm") + tuple(c + JOINT for c in ("cache off", "cache cold", "cache warm"))


def one_run(case: str, cache_dir: str, extra: list[str]) -> dict:
    joint = case.endswith(JOINT)
    cache_dir = cache_dir + ("-joint" if joint else "")
    env = dict(os.environ, HCJAX_COMPILATION_CACHE="0" if case.startswith("cache off") else cache_dir)
    if case.startswith("cache cold"):
        shutil.rmtree(cache_dir, ignore_errors=True)
    wall, prof = profiled_train(extra + (["--joint-round"] if joint else ["--no-joint-round"]), env=env, timeout=1800)
    return {"case": case, "wall_seconds": wall, "profile_wall_seconds": prof["wall_seconds"], **compile_stats(prof),
            "sections": {k: v["seconds"] for k, v in prof["sections"].items()}}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--wait-load", type=float, default=1.5)
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    gate = wait_for_quiet(args.wait_load, 1200)
    cache_dir = tempfile.mkdtemp(prefix="hcjax-start-cache-")
    rows = []
    for r in range(args.repeats):
        for case in CASES:
            rows.append({"repeat": r, **one_run(case, cache_dir, extra)})
            x = rows[-1]
            print(f"{case:24s} {x['wall_seconds']:7.1f} s wall, {x['compile_seconds']:6.1f} s compiling "
                  f"({x['compile_count']} compilations, cache {x['cache_hits']} hits / {x['cache_misses']} misses)",
                  flush=True)
    for d in (cache_dir, cache_dir + "-joint"):
        shutil.rmtree(d, ignore_errors=True)
    med = {c: median([x["wall_seconds"] for x in rows if x["case"] == c]) for c in CASES}
    ratios = {c: med[c] / med["cache off"] for c in CASES}
    for c in CASES:
        print(f"{c:24s} median {med[c]:7.1f} s = {ratios[c]:.2f} x cache off ({100 * (1 - ratios[c]):+.0f}% faster)")
    write_outputs("start_time", {"machine": machine_info(), "load_gate": gate, "load_after": load(),
                                 "median_wall_seconds": med, "ratio_to_cache_off": ratios, "rows": rows,
                                 "command": "python benchmarks/start_time.py " + " ".join(argv)},
                  [{k: v for k, v in x.items() if k != "sections"} for x in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
