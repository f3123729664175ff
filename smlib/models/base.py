"""Base classes shared by every model: energies, direct score models, latent Gaussian EBMs.

Conventions (the book's conventions table; pinned by ``tests/test_models.py``):

* density ``p(x) = exp(-E(x)) / Z``; for latent models ``energy(x)`` is the free energy
  ``F(x) = -log ∫ exp(-E(x, h)) dh`` (sum over discrete ``h``);
* score ``ψ(x) = ∇ₓ log p(x) = -∇ₓ E(x)``, shape (B, d);
* every batch is a (B, d) floating tensor; energies are returned per sample, shape (B,).

Optional closed-form derivatives that `smlib.objectives` uses when a model provides them:

* ``score_divergence(x)``      -> (B,)  ∇·ψ = Σᵢ ∂ψᵢ/∂xᵢ  (= -ΔE)
* ``score_jacobian_diagonal(x)`` -> (B, d) ∂ψᵢ/∂xᵢ      (= -∂²E/∂xᵢ²)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smlib._checks import check_choice, check_int

__all__ = ["EnergyModel", "ScoreModel", "LatentGaussianModel", "rho_bernoulli", "softplus"]

# Above this input, x + log1p(e⁻ˣ) rounds to x in the dtype (e⁻ˣ < ½ ulp(x)): float64 needs
# x > 33.3, float32 x > 14.6, so returning x there is exact. torch's default threshold of 20
# is exact for float32 but off by up to e⁻²⁰ ≈ 2·10⁻⁹ per unit in float64.
_SOFTPLUS_THRESHOLD = {torch.float64: 40.0}


def _check_input(model, x: torch.Tensor, name: str = "x") -> None:
    """Cheap shape/dtype check (no host sync, so it is safe inside samplers and torch.func)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating torch.Tensor of shape (batch, {model.dim})")
    if x.ndim != 2 or x.shape[-1] != model.dim:
        raise ValueError(
            f"{name} must have shape (batch, {model.dim}) for {type(model).__name__}, got {tuple(x.shape)}"
        )


def softplus(x: torch.Tensor) -> torch.Tensor:
    r"""softplus(x) = log(1 + eˣ) with no cut-off error in any floating dtype.

    ``torch.nn.functional.softplus`` returns x for x > 20 (its default ``threshold``), an error
    of log(1 + e⁻ˣ) ≈ e⁻ˣ ≤ 2·10⁻⁹ per unit that is far above float64 rounding. Here the
    threshold is chosen per dtype (40 for float64, 20 otherwise) so that the switch to x only
    happens where x + e⁻ˣ already rounds to x (below it, log1p(eˣ) is accurate to a few ulps).
    Its derivative is sigm(x) to rounding, which keeps
    autograd scores equal to the closed-form scores (written with ``torch.sigmoid``) of the free
    energies F(v) = … − Σⱼ softplus(φⱼ(v)) (Swersky et al. 2011, eqs. 7, 11, 14; Vincent 2011).
    """
    return F.softplus(x, beta=1.0, threshold=_SOFTPLUS_THRESHOLD.get(x.dtype, 20.0))


def learnable_or_fixed(module: nn.Module, name: str, value: torch.Tensor, learn: bool) -> None:
    """Attach ``value`` to ``module`` as parameter ``name`` when ``learn``, else as a buffer.

    A buffer moves with ``.to()`` and is saved in ``state_dict`` but gets no gradient, so a fixed
    σ, γ or precision costs nothing in the optimiser.
    """
    if learn:
        setattr(module, name, nn.Parameter(value))
    else:
        module.register_buffer(name, value)


def rho_bernoulli(p: torch.Tensor) -> torch.Tensor:
    """Variance of a Bernoulli(p) unit, ρ(p) = p(1 − p) (Swersky et al. 2011, eq. 12)."""
    return p * (1.0 - p)


class EnergyModel(nn.Module):
    """An energy-based model ``p(x) = exp(-E(x)) / Z`` on ℝ^d.

    Subclasses implement :meth:`energy` (shape (B,)) and set ``self.dim``. ``forward`` is the
    energy. :meth:`score` defaults to automatic differentiation,

        ψ(x) = -∇ₓ E(x),

    computed with ``create_graph=True`` whenever gradients are enabled, so that any loss built
    from the score is differentiable in the parameters θ (the score-matching losses need
    ∂ψ/∂θ). Under ``torch.no_grad()`` (samplers) the score is returned detached and no
    second-order graph is built. Subclasses override it with closed forms where cheap.

    Parameters
    ----------
    dim : int
        Number of visible dimensions d (attribute ``dim``).
    """

    has_energy = True

    def __init__(self, dim: int):
        super().__init__()
        self.dim = check_int("dim (the number of visible dimensions)", dim)

    def energy(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Energy (free energy for latent models) per sample, shape (B,)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`energy`."""
        return self.energy(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Score ψ(x) = −∇ₓE(x) by autograd, shape (B, d) (differentiable in θ and x).

        An energy that does not depend on x (a constant, e.g. E = θ) has ψ = 0 exactly: zeros
        of x's shape and dtype are returned instead of autograd's "not used in the graph" /
        "does not require grad" errors (``allow_unused=True``).
        """
        _check_input(self, x)
        build_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            x_ = x if x.requires_grad else x.detach().requires_grad_(True)
            energy = self.energy(x_)
            grad = None
            if energy.requires_grad:
                (grad,) = torch.autograd.grad(energy.sum(), x_, create_graph=build_graph, allow_unused=True)
        if grad is None:  # E has no path to x: ∇ₓE = 0
            return torch.zeros_like(x, memory_format=torch.contiguous_format)
        return -grad if build_graph else -grad.detach()


class ScoreModel(nn.Module):
    """A model of the score ψ(x) ≈ ∇ₓ log p(x) with no energy (e.g. `ScoreMLP`).

    ``forward`` is the score. ``energy`` raises ``TypeError``: a generic vector field is not
    the gradient of a scalar (check its curl / Jacobian asymmetry with `smlib.metrics`;
    Saremi et al. 2018, Fig. 1 g–h).

    Parameters
    ----------
    dim : int
        Number of dimensions d (attribute ``dim``).
    """

    has_energy = False

    def __init__(self, dim: int):
        super().__init__()
        self.dim = check_int("dim (the number of visible dimensions)", dim)

    def score(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Modelled score ψ(x) ≈ ∇ₓ log p(x), shape (B, d)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`score`."""
        return self.score(x)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Raises ``TypeError``: a direct score model has no energy E with ψ = −∇E."""
        raise TypeError(
            f"{type(self).__name__} models the score ψ(x) directly and has no energy function: "
            "a general vector field is not the gradient of a scalar. Use an energy model "
            "(e.g. smlib.models.MLPEnergy) when you need E(x) or free energies."
        )


class LatentGaussianModel(EnergyModel):
    """Latent EBM whose conditional p(v|h) is Gaussian (Swersky et al. 2011, Corollary 1).

    Subclasses implement ``_theorem1_moments(v)`` returning three (B, d) tensors,

        g = E_{h|v}[∂E(v,h)/∂vᵢ],  s² = Var_{h|v}[∂E(v,h)/∂vᵢ],  c = E_{h|v}[∂²E(v,h)/∂vᵢ²],

    from which Theorem 1 of Swersky et al. (2011) gives everything in closed form:

        ψᵢ = −gᵢ,    ∂ψᵢ/∂vᵢ = s²ᵢ − cᵢ,
        J_SM = mean_B Σᵢ [ ½ gᵢ² + s²ᵢ − cᵢ ]  (reconstruction + variance + curvature).

    The identity ∂ψᵢ/∂vᵢ = Var − E[∂²E] is proved in the paper's supplement: differentiate
    ψᵢ = −E_{h|v}[∂E/∂vᵢ] under the integral and use ∂p(h|v)/∂vᵢ = p(h|v)(gᵢ − ∂E/∂vᵢ).
    """

    def energy(self, v: torch.Tensor) -> torch.Tensor:
        """Free energy F(v) = −log Σ_h ∫ exp(−E(v, h)) dh, shape (B,)."""
        return self.free_energy(v)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """F(v) = −log Σ_h ∫ exp(−E(v, h)) dh, shape (B,) (each subclass gives its closed form)."""
        raise NotImplementedError

    def _theorem1_moments(self, v):  # pragma: no cover - abstract
        raise NotImplementedError

    def score_jacobian_diagonal(self, v: torch.Tensor) -> torch.Tensor:
        """∂ψᵢ/∂vᵢ = Var_{h|v}[∂E/∂vᵢ] − E_{h|v}[∂²E/∂vᵢ²] (Theorem 1), shape (B, d)."""
        _, var, curv = self._theorem1_moments(v)
        return var - curv

    def score_divergence(self, v: torch.Tensor) -> torch.Tensor:
        """∇·ψ = Σᵢ ∂ψᵢ/∂vᵢ = −ΔF(v) in closed form, shape (B,)."""
        return self.score_jacobian_diagonal(v).sum(-1)

    def sm_terms(self, v: torch.Tensor, reduction: str = "mean") -> dict:
        """Closed-form score-matching objective split into its Theorem-1 terms.

        Swersky et al. (2011), Theorem 1:

            reconstruction = ½ Σᵢ (E_{h|v}[∂E/∂vᵢ])²
            variance       = Σᵢ Var_{h|v}[∂E/∂vᵢ]
            curvature      = −Σᵢ E_{h|v}[∂²E/∂vᵢ²]          (signed, so that)
            total          = reconstruction + variance + curvature = Σᵢ ½ψᵢ² + ∂ψᵢ/∂vᵢ.

        Parameters
        ----------
        v : torch.Tensor, shape (B, d)
        reduction : {"mean", "none"}
            "mean" (default) averages over the batch (scalars, the canonical J_SM scaling);
            "none" returns per-sample values of shape (B,).

        Returns
        -------
        dict with keys ``reconstruction``, ``variance``, ``curvature``, ``total``.
        """
        check_choice("reduction", reduction, ("mean", "none"))
        g, var, curv = self._theorem1_moments(v)
        terms = {
            "reconstruction": 0.5 * (g * g).sum(-1),
            "variance": var.sum(-1),
            "curvature": -curv.sum(-1),
        }
        terms["total"] = terms["reconstruction"] + terms["variance"] + terms["curvature"]
        if reduction == "mean":
            terms = {k: t.mean() for k, t in terms.items()}
        return terms
