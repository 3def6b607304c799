"""``hcjax train --log``: a real (tiny) run logs to TensorBoard and W&B (offline), and ``hcjax report``
renders its files; a bad ``--log`` is refused before any work."""

import glob
import os
import subprocess
import sys

import pytest

from hcjax.hct import HCTConfig

# The configuration of tests/hct/test_run.py::test_the_cli_writes_its_figures, so that in one test session
# the programs compile once (the persistent compilation cache of tests/conftest.py).
TINY = dict(num_samples=600, population_size=4, rounds=2, steps_per_round=40, num_pruned=1, final_steps=40,
            eval_points=64, num_candidates=4, hidden=(16,), certificate=False, batch_size=32, em_iters=20,
            refit_points=200, seed=3)
CLI = [sys.executable, "-m", "hcjax.cli", "train"]


@pytest.mark.slow
def test_train_logs_tensorboard_and_wandb_offline_and_report_renders_it(tmp_path, monkeypatch, capfd):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hcjax import cli

    cfg, out = str(tmp_path / "cfg.json"), str(tmp_path / "run")
    HCTConfig.from_dict(TINY).save_json(cfg)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert cli.main(["train", "--config", cfg, "--out", out, "--log", "jsonl,tensorboard,wandb"]) == 0
    err = capfd.readouterr().err
    assert "unit 3/3 (final)" in err and "ETA" in err and "\r" not in err  # not a terminal: one line per unit
    acc = EventAccumulator(os.path.join(out, "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("member/00/mutual_info")] == [1, 2]
    assert [e.step for e in acc.Scalars("member/01/train_loss")] == [1, 2, 3]
    assert {"figures/rounds", "figures/lineage", "figures/latents"} <= set(acc.Tags()["images"])
    assert any(t.startswith("summary/0/vanilla/") for t in acc.Tags()["scalars"])
    assert glob.glob(os.path.join(out, "wandb", "offline-run-*", "run-*.wandb"))
    assert cli.main(["report", out]) == 0
    page = open(os.path.join(out, "report.html")).read()
    assert page.count("data:image/png;base64,") == 3 and "finished: 3 of 3 units" in page


def test_a_bad_log_value_is_one_error_line_before_anything_is_written(tmp_path):
    out = str(tmp_path / "run")
    done = subprocess.run(CLI + ["--out", out, "--log", "jsonl,foo"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hcjax train: error: --log 'jsonl,foo': unknown writer 'foo'; choose comma-separated names from jsonl, "
        "tensorboard, wandb."]
    assert not os.path.exists(out)
