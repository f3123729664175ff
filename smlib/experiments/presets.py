r"""Typed presets of the experiments: one frozen dataclass per experiment, checked when it is made.

An experiment's sizes and settings are a subclass of :class:`Preset` whose fields carry their types
(``int``, ``float``, ``bool``, ``str``, ``float | None``, ``tuple[float, ...]``, a fixed
``tuple[int, float]``); its ``"ci"`` and ``"paper"`` presets are instances of it. Making one checks
every field against its type and for finiteness, then the subclass's own rules (positive sizes,
non-empty seed lists, sorted grids), each error naming the field. The runner applies ``--set``
overrides with :func:`override` (``dataclasses.replace`` after checking each value against the
*field's* type), and the experiment hooks receive :meth:`Preset.as_dict`: the JSON-safe dict
(lists, not tuples) that ``config.json`` and the record store.

The pattern, for an experiment module::

    @dataclass(frozen=True, kw_only=True)
    class FooConfig(Preset):
        n_steps: int
        lr: float = 1e-3
        seeds: tuple[int, ...]

        def __post_init__(self):
            super().__post_init__()
            self.require_positive("n_steps", "lr")
            self.require_nonempty("seeds")

    PRESETS = {"ci": FooConfig(n_steps=100, seeds=(0,)), "paper": FooConfig(n_steps=10_000, seeds=(0, 1, 2))}

``kw_only`` lets fields keep the order of the dicts they replace (a field with a default may come
before one without), so ``config.json`` lists the settings in the order it always did.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing

__all__ = ["Preset", "override", "preset_dict", "check_value"]


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def check_value(value, tp, what: str):
    """``value`` as a field of type ``tp`` stores it (an int for a float becomes a float, a list for a
    tuple a tuple), or ValueError "``what`` must be of type ..."; non-finite numbers are refused."""
    def bad():
        return ValueError(f"{what} must be of type {_type_name(tp)}, got {value!r}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(value, arg, what)
            except ValueError:
                pass
        raise bad()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_value(v, args[0], f"{what}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(check_value(v, a, f"{what}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if type(value) is not bool:
            raise bad()
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad()
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad()
        if not math.isfinite(value):
            raise ValueError(f"{what}: {value!r} is not a finite number")  # the wording of smlib._cli.check_finite
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"{what}: field type {_type_name(tp)} is not one a preset supports")  # pragma: no cover


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> dict:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _json(v):
    return [_json(x) for x in v] if isinstance(v, tuple) else v


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """Base of an experiment's typed preset (see the module docstring).

    Read-only mapping access (``preset["lr"]``, ``dict(preset)``, ``for key in preset``) gives the
    JSON-safe values of :meth:`as_dict`, so code that read the former dict presets reads these alike.
    """

    def __post_init__(self):
        where = type(self).__name__
        for name, tp in _field_types(type(self)).items():
            object.__setattr__(self, name, check_value(getattr(self, name), tp, f"{where}.{name}"))

    # ---- the rules a subclass states in its __post_init__ (after super().__post_init__())
    def _fail(self, name: str, what: str):
        raise ValueError(f"{type(self).__name__}.{name} {what}, got {getattr(self, name)!r}")

    def require_positive(self, *names: str) -> None:
        """Each named number (or every entry of a named tuple) is > 0."""
        for n in names:
            v = getattr(self, n)
            if v is not None and any(x <= 0 for x in (v if isinstance(v, tuple) else (v,))):
                self._fail(n, "must be positive")

    def require_nonnegative(self, *names: str) -> None:
        """Each named number (or every entry of a named tuple) is >= 0."""
        for n in names:
            v = getattr(self, n)
            if v is not None and any(x < 0 for x in (v if isinstance(v, tuple) else (v,))):
                self._fail(n, "must not be negative")

    def require_fraction(self, *names: str) -> None:
        """Each named number lies in (0, 1]."""
        for n in names:
            v = getattr(self, n)
            if v is not None and not 0 < v <= 1:
                self._fail(n, "must lie in (0, 1]")

    def require_nonempty(self, *names: str) -> None:
        """Each named tuple has at least one entry."""
        for n in names:
            if not getattr(self, n):
                self._fail(n, "must not be empty")

    def require_sorted(self, *names: str) -> None:
        """Each named grid is strictly increasing or strictly decreasing (no repeats; order is the protocol's)."""
        for n in names:
            v = getattr(self, n)
            pairs = list(zip(v, v[1:]))
            if not (all(a < b for a, b in pairs) or all(a > b for a, b in pairs)):
                self._fail(n, "must be sorted without repeats")

    def require_choice(self, name: str, choices) -> None:
        """The named field (each entry, for a tuple) is one of ``choices``."""
        v = getattr(self, name)
        if any(x not in choices for x in (v if isinstance(v, tuple) else (v,))):
            self._fail(name, f"must be one of {sorted(choices)}")

    # ---- the configuration as the hooks, config.json and the record see it
    def as_dict(self) -> dict:
        """``{field: value}`` in field order, tuples as lists (what ``config.json`` holds)."""
        return {f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def keys(self):
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str):
        if key not in _field_types(type(self)):
            raise KeyError(key)
        return _json(getattr(self, key))

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(dataclasses.fields(self))


def override(preset: Preset, overrides: dict, experiment: str) -> Preset:
    """``preset`` with ``overrides`` applied by ``dataclasses.replace``, each value checked against its
    field's type first (errors name the setting, the experiment and the type); the result is checked by
    the preset's own rules."""
    fields = _field_types(type(preset))
    changes = {}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise ValueError(f"unknown setting {key!r} for experiment {experiment!r}; settings: {', '.join(sorted(fields))}")
        changes[key] = check_value(value, fields[key], f"setting {key!r} of experiment {experiment!r}")
    try:
        return dataclasses.replace(preset, **changes)
    except ValueError as err:
        raise ValueError(f"experiment {experiment!r}: {err}") from None


def preset_dict(presets: dict, scale: str) -> dict:
    """The JSON-safe dict of preset ``scale`` (a :class:`Preset`)."""
    return presets[scale].as_dict()
