"""Progress of ``hcjax train`` (hcjax/cli/progress.py): one line per unit off a terminal, a tqdm bar on one,
and an ETA from the measured unit times of each phase."""

import io

import pytest

from hcjax.cli import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_eta_uses_each_phases_measured_unit_time():
    d = {"rounds": [10.0, 12.0], "final": []}
    assert progress.eta_seconds(d, unit=2, total=6, rounds=3) == pytest.approx(11 * 1 + 11 * 3)  # no final yet
    d["final"] = [2.0]
    assert progress.eta_seconds(d, unit=4, total=6, rounds=3) == pytest.approx(2 * 2)
    assert progress.eta_seconds({"rounds": [], "final": []}, 0, 6, 3) is None
    assert [progress.format_seconds(s) for s in (None, 42, 185, 3720)] == ["?", "42s", "3m05s", "1h02m"]


def test_off_a_terminal_one_line_per_unit_with_eta_and_no_carriage_returns():
    out = io.StringIO()
    p = progress.UnitProgress(rounds=2, stream=out)
    for unit, phase in ((1, "rounds"), (2, "rounds"), (3, "final")):
        p.clear()
        p.update(unit, 3, phase)
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["unit 1/3", "unit 2/3", "unit 3/3"]
    assert "(final)" in lines[2] and lines[0].endswith(("s", "?")) and "ETA" in lines[0]
    assert lines[2].endswith("ETA 0s") and "\r" not in out.getvalue()


def test_on_a_terminal_a_tqdm_bar_counts_units_and_resumes_from_the_first_unit_seen():
    out = _Terminal()
    p = progress.UnitProgress(rounds=4, stream=out)
    p.update(3, 5, "rounds")  # a resumed run: units 1-2 were done before
    assert p.bar is not None and p.bar.n == 3 and p.bar.total == 5
    p.clear()
    p.update(5, 5, "final")
    assert p.bar is None  # closed after the last unit
    text = out.getvalue()
    assert "\r" in text and "5/5 units" in text and "ETA" in text
