"""Reliability of a run's files: refused runs write nothing, crashes lose nothing, JSON is standard,
diverged members are reported as diverged, and bad configs are one-line errors (issue 14)."""

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import typing

import numpy as np
import pytest

from hcjax.hct import HCTConfig, run_hct, save_final_model
from hcjax.hct.config import SECTIONS

TINY = dict(num_samples=600, population_size=4, rounds=3, steps_per_round=40, num_pruned=1, final_steps=80,
            eval_points=64, num_candidates=4, hidden=(16,), certificate=False, batch_size=32, em_iters=20,
            refit_points=200, seed=3)
CLI = [sys.executable, "-m", "hcjax.cli", "train"]


def _tree_hash(directory: str) -> dict:
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _strict_json(text: str):
    """json.loads that refuses NaN / Infinity (what standard parsers do)."""
    def bad(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=bad)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    cfg_path = str(root / "cfg.json")
    HCTConfig.from_dict(TINY).save_json(cfg_path)
    out = str(root / "run")
    done = subprocess.run(CLI + ["--config", cfg_path, "--out", out, "--no-figures", "--quiet"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return cfg_path, out


@pytest.mark.parametrize("extra, match", [
    (["--resume", "--beta", "2"], "belongs to a different configuration"),
    (["--beta", "2"], "already holds checkpoints"),
    ([], "already holds checkpoints"),
    (["--resume", "--s2", "-1"], r"--s2 \(objective.decoder_variance\) must be finite and > 0"),
    (["--resume", "--dataset", "mnist:/nonexistent/mnist"], "mnist"),
])
def test_a_refused_run_leaves_every_file_byte_identical(finished_run, extra, match):
    """Before the fix, a refused --resume rewrote config.json (beta 2 beside beta-1 checkpoints)."""
    cfg_path, out = finished_run
    before = _tree_hash(out)
    done = subprocess.run(CLI + ["--config", cfg_path, "--out", out, "--no-figures", "--quiet", *extra],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hcjax train: error:"), done.stderr[-2000:]
    assert re.search(match, lines[0]), lines[0]
    assert _tree_hash(out) == before


@pytest.mark.parametrize("config_text, match", [
    (None, "No such file"),
    ("[1, 2]", "must be a JSON object"),
    ('{"standardise": "no"}', r"data\.standardise must be bool"),
    ('{"hidden": "64,64"}', r"--hidden \(model\.hidden\) must be a list of int"),
    ("{not json", "Expecting property name"),
])
def test_bad_config_files_are_one_line_errors_and_write_nothing(tmp_path, config_text, match):
    """A missing, unreadable or invalid --config file: exit status 2 (a usage error), one line on stderr that
    names the problem, and no output folder.

    Catches: an invalid config reported with exit status 1 or a traceback (the CLI not mapping the error to a
    usage error), a multi-line message, or the output folder created before the config is checked."""
    path = str(tmp_path / "cfg.json")
    if config_text is not None:
        with open(path, "w") as f:
            f.write(config_text)
    out = str(tmp_path / "out")
    done = subprocess.run(CLI + ["--config", path, "--out", out, "--quiet"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1
    assert re.search(match, done.stderr), done.stderr
    assert not os.path.exists(out)


def _wrong_value(tp):
    """A value of the wrong type for a field annotated ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        return "1,2"
    inner = [a for a in args if a is not type(None)] if args else [tp]
    if len(inner) > 1:  # e.g. int | str | None: a value of none of them
        return next(v for v in (1.5, ["a"]) if not any(isinstance(v, t) for t in inner))
    return {bool: "yes", int: "3", float: "x", str: 5}[inner[0]]


FIELDS = [(section, f.name, typing.get_type_hints(cls)[f.name])
          for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("section, name, tp", FIELDS, ids=[f"{s}.{n}" for s, n, _ in FIELDS])
def test_every_config_field_refuses_a_wrong_type(section, name, tp):
    with pytest.raises(TypeError, match=rf"{section}\.{name}(\[0\])? must be"):
        HCTConfig.from_dict({section: {name: _wrong_value(tp)}})


@pytest.mark.slow  # 20-32 s cold on 2 cores (a whole CLI run): in `make test-slow` (CI runs it)
def test_diverged_members_are_reported_as_diverged_never_as_informative(tmp_path):
    """A learning rate of 1e6 used to show members with 2 active units and MI 5.2 nats, 'collapsed False'."""
    result = run_hct(HCTConfig.from_dict(TINY | {"rounds": 2, "final_steps": 40, "learning_rate": 1e6}))
    reports = [f["report"] for f in result.final] + [b["report"] for b in result.baselines]
    assert reports and all(r["diverged"] and not r["collapsed"] for r in reports)
    for name, summary in result.final_summary().items():
        assert summary["members"]["diverged"] == summary["members"]["n"] == 4, name
        assert set(summary) == {"members"}, summary  # no mean of a diverged member's metrics
    text = json.dumps(result.to_json())  # Python writes NaN; the run's files must not
    assert "NaN" in text or "Infinity" in text
    from hcjax._io import dumps
    _strict_json(dumps(result.to_json()))


@pytest.mark.slow  # 20-32 s cold on 2 cores (a whole CLI run): in `make test-slow` (CI runs it)
def test_the_cli_table_and_files_of_a_diverged_run(tmp_path):
    out = str(tmp_path / "run")
    cfg = str(tmp_path / "cfg.json")
    HCTConfig.from_dict(TINY | {"rounds": 2, "final_steps": 40}).save_json(cfg)
    done = subprocess.run(CLI + ["--config", cfg, "--out", out, "--no-figures", "--learning-rate", "1e6"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if "HCT, then" in line or "vanilla" in line]
    def cell(token):
        return token == "n/a" or float(token) is not None  # raises when two cells ran together

    for line in rows:  # active units, MI, KL, ELBO, margin, n, diverged: 0 members averaged, 4 diverged
        tokens = line.split()
        assert tokens[-2:] == ["0", "4"] and all(cell(t) for t in tokens[-7:]), done.stdout
    with open(os.path.join(out, "summary.json")) as f:
        _strict_json(f.read())
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            _strict_json(line)
    assert "\r" not in done.stderr  # not a terminal: one line per unit, no carriage returns
    assert "unit 3/3 (final)" in done.stderr


@pytest.mark.slow  # 20-32 s cold on 2 cores (a whole CLI run): in `make test-slow` (CI runs it)
def test_resume_into_an_empty_directory_says_so(tmp_path):
    cfg = str(tmp_path / "cfg.json")
    HCTConfig.from_dict(TINY | {"rounds": 1, "final_steps": 0}).save_json(cfg)
    done = subprocess.run(CLI + ["--config", cfg, "--out", str(tmp_path / "new"), "--no-figures", "--resume"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "no checkpoint in" in done.stdout and "starting afresh" in done.stdout
    assert "on 1 device (1 process)" in done.stdout  # was "on 1 devices (1 processes)"


WRITER = r"""
import sys
from hcjax._io import atomic_write_text
path = sys.argv[1]
blocks = ["a" * 20_000_000, "b" * 20_000_000]
i = 0
print("ready", flush=True)
while True:
    atomic_write_text(path, blocks[i % 2])
    i += 1
"""


def test_sigkill_during_an_atomic_write_leaves_the_old_or_the_new_file(tmp_path):
    """Kill a process that rewrites a 20 MB file in a loop, at several moments: the file is always whole."""
    path = str(tmp_path / "summary.json")
    for delay in (0.05, 0.13, 0.31, 0.47, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            assert len(text) == 20_000_000 and len(set(text)) == 1, (delay, len(text))


def _env():
    import jax

    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir or ""
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_step", [1, 5])
def test_sigkill_at_several_points_then_resume_equals_the_uninterrupted_run(tmp_path, kill_after_step):
    """Killed after the first checkpoint, or after the last one (during the end-of-run evaluation and the
    summary/model writes): every file present is whole, and --resume finishes to the uninterrupted result.

    Catches: a --resume that ignores the checkpoints and starts over (deterministic, so it too would end at
    the uninterrupted result; but it would train every unit, which its progress lines show).
    """
    cfg_path = str(tmp_path / "cfg.json")
    config = HCTConfig.from_dict(TINY)
    config.save_json(cfg_path)
    assert config.total_units == 5
    reference = save_final_model(run_hct(config), str(tmp_path / "ref_model"))
    out = str(tmp_path / "killed")
    cmd = CLI + ["--config", cfg_path, "--out", out, "--no-figures", "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    step = os.path.join(out, "checkpoints", str(kill_after_step))
    deadline = time.time() + 240
    while not os.path.isdir(step) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for name in ("summary.json", "metrics.jsonl", "config.json"):
        if os.path.exists(os.path.join(out, name)):
            with open(os.path.join(out, name)) as f:
                text = f.read()
            for line in (text.splitlines() if name.endswith("jsonl") else [text]):
                _strict_json(line)
    steps = sorted(int(s) for s in os.listdir(os.path.join(out, "checkpoints")) if s.isdigit())
    resume = [c for c in cmd if c != "--quiet"] + ["--resume"]  # not quiet: it reports the step and each unit
    done = subprocess.run(resume, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # it restored the newest checkpoint and trained only the units after it (none after step 5)
    found = re.search(r"resuming from the newest intact checkpoint \(latest step (\d+)\)", done.stdout)
    assert found and int(found.group(1)) == steps[-1] >= kill_after_step, done.stdout[-2000:]
    units = [int(u) for u in re.findall(r"^unit (\d+)/\d+ ", done.stderr, re.M)]
    assert units == list(range(steps[-1] + 1, config.total_units + 1)), (steps, units)
    with np.load(os.path.join(reference, "params.npz")) as a, \
            np.load(os.path.join(out, "final_model", "params.npz")) as b:
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert [json.loads(line)["unit"] for line in f] == [1, 2, 3, 4, 5]


@pytest.mark.slow  # > 15 s cold on 2 cores: in `make test-slow` (CI runs it)
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path):
    """400 flipped bytes in the newest checkpoint used to restore silently into a NaN member. Now --resume
    says which step it skipped and why, continues from the previous one, and ends at the uninterrupted result.

    Catches: a fallback that reports step 2 but then starts over (deterministic, so it too would end at the
    uninterrupted result; its progress lines show it training units 1-5 instead of 3-5), or one that skips
    the damaged step's unit (it would train 4-5 only and end elsewhere)."""
    from test_checkpoint_damage import _data_files, _flip

    config = HCTConfig.from_dict(TINY)
    reference = save_final_model(run_hct(config), str(tmp_path / "ref_model"))
    out = str(tmp_path / "run")
    run_hct(config, out_dir=out, stop_after_units=3)
    for path in _data_files(os.path.join(out, "checkpoints", "3")):  # every file: ocdbt keeps unread old nodes
        _flip(path, n=64)
    cfg_path = str(tmp_path / "cfg.json")
    config.save_json(cfg_path)
    done = subprocess.run(CLI + ["--config", cfg_path, "--out", out, "--no-figures", "--resume"],
                          capture_output=True, text=True, timeout=300)  # not quiet: it reports each unit
    assert done.returncode == 0, done.stderr[-3000:]
    warning = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "resuming from checkpoint step 2: step 3 skipped" in warning[0], done.stderr
    assert [int(u) for u in re.findall(r"^unit (\d+)/\d+ ", done.stderr, re.M)] == [3, 4, 5], done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr
    with np.load(os.path.join(reference, "params.npz")) as a, \
            np.load(os.path.join(out, "final_model", "params.npz")) as b:
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_atomic_writes_give_the_permissions_of_a_plain_write(tmp_path):
    """mkstemp creates 0600 files: a run's summary or report would then be unreadable to colleagues."""
    from hcjax._io import atomic_write_json, atomic_write_text, atomic_write_with

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    expected = os.stat(plain).st_mode & 0o777
    atomic_write_text(str(tmp_path / "a.txt"), "x")
    atomic_write_json(str(tmp_path / "b.json"), {"a": 1})
    atomic_write_with(str(tmp_path / "c.bin"), lambda p: open(p, "wb").write(b"x"))
    for name in ("a.txt", "b.json", "c.bin"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected, name
