"""Argument checks shared by every hcjax module.

Each check raises a ValueError or TypeError that names the argument, shows the
offending value, and says what is expected, *before* any computation starts.
Checks only run on concrete values: inside ``jax.jit`` / ``jax.vmap`` the
arguments are tracers and the checks are skipped (validate at the Python
boundary, then trace).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np

__all__ = [
    "is_concrete",
    "check_int",
    "check_positive",
    "check_nonnegative",
    "check_finite_array",
    "check_rank",
    "check_probability",
]


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds actual values (not a JAX tracer)."""
    return not isinstance(x, jax.core.Tracer)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Require a Python/NumPy integer in [minimum, maximum]; return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {_show(value)} of type {type(value).__name__}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}.")
    return value


def _check_real(name: str, value: Any) -> None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                                for v in value):
        return
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray, jax.Array, np.number)):
        raise TypeError(f"{name} must be a real number or array, got {_show(value)} of type {type(value).__name__}.")


def check_positive(name: str, value: Any, hint: str = "") -> Any:
    """Require every entry of ``value`` to be finite and > 0 (skipped for tracers)."""
    _check_real(name, value)
    if is_concrete(value):
        arr = np.asarray(value, dtype=np.float64)
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name} must be finite and > 0, got {_show(value)}.{(' ' + hint) if hint else ''}")
    return value


def check_nonnegative(name: str, value: Any, hint: str = "") -> Any:
    """Require every entry of ``value`` to be finite and >= 0 (skipped for tracers)."""
    _check_real(name, value)
    if is_concrete(value):
        arr = np.asarray(value, dtype=np.float64)
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be finite and >= 0, got {_show(value)}.{(' ' + hint) if hint else ''}")
    return value


def check_rank(name: str, x: Any, rank: int | tuple[int, ...], what: str = "") -> None:
    """Require ``x.ndim`` in ``rank`` (works on tracers: shapes are static)."""
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    ndim = np.ndim(x)
    if ndim not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        shape = tuple(np.shape(x))
        raise ValueError(
            f"{name} must have rank {expected}{(' (' + what + ')') if what else ''}, "
            f"got shape {shape} (rank {ndim})."
        )


def check_finite_array(name: str, x: Any, rank: int | tuple[int, ...] | None = None, what: str = "") -> None:
    """Require a non-empty numeric array of the given rank with no NaN/inf."""
    if not hasattr(x, "shape") and not isinstance(x, (list, tuple)):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}.")
    if rank is not None:
        check_rank(name, x, rank, what)
    if np.size(x) == 0:
        raise ValueError(f"{name} is empty (shape {tuple(np.shape(x))}); it needs at least one element.")
    if is_concrete(x):
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}.")
        bad = ~np.isfinite(arr.astype(np.float64))
        if np.any(bad):
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf), first at index {first}; "
                "clean or impute the data before passing it."
            )


def check_probability(name: str, value: Any) -> Any:
    """Require a scalar in [0, 1]."""
    _check_real(name, value)
    if is_concrete(value):
        v = float(np.asarray(value))
        if not (0.0 <= v <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1], got {v}.")
    return value
