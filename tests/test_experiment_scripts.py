"""Smoke runs of the issue-12 experiment scripts at tiny sizes: they run end to end and write well-formed outputs."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", script), *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_hct_variants_quick_run_writes_rows_for_every_method(tmp_path):
    """Catches: a variant run without its baselines in the first run of a data set, rows missing the
    oracle fixed_gmm pick, or a table that leaves out a variant."""
    out = tmp_path / "v"
    proc = _run("hct_variants.py", "--quick", "--datasets", "digits", "--grid", "corners", "--variants",
                "elbo,mi", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = json.loads((out / "digits__corners__elbo.json").read_text())
    second = json.loads((out / "digits__corners__mi.json").read_text())
    assert first["with_baselines"] and not second["with_baselines"]
    methods = {r["method"] for r in first["rows"]}
    assert {"hct:fixed", "hct:end_of_rounds", "fixed_gmm", "fixed_gmm:best_of_P", "free_bits", "vanilla"} <= methods
    assert {r["method"] for r in second["rows"]} == {"hct:fixed", "hct:end_of_rounds"}
    assert all(r["n"] >= 1 and r["reconstruction"] is not None for r in first["rows"])
    table = (out / "table.md").read_text()
    assert "| digits | corners | mi | hct:fixed |" in table
    assert (out / "rate_distortion_digits.png").stat().st_size > 0


def test_hct_variants_rejects_an_unknown_variant_before_any_work(tmp_path):
    proc = _run("hct_variants.py", "--variants", "elbo,bogus", "--out", str(tmp_path / "x"))
    assert proc.returncode != 0 and "--variants entries must be among" in proc.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_barrier_durability_quick_run_logs_every_member_along_the_single_objective(tmp_path):
    """Catches: trajectories that skip the baselines or the start of the single-objective phase, and a table
    whose rows do not cover every (method, setting)."""
    out = tmp_path / "d"
    proc = _run("barrier_durability.py", "--quick", "--datasets", "digits", "--replicates", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads((out / "digits.json").read_text())
    traj = d["trajectories"]
    assert traj["steps"][0] == 0 and traj["steps"] == sorted(traj["steps"]) and len(traj["steps"]) >= 3
    assert len(traj["hct_mi"][0]) == 2 * 3 and len(traj["base_mi"][0]) == 2 * 2 * 3  # 2 settings x P=3 (x 2 baselines)
    methods = {(r["method"], r["s2_scale"]) for r in d["rows"]}
    assert len(methods) == 5 * 2
    assert (out / "mi_digits.png").stat().st_size > 0 and "| hct:fixed |" in (out / "table.md").read_text()
