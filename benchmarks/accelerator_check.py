"""The accelerator check behind ``benchmarks/accelerator_check.sh`` (run that; it installs the wheel first).

On a GPU/TPU: ``population_throughput.py`` at P = 16, 256, 1024 (the 256-256 MLP of benchmarks/README.md;
(a) hcjax, (b) a per-member JAX loop, (d) ``torch.func.vmap`` when PyTorch sees the same kind of device),
then ``hcjax train --profile`` on digits and on mnist5k with their image defaults. On a CPU the same steps
run at smoke-test sizes. Writes ``benchmarks/results/accelerator_check.json``: the device, each P's
milliseconds per population step, the ratios (b)/(a) and (d)/(a), hcjax's share of the matmul rate
measured in the same run, and each main job's wall time and profile.

    python benchmarks/accelerator_check.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.environ.get("HCJAX_BENCH_RESULTS") or os.path.join(HERE, "results")  # as benchmarks/_common.py


def _run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    sys.stdout.write(out.stdout[-3000:])
    sys.stderr.write(out.stderr[-3000:])
    return out.returncode, out.stdout, time.time() - t0


def throughput(smoke: bool) -> dict:
    name = "accelerator_throughput" + ("_smoke" if smoke else "")
    cmd = [sys.executable, os.path.join(HERE, "population_throughput.py"), "--name", name, "--no-memory",
           "--no-hct-rounds", "--wait-load", "1e9", "--repeats", "2"]
    cmd += ["--populations", "4,16", "--member-steps", "32", "--num-rows", "1024"] if smoke else \
        ["--populations", "16,256,1024", "--member-steps", "1024"]
    status, _, wall = _run(cmd, 1200)
    if status:
        return {"error": f"population_throughput exited with {status}", "wall_seconds": wall}
    with open(os.path.join(RESULTS, f"{name}.json")) as f:
        res = json.load(f)
    rate = min(res["matmul_rate_start"]["gflops"], res["matmul_rate_end"]["gflops"])
    rows = []
    for r in res["results"]:
        sps = r["seconds_per_step"]
        rows.append({"P": r["P"], "ms_per_step": {k: 1e3 * v for k, v in sps.items()},
                     "loop_over_hcjax": r["ratio_b_over_a"], "torch_vmap_over_hcjax": r.get("ratio_d_over_a"),
                     "hcjax_gflops": r["gflops_hcjax"], "share_of_matmul_rate": r["gflops_hcjax"] / rate})
    return {"matmul_rate_gflops": rate, "torch": res["torch"], "rows": rows, "raw": os.path.relpath(os.path.join(RESULTS, f"{name}.json"), HERE),
            "wall_seconds": wall}


def main_job(dataset: str, smoke: bool) -> dict:
    out = tempfile.mkdtemp(prefix=f"hcjax-accel-{dataset}-")
    cmd = [sys.executable, "-m", "hcjax.cli", "train", "--dataset", dataset, "--out", out, "--profile",
           "--no-figures", "--quiet"]
    if dataset == "mnist5k":
        cmd += ["--likelihood", "bernoulli"]
    if smoke:
        cmd += ["-P", "2", "-K", "1", "-R", "2", "-T", "5", "--final-steps", "5", "--is-samples", "10"]
    status, _, wall = _run(cmd, 1800)
    rec = {"command": " ".join(cmd[1:]), "status": status, "wall_seconds": wall}
    if status == 0:
        with open(os.path.join(out, "profile.json")) as f:
            rec["profile"] = json.load(f)
        with open(os.path.join(out, "summary.json")) as f:
            rec["elapsed_seconds"] = json.load(f).get("elapsed_seconds")
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="smoke-test sizes (the default on a CPU)")
    args = p.parse_args(argv)
    sys.path.insert(0, HERE)
    import jax

    from _common import machine_info

    backend = jax.default_backend()
    smoke = args.smoke or backend == "cpu"
    t0 = time.time()
    report = {"backend": backend, "devices": [d.device_kind for d in jax.devices()], "smoke": smoke,
              "machine": machine_info(), "command": "bash benchmarks/accelerator_check.sh " + " ".join(argv or [])}
    print(f"accelerator_check: backend {backend}, devices {report['devices']}, smoke sizes: {smoke}", flush=True)
    report["throughput"] = throughput(smoke)
    report["main_job"] = {d: main_job(d, smoke) for d in ("digits", "mnist5k")}
    report["wall_seconds"] = time.time() - t0
    name = "accelerator_check" + ("_smoke" if smoke else "")
    path = os.path.join(RESULTS, f"{name}.json")
    sys.path.insert(0, ROOT)
    from hcjax._io import atomic_write_json

    atomic_write_json(path, report, indent=1)
    for r in report["throughput"].get("rows", []):
        print(f"P={r['P']:5d}  loop/hcjax {r['loop_over_hcjax']:.2f}  "
              f"torch.func.vmap/hcjax {r['torch_vmap_over_hcjax'] or float('nan'):.2f}  "
              f"share of matmul rate {100 * r['share_of_matmul_rate']:.0f}%")
    for d, r in report["main_job"].items():
        print(f"main job {d}: status {r['status']}, {r['wall_seconds']:.1f} s wall")
    print(f"wrote {path} in {report['wall_seconds']:.0f} s")
    failed = "error" in report["throughput"] or any(r["status"] for r in report["main_job"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
