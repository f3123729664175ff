r"""Noise-conditional models: an energy E(x, σ) and a score network s(x, σ) (Song & Ermon 2019).

Both are MLPs that see ``[x, log σ]``; the last layer's output is divided by σ,

    NoiseConditionalEnergy:  E(x, σ) = f_θ(x, log σ) / σ,           s(x, σ) = −∇ₓE(x, σ),
    NoiseConditionalScore:   s(x, σ) = g_θ(x, log σ) / σ  ∈ ℝ^d,

because the score of q_σ = p ∗ N(0, σ²I) near the data is −ε/σ in size (Tweedie: E[ε | x̃] =
−σ s(x̃, σ)), so f and g stay O(1) at every σ: g = −ε̂ is the ε-prediction of Ho et al. (2020).
σ is constant in x, so −∇ₓE(·, σ) is a gradient field (curl-free) at every σ by construction;
the score network's field is not constrained.

``model.at(sigma)`` binds one σ and returns an ordinary energy / score model (``energy(x)``,
``score(x)``, ``dim``) for the single-σ samplers and metrics of the rest of smlib.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from smlib._checks import check_choice, check_int
from smlib.models.activations import ACTIVATIONS, FAST
from smlib.models.base import EnergyModel, ScoreModel, _check_input

__all__ = ["NoiseConditionalEnergy", "NoiseConditionalScore", "sigma_column"]


def sigma_column(x: torch.Tensor, sigma) -> torch.Tensor:
    """σ as a (B, 1) column on x's device and dtype, from a float or a (B,) / (B, 1) tensor; σ > 0 checked."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    s = s.reshape(-1, 1) if s.ndim == 2 and s.shape[1] == 1 else s
    if s.ndim != 1 or s.shape[0] != x.shape[0]:
        raise ValueError(f"sigma must be a number or a tensor of shape ({x.shape[0]},), got shape {tuple(s.shape)}")
    # a host sync, so only on CPU tensors (a GPU run's σ comes from a checked ladder)
    if s.device.type == "cpu" and not torch.compiler.is_compiling() and not bool((s > 0).all() & torch.isfinite(s).all()):
        raise ValueError("sigma must be finite and > 0")
    return s[:, None]


class _NoiseMLP(nn.Module):
    """MLP body on [x, log σ] with a linear head of ``out`` units, the head divided by σ."""

    #: its score takes σ: trained by the multi-scale objectives (registry ``needs="noise_conditional"``)
    noise_conditional = True

    def _build(self, dim, hidden, activation, out):
        check_choice("activation", activation, tuple(ACTIVATIONS))
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be a non-empty tuple of positive sizes, got {hidden}")
        self.hidden, self.activation = hidden, activation
        sizes = (dim + 1, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(hidden[-1], out)

    def _head(self, x, sigma):
        _check_input(self, x)
        s = sigma_column(x, sigma)
        h = torch.cat([x, torch.log(s)], 1)
        act = FAST[self.activation]
        for layer in self.layers:
            h = act(layer(h))
        return self.out(h) / s

    def at(self, sigma: float) -> "_AtSigma":
        """This model at one fixed σ: an energy/score model of x alone (shares the parameters)."""
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be finite and > 0, got {sigma}")
        return _AtSigma(self, sigma)


class NoiseConditionalEnergy(_NoiseMLP, EnergyModel):
    r"""E(x, σ) = f_θ(x, log σ)/σ, an MLP ℝ^{d+1} → ℝ with a linear last layer; s(x, σ) = −∇ₓE(x, σ).

    The noise-conditional energy of multi-scale DSM (Song & Ermon 2019, with an energy instead of
    their score network, so that ψ is curl-free at every σ as in DEEN, Saremi et al. 2018).

    Parameters
    ----------
    dim : int;  hidden : tuple of int;  activation : str (as `MLPEnergy`).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64, 64), activation: str = "softplus"):
        EnergyModel.__init__(self, dim)
        self._build(dim, hidden, activation, 1)

    def energy(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """E(x, σ), shape (B,); σ a number or a (B,) tensor."""
        return self._head(x, sigma).squeeze(-1)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.energy(x, sigma)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """s(x, σ) = −∇ₓE(x, σ) by autograd (differentiable in θ when gradients are on), shape (B, d)."""
        build_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            x_ = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x_, sigma).sum(), x_, create_graph=build_graph)
        return -grad if build_graph else -grad.detach()


class NoiseConditionalScore(_NoiseMLP, ScoreModel):
    r"""s(x, σ) = g_θ(x, log σ)/σ, an MLP ℝ^{d+1} → ℝ^d (Song & Ermon 2019's NCSN in MLP form).

    −g_θ = σ·(−s) is the ε-prediction ε̂ of Ho et al. (2020). No energy: its Jacobian need not
    be symmetric.

    Parameters
    ----------
    dim : int;  hidden : tuple of int;  activation : str (as `ScoreMLP`).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64, 64), activation: str = "softplus"):
        ScoreModel.__init__(self, dim)
        self._build(dim, hidden, activation, dim)

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """s(x, σ), shape (B, d); σ a number or a (B,) tensor."""
        return self._head(x, sigma)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.score(x, sigma)


class _AtSigma(nn.Module):
    """A noise-conditional model at a fixed σ (``NoiseConditional*.at``)."""

    def __init__(self, model, sigma: float):
        super().__init__()
        self.model, self.sigma, self.dim = model, sigma, check_int("dim", model.dim)
        self.has_energy = getattr(model, "has_energy", False)

    def energy(self, x):
        if not self.has_energy:
            return self.model.energy(x)  # the score model's TypeError
        return self.model.energy(x, self.sigma)

    def score(self, x):
        return self.model.score(x, self.sigma)

    def forward(self, x):
        return self.energy(x) if self.has_energy else self.score(x)

    def extra_repr(self):
        return f"sigma={self.sigma:g}"
