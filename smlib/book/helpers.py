"""Helpers that several chapters and the tests share (defined once here, imported there)."""
from __future__ import annotations

import random
from fractions import Fraction

import torch

from smlib.models.base import EnergyModel
from smlib.models.mcrbm import MCRBM
from smlib.models.mpot import MPoT

__all__ = ["randomise", "all_states", "FreeEnergyOnly", "at_random_rationals", "covariance_test_models",
           "sigm", "softplus"]  # noqa: F822  (sigm, softplus: built on first access by __getattr__)


def randomise(model: torch.nn.Module, scale: float = 1.0, *, generator: torch.Generator | None = None,
              add: bool = False) -> torch.nn.Module:
    """Give every parameter (biases too) N(0, scale²) draws, so that a check sees a generic θ.

    With ``add=True`` the draws are added to the current values instead of replacing them.
    ``generator=None`` draws from the global torch RNG. Returns ``model`` (changed in place).
    """
    with torch.no_grad():
        for p in model.parameters():
            z = scale * torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            p.add_(z) if add else p.copy_(z)
    return model


def all_states(n: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """All 2^n binary vectors as rows, shape (2^n, n), bit i of row r in column i."""
    idx = torch.arange(2**n)
    return ((idx[:, None] >> torch.arange(n)) & 1).to(dtype or torch.get_default_dtype())


class FreeEnergyOnly(EnergyModel):
    """A model seen only through its (free) energy: score and Hessian trace come from autograd.

    The latent models of `smlib` (GRBM, MCRBM, MPoT) carry closed-form scores, and
    `smlib.objectives.sm_generic` differentiates ``model.score``; wrapping the model here hides
    every closed form, so that ψ = −∇F and ∇·ψ = −ΔF are automatic derivatives of
    ``model.free_energy`` (or ``model.energy``) alone — an independent check of the closed forms.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__(model.dim)
        self.model = model

    def energy(self, v: torch.Tensor) -> torch.Tensor:
        f = getattr(self.model, "free_energy", None) or self.model.energy
        return f(v)


def covariance_test_models(n_visible: int, n_factors: int, n_cov: int, n_cov_mpot: int, n_mean: int,
                           gamma: float, seed: int, scale: float = 0.7) -> tuple[MCRBM, MPoT]:
    """The random mcRBM and mPoT on which chapter 5 and its second section check every formula.

    Every parameter, biases included, is drawn N(0, scale²) by `randomise` (the mcRBM's pooling
    matrix through its raw parameter, so P = −softplus(P_raw) stays ≤ 0), from the generators
    seeded ``seed`` (mcRBM) and ``seed + 1`` (mPoT); torch's global random state is left alone.
    """
    with torch.random.fork_rng(devices=[]):        # the constructors' initial draws stay private too
        mcrbm = randomise(MCRBM(n_visible, n_factors, n_cov, n_mean), scale,
                          generator=torch.Generator().manual_seed(seed))
        mpot = randomise(MPoT(n_visible, n_cov_mpot, n_mean, gamma=gamma), scale,
                         generator=torch.Generator().manual_seed(seed + 1))
    return mcrbm, mpot


def at_random_rationals(expr, n_points: int = 3, seed: int = 0, bound: int = 5) -> list:
    """Exact values of a sympy expression at random rational points, to *disprove* an identity.

    Every derivative of an undefined function (highest order first), then every undefined
    function, then every free symbol is replaced by a random rational p/q with |p| ≤ ``bound``·q,
    1 ≤ q ≤ ``bound``; positive symbols get positive values. Derivatives at one point can be
    chosen independently (a polynomial realises any finite jet), so a non-zero value is a
    counterexample: the identity ``expr == 0`` is false. (A non-zero ``sp.simplify`` result, by
    contrast, may just be a form sympy failed to reduce.) Returns the ``n_points`` exact values.
    """
    import sympy as sp
    from sympy.core.function import AppliedUndef

    rng = random.Random(seed)

    def draw(positive=False):
        q = rng.randint(1, bound)
        p = rng.randint(1, bound * q) if positive else rng.randint(-bound * q, bound * q)
        return sp.Rational(Fraction(p, q))

    values = []
    for _ in range(n_points):
        e = sp.sympify(expr).doit()
        derivs = sorted(e.atoms(sp.Derivative), key=lambda d: -d.derivative_count)
        for d in derivs:
            e = e.subs(d, draw())
        for f in e.atoms(AppliedUndef):
            e = e.subs(f, draw())
        e = e.subs({s: draw(positive=bool(s.is_positive)) for s in e.free_symbols})
        values.append(sp.nsimplify(sp.simplify(e)))
    return values


def _logistic_functions() -> dict:
    """The sympy functions sigm and softplus with their derivative rules (built on first use)."""
    import sympy as sp

    class sigm(sp.Function):
        """Logistic sigmoid σ(a) = 1/(1 + e^{−a}), with σ' = σ(1 − σ); ``.rewrite(sp.exp)`` gives the formula.

        Declared as a function with its derivative rule, identities stay polynomial in σ(a), which
        sympy decides exactly; the rule is checked against the formula in chapter 4 and the tests.
        """

        def fdiff(self, argindex=1):
            s = sigm(self.args[0])
            return s * (1 - s)

        def _eval_rewrite_as_exp(self, arg, **kwargs):
            return 1 / (1 + sp.exp(-arg))

    class softplus(sp.Function):
        """softplus(a) = log(1 + e^a), with softplus' = sigm; ``.rewrite(sp.exp)`` gives the formula."""

        def fdiff(self, argindex=1):
            return sigm(self.args[0])

        def _eval_rewrite_as_exp(self, arg, **kwargs):
            return sp.log(1 + sp.exp(arg))

    return {"sigm": sigm, "softplus": softplus}


_LOGISTIC: dict = {}


def __getattr__(name: str):
    # sigm and softplus are sympy classes: build them on first access, so that importing the
    # torch helpers above does not import sympy.
    if name in ("sigm", "softplus"):
        if not _LOGISTIC:
            _LOGISTIC.update(_logistic_functions())
        return _LOGISTIC[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
