"""Argument checks shared by every hcjax module.

Each check raises a ValueError or TypeError that names the argument, shows the
offending value, and says what is expected, *before* any computation starts.

Which checks run depends on where the argument lives:

* Python scalars and sequences, NumPy arrays and configs hold host values:
  their *values* are checked (finite, sign, range, ...) as well as their
  type, dtype and shape.
* ``jax.Array`` inputs (concrete device arrays and tracers alike) are checked
  only on static information: type, dtype, shape and rank. Their values are
  never read, so an eager call copies nothing from the device to the host and
  behaves exactly like the same call under ``jax.jit``. A caller that wants
  the value checks on a device array asks for them with ``check_values=True``
  (this copies the array to the host; data loaders do this).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete",
    "checks_values",
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


def checks_values(x: Any, check_values: bool = False) -> bool:
    """Whether the value checks run on ``x`` (see the module docstring).

    True for host values (anything that is not a ``jax.Array``); for a
    concrete ``jax.Array`` only when ``check_values`` is set; never for a
    tracer.
    """
    if not is_concrete(x):
        return False
    return check_values or not isinstance(x, jax.Array)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _hint(hint: str) -> str:
    return f" {hint}" if hint else ""


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
    if isinstance(value, jax.Array) and not (jnp.issubdtype(value.dtype, np.integer)
                                             or jnp.issubdtype(value.dtype, np.floating)):
        raise TypeError(f"{name} must have a real (integer or floating) dtype, got dtype {value.dtype}.")


def _check_bound(name: str, value: Any, hint: str, check_values: bool, strict: bool) -> Any:
    """Shared body of :func:`check_positive` (``strict``) and :func:`check_nonnegative`."""
    _check_real(name, value)
    relation = "> 0" if strict else ">= 0"
    if np.size(value) == 0:
        raise ValueError(f"{name} must be finite and {relation}, got an empty array {_show(value)}.{_hint(hint)}")
    if checks_values(value, check_values):
        arr = np.asarray(value, dtype=np.float64)
        below = arr <= 0 if strict else arr < 0
        if not np.all(np.isfinite(arr)) or np.any(below):
            raise ValueError(f"{name} must be finite and {relation}, got {_show(value)}.{_hint(hint)}")
    return value


def check_positive(name: str, value: Any, hint: str = "", *, check_values: bool = False) -> Any:
    """Require every entry of ``value`` to be finite and > 0 (values of device arrays only on request)."""
    return _check_bound(name, value, hint, check_values, strict=True)


def check_nonnegative(name: str, value: Any, hint: str = "", *, check_values: bool = False) -> Any:
    """Require every entry of ``value`` to be finite and >= 0 (values of device arrays only on request)."""
    return _check_bound(name, value, hint, check_values, strict=False)


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


def check_finite_array(
    name: str,
    x: Any,
    rank: int | tuple[int, ...] | None = None,
    what: str = "",
    *,
    check_values: bool = False,
) -> None:
    """Require a non-empty numeric array of the given rank with no NaN/inf.

    Type, dtype, rank and emptiness are always checked; NaN/inf only for host
    values, or for a concrete device array with ``check_values=True``.
    """
    if not hasattr(x, "shape") and not isinstance(x, (list, tuple)):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}.")
    if rank is not None:
        check_rank(name, x, rank, what)
    if np.size(x) == 0:
        raise ValueError(f"{name} is empty (shape {tuple(np.shape(x))}); it needs at least one element.")
    if isinstance(x, jax.Array) and not (jnp.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}.")
    if checks_values(x, check_values):
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


def check_probability(name: str, value: Any, *, check_values: bool = False) -> Any:
    """Require a scalar in [0, 1] (the value of a device array only on request)."""
    _check_real(name, value)
    if np.size(value) != 1:
        raise ValueError(f"{name} must be a scalar in [0, 1], got shape {tuple(np.shape(value))}.")
    if checks_values(value, check_values):
        v = float(np.asarray(value))
        if not (0.0 <= v <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1], got {v}.")
    return value
