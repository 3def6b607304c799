"""The ``hcjax`` command line.

Each subcommand lives in its own module exposing ``configure(parser)`` (add
arguments) and ``run(args) -> int`` (exit status); modules are imported only
when their subcommand runs, so ``hcjax --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "train": ("hcjax.cli.train", "run Historical Consensus Training (the main job) beside vanilla, fixed-GMM and free-bits baselines"),
    "linear": ("hcjax.cli.linear", "exact linear-VAE thresholds, closed-form KL table and trained-model check"),
    "report": ("hcjax.cli.report", "one self-contained HTML page (tables, figures, config, lineage) of a run"),
}


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the ``chosen`` subcommand's module is imported and configured."""
    parser = argparse.ArgumentParser(prog="hcjax", description="Posterior collapse in VAEs, in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_module=module)
        if name == chosen:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hcjax`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
