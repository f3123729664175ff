"""Vincent's (2011) denoising-autoencoder energy, tied and untied."""
from __future__ import annotations

import math

import torch
from torch import nn

from smlib._checks import check_int, check_positive
from smlib.models.base import EnergyModel, _check_input, rho_bernoulli, softplus

__all__ = ["DAEEnergy"]


class DAEEnergy(EnergyModel):
    r"""The energy whose score is a sigmoid autoencoder's reconstruction (Vincent 2011).

    Tied weights (``tied=True``):

        E(x) = −(1/σ²) ( ⟨c, x⟩ − ½‖x‖² + Σⱼ softplus(⟨Wⱼ, x⟩ + bⱼ) ),
        ψ(x) = −∇E(x) = (x^r(x) − x)/σ²,     x^r(x) = Wᵀ sigm(Wx + b) + c.

    With this score, denoising score matching at noise level σ is the DAE loss:
    J_DSM = mean ½‖ψ(x̃) − (x − x̃)/σ²‖² = (1/σ⁴) · mean ½‖x^r(x̃) − x‖² (x̃ = x + σε).

    Untied weights (``tied=False``): the decoder has its own matrix ``W_decoder`` (d × n_h),
    r(x) = W_decoder sigm(Wx + b) + c and ψ(x) = (r(x) − x)/σ². Its Jacobian
    (W_decoder diag(ρ) W − I)/σ² is not symmetric, so ψ is not a gradient field and
    :meth:`energy` raises ``TypeError`` (Vincent 2011, Sec. on tied weights).

    Parameters
    ----------
    n_visible, n_hidden : int
    sigma : float
        Noise level σ of the DAE (the energy's temperature 1/σ²).
    tied : bool

    Attributes
    ----------
    W : (n_hidden, n_visible) encoder (rows Wⱼ);  b : (n_hidden,);  c : (n_visible,);
    W_decoder : (n_visible, n_hidden), only when ``tied=False``.
    """

    def __init__(self, n_visible: int, n_hidden: int, sigma: float = 1.0, tied: bool = True):
        n_visible, n_hidden = check_int("n_visible", n_visible), check_int("n_hidden", n_hidden)
        super().__init__(n_visible)
        sigma = check_positive("sigma", sigma)
        self.n_visible, self.n_hidden, self.tied = int(n_visible), int(n_hidden), bool(tied)
        self.has_energy = self.tied
        std = 1.0 / math.sqrt(n_visible + n_hidden)
        self.W = nn.Parameter(std * torch.randn(n_hidden, n_visible))
        self.b = nn.Parameter(torch.zeros(n_hidden))
        self.c = nn.Parameter(torch.zeros(n_visible))
        if not self.tied:
            self.W_decoder = nn.Parameter(std * torch.randn(n_visible, n_hidden))
        self.register_buffer("sigma", torch.tensor(float(sigma), dtype=torch.get_default_dtype()))

    @property
    def decoder(self) -> torch.Tensor:
        """Decoder matrix (d × n_h): Wᵀ when tied, ``W_decoder`` otherwise."""
        return self.W.T if self.tied else self.W_decoder

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden code h(x) = sigm(Wx + b), shape (B, n_hidden)."""
        _check_input(self, x)
        return torch.sigmoid(x @ self.W.T + self.b)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x^r(x) = Wᵀ sigm(Wx + b) + c (tied) or W_decoder sigm(Wx + b) + c (untied)."""
        return self.encode(x) @ self.decoder.T + self.c

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = −(⟨c,x⟩ − ½‖x‖² + Σⱼ softplus(⟨Wⱼ,x⟩ + bⱼ))/σ², shape (B,) (tied only)."""
        if not self.tied:
            raise TypeError(
                "an untied DAE (tied=False) has no energy: its reconstruction field "
                "(r(x) − x)/σ² has a non-symmetric Jacobian, so it is not the gradient of any "
                "scalar E(x). Use tied=True for an energy model; score() still works."
            )
        _check_input(self, x)
        inner = x @ self.c - 0.5 * (x * x).sum(-1) + softplus(x @ self.W.T + self.b).sum(-1)
        return -inner / self.sigma**2

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """ψ(x) = (x^r(x) − x)/σ², shape (B, n_visible)."""
        return (self.reconstruct(x) - x) / self.sigma**2

    def score_jacobian_diagonal(self, x: torch.Tensor) -> torch.Tensor:
        """∂ψᵢ/∂xᵢ = (Σⱼ Dᵢⱼ ρ(hⱼ) Wⱼᵢ − 1)/σ² with D the decoder, shape (B, n_visible)."""
        rho = rho_bernoulli(self.encode(x))
        return (rho @ (self.decoder.T * self.W) - 1.0) / self.sigma**2

    def score_divergence(self, x: torch.Tensor) -> torch.Tensor:
        """∇·ψ = Σᵢ ∂ψᵢ/∂xᵢ, shape (B,)."""
        return self.score_jacobian_diagonal(x).sum(-1)

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, sigma={float(self.sigma):.3g}, tied={self.tied}"
