"""``hcjax report RUN_DIR``: one self-contained HTML page of a finished or running run (see :mod:`hcjax.report`).

Reads ``config.json``, ``metrics.jsonl``, ``summary.json`` and ``figures/`` of the run (nothing is
recomputed) and writes ``RUN_DIR/report.html`` (or ``--output``): the comparison table per group, the
per-unit table, the figures embedded as PNG, the lineage and the configuration.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    """Options of ``hcjax report``."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by hcjax train (--out)")
    p.add_argument("--output", "-o", help="the HTML file to write (default RUN_DIR/report.html)")


def run(args: argparse.Namespace) -> int:
    """Run ``hcjax report``; returns the exit status (2 when RUN_DIR is not a run, before any work)."""
    from hcjax import report

    try:
        files = report.load_run(args.run_dir)
        if args.output and os.path.isdir(args.output):
            raise ValueError(f"--output {args.output!r} is a directory; give a file name such as report.html.")
    except ValueError as exc:
        print(f"hcjax report: error: {exc}", file=sys.stderr)
        return 2
    from hcjax._io import atomic_write_text

    path = args.output or os.path.join(args.run_dir, "report.html")
    try:
        text = report.render_html(files)
    except ImportError as exc:
        print(f"hcjax report: figures skipped ({exc})", file=sys.stderr)
        text = report.render_html(files, with_figures=False)
    atomic_write_text(path, text)
    print(f"wrote {path}")
    return 0
