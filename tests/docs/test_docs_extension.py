"""The documentation build's own checks (docs/_ext/hcjax_docs.py): a public name without a docstring is a
warning (an error under ``make docs``'s ``-W``), field lists render, figures of RESULTS.md are inlined."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "docs", "_ext"))
hcjax_docs = pytest.importorskip("hcjax_docs", reason="needs Sphinx (pip install 'hcjax[docs]')")


@pytest.fixture
def warnings(monkeypatch):
    seen = []
    monkeypatch.setattr(hcjax_docs.logger, "warning", lambda message, **kw: seen.append(message))
    return seen


def test_a_public_name_without_a_docstring_is_a_warning(warnings):
    def documented():
        """Has one."""

    def undocumented():
        pass

    class Config:  # a dataclass without a docstring gets "Config(a: int)" from Python: still missing
        __doc__ = "Config(a: int)"

    for what, name, obj, lines in [("function", "m.documented", documented, ["Has one."]),
                                   ("function", "m.undocumented", undocumented, []),
                                   ("method", "m.C._private", undocumented, []),
                                   ("class", "m.Config", Config, ["Config(a: int)"]),
                                   ("attribute", "m.C.field", None, [])]:
        hcjax_docs.check_docstring(None, what, name, obj, {}, list(lines))
    assert warnings == ["public function without a docstring: m.undocumented",
                        "public class without a docstring: m.Config"]


def test_every_public_module_gets_an_api_page(tmp_path):
    names = hcjax_docs.write_api_pages(str(tmp_path))
    assert {"hcjax", "hcjax.metric_writers", "hcjax.report", "hcjax.hct.run", "hcjax.cli.report"} <= set(names)
    assert not any(part.startswith("_") for n in names for part in n.split("."))
    page = (tmp_path / "hcjax.hct.rst").read_text()
    assert ".. automodule:: hcjax.hct" in page and ":ignore-module-all:" in page and "hcjax.hct.run" in page


def test_field_lines_become_bullets_and_bars_are_escaped():
    lines = ["Intro.", "", "params: the weights", "  continued.", "with_a, with_b: flags", "", "Returns: x."]
    assert hcjax_docs.fields_to_bullets(lines) == [
        "Intro.", "", "* ``params``: the weights", "  continued.", "* ``with_a``, ``with_b``: flags", "",
        "Returns: x."]
    assert hcjax_docs.fields_to_bullets(["Note: one field alone stays as it is."]) == [
        "Note: one field alone stays as it is."]
    assert hcjax_docs.escape_bars("max_j |e_j| and ``|x|``") == "max_j \\|e_j\\| and ``|x|``"


def test_figures_named_in_results_are_shown_inline_and_a_missing_one_is_a_warning(tmp_path, warnings):
    (tmp_path / "results" / "a").mkdir(parents=True)
    for name in ("fig.png", "other.png"):
        (tmp_path / "results" / "a" / name).write_bytes(b"png")
    text = "Intro.\n\nSee `results/a/fig.png`, `other.png` and `results/a/gone.png`.\n\nEnd."
    out = hcjax_docs.inline_figures(text, str(tmp_path))
    assert out == ("Intro.\n\nSee `results/a/fig.png`, `other.png` and `results/a/gone.png`.\n\n"
                   "![fig.png](results/a/fig.png)\n\n![other.png](results/a/other.png)\n\nEnd.\n")
    assert warnings == ["RESULTS.md names a figure that does not exist: results/a/gone.png"]
