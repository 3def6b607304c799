"""``hcjax report``: one self-contained HTML page of a run, rendered from its files alone.

:func:`load_run` reads a run directory (``config.json``, ``metrics.jsonl``, ``summary.json`` when the run
has finished, and ``figures/``); :func:`render_html` turns it into a page with the comparison table of every
group, the per-unit table, the lineage and constraints, the configuration, and the figures as base64 PNG
images: ``rounds`` and ``lineage`` re-drawn from the records (so a running run has them too), the other
figures the run wrote (``latents.png``, which needs the trained model) embedded as they are. Nothing is
recomputed and nothing outside the page is referenced, so it opens anywhere, offline.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import tempfile
from types import SimpleNamespace

import numpy as np

from hcjax.hct.results import member_stats, model_label

__all__ = ["RunFiles", "load_run", "render_html", "write_report"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.status{padding:.4em .8em;background:#eef6ff;border-left:4px solid #0072B2}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:12px}
"""


@dataclasses.dataclass
class RunFiles:
    """What a run directory holds: ``config`` (``config.json``), ``records`` (the lines of ``metrics.jsonl``),
    ``summary`` (``summary.json``, None while the run is going) and ``figures`` (name -> path of each PNG in
    ``figures/``)."""

    directory: str
    config: dict
    records: list
    summary: dict | None
    figures: dict

    @property
    def total_units(self) -> int:
        """Units the configuration asks for (rounds + final-phase units)."""
        p = self.config.get("population", {})
        return int(p.get("rounds", 0)) + int(self.config.get("final", {}).get("steps", 0)) // max(
            1, int(p.get("steps_per_round", 1)))


def _read_json(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what}: cannot read {path!r} ({exc}).") from None


def load_run(run_dir: str, flag: str = "RUN_DIR") -> RunFiles:
    """Read the files of the run in ``run_dir``; ValueError naming ``flag`` and the directory when it is not
    a run (no ``config.json``) or a file is not valid JSON."""
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.isdir(run_dir):
        raise ValueError(f"{flag} {run_dir!r} is not a directory.")
    if not os.path.isfile(config_path):
        raise ValueError(f"{flag} {run_dir!r} is not an hcjax run directory (no config.json).")
    config = _read_json(config_path, flag)
    if not isinstance(config, dict):
        raise ValueError(f"{flag} {run_dir!r}: config.json is not a JSON object.")
    records = []
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            for i, line in enumerate(f, 1):
                try:
                    records.append(json.loads(line)) if line.strip() else None
                except ValueError:
                    raise ValueError(f"{flag} {run_dir!r}: metrics.jsonl line {i} is not JSON.") from None
    summary_path = os.path.join(run_dir, "summary.json")
    summary = _read_json(summary_path, flag) if os.path.isfile(summary_path) else None
    fig_dir = os.path.join(run_dir, "figures")
    figures = {os.path.splitext(n)[0]: os.path.join(fig_dir, n) for n in sorted(os.listdir(fig_dir))
               if n.endswith(".png")} if os.path.isdir(fig_dir) else {}
    return RunFiles(run_dir, config, records, summary, figures)


# ------------------------------------------------------------------------------------------------ tables
def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e5 or (value and abs(value) < 1e-3) else f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned text."""
    cls = lambda i: ' class="l"' if i < left else ""
    head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(header)) if any(header) else ""
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{html.escape(c if isinstance(c, str) else _fmt(c))}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{head}<tbody>{body}</tbody></table>"


def comparison_tables(run: RunFiles) -> str:
    """One table per group: every model (HCT per final objective, each baseline) with the mean [min, max]
    of every metric of ``summary.json``, over the members that did not diverge."""
    if run.summary is None:
        return "<p>The run has not finished: no <code>summary.json</code> yet.</p>"
    out = []
    for g, (group, models) in enumerate(zip(run.summary.get("groups", []), run.summary.get("summary", []))):
        metrics = list(dict.fromkeys(k for m in models.values() for k, v in m.items()
                                     if k != "members" and isinstance(v, dict)))
        rows = [[model_label(name),
                 *[(f"{_fmt(s[k]['mean'])} [{_fmt(s[k]['min'])}, {_fmt(s[k]['max'])}]" if k in s else "n/a")
                   for k in metrics], s.get("members", {}).get("n"), s.get("members", {}).get("diverged")]
                for name, s in models.items()]
        scale = group.get("decoder_variance_scale")
        out.append(f"<h3>group {g}: s2 = {_fmt(group.get('decoder_variance'))}"
                   f"{f' ({_fmt(scale)} x lambda_max)' if scale is not None else ''}, beta = {_fmt(group.get('beta'))}"
                   f"; consensus member {group.get('consensus_member')}, constraints "
                   f"{html.escape(str(group.get('consensus_history')))}</h3>")
        out.append(_table(["model", *[f"{k} mean [min, max]" for k in metrics], "members", "diverged"], rows))
    return "\n".join(out)


def unit_table(run: RunFiles) -> str:
    """One row per unit of ``metrics.jsonl``: fitness, active units, MI, KL, collapsed/diverged, selection."""
    rows = []
    for r in run.records:
        diverged = r.get("diverged", [False] * len(r.get("train_loss", [])))
        keep = [not d for d in diverged]
        loss = member_stats(r.get("train_loss", []), keep)
        if r.get("phase") != "rounds":
            rows.append([str(r.get("unit")), "final", "", "", "", "", loss[1], "", sum(diverged), ""])
            continue
        f, mi, kl = (member_stats(r.get(k, []), keep) for k in ("fitness", "mutual_info", "kl"))
        sel = r.get("selection")
        move = (" ".join(f"{a}<-{b}" for a, b in zip(sel["pruned"], sel["parents"])) if sel
                else f"consensus: member {r.get('consensus_member')}")
        units = " ".join("x" if d else str(a) for a, d in zip(r.get("active_units", []), diverged))
        rows.append([str(r.get("unit")), f"round {r.get('round')}", f"{_fmt(f[2])} / {_fmt(f[1])}", units,
                     f"{_fmt(mi[0])} / {_fmt(mi[1])} / {_fmt(mi[2])}", kl[1], loss[1], sum(r.get("collapsed", [])),
                     sum(diverged), move])
    header = ["unit", "phase", "fitness best / median", "active units (x: diverged)", "MI nats min / med / max",
              "KL med (nats)", "train loss med", "collapsed", "diverged", "pruned<-parent"]
    return _table(header, rows, left=2) if rows else "<p>No unit has finished yet.</p>"


def lineage_tables(run: RunFiles) -> str:
    """Selections (pruned slot <- parent, new constraint ids) and, when finished, every constraint."""
    sel = [r["selection"] for r in run.records if r.get("selection")]
    parts = [_table(["round", "pruned", "parents", "new constraint ids"],
                    [[str(s.get("round")), " ".join(map(str, s["pruned"])), " ".join(map(str, s["parents"])),
                      " ".join(map(str, s.get("new_ids", [])))] for s in sel], left=4) if sel else
             "<p>No selection yet.</p>"]
    constraints = (run.summary or {}).get("constraints", [])
    if constraints:
        keys = ["id", "source", "round", "group", "parent", "components", "log_likelihood"]
        parts.append("<h3>constraints</h3>" + _table(keys, [[str(c.get(keys[0]))] + [c.get(k) for k in keys[1:]]
                                                            for c in constraints], left=2))
    return "\n".join(parts)


def config_tables(config: dict) -> str:
    """The configuration, one table per section."""
    out = []
    for section, values in config.items():
        if isinstance(values, dict):
            rows = [[k, json.dumps(v)] for k, v in values.items()]
            out.append(f"<h3>{html.escape(section)}</h3>" + _table(["option", "value"], rows, left=2))
        else:
            out.append(f"<p><b>{html.escape(section)}</b>: <code>{html.escape(json.dumps(values))}</code></p>")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- figures
def run_view(run: RunFiles) -> SimpleNamespace:
    """The attributes :func:`hcjax.plotting.plot_rounds` and :func:`~hcjax.plotting.plot_lineage` read, from
    the run's files (a running run has no final or baseline reports and no consensus yet)."""
    c, s = run.config, run.summary or {}
    group = (s.get("groups") or [{}])[0]
    consensus = group.get("consensus_member")
    if consensus is None:
        consensus = next((r["consensus_member"] for r in run.records if "consensus_member" in r), None)
        consensus = consensus[0] if isinstance(consensus, list) else consensus
    section = lambda name: SimpleNamespace(**c.get(name, {}))
    return SimpleNamespace(
        rounds=run.records, final=s.get("final", []), baselines=s.get("baselines", []),
        dataset=s.get("dataset", c.get("data", {}).get("dataset", "?")), lambda_max=s.get("lambda_max"),
        decoder_variance=group.get("decoder_variance", c.get("objective", {}).get("decoder_variance")),
        config=SimpleNamespace(population=section("population"), objective=section("objective"),
                               selection=section("selection")),
        lineage=[r["selection"] for r in run.records if r.get("selection")],
        consensus_member=consensus, consensus_history=group.get("consensus_history", []))


def figures(run: RunFiles) -> list[tuple[str, str, bytes]]:
    """(name, caption, PNG bytes) of every figure: ``rounds`` and ``lineage`` re-drawn from the records
    (when there is a round), then the run's other figures as it wrote them."""
    from hcjax import plotting

    out = []
    view = run_view(run)
    with tempfile.TemporaryDirectory() as tmp:
        if any(r.get("phase") == "rounds" for r in run.records):
            for name, plot, caption in (
                    ("rounds", plotting.plot_rounds, "fitness, mutual information and active units per round "
                                                     "(re-drawn from metrics.jsonl and summary.json)"),
                    ("lineage", plotting.plot_lineage, "lineage (re-drawn from metrics.jsonl)")):
                with open(plot(view, os.path.join(tmp, name + ".png")), "rb") as f:
                    out.append((name, caption, f.read()))
    for name, path in run.figures.items():
        if name not in ("rounds", "lineage"):
            with open(path, "rb") as f:
                out.append((name, f"{name}.png as the run wrote it (needs the trained model to redraw)", f.read()))
    return out


def _figure_html(name: str, caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="fig-{html.escape(name)}"><img alt="{html.escape(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')


# ------------------------------------------------------------------------------------------------- page
def render_html(run: RunFiles, with_figures: bool = True) -> str:
    """The whole report page of ``run`` (self-contained: inline CSS, images as data URIs, no script)."""
    done = len(run.records)
    status = (f"finished: {done} of {run.total_units} units, {_fmt((run.summary or {}).get('elapsed_seconds'), 1)} s"
              if run.summary is not None else
              f"not finished (running or interrupted): {done} of {run.total_units} units recorded")
    s = run.summary or {}
    facts = [("run directory", os.path.abspath(run.directory)), ("status", status),
             ("dataset", s.get("dataset", run.config.get("data", {}).get("dataset"))),
             ("lambda_max", _fmt(s.get("lambda_max"))), ("groups", str(max(1, len(run.config.get("grid") or [])))),
             ("population", json.dumps(run.config.get("population", {})))]
    figs = figures(run) if with_figures else []
    sections = [
        ("Summary", _table(["", ""], [[k, v] for k, v in facts], left=2)),
        ("Comparison per group", comparison_tables(run)),
        ("Per unit", unit_table(run)),
        ("Figures", "\n".join(_figure_html(*f) for f in figs) or "<p>No figures.</p>"),
        ("Lineage", lineage_tables(run)),
        ("Configuration", config_tables(run.config)),
    ]
    body = "\n".join(f'<h2 id="{t.lower().replace(" ", "-")}">{t}</h2>\n{content}' for t, content in sections)
    title = f"hcjax run {os.path.basename(os.path.abspath(run.directory))}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>\n'
            f'<body><h1>{html.escape(title)}</h1><p class="status">{html.escape(status)}</p>\n{body}\n'
            f'<p><small>Written by <code>hcjax report</code> from the run\'s files; nothing was recomputed.'
            f'</small></p></body></html>\n')


def write_report(run_dir: str, out_path: str | None = None) -> str:
    """Render the report of ``run_dir`` and write it atomically to ``out_path`` (default
    ``run_dir/report.html``); returns the path."""
    from hcjax._io import atomic_write_text

    run = load_run(run_dir)
    path = out_path or os.path.join(run_dir, "report.html")
    atomic_write_text(path, render_html(run))
    return path
