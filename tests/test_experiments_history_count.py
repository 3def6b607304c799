"""Smoke test of experiments/history_count.py: a tiny run writes well-formed outputs; bad flags are one-line errors."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
history_count = pytest.importorskip("history_count")

TINY = ["--quick", "--s2-scales", "2", "--betas", "1", "--counts", "1,2", "--objectives", "fixed,standard_normal",
        "--seeds", "2", "--constraint-steps", "4", "--final-steps", "4", "--eval-every", "2"]


@pytest.mark.slow  # ~19 s cold on 2 shared cores (compiles of both phases, the refit and the evaluation)
def test_a_tiny_run_writes_well_formed_outputs(tmp_path):
    assert history_count.main(TINY + ["--out", str(tmp_path)]) == 0
    for name in ("digits_refit.json", "table.md", "COMMAND.txt", "mi_digits_refit.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rec = json.loads((tmp_path / "digits_refit.json").read_text())
    assert rec["units"] == 2 and rec["unit_steps"] == 2
    assert rec["members"] == {"constraint_phase": 4, "single_objective_phase": 8}
    assert rec["constraint_log"]["step"] == [0, 2, 4] and rec["final_log"]["step"] == [0, 2, 4]
    assert all(len(v) == 4 for v in rec["constraint_log"]["mutual_info"])
    assert all(len(v) == 8 for v in rec["final_log"]["mutual_info"])
    # every member ends its constraint phase with exactly n distinct constraints, the first shared per replicate
    for m, ids in zip(rec["layout"], rec["constraint_ids"]):
        used = [i for i in ids if i >= 0]
        assert len(used) == len(set(used)) == m["n"]
        assert used[0] == m["replicate"] % rec["sizes"]["num_candidates"]
    assert len(rec["rows"]) == 1 * 2 * 2  # settings x objectives x counts
    for r in rec["rows"]:
        assert r["seeds"] == 2 and len(r["collapse_step_per_seed"]) == 2
        assert 0.0 <= r["fraction_collapsed"] <= 1.0
        assert all(t is None or t in (0, 2, 4) for t in r["collapse_step_per_seed"])
    assert {(r["objective"], r["n"]) for r in rec["pooled"]} == {(o, n) for o in ("fixed", "standard_normal")
                                                                 for n in (1, 2)}
    table = (tmp_path / "table.md").read_text()
    assert "## digits, new constraints by `refit`" in table and "| standard_normal | 2 |" in table
    assert "python experiments/history_count.py --quick" in (tmp_path / "COMMAND.txt").read_text()
    # the table is rebuilt from the JSON alone
    os.remove(tmp_path / "table.md")
    assert history_count.main(["--tables-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "table.md").read_text().startswith("# History count")


def test_collapse_step_is_where_the_member_stays_collapsed():
    steps = [0, 100, 200, 300]
    # collapsed for good (MI < 0.05 or no active unit) from 200 on, though MI is above 0.05 there
    assert history_count.collapse_step(steps, [0.9, 0.2, 0.07, 0.01], [2, 1, 0, 0], 0.05) == 200
    # MI dips below 0.05 at 100 but recovers: the collapse is the last stretch only
    assert history_count.collapse_step(steps, [0.9, 0.04, 0.07, 0.01], [2, 1, 1, 1], 0.05) == 300
    assert history_count.collapse_step(steps, [0.01, 0.2, 0.01, 0.02], [0, 0, 0, 0], 0.05) == 0
    assert history_count.collapse_step(steps, [0.9, 0.04, 0.01, 0.3], [2, 0, 0, 1], 0.05) is None
    assert history_count.first_dip(steps, [0.9, 0.04, 0.2, 0.01], 0.05) == 100
    assert history_count.first_dip(steps, [0.9, 0.5, 0.2, 0.1], 0.05) is None


@pytest.mark.parametrize("flags, flag", [(["--counts", "0,2"], "--counts"), (["--counts", "a"], "--counts"),
                                         (["--s2-scales", "2,-1"], "--s2-scales"), (["--betas", ""], "--betas"),
                                         (["--objectives", "fixed,bogus"], "--objectives"),
                                         (["--datasets", "mnist"], "--datasets"),
                                         (["--constraint-steps", "10"], "--constraint-steps"),
                                         (["--final-steps", "150"], "--final-steps"), (["--seeds", "0"], "--seeds")])
def test_bad_flags_are_one_line_errors_naming_the_flag(flags, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        history_count.parse_args(flags)
    assert exc.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("history_count.py: error:") or "error:" in message
    assert flag in message
