r"""The one table of training objectives: every name `smlib.train.fit` accepts, with its options.

Each entry (:class:`Spec`) gives the objective's name, how to build it from its options, the
options themselves (type, default, constraint), whether it keeps state between steps, and where
it can run: the CUDA-graph step of `fit` and the batched `smlib.ensemble.fit_ensemble`. `fit`,
its fast path, `fit_ensemble` and the book's conventions table all read this table; no other
module lists objective names.

>>> objective = make("dsm", sigma=0.1)              # doctest: +SKIP
>>> loss = objective(model, x)                       # a 0-d tensor; descend it
>>> fit(model, x, "pcd", options={"n_chains": 100})  # doctest: +SKIP  (the same, by name)

Score-matching losses (:mod:`smlib.objectives.losses`) are stateless functions of (model, x).
MCMC estimators (:mod:`smlib.mcmc`) return the surrogate mean E(x⁺) − mean E(sg[x⁻]) and
hold their chains, fast weights and generator, which checkpoints save.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

from smlib import mcmc
from smlib._checks import check_choice
from smlib.objectives import losses
from smlib.objectives.derivatives import METHODS

__all__ = ["Option", "Spec", "Objective", "REGISTRY", "make", "names", "spec"]

_SAMPLERS = ("auto", "gibbs", "langevin", "mala", "hmc")


@dataclass(frozen=True)
class Option:
    """One option of an objective: its name, kind, default and constraint.

    ``kind`` is ``"float"``, ``"int"``, ``"bool"``, ``"choice"`` or ``"int|None"``; ``low`` /
    ``high`` bound numbers (``low_open``/``high_open``: strict), ``choices`` lists a choice's
    values. ``required`` options have no default. Values are checked by :meth:`check`, which
    names the objective and the option in its error: a string is never taken for a number.
    """

    name: str
    kind: str
    default: Any = None
    required: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    doc: str = ""

    def check(self, value, objective: str):
        where = f"option {self.name!r} of objective {objective!r}"
        if self.kind == "choice":
            return check_choice(where, value, self.choices)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{where} must be True or False, got {value!r}")
            return value
        if self.kind == "int|None" and value is None:
            return None
        if self.kind in ("int", "int|None"):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{where} must be an integer, got {value!r} ({type(value).__name__})")
            value = int(value)
        else:  # float
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{where} must be a real number, got {value!r} ({type(value).__name__})")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{where} must be finite, got {value}")
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise ValueError(f"{where} must be {'>' if self.low_open else '>='} {self.low}, got {value}")
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise ValueError(f"{where} must be {'<' if self.high_open else '<='} {self.high}, got {value}")
        return value

    def describe(self) -> str:
        """One line: name, kind, default and constraint (for help texts and the book's table)."""
        if self.kind == "choice":
            rng = "{" + ", ".join(map(repr, self.choices)) + "}"
        else:
            lo = "" if self.low is None else f"{'>' if self.low_open else '≥'} {self.low:g}"
            hi = "" if self.high is None else f"{'<' if self.high_open else '≤'} {self.high:g}"
            rng = self.kind + (f" {lo}" if lo else "") + (f", {hi}" if hi else "")
        dflt = "required" if self.required else f"default {self.default!r}"
        return f"{self.name} ({rng}; {dflt})"


@dataclass(frozen=True)
class Spec:
    """A registered objective (see the module docstring)."""

    name: str
    build: Callable[[dict], Callable]
    options: tuple[Option, ...] = ()
    stateful: bool = False
    cuda_graph: bool = False
    ensemble: bool = False
    needs: str = "score"  # what the model must have: "score", "energy" or "reconstruct"
    lower_bound: float | None = None
    summary: str = ""
    reference: str = ""
    route: Callable | None = None  # model class -> how it computes this objective (the conventions table)

    def applies_to(self, cls) -> str:
        """How this objective applies to a model class: "—" if it cannot, else how (or "✓")."""
        has_energy = getattr(cls, "has_energy", False)
        if (self.needs == "reconstruct" and not hasattr(cls, "reconstruct")) or (self.needs == "energy" and not has_energy):
            return "—"
        return self.route(cls) if self.route is not None else "✓"

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    def resolve(self, options: dict) -> dict:
        """Validated options with defaults filled in; unknown or missing names are a TypeError."""
        options = dict(options or {})
        known = {o.name for o in self.options}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for objective {self.name!r}; "
                            f"accepted: {sorted(known) if known else 'none'}")
        missing = [o.name for o in self.options if o.required and o.name not in options]
        if missing:
            raise TypeError(f"objective {self.name!r} needs option(s) {missing} "
                            f"(e.g. fit(..., {self.name!r}, options={{{missing[0]!r}: ...}}))")
        return {o.name: (o.check(options[o.name], self.name) if o.name in options else o.default)
                for o in self.options}


class Objective:
    """A named objective with its options: callable ``(model, x) -> loss``.

    Built by :func:`make`. ``config()`` is the JSON-able description that checkpoints store and
    compare on resume; ``state`` is the estimator whose ``state_dict`` they save (None for the
    stateless losses).
    """

    def __init__(self, spec: Spec, options: dict):
        self.spec = spec
        self.options = spec.resolve(options)
        self.fn = spec.build(dict(self.options))
        self.state = self.fn if spec.stateful else None
        self.__name__ = spec.name

    @property
    def name(self) -> str:
        return self.spec.name

    def __call__(self, model, x):
        return self.fn(model, x)

    def config(self) -> dict:
        """``{"objective": name, "options": {...}}`` (all options, defaults included)."""
        return {"objective": self.name, "options": dict(self.options)}

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Objective({self.name!r}{', ' if opts else ''}{opts})"


def _loss(fn, **fixed):
    def build(opts):
        kw = {**opts, **fixed}
        return lambda model, x: fn(model, x, **kw)

    return build


def _estimator(cls):
    return lambda opts: cls(**opts)


def _sm_route(cls) -> str:
    if hasattr(cls, "sm_terms"):
        return "closed form"
    return "Hessian trace" if getattr(cls, "has_energy", False) else "Jacobian trace"


def _sampler_route(cls) -> str:
    return "block Gibbs" if hasattr(cls, "gibbs_step") else "Langevin / MALA / HMC"


_SAMPLER_OPTIONS = (
    Option("sampler", "choice", "auto", choices=_SAMPLERS, doc="'auto': block Gibbs if the model has it, else Langevin"),
    Option("step_size", "float", 0.01, low=0.0, low_open=True, doc="Langevin/MALA step h, HMC leapfrog step"),
    Option("n_leapfrog", "int", 10, low=1, doc="HMC leapfrog steps per transition"),
    Option("noise_scale", "float", 1.0, low=0.0, doc="multiplier of the Langevin noise (1: correct Langevin)"),
    Option("target_accept", "float", 0.65, low=0.0, high=1.0, low_open=True, high_open=True,
           doc="MALA/HMC step-size adaptation target"),
    Option("adapt", "bool", True, doc="adapt the MALA/HMC step size"),
    Option("seed", "int|None", None, low=0, doc="seed of the estimator's generator (None: from torch's global RNG)"),
)
_K = Option("k", "int", 1, low=0, doc="sampler transitions per update")
_SSM_OPTIONS = (
    Option("n_slices", "int", 1, low=1, doc="projections per data point"),
    Option("kind", "choice", "gaussian", choices=losses.PROJECTIONS, doc="projection distribution"),
)
_CHAINS = (
    Option("n_chains", "int", 100, low=1, doc="persistent chains"),
    _K,
    Option("init", "choice", "data", choices=("data", "noise"), doc="chains start at data rows or N(0, I)"),
)

_SPECS = (
    Spec("sm", _loss(losses.sm), (), cuda_graph=True, ensemble=True, route=_sm_route,
         summary="J_SM = mean Σᵢ[½ψᵢ² + ∂ψᵢ/∂xᵢ] (closed form where the model has one)", reference="Hyvärinen 2005"),
    Spec("dsm", _loss(losses.dsm), (Option("sigma", "float", required=True, low=0.0, low_open=True,
                                           doc="noise standard deviation σ"),),
         cuda_graph=True, ensemble=True, lower_bound=0.0, summary="J_DSM = mean ½‖ψ(x+σε) + ε/σ‖²",
         reference="Vincent 2011"),
    Spec("ssm", _loss(losses.ssm, vr=False), _SSM_OPTIONS, cuda_graph=True, ensemble=True,
         summary="J_SSM = mean[½(vᵀψ)² + vᵀ(∇ψ)v]", reference="Song et al. 2019"),
    Spec("ssm_vr", _loss(losses.ssm, vr=True), _SSM_OPTIONS, cuda_graph=True, ensemble=True,
         summary="SSM with ½‖ψ‖² for ½(vᵀψ)² (variance reduced)", reference="Song et al. 2019"),
    Spec("kingma_lecun", _loss(losses.kingma_lecun),
         (Option("lam", "float", required=True, low=0.0, doc="weight λ of Σᵢ(∂²E/∂xᵢ²)²"),
          Option("method", "choice", "auto", choices=METHODS, doc="how ∂ψᵢ/∂xᵢ is computed")),
         cuda_graph=True, summary="J_SM + λ mean Σᵢ(∂²E/∂xᵢ²)²", reference="Kingma & LeCun 2010"),
    Spec("ae", _loss(losses.ae), (), cuda_graph=True, lower_bound=0.0,
         needs="reconstruct",
         summary="mean ½‖x^r(x) − x‖², x^r one free-energy gradient step", reference="Swersky et al. 2011"),
    Spec("cd", _estimator(mcmc.CD), (_K, *_SAMPLER_OPTIONS), stateful=True, needs="energy", route=_sampler_route,
         summary="CD-k: k sampler transitions from the data", reference="Hinton 2002"),
    Spec("pcd", _estimator(mcmc.PCD), (*_CHAINS, *_SAMPLER_OPTIONS), stateful=True, needs="energy",
         route=_sampler_route, summary="persistent CD: chains carried across updates", reference="Tieleman 2008"),
    Spec("fpcd", _estimator(mcmc.FPCD),
         (*_CHAINS, Option("fast_lr", "float", 1e-2, low=0.0, low_open=True, doc="fast-weight rate η_f"),
          Option("fast_decay", "float", 0.95, low=0.0, high=1.0, high_open=True, doc="fast-weight decay λ"),
          *_SAMPLER_OPTIONS),
         stateful=True, needs="energy", route=_sampler_route, summary="PCD with decaying fast weights",
         reference="Tieleman & Hinton 2009"),
    Spec("langevin_cd", _estimator(mcmc.LangevinCD),
         (Option("n_steps", "int", 1, low=1, doc="Langevin steps from the (noisy) data"),
          Option("step_size", "float", 0.01, low=0.0, low_open=True, doc="Langevin step h"),
          Option("noise_scale", "float", 1.0, low=0.0, doc="multiplier of the Langevin noise"),
          Option("init_noise", "float", 0.0, low=0.0, doc="std of noise added to the data before the steps"),
          Option("seed", "int|None", None, low=0, doc="seed of the estimator's generator")),
         stateful=True, needs="energy", summary="CD with Langevin negatives (DEEN eqs. 26–27)",
         reference="Hyvärinen 2007; Saremi et al. 2018"),
)

#: name -> :class:`Spec`, in the book's order
REGISTRY: dict[str, Spec] = {s.name: s for s in _SPECS}


def names(**capabilities) -> tuple[str, ...]:
    """Registered names, optionally filtered: ``names(cuda_graph=True)``, ``names(stateful=False)``."""
    return tuple(n for n, s in REGISTRY.items() if all(getattr(s, k) == v for k, v in capabilities.items()))


def spec(name: str) -> Spec:
    """The :class:`Spec` of ``name`` (ValueError listing the names otherwise)."""
    check_choice("objective", name, tuple(REGISTRY))
    return REGISTRY[name]


def make(name: str, **options) -> Objective:
    """Build the objective ``name`` with ``options`` (validated, defaults filled in)."""
    return Objective(spec(name), options)
