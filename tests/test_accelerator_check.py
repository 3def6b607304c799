"""benchmarks/accelerator_check.sh runs end to end at smoke-test sizes on a CPU (as CI runs it)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_accelerator_check_smoke_run_writes_its_report(tmp_path):
    """Catches: a prepared accelerator script that was never run (a wrong path, flag or JSON key fails here
    on the CPU before anyone spends accelerator time on it)."""
    env = dict(os.environ, HCJAX_BENCH_RESULTS=str(tmp_path), PYTHON=sys.executable)
    out = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "accelerator_check.sh"), "--smoke"], env=env,
                         capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "accelerator_check_smoke.json").read_text())
    assert report["smoke"] is True and report["devices"]
    rows = report["throughput"]["rows"]
    assert [r["P"] for r in rows] == [4, 16]
    for r in rows:
        assert r["loop_over_hcjax"] > 0 and 0 < r["share_of_matmul_rate"]
    for dataset in ("digits", "mnist5k"):
        job = report["main_job"][dataset]
        assert job["status"] == 0 and job["profile"]["sections"]["train"]["calls"] >= 3
