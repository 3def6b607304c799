"""Experiment logging (issue 17): the writers' files read back by TensorBoard's and W&B's own readers."""

import glob
import json
import os

import numpy as np
import pytest

from hcjax import metric_writers as mw

RECORD = {"unit": 1, "phase": "rounds", "round": 1, "train_loss": [1.0, 2.0, 3.0, 4.0],
          "fitness": [-1.0, -2.0, -3.0, None], "mutual_info": [0.5, 0.1, 0.0, float("nan")],
          "active_units": [1, 0, 0, 2], "kl": [1.0, 2.0, 3.0, 4.0], "elbo": [-5.0, -6.0, -7.0, -8.0],
          "diverged": [False, False, False, True], "collapsed": [False, True, True, False]}
FINAL = {"unit": 2, "phase": "final", "train_loss": [1.5, 2.5, 3.5, 4.5], "nonfinite_steps": [0, 0, 0, 0]}
SUMMARY = [{"hct:fixed": {"mutual_info": {"mean": 0.7, "min": 0.6, "max": 0.8, "n": 2},
                          "members": {"n": 2, "diverged": 0}},
            "vanilla": {"mutual_info": {"mean": 0.01, "min": 0.0, "max": 0.02, "n": 2}}}]


def _log_a_run(writers, figure=None):
    logger = mw.RunLogger(writers, group_size=2)
    logger({"unit": 1, "total": 2, "phase": "rounds", "record": RECORD})
    logger({"unit": 2, "total": 2, "phase": "final", "record": FINAL})
    logger.finish(SUMMARY, [figure] if figure else [])


@pytest.fixture
def figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    path = str(tmp_path / "rounds.png")
    fig.savefig(path, dpi=50)
    plt.close(fig)
    return path


def test_round_scalars_per_member_and_per_group_leave_diverged_members_out():
    s = mw.round_scalars(RECORD, group_size=2)
    assert s["member/00/mutual_info"] == 0.5 and s["member/03/active_units"] == 2.0
    assert s["group/0/mutual_info/median"] == pytest.approx(0.3)  # members 0 and 1
    assert s["group/1/mutual_info/median"] == 0.0  # member 3 diverged: only member 2 counts
    assert s["group/1/diverged"] == 1.0 and s["group/0/collapsed"] == 1.0
    assert "member/03/fitness" not in s  # null in the record: not a number
    h = mw.round_histograms(RECORD)
    np.testing.assert_array_equal(h["population/active_units"], [1, 0, 0])
    assert set(mw.round_scalars(FINAL, 2)) >= {"member/00/train_loss", "group/1/train_loss/max"}


def test_tensorboard_events_read_back_with_tensorboards_reader(tmp_path, figure):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _log_a_run(mw.create_writers(["tensorboard"], str(tmp_path)), figure)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0,
                                                                        "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("group/0/mutual_info/median")] == [(1, 0.3)]
    assert [e.step for e in acc.Scalars("member/01/train_loss")] == [1, 2]
    assert acc.Scalars("summary/0/hct_fixed/mutual_info")[0].value == pytest.approx(0.7)
    assert set(tags["histograms"]) == {"population/mutual_info", "population/active_units", "population/kl"}
    hist = acc.Histograms("population/active_units")[0].histogram_value
    assert hist.num == 3 and hist.max == 1.0  # the diverged member (2 active units) is left out
    image = acc.Images("figures/rounds")[0]
    assert image.width > 10 and image.height > 10 and image.encoded_image_string[:4] == b"\x89PNG"


def _wandb_records(path: str) -> list[bytes]:
    """The records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then a LevelDB log
    (32 KiB blocks; each record a 7-byte header of CRC-32C, little-endian length and type, then the data)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b":W&B", data[:8]
    pos, records, pending = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            records.append(chunk)
        elif kind in (2, 3):  # first, middle
            pending = (b"" if kind == 2 else pending) + chunk
        elif kind == 4:  # last
            records.append(pending + chunk)
    return records


def _wandb_history(run_dir: str) -> list[dict]:
    """Every history row of an offline W&B run, parsed with wandb's own protobuf messages."""
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    rows = []
    for data in _wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_wandb_offline_run_holds_the_scalars_histograms_and_images(tmp_path, figure, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _log_a_run(mw.create_writers(["wandb"], str(tmp_path), {"population": {"size": 2}}), figure)
    import wandb

    wandb.teardown()  # wait for wandb's service process to flush and exit (it writes the run file)
    rows = _wandb_history(str(tmp_path))
    merged = {}
    for row in rows:
        merged.setdefault(row.get("_step"), {}).update(row)
    assert sorted(merged, key=str) == [1, 2], [sorted(r)[:5] for r in rows]
    assert merged[1]["group/0/mutual_info/median"] == pytest.approx(0.3)
    assert merged[1]["population/mutual_info/_type"] == "histogram"  # nested values come back flattened
    assert sum(merged[1]["population/active_units/values"]) == 3  # members 0-2 (the diverged one left out)
    assert merged[2]["member/00/train_loss"] == 1.5
    assert merged[2]["figures/rounds/_type"] == "image-file"
    assert merged[2]["summary/0/vanilla/mutual_info"] == pytest.approx(0.01)


def test_jsonl_writer_is_standard_json_and_a_rewritten_step_replaces_the_old_one(tmp_path):
    path = str(tmp_path / "scalars.jsonl")
    w = mw.JsonlWriter(path)
    w.write_scalars(1, {"a": 1.0, "b": float("nan")})
    w.write_scalars(2, {"a": 2.0})
    w2 = mw.JsonlWriter(path)  # a resumed run: step 2 again
    w2.write_scalars(2, {"a": 3.0})
    w2.write_histograms(2, {"h": [1, 2]})
    lines = [json.loads(line, parse_constant=lambda c: pytest.fail(c)) for line in open(path)]
    assert [(r["step"], r["kind"], r["values"]) for r in lines] == [
        (1, "scalars", {"a": 1.0, "b": None}), (2, "scalars", {"a": 3.0}), (2, "histograms", {"h": [1.0, 2.0]})]


@pytest.mark.parametrize("text, match", [("foo", "unknown writer 'foo'"), ("jsonl,tb", "unknown writer 'tb'"),
                                         (",", "unknown writer '(none)'")])
def test_a_bad_writer_name_is_one_error_naming_the_flag_and_value(text, match):
    with pytest.raises(ValueError, match="--log") as info:
        mw.parse_writers(text)
    assert match in str(info.value) and repr(text) in str(info.value)


def test_a_missing_library_is_named(monkeypatch):
    real = mw.importlib.util.find_spec
    monkeypatch.setattr(mw.importlib.util, "find_spec", lambda n: None if n == "wandb" else real(n))
    with pytest.raises(ValueError, match=r"the wandb writer needs wandb: pip install 'hcjax\[log\]'"):
        mw.parse_writers("jsonl,wandb")
    assert mw.parse_writers("tensorboard,jsonl,tensorboard") == ("tensorboard", "jsonl")
