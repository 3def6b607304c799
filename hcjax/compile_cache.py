"""JAX's persistent compilation cache for hcjax's command line: on by default, in a per-user directory.

A second ``hcjax train`` with the same shapes reads its compiled XLA programs from disk instead of compiling
them again (JAX keys each entry on the program, the backend, the devices and the JAX/jaxlib versions, so a
stale entry is never used). The command line turns it on with :func:`enable_from_environment`; a library
user calls :func:`enable` (importing hcjax changes no global JAX setting).

Where: ``$HCJAX_COMPILATION_CACHE`` if it names a directory; off if it is ``0``, ``off``, ``false`` or
``no`` (or with ``hcjax train --no-compile-cache``); otherwise ``$XDG_CACHE_HOME/hcjax/xla`` (default
``~/.cache/hcjax/xla``).
"""

from __future__ import annotations

import os
import warnings

import jax

__all__ = ["ENV_VAR", "MIN_COMPILE_SECONDS", "MIN_SECONDS_ENV_VAR", "default_directory", "directory_from_environment",
           "enable", "enable_from_environment"]

ENV_VAR = "HCJAX_COMPILATION_CACHE"
OFF_VALUES = ("0", "off", "false", "no")
# Programs that compile faster than this are not written to the cache. JAX's default, 1 s, skips most of a small
# run's programs; 0 keeps them all: measured side by side on the demo (benchmarks/cache_threshold.py), a warm
# start then compiles 2.1 s instead of 8.2 s (0.1 s threshold), the cold start is not slower (the ~280 entries
# are 2.2 MB) and no program near the threshold is cached in one run and compiled again in the next.
MIN_COMPILE_SECONDS = 0.0
# JAX's own variable for that threshold; where the user sets it, it wins over MIN_COMPILE_SECONDS
MIN_SECONDS_ENV_VAR = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def default_directory() -> str:
    """``$XDG_CACHE_HOME/hcjax/xla``, or ``~/.cache/hcjax/xla`` when XDG_CACHE_HOME is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hcjax", "xla")


def directory_from_environment(disabled: bool = False) -> str | None:
    """The cache directory ``$HCJAX_COMPILATION_CACHE`` asks for (None: off); ``disabled`` turns it off."""
    value = os.environ.get(ENV_VAR, "").strip()
    if disabled or value.lower() in OFF_VALUES:
        return None
    return os.path.expanduser(value) if value else default_directory()


def enable(directory: str, min_compile_seconds: float | None = None) -> str | None:
    """Point JAX's persistent compilation cache at ``directory`` (created if missing); returns it.

    ``min_compile_seconds``: programs that compile faster are not cached; None takes
    ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` where set, else :data:`MIN_COMPILE_SECONDS`.
    Call before the first compilation. Returns None, with a warning, when the directory cannot be created or
    written (the run goes on without the cache).
    """
    if min_compile_seconds is None:
        value = os.environ.get(MIN_SECONDS_ENV_VAR, "").strip()
        try:
            min_compile_seconds = float(value) if value else MIN_COMPILE_SECONDS
        except ValueError:
            raise ValueError(f"{MIN_SECONDS_ENV_VAR}={value!r}: expected a number of seconds >= 0") from None
    if not min_compile_seconds >= 0:
        raise ValueError(f"min_compile_seconds={min_compile_seconds!r}: expected a number of seconds >= 0")
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(f"{directory!r} is not writable")
    except OSError as exc:
        warnings.warn(f"compilation cache off: cannot use {directory!r} ({exc}); set {ENV_VAR}=0 to silence "
                      "this, or point it at a writable directory", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def enable_from_environment(disabled: bool = False) -> str | None:
    """:func:`enable` at :func:`directory_from_environment`'s directory; None when the cache stays off."""
    directory = directory_from_environment(disabled)
    return None if directory is None else enable(directory)
