"""The Gaussian energy: the one model whose score-matching estimator is known in closed form."""
from __future__ import annotations

import math

import torch
from torch import nn

from smlib.models.base import EnergyModel, _check_input, learnable_or_fixed

__all__ = ["GaussianEnergy"]


class GaussianEnergy(EnergyModel):
    r"""Gaussian energy E(x) = ½ (x − μ)ᵀ P (x − μ): the model N(μ, P⁻¹) (Hyvärinen 2005, Sec. 3.1).

    Closed forms (P symmetric positive definite):

        ψ(x) = −P (x − μ),   ∂ψᵢ/∂xᵢ = −Pᵢᵢ,   ∇·ψ = −tr P,
        log Z = (d/2) log 2π − ½ log det P,

    and, for data with mean x̄ and covariance S = (1/n) Σₖ (xₖ − x̄)(xₖ − x̄)ᵀ,

        J_SM(μ, P) = ½ tr(P² [S + (x̄ − μ)(x̄ − μ)ᵀ]) − tr P,

    whose minimiser is μ = x̄, P = S⁻¹ (the maximum-likelihood estimate; Hyvärinen 2005, Sec. 3.1).

    The precision is parametrised by a Cholesky factor, P = L Lᵀ with L lower triangular and
    Lᵢᵢ = exp(L_rawᵢᵢ) > 0, so P stays symmetric positive definite under any optimiser step.

    Parameters
    ----------
    mu : array-like, shape (d,)
        Initial mean μ (learnable parameter ``mu``). A floating tensor keeps its dtype; anything
        else is converted to the default dtype.
    precision : array-like, shape (d, d), optional
        Initial precision P, symmetric positive definite (default: the identity).
    fixed_precision : bool
        If True, P is a buffer (not learned) and only μ is a parameter.

    Attributes
    ----------
    mu : (d,) parameter;  L_raw : (d, d) parameter (buffer if ``fixed_precision``), whose strict
    lower triangle is that of L and whose diagonal is log diag L (the upper triangle is unused).
    """

    def __init__(self, mu, precision=None, fixed_precision: bool = False):
        dtype = mu.dtype if isinstance(mu, torch.Tensor) and mu.is_floating_point() else torch.get_default_dtype()
        mu = torch.as_tensor(mu, dtype=dtype).detach().clone()
        if mu.ndim != 1 or mu.numel() < 1:
            raise ValueError(f"mu must have shape (d,), got shape {tuple(mu.shape)}")
        d = mu.shape[0]
        super().__init__(d)
        if precision is None:
            precision = torch.eye(d, dtype=dtype, device=mu.device)
        P = torch.as_tensor(precision, dtype=dtype, device=mu.device).detach()
        if P.shape != (d, d):
            raise ValueError(f"precision must have shape (d, d) = ({d}, {d}), got shape {tuple(P.shape)}")
        asym = float((P - P.T).abs().max())
        if not asym <= 1e3 * torch.finfo(dtype).eps * float(P.abs().max()):
            raise ValueError(f"precision must be symmetric, got max |P − Pᵀ| = {asym:.3g}")
        L, info = torch.linalg.cholesky_ex(0.5 * (P + P.T))
        if int(info) != 0:
            raise ValueError("precision must be symmetric positive definite (its Cholesky factorisation failed)")
        raw = torch.tril(L, -1) + torch.diag(torch.log(torch.diagonal(L)))
        self.fixed_precision = bool(fixed_precision)
        self.mu = nn.Parameter(mu)
        learnable_or_fixed(self, "L_raw", raw, not self.fixed_precision)

    # ----------------------------------------------------------------- parametrisation
    @property
    def cholesky(self) -> torch.Tensor:
        """Lower-triangular L with positive diagonal, P = L Lᵀ, shape (d, d)."""
        return torch.tril(self.L_raw, -1) + torch.diag(torch.exp(torch.diagonal(self.L_raw)))

    @property
    def precision(self) -> torch.Tensor:
        """Precision matrix P = L Lᵀ (symmetric positive definite), shape (d, d)."""
        L = self.cholesky
        return L @ L.T

    @property
    def P(self) -> torch.Tensor:
        """Same as :attr:`precision` (the book's symbol)."""
        return self.precision

    @property
    def covariance(self) -> torch.Tensor:
        """Covariance Σ = P⁻¹ = L⁻ᵀ L⁻¹, shape (d, d)."""
        return torch.cholesky_inverse(self.cholesky)

    # ----------------------------------------------------------------- energy and derivatives
    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = ½ (x − μ)ᵀ P (x − μ) = ½ ‖Lᵀ(x − μ)‖², shape (B,)."""
        _check_input(self, x)
        y = (x - self.mu) @ self.cholesky
        return 0.5 * (y * y).sum(-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """ψ(x) = −∇E(x) = −P (x − μ), shape (B, d)."""
        _check_input(self, x)
        return -(x - self.mu) @ self.precision

    def score_jacobian_diagonal(self, x: torch.Tensor) -> torch.Tensor:
        """∂ψᵢ/∂xᵢ = −Pᵢᵢ (the same at every x), shape (B, d)."""
        _check_input(self, x)
        L = self.cholesky
        return -(L * L).sum(-1).expand(x.shape[0], self.dim)  # Pᵢᵢ = Σⱼ Lᵢⱼ²

    def score_divergence(self, x: torch.Tensor) -> torch.Tensor:
        """∇·ψ = −ΔE = −tr P = −‖L‖²_F, shape (B,)."""
        _check_input(self, x)
        L = self.cholesky
        return -(L * L).sum().expand(x.shape[0])

    # ----------------------------------------------------------------- normalisation and sampling
    def log_partition(self) -> torch.Tensor:
        """log Z = log ∫ exp(−E(x)) dx = (d/2) log 2π − ½ log det P = (d/2) log 2π − Σᵢ log Lᵢᵢ."""
        return 0.5 * self.dim * math.log(2 * math.pi) - torch.diagonal(self.L_raw).sum()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = −E(x) − log Z = log N(x; μ, P⁻¹), shape (B,)."""
        return -self.energy(x) - self.log_partition()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples x = μ + L⁻ᵀ z, z ~ N(0, I) (covariance L⁻ᵀL⁻¹ = P⁻¹), shape (n, d)."""
        L = self.cholesky
        z = torch.randn(self.dim, int(n), dtype=L.dtype, device=L.device, generator=generator)
        return self.mu + torch.linalg.solve_triangular(L.T, z, upper=True).T

    def extra_repr(self) -> str:
        return f"dim={self.dim}, fixed_precision={self.fixed_precision}"
