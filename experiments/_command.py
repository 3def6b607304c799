"""``COMMAND.txt`` beside an experiment's outputs: the command that made them (shared by the scripts here)."""

from __future__ import annotations

import math
import os
import shlex
import sys


def write_command(out_dir: str, script_file: str, argv=None, append: bool = False) -> str:
    """Write ``python experiments/<script> <args>`` to ``out_dir/COMMAND.txt`` and return it.

    ``argv``: the arguments the script's ``main`` received (None: this
    process's command line). ``append``: keep earlier, different commands
    (for outputs built by several invocations), one per line.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    cmd = " ".join(["python", f"experiments/{os.path.basename(script_file)}", *map(shlex.quote, args)])
    path = os.path.join(out_dir, "COMMAND.txt")
    lines = []
    if append and os.path.exists(path):
        with open(path) as f:
            lines = f.read().splitlines()
    if cmd not in lines:
        lines.append(cmd)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return cmd


def save_and_show(out_dir: str, result: dict, write_table, plot, command: str) -> None:
    """Write ``result`` to ``out_dir/results.json`` (atomically), then print its table and figure paths.

    ``write_table(out_dir, result, command)`` returns the table's lines; ``plot(out_dir, result)`` the figure paths.
    """
    from hcjax._io import atomic_write_json

    atomic_write_json(os.path.join(out_dir, "results.json"), result, indent=1)
    print("\n".join(write_table(out_dir, result, command)))
    for path in plot(out_dir, result):
        print("figure:", path)


def comma_floats(parser, flag: str, text: str) -> tuple[float, ...]:
    """``text`` as a tuple of positive finite numbers, or ``parser.error`` naming ``flag`` (shared by the scripts)."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        parser.error(f"{flag} must be a comma list of numbers, got {text!r}")
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        parser.error(f"{flag} must be a comma list of positive numbers, got {text!r}")
    return values
