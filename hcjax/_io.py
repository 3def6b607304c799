"""Atomic file writes: write to a temporary file in the same directory, then rename over the target.

A reader (or a crash at any moment, even SIGKILL) sees either the old file or
the complete new one, never a partial write.
"""

from __future__ import annotations

import json
import math
import os
import tempfile

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_write_with", "json_safe", "dumps"]


def _umask_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (0o666 minus the process umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _temporary(directory: str, prefix: str, suffix: str) -> tuple[int, str]:
    """``mkstemp`` in ``directory``, with the usual permissions instead of mkstemp's owner-only 0600."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.chmod(tmp, _umask_mode())
    return fd, tmp


def atomic_write_with(path: str, write) -> None:
    """Call ``write(tmp_path)`` to produce the file, then rename it to ``path`` (same directory, so atomic).

    The temporary name keeps ``path``'s extension (writers such as ``savefig`` and ``np.savez`` read it).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = _temporary(directory, f".{stem}.", f".tmp{ext}")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (the directory is created if missing)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = _temporary(directory, "." + os.path.basename(path) + ".", ".tmp")
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


def json_safe(value):
    """``value`` with every non-finite float (NaN, +-inf) replaced by None, so it is standard JSON.

    Containers are rebuilt (tuples become lists); NumPy scalars and arrays become Python values.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # NumPy scalars and arrays
        return json_safe(value.tolist())
    return value


def dumps(value, **dump_kwargs) -> str:
    """Standard JSON text of ``value``: non-finite numbers are written as null (see :func:`json_safe`)."""
    return json.dumps(json_safe(value), allow_nan=False, **dump_kwargs)


def atomic_write_json(path: str, value, **dump_kwargs) -> None:
    """:func:`dumps` of ``value`` written atomically to ``path`` (non-finite numbers as null)."""
    atomic_write_text(path, dumps(value, **dump_kwargs))
