"""The base of the objective dataclasses: option types read from the fields and enforced, and views for help texts.

:class:`ObjectiveConfig` is what every objective of :mod:`smlib.objectives.registry` derives from;
its ``__post_init__`` checks each field against its annotation (``float``, ``int``, ``bool``,
``int | None``, ``Literal`` choices: a string is never taken for a number, a float must be
finite), then calls the class's own ``validate`` for ranges. Errors name the option and the
objective.
"""
import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import ClassVar, Literal

__all__ = ["ObjectiveConfig", "Option"]


def _opt(default=dataclasses.MISSING, doc=""):
    return field(default=default, metadata={"doc": doc})


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return "{" + ", ".join(map(repr, typing.get_args(tp))) + "}"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return "None" if tp is type(None) else tp.__name__


def _coerce(where: str, value, tp):
    """``value`` checked against the field type ``tp`` (bool, int, float, int | None, Literal)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where} must be one of {', '.join(map(repr, typing.get_args(tp)))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be True or False, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an integer" if tp is int else "a real number"
        raise ValueError(f"{where} must be {kind}, got {value!r} ({type(value).__name__})")
    if tp is int:
        if not isinstance(value, numbers.Integral):
            raise ValueError(f"{where} must be an integer, got {value!r} ({type(value).__name__})")
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where} must be finite, got {value}")
    return value


@dataclass(frozen=True)
class Option:
    """A read-only view of one field of an objective class (for help texts and tests)."""

    name: str
    type: object
    default: object
    required: bool
    doc: str

    def describe(self) -> str:
        """One line: name, type, default, and what the field's doc says of its range."""
        dflt = "required" if self.required else f"default {self.default!r}"
        return f"{self.name} ({_type_name(self.type)}; {dflt}): {self.doc}"


@dataclass(frozen=True, kw_only=True)
class ObjectiveConfig:
    """Base of the objective dataclasses: field types enforced, then the class's own ``validate``."""

    name: ClassVar[str] = ""
    stateful: ClassVar[bool] = False
    cuda_graph: ClassVar[bool] = False
    ensemble: ClassVar[bool] = False
    needs: ClassVar[str] = "score"  # what the model must have: "score", "energy", "reconstruct", "noise_conditional"
    lower_bound: ClassVar[float | None] = None
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(self._where(f.name), getattr(self, f.name), f.type))
        self.validate()

    def _where(self, option: str) -> str:
        return f"option {option!r} of objective {self.name!r}"

    def _require(self, option: str, ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{self._where(option)} must be {what}, got {getattr(self, option)!r}")

    def validate(self) -> None:
        """Range checks beyond the field types (each class adds its own)."""

    def build(self):
        """The callable ``(model, x) -> loss`` (stateless: the settings themselves)."""
        return self

    def draw(self, x, generator=None):
        """The random input of one evaluation on the batch ``x`` (DSM's ε, SSM's v), or None.

        ``self(model, x, noise)`` with this ``noise`` is the loss the call without it would give
        after drawing from the same ``generator`` (``smlib.ensemble`` draws one per member)."""
        return None

    def with_tensors(self, **values):
        """A copy with float options replaced by tensors, unchecked: one member's options inside
        ``torch.func.vmap`` (``smlib.ensemble``, per-member σ); the caller has checked each value."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(values)
        return new

    @classmethod
    def options(cls) -> tuple[Option, ...]:
        """The fields as :class:`Option` views, in declaration order."""
        return tuple(Option(f.name, f.type, None if f.default is dataclasses.MISSING else f.default,
                            f.default is dataclasses.MISSING, f.metadata.get("doc", "")) for f in dataclasses.fields(cls))

    @classmethod
    def option(cls, name: str) -> Option:
        for o in cls.options():
            if o.name == name:
                return o
        raise KeyError(name)

    @classmethod
    def route(cls, model_cls) -> str:
        return "✓"

    @classmethod
    def applies_to(cls, model_cls) -> str:
        """How this objective applies to a model class: "—" if it cannot, else how (or "✓")."""
        has_energy = getattr(model_cls, "has_energy", False)
        if (cls.needs == "reconstruct" and not hasattr(model_cls, "reconstruct")) or (cls.needs == "energy" and not has_energy):
            return "—"
        if (cls.needs == "noise_conditional") != bool(getattr(model_cls, "noise_conditional", False)):
            return "—"  # a score of (x, σ) serves only the multi-scale objectives, and they only it
        return cls.route(model_cls)
