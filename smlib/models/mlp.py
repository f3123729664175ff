"""Multilayer perceptrons: the DEEN energy network and a direct score network."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from smlib._checks import check_choice
from smlib.models import mlp_derivatives
from smlib.models.activations import ACTIVATIONS, FAST
from smlib.models.base import EnergyModel, ScoreModel, _check_input

__all__ = ["MLPEnergy", "ScoreMLP", "ACTIVATIONS"]


def _linears(sizes: Sequence[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))


class _MLPBody:
    """Shared construction for the two MLPs."""

    def _build(self, dim, hidden, activation, out):
        check_choice("activation", activation, tuple(ACTIVATIONS))
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must be a non-empty tuple of positive sizes, got {hidden}")
        self.hidden, self.activation = hidden, activation
        self.layers = _linears((dim, *hidden))
        self.out = nn.Linear(hidden[-1], out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer h^(L)(x), shape (B, hidden[-1])."""
        act = FAST[self.activation]
        for layer in self.layers:
            x = act(layer(x))
        return x


#: methods whose override in a subclass means the one-pass (ψ, ∇·ψ) of MLPEnergy no longer applies
_ENERGY_METHODS = ("energy", "features", "score", "score_divergence", "energy_from_preactivation")


class MLPEnergy(_MLPBody, EnergyModel):
    r"""DEEN energy network (Saremi et al. 2018): E(x) = w^(L+1)·h^(L)(x) + b, h^(l) = φ(W^(l) h^(l−1) + b^(l)).

    A fully connected MLP ℝ^d → ℝ with a linear last layer (the "product of experts" form,
    DEEN eq. 24). The score ψ = −∇E comes from autograd.

    Exact second derivatives without a loop over dimensions, in the first layer's pre-activation
    space (`smlib.models.first_layer`, `smlib.models.mlp_derivatives`): E = f(W₁x + b₁), so
    ΔE = tr(H W₁W₁ᵀ) and ∂²E/∂xᵢ² = wᵢᵀHwᵢ with H = ∇²f (k × k, k = hidden[0]).
    :meth:`score_divergence` pushes r = min(d, k) directions (a factor of W₁W₁ᵀ) through the
    layers after the first, r·Σ_{l≥2} n_l n_{l−1} multiply–adds per sample, whatever d.
    :meth:`score_jacobian_diagonal` takes the cheaper of two exact routes (propagating the d
    input axes, or back-propagating H and forming wᵢᵀHwᵢ). Both are differentiable in θ. The
    model follows `smlib.models.first_layer.FirstLinearEnergy` (``first_linear``,
    ``energy_from_preactivation``).

    Parameters
    ----------
    dim : int
        Input dimension d.
    hidden : tuple of int
        Hidden widths (DEEN 2-D: (32, 32, 32); MNIST: (128, 128, 256)).
    activation : {"tanh", "softplus", "elu", "swish", "silu", "relu", "gelu", "sigmoid"}
        "relu" is allowed, but note ΔE = 0 almost everywhere for a piecewise-linear network,
        so exact SM then sees no curvature term.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (32, 32, 32), activation: str = "tanh"):
        EnergyModel.__init__(self, dim)
        self._build(dim, hidden, activation, 1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = w_outᵀ h^(L)(x) + b_out (DEEN eq. 24), shape (B,)."""
        _check_input(self, x)
        return self.out(self.features(x)).squeeze(-1)

    # ---------------------------------------------------------- exact second derivatives
    @property
    def first_linear(self) -> nn.Linear:
        """The first layer z = W₁x + b₁ (`smlib.models.first_layer.FirstLinearEnergy`)."""
        return self.layers[0]

    def energy_from_preactivation(self, z: torch.Tensor) -> torch.Tensor:
        """f(z) with E(x) = f(W₁x + b₁): the layers after the first, shape (B,)."""
        act = FAST[self.activation]
        a = act(z)
        for layer in self.layers[1:]:
            a = act(layer(a))
        return self.out(a).squeeze(-1)

    def _parameters_by_layer(self):
        return [l.weight for l in self.layers], [l.bias for l in self.layers], self.out.weight[0]

    def score_divergence(self, x: torch.Tensor) -> torch.Tensor:
        """∇·ψ = −ΔE = −tr(H W₁W₁ᵀ) exactly (`mlp_derivatives.forward_laplacian`), shape (B,)."""
        _check_input(self, x)
        return -mlp_derivatives.forward_laplacian(x, *self._parameters_by_layer(), self.activation)

    def score_and_divergence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ψ, ∇·ψ) = (−∇ₓE, −ΔE) from one forward pass (`mlp_derivatives.gradient_and_laplacian`), shapes
        (B, d) and (B,); what `smlib.objectives.sm` uses: one backward instead of autograd's double backward."""
        _check_input(self, x)
        if any(getattr(type(self), f) is not getattr(MLPEnergy, f) for f in _ENERGY_METHODS):
            return self.score(x), self.score_divergence(x)  # a subclass changed E or a derivative: use its own
        grad, lap = mlp_derivatives.gradient_and_laplacian(x, *self._parameters_by_layer(), self.activation)
        return -grad, -lap

    def score_jacobian_diagonal(self, x: torch.Tensor, route: str = "auto") -> torch.Tensor:
        """∂ψᵢ/∂xᵢ = −∂²E/∂xᵢ² = −wᵢᵀHwᵢ exactly, shape (B, d); used by `smlib.objectives.kingma_lecun`.

        ``route``: "input", "preactivation" or "auto" (fewer multiply–adds), see
        `smlib.models.mlp_derivatives.hessian_diagonal`.
        """
        _check_input(self, x)
        return -mlp_derivatives.hessian_diagonal(x, *self._parameters_by_layer(), self.activation, route)


class ScoreMLP(_MLPBody, ScoreModel):
    r"""Direct score network ψ(x) = MLP(x): ℝ^d → ℝ^d with a linear last layer (DEEN Sec. 3).

    Has no energy (``energy`` raises ``TypeError``); its Jacobian need not be symmetric, which
    the curl diagnostic of Saremi et al. (2018, Fig. 1 g–h) exposes.

    Parameters
    ----------
    dim : int;  hidden : tuple of int;  activation : str (as `MLPEnergy`).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (32, 32, 32), activation: str = "tanh"):
        ScoreModel.__init__(self, dim)
        self._build(dim, hidden, activation, dim)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """ψ(x) = MLP(x), shape (B, d)."""
        _check_input(self, x)
        return self.out(self.features(x))

    def score_jacobian_diagonal(self, x: torch.Tensor) -> torch.Tensor:
        """∂ψᵢ/∂xᵢ by forward Jacobian propagation, shape (B, d).

        J_1 = W_1 (shared), J_{l+1} = W_{l+1} diag(φ'_l) J_l, ∂ψ/∂x = W_out diag(φ'_L) J_L, of
        which only the diagonal is formed. One GEMM per layer; about an order of magnitude
        fewer operations than pushing each basis vector through ``torch.func.jvp`` (whose first
        layer multiplies a one-hot vector by W_1).
        """
        _check_input(self, x)
        act = ACTIVATIONS[self.activation]
        B, d = x.shape
        J = self.layers[0].weight.unsqueeze(1)  # (n_1, 1, d) = ∂h_1/∂x, shared by the batch
        h = self.layers[0](x)
        for l in range(len(self.layers)):
            a, d1, _ = act(h)
            X = d1.T.contiguous().unsqueeze(-1) * J  # (n_l, B, d) = diag(φ'_l) J_l
            if l == len(self.layers) - 1:
                break
            nxt = self.layers[l + 1]
            h = nxt(a)
            J = (nxt.weight @ X.view(X.shape[0], B * d)).view(-1, B, d)
        # diag(W_out X)_i = Σ_k W_out[i, k] X[k, b, i]
        return (self.out.weight.T.unsqueeze(1) * X).sum(0)

    def score_divergence(self, x: torch.Tensor) -> torch.Tensor:
        """∇·ψ = Σᵢ ∂ψᵢ/∂xᵢ, shape (B,)."""
        return self.score_jacobian_diagonal(x).sum(-1)
