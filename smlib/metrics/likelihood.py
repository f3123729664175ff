"""Exact likelihoods: 2-D quadrature, grid KL, GRBMs by enumeration of the hidden states."""
from __future__ import annotations

import math

import torch

from smlib._checks import check_data
from smlib.metrics._common import _dim
from smlib.metrics.fields import grid_2d
from smlib.scores import energy_fn

__all__ = ["log_likelihood_grid_2d", "kl_grid_2d", "grbm_exact_log_likelihood", "grbm_exact_phases",
           "grbm_exact_gradient"]


def _energy_on(energy, pts, chunk=65536):
    with torch.no_grad():
        return torch.cat([energy(pts[i : i + chunk]) for i in range(0, pts.shape[0], chunk)])


def log_likelihood_grid_2d(model, x, bounds, n_grid=200):
    r"""Exact-up-to-quadrature log-likelihood of a 2-D energy model.

    .. math:: \log Z \approx \log \sum_{g} e^{-E(x_g)}\,\Delta x\,\Delta y,\qquad
              \log p(x) = -E(x) - \log Z

    (a Riemann sum on a uniform grid: spectrally accurate when exp(−E) is smooth and
    negligible at the border of ``bounds``).

    Parameters
    ----------
    model : energy model or callable energy (B, 2) -> (B,)
    x : torch.Tensor (B, 2)
        Points at which to evaluate log p (e.g. test data).
    bounds : see :func:`grid_2d`
    n_grid : int

    Returns
    -------
    dict with
        ``mean_log_likelihood`` (0-d), ``log_prob`` (B,), ``log_z`` (0-d), ``X``, ``Y``
        (n, n), ``log_density`` and ``density`` (n, n) normalised on the grid
        (Σ density·ΔxΔy = 1), ``cell_area``.
    """
    check_data(x, "x", 2)
    energy = energy_fn(model)
    X, Y, pts = grid_2d(bounds, n_grid, dtype=x.dtype, device=x.device)
    cell = float((X[0, 1] - X[0, 0]) * (Y[1, 0] - Y[0, 0]))
    neg_e = -_energy_on(energy, pts)
    log_z = torch.logsumexp(neg_e, 0) + math.log(cell)
    log_density = (neg_e - log_z).reshape(X.shape)
    log_prob = -_energy_on(energy, x) - log_z
    return {
        "mean_log_likelihood": log_prob.mean(),
        "log_prob": log_prob,
        "log_z": log_z,
        "X": X,
        "Y": Y,
        "log_density": log_density,
        "density": log_density.exp(),
        "cell_area": cell,
    }


def kl_grid_2d(log_p, log_q):
    r"""KL(p ‖ q) = Σ_g P_g (log P_g − log Q_g) for two densities on the same grid.

    Both inputs are log-densities (possibly unnormalised) on the same uniform grid; each is
    normalised on the grid (P = softmax(log p)), so the cell area cancels. Use with the
    ``log_density`` of :func:`log_likelihood_grid_2d` and a true log-density (e.g.
    ``smlib.data`` mixtures' ``log_prob``) evaluated on the same grid points.

    Returns
    -------
    0-d tensor ≥ 0
    """
    log_p, log_q = torch.as_tensor(log_p), torch.as_tensor(log_q)
    if log_p.shape != log_q.shape:
        raise ValueError(f"log_p and log_q must be on the same grid, got shapes {tuple(log_p.shape)} and {tuple(log_q.shape)}")
    lp = torch.log_softmax(log_p.detach().reshape(-1), 0)
    lq = torch.log_softmax(log_q.detach().reshape(-1), 0)
    return (lp.exp() * (lp - lq)).sum().clamp_min(0.0)


def grbm_exact_log_likelihood(model, v):
    r"""Exact log p(v) = −F(v) − log Z of a small GRBM (n_hidden ≤ 20).

    log Z comes from ``model.log_partition()``, which enumerates the 2^{n_h} hidden states and
    integrates v analytically (a Gaussian for each h). Per sample, shape (B,).
    """
    if not hasattr(model, "log_partition"):
        raise TypeError(f"{type(model).__name__} has no log_partition(); an exact likelihood needs a small GRBM")
    check_data(v, "v", _dim(model))
    with torch.no_grad():
        return (-model.energy(v) - model.log_partition()).detach()


def grbm_exact_phases(model, v):
    r"""Exact positive and negative phases of the log-likelihood gradient of a small GRBM.

    With the book's eq-ch1-mle-grad (Hinton 2002; Swersky et al. 2011, §2), for data v₁…v_n,

    .. math:: \nabla_\theta \tfrac1n\textstyle\sum_k \log p(v_k)
              = \underbrace{\mathbb E_{p_\theta}[\nabla_\theta E]}_{\text{negative}}
              - \underbrace{\tfrac1n\textstyle\sum_k \mathbb E_{h|v_k}[\nabla_\theta E(v_k, h)]}_{\text{positive}},

    positive = mean_k ∇θF(v_k) (autograd of the free energy) and negative = −∇θ log Z (autograd
    through ``model.log_partition()``, the enumeration over 2^{n_h} hidden states, n_h ≤ 20).
    Works for any model with an exact, differentiable ``log_partition`` (e.g. `GaussianEnergy`).

    Parameters
    ----------
    model : GRBM (or another model with ``log_partition()``)
    v : torch.Tensor (B, n_visible)

    Returns
    -------
    dict ``{"positive": {name: tensor}, "negative": {name: tensor}}`` over the model's
    trainable parameters (``model.named_parameters()``, e.g. ``W``, ``b``, ``c``, ``log_sigma``),
    each tensor detached and of the parameter's shape.
    """
    if not hasattr(model, "log_partition"):
        raise TypeError(f"{type(model).__name__} has no log_partition(); exact phases need a small GRBM")
    check_data(v, "v", _dim(model))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def grads(scalar):
        gs = torch.autograd.grad(scalar, list(params.values()), allow_unused=True)
        return {n: (torch.zeros_like(p) if g is None else g).detach() for (n, p), g in zip(params.items(), gs)}

    with torch.enable_grad():
        positive = grads(model.energy(v.detach()).mean())
        negative = grads(-model.log_partition())
    return {"positive": positive, "negative": negative}


def grbm_exact_gradient(model, v):
    r"""Exact gradient of the mean log-likelihood, ∇θ (1/n) Σₖ log p(vₖ), of a small GRBM.

    .. math:: \nabla_\theta \tfrac1n\textstyle\sum_k \log p(v_k)
              = -\tfrac1n\textstyle\sum_k \nabla_\theta F(v_k) - \nabla_\theta \log Z
              = \text{negative} - \text{positive}

    (see :func:`grbm_exact_phases`; log Z by enumeration, Swersky et al. 2011). It is the ascent
    direction of maximum likelihood, against which CD-k, PCD and FPCD updates are measured.

    Returns
    -------
    dict {parameter name: detached tensor of the parameter's shape}
    """
    phases = grbm_exact_phases(model, v)
    return {n: phases["negative"][n] - phases["positive"][n] for n in phases["positive"]}


