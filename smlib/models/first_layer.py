r"""Energies whose first layer is linear: exact second derivatives in pre-activation space.

For E(x) = f(z), z = W₁x + b₁ with W₁ of shape (k, d), the chain rule gives

    ∇ₓ²E(x) = W₁ᵀ H(z) W₁,    H(z) = ∇_z² f(z)  (k × k),

so that

    ΔE = tr(W₁ᵀ H W₁) = tr(H G),        G = W₁W₁ᵀ  (k × k, shared by the batch),   (L)
    ∂²E/∂xᵢ² = wᵢᵀ H wᵢ,               wᵢ = W₁[:, i]  (column i of W₁).              (D)

Any r vectors v₁, …, v_r ∈ ℝᵏ with Σₘ vₘvₘᵀ = G give tr(HG) = Σₘ vₘᵀHvₘ, i.e. r Hessian–vector
products of f instead of d of E. :func:`first_layer_factor` returns such a factor with the
fewest rows a factor can have, r = rank G = min(d, k) for a full-rank W₁: the rows of W₁ᵀ when
d ≤ k (then the route *is* the input-space route, minus the first layer), and R from the QR
decomposition W₁ᵀ = QR when d > k (RᵀR = W₁W₁ᵀ).

:class:`FirstLinearEnergy` is the protocol (a model that exposes ``first_linear`` and
``energy_from_preactivation``); :class:`FirstLayerLaplacian` is a mixin that gives such a model
exact ``score_divergence`` and ``score_jacobian_diagonal`` by automatic differentiation of f,
which `smlib.objectives` then uses (`sm`, `hessian_trace`, `kingma_lecun`). `MLPEnergy` follows
the protocol and has its own closed forms of (L) and (D) (`smlib.models.mlp_derivatives`).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from smlib.models.base import _check_input

__all__ = [
    "FirstLinearEnergy",
    "FirstLayerLaplacian",
    "first_layer_factor",
    "preactivation_quadratic_forms",
    "preactivation_hessian",
    "sandwich_diagonal",
    "laplacian",
    "hessian_diagonal",
]

_CHUNK_ELEMENTS = 1 << 21  # directions per batched double-backward: chunk·B·k ≤ 2²¹ numbers
_SANDWICH_ELEMENTS = 1 << 23  # packed pairs × columns per product in sandwich_diagonal
_PACKED_MIN_BATCH = 64  # sandwich_diagonal: packed pairs from this batch size on


@runtime_checkable
class FirstLinearEnergy(Protocol):
    """An energy E(x) = f(W₁x + b₁) whose first layer is an ``nn.Linear``.

    Attributes / methods
    --------------------
    first_linear : nn.Linear
        The first layer, z = W₁x + b₁ with ``weight`` W₁ of shape (k, d).
    energy_from_preactivation(z) -> (B,)
        f(z) for pre-activations z of shape (B, k), so that ``energy(x) == f(first_linear(x))``.
    """

    first_linear: nn.Linear

    def energy_from_preactivation(self, z: torch.Tensor) -> torch.Tensor: ...


def first_layer_factor(weight: torch.Tensor) -> torch.Tensor:
    r"""A factor V (r × k) of G = W₁W₁ᵀ with VᵀV = G and r = min(d, k) rows.

    d ≤ k: V = W₁ᵀ (its rows are the images W₁eᵢ of the d input axes). d > k: V = R from the
    reduced QR decomposition W₁ᵀ = QR, since W₁W₁ᵀ = RᵀQᵀQR = RᵀR. Both are differentiable in
    W₁, so a loss built from tr(HG) = Σₘ vₘᵀHvₘ (eq. L of this module) keeps its θ-gradient.

    Parameters
    ----------
    weight : torch.Tensor, shape (k, d)
        W₁.

    Returns
    -------
    torch.Tensor, shape (min(d, k), k).
    """
    k, d = weight.shape[-2:]
    if d <= k:
        return weight.transpose(-1, -2)
    return torch.linalg.qr(weight.transpose(-1, -2), mode="reduced").R


def _chunks(n, B, k):
    step = max(1, _CHUNK_ELEMENTS // max(1, B * k))
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def preactivation_quadratic_forms(f, z: torch.Tensor, directions: torch.Tensor, create_graph: bool):
    r"""vₘᵀ ∇²f(z) vₘ for every row vₘ of ``directions`` and every sample, shape (r, B).

    The Hessian–vector products ∇²f(z) vₘ come from one batched double-backward per chunk of
    directions (``is_grads_batched=True``): first g = ∇_z Σ_b f(z_b) with a graph, then the
    rows vₘᵀ∇g. ``z`` must be part of a graph (or a leaf that requires grad); with
    ``create_graph=True`` the result is differentiable in everything z and f depend on.
    """
    r, k = directions.shape
    B = z.shape[0]
    (g,) = torch.autograd.grad(f(z).sum(), z, create_graph=True, allow_unused=True)
    if g is None or not g.requires_grad:  # f is affine in z: ∇²f = 0
        return torch.zeros(r, B, dtype=z.dtype, device=z.device)
    parts = []
    for s, e in _chunks(r, B, k):
        v = directions[s:e]
        (hv,) = torch.autograd.grad(g, z, v.unsqueeze(1).expand(-1, B, k), is_grads_batched=True,
                                    retain_graph=True, create_graph=create_graph, allow_unused=True)
        hv = torch.zeros(e - s, B, k, dtype=z.dtype, device=z.device) if hv is None else hv
        parts.append((hv * v.unsqueeze(1)).sum(-1))
    return torch.cat(parts, 0)


def preactivation_hessian(f, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """H(z) = ∇_z² f(z) per sample, shape (B, k, k), from k Hessian–vector products (basis eᵢ)."""
    B, k = z.shape
    (g,) = torch.autograd.grad(f(z).sum(), z, create_graph=True, allow_unused=True)
    if g is None or not g.requires_grad:
        return torch.zeros(B, k, k, dtype=z.dtype, device=z.device)
    eye = torch.eye(k, dtype=z.dtype, device=z.device)
    rows = []
    for s, e in _chunks(k, B, k):
        (he,) = torch.autograd.grad(g, z, eye[s:e].unsqueeze(1).expand(-1, B, k), is_grads_batched=True,
                                    retain_graph=True, create_graph=create_graph, allow_unused=True)
        rows.append(torch.zeros(e - s, B, k, dtype=z.dtype, device=z.device) if he is None else he)
    return torch.cat(rows, 0).transpose(0, 1)  # (B, k, k); H is symmetric


def sandwich_diagonal(H: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    r"""diag(W₁ᵀ H W₁) per sample, shape (B, d), for symmetric H (B, k, k) (eq. D of this module).

    From batch ``_PACKED_MIN_BATCH`` on: wᵢᵀHwᵢ = Σ_{p≤q} (2 − δ_pq) H_pq W₁[p, i] W₁[q, i], the
    k(k+1)/2 distinct entries of each H (one row per sample) times the batch-independent matrix
    of column products — half the multiply–adds of forming H W₁ (B·d·k(k+1)/2), at a fixed cost
    of building that (k(k+1)/2 × d) matrix. Below it, Σ_p W₁[p, i] (H W₁)[p, i] (B·d·k²), which
    is faster there on one CPU core (crossover measured at B ≈ 50 for k = 128, d = 784).
    """
    k, d = weight.shape
    if H.shape[0] < _PACKED_MIN_BATCH:
        return ((H @ weight) * weight).sum(-2)
    p, q = torch.triu_indices(k, k, device=weight.device)
    scale = torch.where(p == q, 1.0, 2.0).to(weight.dtype).unsqueeze(-1)
    Hp = H.reshape(H.shape[0], k * k).index_select(1, p * k + q)  # (B, k(k+1)/2)
    step = max(1, _SANDWICH_ELEMENTS // p.numel())
    cols = []
    for s in range(0, d, step):  # chunks of input dimensions, to bound the (k(k+1)/2 × chunk) matrix
        w = weight[:, s:s + step]
        cols.append(Hp @ (w.index_select(0, p) * (w.index_select(0, q) * scale)))
    return torch.cat(cols, -1)


def _preactivation(model, x):
    """z = W₁x + b₁ as part of a graph (a detached leaf that requires grad when W₁, b₁, x do not)."""
    z = model.first_linear(x)
    return z if z.requires_grad else z.detach().requires_grad_(True)


def laplacian(model, x: torch.Tensor) -> torch.Tensor:
    r"""ΔE(x) = tr(H G) = Σₘ vₘᵀ H vₘ (eq. L) by r = min(d, k) Hessian–vector products of f, shape (B,).

    ``model`` follows :class:`FirstLinearEnergy`. Differentiable in θ (and x) when gradients are
    enabled; detached under ``torch.no_grad()``.
    """
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        V = first_layer_factor(model.first_linear.weight)
        out = preactivation_quadratic_forms(model.energy_from_preactivation, _preactivation(model, x), V, create).sum(0)
    return out if create else out.detach()


def hessian_diagonal(model, x: torch.Tensor) -> torch.Tensor:
    r"""∂²E/∂xᵢ² = wᵢᵀ H wᵢ (eq. D), shape (B, d).

    d ≤ k: the d columns wᵢ of W₁ are the directions (d Hessian–vector products of f).
    d > k: the whole H from k products, then :func:`sandwich_diagonal` (B·d·k(k+1)/2
    multiply–adds) — k products of f instead of d products of E.
    """
    create = torch.is_grad_enabled()
    W1 = model.first_linear.weight
    k, d = W1.shape
    with torch.enable_grad():
        z = _preactivation(model, x)
        f = model.energy_from_preactivation
        if d <= k:
            out = preactivation_quadratic_forms(f, z, W1.T, create).T
        else:
            out = sandwich_diagonal(preactivation_hessian(f, z, create), W1)
    return out if create else out.detach()


class FirstLayerLaplacian:
    r"""Mixin: exact ``score_divergence`` / ``score_jacobian_diagonal`` through eqs. (L), (D).

    For an `EnergyModel` that follows :class:`FirstLinearEnergy`::

        class MyEnergy(FirstLayerLaplacian, EnergyModel):
            def __init__(self, d, k):
                super().__init__(d)
                self.first_linear = nn.Linear(d, k)
                ...
            def energy_from_preactivation(self, z): ...          # f(z), shape (B,)
            def energy(self, x): return self.energy_from_preactivation(self.first_linear(x))

    `smlib.objectives.sm` / `hessian_trace` / `kingma_lecun` then use ψ's divergence
    ∇·ψ = −tr(H W₁W₁ᵀ) from min(d, k) Hessian–vector products of f in the first layer's
    pre-activation space instead of d products of E in input space.
    """

    def score_divergence(self, x: torch.Tensor) -> torch.Tensor:
        """∇·ψ = −ΔE = −tr(H W₁W₁ᵀ) (eq. L), shape (B,)."""
        _check_input(self, x)
        return -laplacian(self, x)

    def score_jacobian_diagonal(self, x: torch.Tensor) -> torch.Tensor:
        """∂ψᵢ/∂xᵢ = −wᵢᵀ H wᵢ (eq. D), shape (B, d)."""
        _check_input(self, x)
        return -hessian_diagonal(self, x)
