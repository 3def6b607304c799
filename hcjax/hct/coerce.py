"""Type-checked config values: what :class:`hcjax.hct.config.HCTConfig` applies to every option it is given.

JSON and command lines give lists, ints for floats and strings; :func:`coerce` checks a value against a
field's declared type (``bool``, ``int``, ``float``, ``str``, ``tuple[X, ...]``, ``X | Y | None``), converts
lists to tuples and ints to floats, and raises a TypeError naming the option (``section.field``).
"""

from __future__ import annotations

import dataclasses
import types
import typing

__all__ = ["coerce", "checked_section"]


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(path: str, value, tp):
    """``value`` checked against the declared type ``tp`` (lists become tuples); TypeError names ``path``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for tp_i in inner[:-1]:  # X | Y | None: the first type that accepts the value
            try:
                return coerce(path, value, tp_i)
            except TypeError:
                pass
        try:
            return coerce(path, value, inner[-1])
        except TypeError:
            if len(inner) == 1:
                raise
            names = " or ".join(_type_name(a) for a in inner) + (" or None" if type(None) in args else "")
            raise TypeError(f"{path} must be {names}, got {value!r} of type {type(value).__name__}.") from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path} must be a list of {_type_name(args[0])}, got {value!r} "
                            f"of type {type(value).__name__}.")
        return tuple(coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value))
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[tp]
    if not ok(value):
        raise TypeError(f"{path} must be {_type_name(tp)}, got {value!r} of type {type(value).__name__}.")
    return float(value) if tp is float else value


def checked_section(name: str, cls, values: dict):
    """``cls(**values)`` with every value coerced to its field's type; ValueError for an unknown field."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {[f'{name}.{u}' for u in unknown]} in config section {name!r}; "
                         f"known: {sorted(known)}.")
    return cls(**{k: coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()})
