"""Command-line flags generated from the config's field metadata (defaults, choices and help written once).

Every :mod:`hcjax.hct.config` field whose metadata names a ``flag`` becomes
an option of ``hcjax train`` with ``dest="section.field"``; its type comes
from the field's annotation (comma lists for tuples), its choices and help
from the metadata, and its default (shown once in ``--help``) from the
dataclass. Flags a user did not give are absent from the parsed namespace,
so :func:`config_overrides` returns only what the command line changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from hcjax.hct.config import SECTIONS

__all__ = ["add_config_flags", "config_overrides", "flag_of"]


def _list_parser(item_type, choices, allow_none_word: bool):
    def parse(text: str):
        if allow_none_word and text.strip() == "none":
            return ()
        try:
            values = tuple(item_type(t.strip()) for t in text.split(",") if t.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {item_type.__name__}, "
                                             f"got {text!r}") from None
        bad = [v for v in values if choices and v not in choices]
        if bad or (not values and not allow_none_word):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list among {tuple(choices or ())}"
                                             f"{' or none' if allow_none_word else ''}, got {text!r}")
        return values
    return parse


def _show_default(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "none"
    return str(value)


def _argument(field: dataclasses.Field, tp) -> dict:
    meta = field.metadata
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin not in (None, tuple):  # Optional[X]
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    kwargs = {"help": f"{meta['help']} (default: {_show_default(field.default)})", "default": argparse.SUPPRESS}
    if origin is tuple:
        kwargs["type"] = _list_parser(args[0], meta["choices"], allow_none_word=field.name == "methods")
        kwargs["metavar"] = "A,B,..."
    elif tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = tp
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        else:
            kwargs["metavar"] = {int: "N", float: "X", str: "NAME"}[tp]
    return kwargs


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one option per flagged config field (``--s2`` and ``--s2-scale`` are mutually exclusive)."""
    s2_group = parser.add_mutually_exclusive_group()
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            flag = field.metadata.get("flag")
            if not flag:
                continue
            target = s2_group if flag in ("--s2", "--s2-scale") else parser
            names = [flag] + ([field.metadata["short"]] if field.metadata.get("short") else [])
            target.add_argument(*names, dest=f"{section}.{field.name}", **_argument(field, hints[field.name]))


def config_overrides(args: argparse.Namespace) -> dict:
    """``{"section.field": value}`` for every config flag given on the command line."""
    out = {k: v for k, v in vars(args).items() if "." in k}
    if "objective.decoder_variance_scale" in out:  # --s2-scale replaces an absolute s2 from --config
        out["objective.decoder_variance"] = None
    return out


def flag_of(path: str) -> str | None:
    """The CLI flag of option ``section.field`` (None if it has none), for error messages."""
    section, _, name = path.partition(".")
    cls = SECTIONS.get(section)
    if cls is None:
        return None
    field = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    return None if field is None else field.metadata.get("flag")
