"""Typed values from the command line, one parser for ``python -m smlib.experiments --set`` and
``python -m smlib.book.rerun -p``.

A value is read as: ``true``/``True``, ``false``/``False``, ``null``/``None``; an integer; a
number; a JSON or Python literal when it starts with ``[``, ``{`` or a quote (``[1, 2]``,
``{"a": 1}``, ``"adam"``); else the plain string. A number that is not finite (``NaN``,
``Infinity``, ``1e999``), anywhere in the value, is an error that names the option: no setting
of this project takes one, and one that slips through fails far from where it was given.
"""
from __future__ import annotations

import ast
import json
import math

__all__ = ["parse_value", "check_finite"]

_WORDS = {"true": True, "True": True, "false": False, "False": False, "null": None, "None": None}


def check_finite(value, option: str):
    """Return ``value``; ValueError naming ``option`` when it is or holds a non-finite number."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{option}: {value!r} is not a finite number")
    if isinstance(value, dict):
        for v in value.values():
            check_finite(v, option)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_finite(v, option)
    return value


def parse_value(text: str, option: str = "value"):
    """The typed value of ``text`` (see the module docstring); ``option`` names it in errors, e.g. ``"--set lr=NaN"``."""
    if not isinstance(text, str):
        raise TypeError(f"{option}: expected the text of a value, got {type(text).__name__}")
    s = text.strip()
    if s in _WORDS:
        return _WORDS[s]
    for kind in (int, float):
        try:
            return check_finite(kind(s), option)
        except ValueError as err:
            if "finite" in str(err):
                raise
    if s[:1] in "[{\"'":
        try:
            value = json.loads(s)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(s)
            except (ValueError, SyntaxError):
                raise ValueError(f"{option}: {text!r} starts like a list, dict or quoted string but is not one "
                                 "(write it as JSON, e.g. [1, 2] or \"text\")") from None
        return check_finite(value, option)
    return text
