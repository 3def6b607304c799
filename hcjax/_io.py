"""Atomic file writes: write to a temporary file in the same directory, then rename over the target.

A reader (or a crash at any moment, even SIGKILL) sees either the old file or
the complete new one, never a partial write.
"""

from __future__ import annotations

import json
import os
import tempfile

__all__ = ["atomic_write_text", "atomic_write_json"]


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (the directory is created if missing)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, value, **dump_kwargs) -> None:
    """``json.dumps(value)`` written atomically to ``path``."""
    atomic_write_text(path, json.dumps(value, **dump_kwargs))
