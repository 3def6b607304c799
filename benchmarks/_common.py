"""Helpers shared by the benchmark scripts: machine description, load gate, timers, output files.

Nothing here is part of the library. The scripts import it from their own
directory (``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import sys
import time

# HCJAX_BENCH_RESULTS redirects every output (the smoke test of accelerator_check.sh writes to a temporary folder)
RESULTS = os.environ.get("HCJAX_BENCH_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """SIMD flags that matter for float32 matmul speed."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(flags & {"avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"})
    except OSError:
        pass
    return []


def machine_info() -> dict:
    import jax

    info = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    for mod in ("jaxlib", "flax", "optax", "numpy", "sklearn", "torch"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(threshold: float, max_wait: float, poll: float = 15.0) -> dict:
    """Wait until the 1-minute load average is below ``threshold`` (at most ``max_wait`` seconds)."""
    start = time.time()
    seen = [load()]
    while seen[-1][0] >= threshold and time.time() - start < max_wait:
        print(f"load average {seen[-1]} >= {threshold}; waiting ({time.time() - start:.0f}/{max_wait:.0f}s)",
              file=sys.stderr, flush=True)
        time.sleep(poll)
        seen.append(load())
    return {"threshold": threshold, "waited_seconds": round(time.time() - start, 1), "load_at_start": seen[-1],
            "quiet": seen[-1][0] < threshold}


class CompileEvents:
    """Counts XLA backend compilations (and their total duration) via jax.monitoring."""

    def __init__(self):
        import jax

        self.count = 0
        self.seconds = 0.0
        self._event = "/jax/core/compile/backend_compile_duration"

        def listener(event, duration, **kwargs):
            if event == self._event:
                self.count += 1
                self.seconds += duration

        jax.monitoring.register_event_duration_secs_listener(listener)

    def snapshot(self) -> tuple[int, float]:
        return self.count, self.seconds


def median(xs):
    return statistics.median(xs)


def write_outputs(name: str, payload: dict, rows: list[dict], out_dir: str = RESULTS) -> tuple[str, str]:
    """Write ``<name>.json`` (everything) and ``<name>.csv`` (the flat table)."""
    os.makedirs(out_dir, exist_ok=True)
    jpath = os.path.join(out_dir, f"{name}.json")
    cpath = os.path.join(out_dir, f"{name}.csv")
    with open(jpath, "w") as f:
        json.dump(payload, f, indent=1)
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(cpath, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    return jpath, cpath


def disable_persistent_cache() -> None:
    """Compile times must be real compiles, never reads of a persistent cache."""
    import jax

    jax.config.update("jax_enable_compilation_cache", False)


def compile_stats(profile: dict) -> dict:
    """A run's compile seconds and count and its compilation-cache hits and misses, from its ``profile.json``."""
    return {k: profile[k] for k in ("compile_seconds", "compile_count", "cache_hits", "cache_misses")}


def profiled_train(args: list[str], env: dict | None = None, timeout: float = 3600) -> tuple[float, dict]:
    """Run ``hcjax train ARGS --out TMP --profile --no-figures --quiet`` in a fresh process.

    Returns (wall seconds of the process, its ``profile.json``); the output folder is removed. Exits with the
    run's stderr tail when it fails.
    """
    import shutil
    import subprocess
    import tempfile

    out = tempfile.mkdtemp(prefix="hcjax-bench-")
    cmd = [sys.executable, "-m", "hcjax.cli", "train", *args, "--out", out, "--profile", "--no-figures", "--quiet"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"hcjax train {' '.join(args)} failed:\n{res.stderr[-2000:]}")
    with open(os.path.join(out, "profile.json")) as f:
        profile = json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    return wall, profile
