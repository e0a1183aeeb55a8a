"""TOML tables -> typed, frozen specs, with every unknown key and wrong-typed value reported at once.

A spec is a frozen dataclass; its annotations are the schema. :func:`typed_fields` checks a table
against them (``str``, ``int``, ``float``, ``bool``, ``X | None``, ``tuple[str, ...]``,
``tuple[int, ...]`` and :class:`probekit.choices.Choice` enums) and returns the values converted
(lists become tuples, enum strings stay plain strings), so a typo fails at ``--check`` time, not an
hour into a run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from enum import Enum

__all__ = ["check_keys", "typed_fields"]


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if isinstance(hint, type) and issubclass(hint, Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if hint is type(None):
        return "absent"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, str(hint))


def _convert(value, hint):
    """``(ok, converted)`` for ``value`` against type ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, v = _convert(value, arg)
            if ok:
                return True, v
        return False, None
    if origin is tuple:
        if not isinstance(value, list):
            return False, None
        items = [_convert(v, typing.get_args(hint)[0]) for v in value]
        return all(ok for ok, _ in items), tuple(c for _, c in items)
    if hint is type(None):
        return value is None, None
    if isinstance(hint, type) and issubclass(hint, Enum):
        return (value in [m.value for m in hint]), value
    if hint in (bool, str):
        return isinstance(value, hint), value
    if hint in (int, float):
        # TOML's true is a Python int, but not a number here; an integer is a valid float
        ok = isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
        return ok, hint(value) if ok else None
    return True, value  # a field typed otherwise is checked by its owner


def check_keys(where: str, table: object, allowed: set[str], problems: list[str]) -> dict:
    """``table`` when it is a table (else ``{}``), with one message in ``problems`` per key not in ``allowed``."""
    if not isinstance(table, dict):
        problems.append(f"{where} must be a table")
        return {}
    for key in sorted(set(table) - allowed):
        problems.append(f"{where}: unknown key '{key}' (allowed: {', '.join(sorted(allowed))})")
    return table


def typed_fields(cls, table: dict, where: str, problems: list[str], skip: Iterable[str] = (), extra: Iterable[str] = ()) -> dict:
    """The keys of ``table`` that are fields of dataclass ``cls``, type-checked and converted.

    ``skip``: fields the caller converts itself (left out of the result); ``extra``: keys allowed in
    the table although ``cls`` has no such field. Each unknown key and each bad value appends one
    message naming ``where`` and the key to ``problems``; missing required fields too.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = (set(fields) | set(extra)) - {"path"}
    if not isinstance(table, dict):
        problems.append(f"{where} must be a table")
        return {}  # and no "is required" messages for the fields of a table that is not there
    check_keys(where, table, allowed, problems)
    out: dict = {}
    for key in sorted(set(table) & allowed & set(fields) - set(skip)):
        ok, value = _convert(table[key], hints[key])
        if ok:
            out[key] = value
        else:
            problems.append(f"{where}: {key} = {table[key]!r}; use {_describe(hints[key])}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in table and name not in skip:
            problems.append(f"{where}: {name} is required")
    return out
