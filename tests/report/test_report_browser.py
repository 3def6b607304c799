"""The report page in a real headless browser (Debian's Chromium): it loads without console errors, its
figures decode and have a size on the page, its tables render, and a screenshot is not blank.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``); ``HCJAX_CHROMIUM`` names another binary.
Skipped without it, except where ``HCJAX_REQUIRE_CHROMIUM`` is set (``.ci/run`` installs Chromium and sets
it, so there a missing browser fails).
"""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from hcjax import report

DATA = os.path.join(os.path.dirname(__file__), "data", "tiny_run")
CHROMIUM = os.environ.get("HCJAX_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]

# Injected into a copy of the page only: records errors and console.error calls, and after the load event
# writes what rendered into an attribute that --dump-dom prints.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => __errors.push(String(e.message || (e.target && e.target.src) || e)), true);
const __ce = console.error; console.error = (...a) => { __errors.push(a.join(" ")); __ce(...a); };
window.addEventListener("load", () => {
  const imgs = [...document.images];
  document.body.setAttribute("data-probe", JSON.stringify({
    images: imgs.map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.getBoundingClientRect().width,
                            h: i.getBoundingClientRect().height})),
    tables: [...document.querySelectorAll("table")].map(t => ({rows: t.rows.length,
                                                              h: t.getBoundingClientRect().height})),
    errors: __errors}));
});
</script>"""

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("HCJAX_REQUIRE_CHROMIUM"),
                                 reason="needs Chromium (apt-get install -y chromium); .ci/run installs it and "
                                        "sets HCJAX_REQUIRE_CHROMIUM=1, so CI never skips it")]


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"  # a fresh profile per launch
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    run = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(DATA, run)
    return report.write_report(str(run))


def test_figures_and_tables_render_without_console_errors(page, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(open(page).read().replace("<head>", "<head>" + PROBE, 1))
    done = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert match, done.stdout[-2000:] + done.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    assert len(probe["images"]) == 2 and all(i["ok"] and i["w"] > 300 and i["h"] > 100 for i in probe["images"])
    assert len(probe["tables"]) >= 10 and all(t["rows"] >= 2 and t["h"] > 20 for t in probe["tables"])
    assert "CONSOLE" not in done.stderr, done.stderr  # Chromium logs console messages of the page as CONSOLE


def test_a_screenshot_of_the_page_is_not_blank(page, tmp_path):
    import matplotlib.image

    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", "file://" + os.path.abspath(page))
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert "CONSOLE" not in done.stderr, done.stderr
    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    ink = np.any(pixels < 0.9, axis=-1)  # anything not (near) white: text, table rules, plotted lines
    assert 0.02 < ink.mean() < 0.6, ink.mean()
    colour = np.ptp(pixels, axis=-1) > 0.2  # saturated pixels: the figures' Okabe-Ito lines and markers
    assert colour.sum() > 500, colour.sum()
