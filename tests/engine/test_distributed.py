"""Multi-process training: two JAX processes on localhost (CPU, gloo) against a single-process run.

Each process of the distributed run forces 2 CPU devices, so the global mesh
has 4 devices; the single-process reference forces 4 local devices, so both
runs shard the population the same way and run the same per-device programs: they agree bit for bit
(measured: every parameter, summary mean and training loss identical), and the test asserts equality.
The distributed run goes through the real command
line (``hcjax train --coordinator ... --num-processes 2 --process-id I``),
including orbax checkpoints written by both processes together.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from hcjax import cli
from hcjax.engine import sharding
from hcjax.hct import HCTConfig

# A run small enough to compile and train in well under a minute, with every HCT step:
# rounds with selection and EM refits, consensus, a final phase, and a baseline population.
CONFIG = dict(num_samples=400, population_size=4, rounds=2, steps_per_round=20, num_pruned=1, final_steps=20,
              eval_points=64, num_candidates=4, hidden=(8,), certificate=False, batch_size=16, em_iters=10,
              refit_points=100, seed=5, baselines=("vanilla",))
TIMEOUT = 150  # seconds for the whole distributed run (the test fails, and kills the processes, after that)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env.pop("JAX_PLATFORMS", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _train(cfg_path: str, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hcjax.cli", "train", "--config", cfg_path, "--out", out, "--no-figures", *extra]


def _wait(procs: dict, deadline: float) -> dict:
    """Wait for every process; kill all of them if one fails or the deadline passes."""
    outputs = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=max(1.0, deadline - time.time()))
            outputs[name] = (proc.returncode, out, err)
            if proc.returncode != 0:
                break
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


@pytest.mark.slow  # > 15 s cold on 2 cores: in `make test-slow` (CI runs it)
def test_two_processes_equal_a_single_process_run(tmp_path):
    """Catches: processes that draw their own random numbers (e.g. keys folded with the process index), or a
    process that trains on its own rows only: the final model, summary and losses would differ from the
    single-process run, which they equal bit for bit."""
    cfg_path = str(tmp_path / "cfg.json")
    HCTConfig.from_dict(CONFIG).save_json(cfg_path)
    port = _free_port()
    dist_out, ref_out = str(tmp_path / "dist"), str(tmp_path / "ref")
    start = time.time()
    procs = {
        f"process {i}": subprocess.Popen(
            _train(cfg_path, dist_out, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                   "--process-id", str(i)),
            env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    }
    procs["reference"] = subprocess.Popen(_train(cfg_path, ref_out, "--quiet"), env=_env(4),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = _wait(procs, start + TIMEOUT)
    elapsed = time.time() - start
    for name in procs:
        assert name in outputs, f"{name} did not finish within {TIMEOUT}s (elapsed {elapsed:.0f}s)"
        code, _, err = outputs[name]
        assert code == 0, f"{name} exited with {code}:\n{err[-3000:]}"

    # the global mesh spanned both processes' devices, and only process 0 reported
    out0, out1 = outputs["process 0"][1], outputs["process 1"][1]
    assert "on 4 devices (2 processes)" in out0
    assert "round" in out0 and "consensus" in out0
    # process 1 prints none of hcjax's reports (its stdout may hold gloo's own connection messages, which gloo
    # writes in pieces, so they are not filtered line by line: hcjax's markers must be absent instead)
    for marker in ("hcjax train", "round", "consensus", "lambda_max", "done in", "active units"):
        assert marker not in out1, f"process 1 printed {marker!r}:\n{out1[-2000:]}"

    # same final model and same summary as the single-process run with the same seed
    with np.load(os.path.join(dist_out, "final_model", "params.npz")) as a, \
            np.load(os.path.join(ref_out, "final_model", "params.npz")) as b:
        assert set(a.files) == set(b.files) and len(a.files) > 4
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with open(os.path.join(dist_out, "summary.json")) as f:
        dist = json.load(f)
    with open(os.path.join(ref_out, "summary.json")) as f:
        ref = json.load(f)
    assert dist["lineage"] == ref["lineage"]
    assert dist["groups"][0]["consensus_history"] == ref["groups"][0]["consensus_history"]
    for name, stats in ref["summary"][0].items():
        assert dist["summary"][0][name]["members"] == stats.pop("members")  # member and diverged counts
        for key, s in stats.items():
            assert dist["summary"][0][name][key]["mean"] == s["mean"], f"{name}/{key}"
    for d_rec, r_rec in zip(dist["rounds"], ref["rounds"]):
        assert d_rec["train_loss"] == r_rec["train_loss"]
    # one metrics file with one line per unit (written by process 0 only) and complete checkpoints
    with open(os.path.join(dist_out, "metrics.jsonl")) as f:
        assert [json.loads(line)["unit"] for line in f] == list(range(1, HCTConfig.from_dict(CONFIG).total_units + 1))
    steps = sorted(int(s) for s in os.listdir(os.path.join(dist_out, "checkpoints")) if s.isdigit())
    assert steps and steps[-1] == HCTConfig.from_dict(CONFIG).total_units


@pytest.mark.parametrize("flags, match", [
    (["--num-processes", "2"], "--num-processes given without --coordinator"),
    (["--process-id", "0"], "--process-id given without --coordinator"),
    (["--coordinator", "localhost"], "--coordinator must be HOST:PORT"),
    (["--coordinator", "localhost:1234"], "--coordinator='localhost:1234' needs --num-processes and --process-id too"),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"],
     r"--process-id must be in \[0, 1\]"),
    (["--coordinator", "localhost:1234", "--num-processes", "0", "--process-id", "0"],
     "--num-processes must be >= 1"),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "0", "--devices", "2"],
     "--devices cannot be combined"),
])
def test_incomplete_distributed_flags_are_refused_before_any_work(flags, match, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["train", "--out", out, "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert "hcjax train: error:" in err
    import re

    assert re.search(match, err), err
    assert not os.path.exists(out)  # nothing was written


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_processes=2), "num_processes given without coordinator_address"),
    (dict(process_id=1), "process_id given without coordinator_address"),
    (dict(coordinator_address="host", num_processes=2, process_id=0), "coordinator_address must be HOST:PORT"),
    (dict(coordinator_address="host:99999", num_processes=2, process_id=0), "coordinator_address must be"),
    (dict(coordinator_address="host:1234", num_processes=2), "needs process_id"),
    (dict(coordinator_address="host:1234", num_processes=2, process_id=5), r"process_id must be in \[0, 1\] for num_processes=2"),
    (dict(coordinator_address="host:1234", num_processes=0, process_id=0), "num_processes must be >= 1"),
])
def test_initialize_distributed_validates_before_touching_jax(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sharding.initialize_distributed(**kwargs)
