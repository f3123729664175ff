r"""The training objectives as typed settings, and the one table of their names.

Each objective is a small frozen dataclass that checks itself when it is made:

>>> DSM(sigma=0.1)                                   # a loss: DSM(sigma=0.1)(model, x) is a 0-d tensor
>>> PCD(n_chains=100, k=1, sampler="langevin")       # the settings of a stateful mcmc.PCD estimator
>>> DSM(sigma=-1)                                    # doctest: +SKIP
ValueError: option 'sigma' of objective 'dsm' must be > 0, got -1.0

Its fields are its options: their types (``float``, ``int``, ``bool``, ``int | None``, ``Literal``
choices) are read from the annotations and enforced (a string is never taken for a number), and
each class adds its own range checks. Class attributes say where it applies: ``name``,
``stateful`` (keeps state between steps: the MCMC estimators of :mod:`smlib.mcmc`), ``cuda_graph``
(the CUDA-graph step of `fit` can capture it), ``ensemble`` (`smlib.ensemble.fit_ensemble` can
batch it), ``needs`` (what a model must have), ``lower_bound`` (a value the loss cannot cross).
:data:`REGISTRY` maps each name to its class; `fit`, its fast path, `fit_ensemble` and the book's
conventions table read it, and no other module lists objective names.

:func:`resolve` turns every form a user may pass — a name with an options dict, one of these
dataclasses, an estimator instance, or a callable ``(model, x) -> loss`` — into one
:class:`Objective`, in one place. Score-matching losses (:mod:`smlib.objectives.losses`) are
stateless; MCMC estimators return the surrogate mean E(x⁺) − mean E(sg[x⁻]) and hold chains,
fast weights and a generator, which checkpoints save.
"""
import dataclasses
from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

import torch

from smlib import mcmc
from smlib.objectives import losses
from smlib.objectives.config import ObjectiveConfig, Option, _opt
from smlib.objectives.derivatives import METHODS
from smlib.objectives.multiscale import MultiScaleDSM

__all__ = ["ObjectiveConfig", "SM", "DSM", "SSM", "SSMVR", "KingmaLeCun", "AE", "MSDSM", "CD", "PCD", "FPCD", "LangevinCD",
           "Option", "Objective", "REGISTRY", "make", "names", "spec", "resolve"]


# -------------------------------------------------------------------------------------- score matching
@dataclass(frozen=True, kw_only=True)
class SM(ObjectiveConfig):
    """Exact score matching J_SM (Hyvärinen 2005), closed form where the model has one."""

    name = "sm"
    cuda_graph = ensemble = True
    summary = "J_SM = mean Σᵢ[½ψᵢ² + ∂ψᵢ/∂xᵢ] (closed form where the model has one)"
    reference = "Hyvärinen 2005"

    @classmethod
    def route(cls, model_cls) -> str:
        if hasattr(model_cls, "sm_terms"):
            return "closed form"
        return "Hessian trace" if getattr(model_cls, "has_energy", False) else "Jacobian trace"

    def __call__(self, model, x, noise=None):
        return losses.sm(model, x)


@dataclass(frozen=True, kw_only=True)
class DSM(ObjectiveConfig):
    """Denoising score matching J_DSM at noise level σ (Vincent 2011)."""

    name = "dsm"
    cuda_graph = ensemble = True
    lower_bound = 0.0
    summary = "J_DSM = mean ½‖ψ(x+σε) + ε/σ‖²"
    reference = "Vincent 2011"
    sigma: float = _opt(doc="noise standard deviation σ > 0")

    def validate(self):
        self._require("sigma", self.sigma > 0, "> 0")

    def draw(self, x, generator=None):
        return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)

    def __call__(self, model, x, noise=None):
        return losses.dsm(model, x, self.sigma, noise=noise)


@dataclass(frozen=True, kw_only=True)
class SSM(ObjectiveConfig):
    """Sliced score matching J_SSM (Song et al. 2019)."""

    name = "ssm"
    cuda_graph = ensemble = True
    summary = "J_SSM = mean[½(uᵀψ)² + uᵀ(∇ψ)u]"
    reference = "Song et al. 2019"
    vr: ClassVar[bool] = False
    n_slices: int = _opt(1, "projections per data point, ≥ 1")
    kind: Literal[losses.PROJECTIONS] = _opt("gaussian", "projection distribution")

    def validate(self):
        self._require("n_slices", self.n_slices >= 1, ">= 1")

    def draw(self, x, generator=None):
        return losses.sample_projections((self.n_slices, *x.shape), self.kind, x.dtype, x.device, generator)

    def __call__(self, model, x, noise=None):
        return losses.ssm(model, x, self.n_slices, vr=self.vr, projections=noise, kind=self.kind)


@dataclass(frozen=True, kw_only=True)
class SSMVR(SSM):
    """SSM with ½‖ψ‖² for ½(vᵀψ)² (variance reduced; Song et al. 2019)."""

    name = "ssm_vr"
    vr = True
    summary = "SSM with ½‖ψ‖² for ½(uᵀψ)² (variance reduced)"


@dataclass(frozen=True, kw_only=True)
class KingmaLeCun(ObjectiveConfig):
    """Regularised score matching J_SM + λ mean Σᵢ(∂²E/∂xᵢ²)² (Kingma & LeCun 2010)."""

    name = "kingma_lecun"
    cuda_graph = True
    summary = "J_SM + λ mean Σᵢ(∂²E/∂xᵢ²)²"
    reference = "Kingma & LeCun 2010"
    lam: float = _opt(doc="weight λ ≥ 0 of Σᵢ(∂²E/∂xᵢ²)²")
    method: Literal[METHODS] = _opt("auto", "how ∂ψᵢ/∂xᵢ is computed")

    def validate(self):
        self._require("lam", self.lam >= 0, ">= 0")

    def __call__(self, model, x):
        return losses.kingma_lecun(model, x, self.lam, self.method)


@dataclass(frozen=True, kw_only=True)
class AE(ObjectiveConfig):
    """The reconstruction term alone, mean ½‖x^r(x) − x‖² (Swersky et al. 2011)."""

    name = "ae"
    cuda_graph = True
    needs = "reconstruct"
    lower_bound = 0.0
    summary = "mean ½‖x^r(x) − x‖², x^r one free-energy gradient step"
    reference = "Swersky et al. 2011"

    def __call__(self, model, x):
        return losses.ae(model, x)


@dataclass(frozen=True, kw_only=True)
class MSDSM(ObjectiveConfig):
    """Multi-scale DSM over a geometric ladder σ_max … σ_min (Song & Ermon 2019), for models whose
    score takes σ (`smlib.models.NoiseConditionalEnergy`, `NoiseConditionalScore`); the loss is
    :class:`smlib.objectives.multiscale.MultiScaleDSM` (an explicit ladder: pass that object itself)."""

    name = "msdsm"
    needs = "noise_conditional"
    lower_bound = 0.0
    summary = "J_MSDSM = mean λ(σ_ℓ) ½‖s(x+σ_ℓε, σ_ℓ) + ε/σ_ℓ‖², ℓ ~ U{1..L}, λ(σ) = σ²"
    reference = "Song & Ermon 2019"
    sigma_max: float = _opt(doc="largest σ₁ of the geometric ladder, > sigma_min")
    sigma_min: float = _opt(doc="smallest σ_L > 0")
    n_levels: int = _opt(10, "levels L of the ladder, ≥ 2")
    weighting: Literal["sigma2", "none"] = _opt("sigma2", "λ(σ) = σ² or 1")

    def validate(self):
        self._require("sigma_min", self.sigma_min > 0, "> 0")
        self._require("sigma_max", self.sigma_max > self.sigma_min, "> sigma_min")
        self._require("n_levels", self.n_levels >= 2, ">= 2")

    def build(self):
        return MultiScaleDSM(sigma_max=self.sigma_max, sigma_min=self.sigma_min, n_levels=self.n_levels,
                             weighting=self.weighting)


# -------------------------------------------------------------------------------------- MCMC estimators
@dataclass(frozen=True, kw_only=True)
class _Estimator(ObjectiveConfig):
    """Settings of a stateful :mod:`smlib.mcmc` estimator: ``build()`` makes a fresh one."""

    stateful = True
    needs = "energy"
    estimator: ClassVar[type] = mcmc.MCMCEstimator

    @classmethod
    def route(cls, model_cls) -> str:
        return "block Gibbs" if hasattr(model_cls, "gibbs_step") else "Langevin / MALA / HMC"

    def validate(self):
        try:  # the estimator's own checks are the one source of its ranges
            self.build()
        except ValueError as err:
            raise ValueError(f"objective {self.name!r}: {err}") from None

    def build(self):
        return self.estimator(**asdict(self))

    def __call__(self, model, x):
        raise TypeError(f"{self!r} holds the settings of a stateful estimator; use .build() (or pass it to fit)")


@dataclass(frozen=True, kw_only=True)
class _Sampled(_Estimator):
    k: int = _opt(1, "sampler transitions per update, ≥ 0")
    sampler: Literal[mcmc.SAMPLERS] = _opt("auto", "'auto': block Gibbs if the model has it, else Langevin")
    step_size: float = _opt(0.01, "Langevin/MALA step h, HMC leapfrog step, > 0")
    n_leapfrog: int = _opt(10, "HMC leapfrog steps per transition, ≥ 1")
    noise_scale: float = _opt(1.0, "multiplier of the Langevin noise (1: correct Langevin), ≥ 0")
    target_accept: float = _opt(0.65, "MALA/HMC step-size adaptation target, in (0, 1)")
    adapt: bool = _opt(True, "adapt the MALA/HMC step size")
    step_rule: Literal[mcmc.STEP_RULES] = _opt("robbins_monro", "'reject_target': Ranzato's running HMC rule")
    target_reject: float = _opt(0.1, "rejection rate step_rule='reject_target' holds, in (0, 1)")
    seed: int | None = _opt(None, "seed of the estimator's generator (None: from fit's generator)")


@dataclass(frozen=True, kw_only=True)
class CD(_Sampled):
    """CD-k: k sampler transitions from the data (Hinton 2002)."""

    name = "cd"
    estimator = mcmc.CD
    summary = "CD-k: k sampler transitions from the data"
    reference = "Hinton 2002"


@dataclass(frozen=True, kw_only=True)
class PCD(_Sampled):
    """Persistent CD: chains carried across updates (Tieleman 2008)."""

    name = "pcd"
    estimator = mcmc.PCD
    summary = "persistent CD: chains carried across updates"
    reference = "Tieleman 2008"
    n_chains: int = _opt(100, "persistent chains, ≥ 1")
    init: Literal["data", "noise"] = _opt("data", "chains start at data rows or N(0, I)")


@dataclass(frozen=True, kw_only=True)
class FPCD(PCD):
    """PCD with decaying fast weights (Tieleman & Hinton 2009)."""

    name = "fpcd"
    estimator = mcmc.FPCD
    summary = "PCD with decaying fast weights"
    reference = "Tieleman & Hinton 2009"
    fast_lr: float = _opt(1e-2, "fast-weight rate η_f > 0")
    fast_decay: float = _opt(0.95, "fast-weight decay λ in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class LangevinCD(_Estimator):
    """CD with Langevin negatives (Hyvärinen 2007; Saremi et al. 2018, DEEN eqs. 26–27)."""

    name = "langevin_cd"
    estimator = mcmc.LangevinCD
    summary = "CD with Langevin negatives (DEEN eqs. 26–27)"
    reference = "Hyvärinen 2007; Saremi et al. 2018"
    n_steps: int = _opt(1, "Langevin steps from the (noisy) data, ≥ 1")
    step_size: float = _opt(0.01, "Langevin step h > 0")
    noise_scale: float = _opt(1.0, "multiplier of the Langevin noise, ≥ 0")
    init_noise: float = _opt(0.0, "std of noise added to the data before the steps, ≥ 0")
    seed: int | None = _opt(None, "seed of the estimator's generator")

    @classmethod
    def route(cls, model_cls) -> str:
        return "✓"


#: name -> objective class, in the book's order
REGISTRY: dict[str, type[ObjectiveConfig]] = {c.name: c for c in (SM, DSM, SSM, SSMVR, KingmaLeCun, AE, MSDSM, CD, PCD,
                                                                   FPCD, LangevinCD)}


def names(**capabilities) -> tuple[str, ...]:
    """Registered names, optionally filtered: ``names(cuda_graph=True)``, ``names(stateful=False)``."""
    return tuple(n for n, c in REGISTRY.items() if all(getattr(c, k) == v for k, v in capabilities.items()))


def spec(name: str) -> type[ObjectiveConfig]:
    """The class of ``name`` (ValueError listing the names otherwise)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(map(repr, REGISTRY))}")
    return REGISTRY[name]


class Objective:
    """What :func:`resolve` returns and `fit` trains with: a callable ``(model, x) -> loss``.

    ``settings`` is the objective dataclass (None for a custom callable or estimator), ``spec``
    its class, ``state`` the estimator whose ``state_dict`` checkpoints save (None when
    stateless), ``config()`` the JSON-able description a checkpoint records and compares on resume.
    """

    def __init__(self, fn, label: str, options: dict, *, state=None, settings: ObjectiveConfig | None = None):
        self.fn, self.label, self._options, self.state, self.settings = fn, label, options, state, settings
        self.__name__ = label

    @classmethod
    def from_settings(cls, settings: ObjectiveConfig) -> "Objective":
        fn = settings.build()
        return cls(fn, settings.name, asdict(settings), state=fn if settings.stateful else None, settings=settings)

    @property
    def name(self) -> str:
        return self.label

    @property
    def spec(self):
        return None if self.settings is None else type(self.settings)

    @property
    def options(self) -> dict:
        return dict(self._options)

    def __call__(self, model, x):
        return self.fn(model, x)

    def config(self) -> dict:
        """``{"objective": name, "options": {...}}`` (all options, defaults included)."""
        return {"objective": self.label, "options": dict(self._options)}

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"Objective({self.label!r}{', ' if opts else ''}{opts})"


def resolve(objective, options: dict | None = None) -> Objective:
    """The one :class:`Objective` for whatever a user passes as an objective.

    ``objective`` is a name of :data:`REGISTRY` (with ``options``, a dict of its fields), an
    objective dataclass (``DSM(sigma=0.1)``), an :class:`Objective`, an :mod:`smlib.mcmc`
    estimator instance (its state is checkpointed), or a callable ``(model, x) -> loss``
    (``options`` are then keyword arguments of each call).

    Raises
    ------
    ValueError
        An unknown name, or an option value of the wrong type or out of range (named).
    TypeError
        Unknown or missing options (named), options given with an already-built objective, or
        an objective that is neither a name nor callable.
    """
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of the objective's options, got {type(options).__name__}")
    if isinstance(objective, str):
        cls = spec(objective)
        options = dict(options or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for objective {objective!r}; accepted: {known or 'none'}")
        missing = [o.name for o in cls.options() if o.required and o.name not in options]
        if missing:
            raise TypeError(f"objective {objective!r} needs option(s) {missing} "
                            f"(e.g. fit(..., {objective!r}, options={{{missing[0]!r}: ...}}))")
        return Objective.from_settings(cls(**options))
    if options and isinstance(objective, (Objective, ObjectiveConfig)):
        raise TypeError(f"{objective!r} already carries its options; pass options only with a name")
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, ObjectiveConfig):
        return Objective.from_settings(objective)
    if not callable(objective):
        raise TypeError(f"objective must be a name in {tuple(REGISTRY)}, an objective such as DSM(sigma=0.1), "
                        f"an estimator or a callable (model, x) -> loss; got {objective!r}")
    label = getattr(objective, "__name__", type(objective).__name__)
    state = objective if hasattr(objective, "state_dict") and hasattr(objective, "load_state_dict") else None
    recorded = objective.config() if hasattr(objective, "config") else {k: repr(v) for k, v in (options or {}).items()}
    fn = objective
    if options:
        kwargs = dict(options)

        def fn(model, x):
            return objective(model, x, **kwargs)

    return Objective(fn, label, recorded, state=state)


def make(name: str, **options) -> Objective:
    """Build the objective ``name`` with ``options`` (validated, defaults filled in)."""
    return resolve(name, options)
