"""``hcjax report`` (issue 17): the page of a finished and of a running run, from the files alone."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from hcjax import report
from hcjax import cli

DATA = os.path.join(os.path.dirname(__file__), "data", "tiny_run")  # the files of a real 5-unit run (P = 4)


@pytest.fixture
def finished(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(DATA, run)
    return str(run)


@pytest.fixture
def running(tmp_path):
    """The same run after 2 of its 5 units: no summary.json, two lines of metrics.jsonl."""
    run = tmp_path / "running"
    run.mkdir()
    shutil.copy(os.path.join(DATA, "config.json"), run)
    with open(os.path.join(DATA, "metrics.jsonl")) as f:
        (run / "metrics.jsonl").write_text("".join(f.readlines()[:2]))
    return str(run)


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_the_page_of_a_finished_run_has_every_table_figure_and_the_config(finished):
    assert cli.main(["report", finished]) == 0
    page = open(os.path.join(finished, "report.html")).read()
    summary = json.load(open(os.path.join(finished, "summary.json")))
    assert "finished: 5 of 5 units" in page
    for model in summary["summary"][0]:  # every model of the comparison, with its mean MI
        name = f"HCT, then {model[4:]}" if model.startswith("hct:") else model
        assert f"<td class=\"l\">{name}</td>" in page
        assert report._fmt(summary["summary"][0][model]["mutual_info"]["mean"]) in page
    assert page.count("<tr>") > 30 and "consensus: member 1" in page and "2&lt;-0" in page
    images = _images(page)
    assert len(images) == 2 and all(i[:8] == b"\x89PNG\r\n\x1a\n" and len(i) > 10_000 for i in images)
    assert "&quot;synthetic&quot;" in page and "steps_per_round" in page  # the configuration
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained


def test_a_running_run_is_reported_from_what_it_has_written(running):
    page = report.render_html(report.load_run(running))
    assert "not finished (running or interrupted): 2 of 5 units recorded" in page
    assert "no <code>summary.json</code> yet" in page and "round 2" in page and "round 3" not in page
    assert len(_images(page)) == 2  # rounds and lineage re-drawn from metrics.jsonl alone


def test_the_run_figures_without_a_redraw_are_embedded_as_written(finished):
    from hcjax import plotting

    plt = plotting._pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    plotting._save(fig, os.path.join(finished, "figures", "latents.png"))
    page = report.render_html(report.load_run(finished))
    assert 'id="fig-latents"' in page and len(_images(page)) == 3


@pytest.mark.parametrize("make, match", [
    (lambda d: None, "is not a directory"),
    (lambda d: os.makedirs(d), r"is not an hcjax run directory \(no config.json\)"),
    (lambda d: (os.makedirs(d), open(os.path.join(d, "config.json"), "w").write("{oops")), "cannot read"),
])
def test_a_directory_that_is_not_a_run_is_one_error_line_and_nothing_is_written(tmp_path, make, match):
    target = str(tmp_path / "not_a_run")
    make(target)
    before = sorted(os.listdir(tmp_path))
    done = subprocess.run([sys.executable, "-m", "hcjax.cli", "report", target], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hcjax report: error: RUN_DIR") and target in lines[0]
    assert re.search(match, lines[0]), lines[0]
    assert sorted(os.listdir(tmp_path)) == before and not os.path.exists(os.path.join(target, "report.html"))
