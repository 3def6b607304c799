"""Which programs the compilation cache should keep: ``make demo`` cold and warm at two thresholds, side by side.

JAX writes a compiled program to its persistent cache only when it took at least
``jax_persistent_cache_min_compile_time_secs`` to compile (hcjax sets ``compile_cache.MIN_COMPILE_SECONDS``;
``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` overrides it). A lower threshold caches more of a run's ~280
small programs: fewer compilations on a warm start, more file writes on a cold one. For each threshold, within
each repeat (interleaved): the demo's main job (``hcjax train`` with its defaults, ``--profile --no-figures``)
with an empty cache directory (cold), then again with the directory it filled (warm); and first in each repeat
the reference of issue 13's start-time goals, the demo as it was before them (cache off, ``--no-joint-round``).
Prints median wall and compile seconds, the ratio to the reference, cache hits/misses and the entries written.
Output: benchmarks/results/cache_threshold.{json,csv}.

    python benchmarks/cache_threshold.py [--thresholds 0.1 0] [--repeats 2] [-- extra hcjax train flags]
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


REFERENCE = "reference: cache off, --no-joint-round"


def one_run(threshold: float | None, case: str, cache_dir: str, extra: list[str]) -> dict:
    if case == "cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
    if case == REFERENCE:
        env, extra = dict(os.environ, HCJAX_COMPILATION_CACHE="0"), extra + ["--no-joint-round"]
    else:
        env = dict(os.environ, HCJAX_COMPILATION_CACHE=cache_dir,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(threshold))
    wall, prof = profiled_train(extra, env=env, timeout=1800)
    files = [os.path.join(d, f) for d, _, fs in os.walk(cache_dir) for f in fs]
    return {"threshold": threshold, "case": case, "wall_seconds": wall, **compile_stats(prof),
            "cache_files": len(files), "cache_megabytes": sum(os.path.getsize(f) for f in files) / 2**20}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--wait-load", type=float, default=1.5)
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if any(not t >= 0 for t in args.thresholds):
        p.error(f"--thresholds {args.thresholds}: expected seconds >= 0")
    gate = wait_for_quiet(args.wait_load, 1200)
    root = tempfile.mkdtemp(prefix="hcjax-threshold-")
    rows = []
    for r in range(args.repeats):
        rows.append({"repeat": r, **one_run(None, REFERENCE, os.path.join(root, "off"), extra)})
        print(f"{REFERENCE}: {rows[-1]['wall_seconds']:6.1f} s wall", flush=True)
        for i, t in enumerate(args.thresholds):
            for case in ("cold", "warm"):
                rows.append({"repeat": r, **one_run(t, case, os.path.join(root, str(i)), extra)})
                x = rows[-1]
                print(f"threshold {t:g} s {case}: {x['wall_seconds']:6.1f} s wall, {x['compile_seconds']:5.1f} s "
                      f"compiling, cache {x['cache_hits']} hits / {x['cache_misses']} misses, "
                      f"{x['cache_files']} files ({x['cache_megabytes']:.1f} MB)", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    summary = {f"{t:g} s, {case}": {k: median([x[k] for x in rows if x["threshold"] == t and x["case"] == case])
                                    for k in ("wall_seconds", "compile_seconds", "cache_files")}
               for t in args.thresholds for case in ("cold", "warm")}
    reference = median([x["wall_seconds"] for x in rows if x["case"] == REFERENCE])
    for name, m in summary.items():
        m["faster_than_reference"] = 1 - m["wall_seconds"] / reference
        print(f"median, threshold {name}: {m['wall_seconds']:6.1f} s wall ({100 * m['faster_than_reference']:.0f}% "
              f"less than the reference's {reference:.1f} s), {m['compile_seconds']:5.1f} s compiling, "
              f"{m['cache_files']:.0f} files")
    write_outputs("cache_threshold", {"machine": machine_info(), "load_gate": gate, "load_after": load(),
                                      "reference_wall_seconds": reference, "median": summary, "rows": rows,
                                      "command": "python benchmarks/cache_threshold.py " + " ".join(argv)}, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
