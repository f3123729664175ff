"""Score fields: grids, Jacobians, curl and asymmetry, Fisher divergence."""
from __future__ import annotations

import torch

from smlib._checks import check_data
from smlib.metrics._common import _dim, score_on

__all__ = ["grid_2d", "jacobian", "curl_2d", "jacobian_asymmetry", "fisher_divergence"]


def grid_2d(bounds, n_grid, dtype=None, device=None):
    r"""Regular grid on a rectangle.

    Parameters
    ----------
    bounds : (x_min, x_max, y_min, y_max) or ((x_min, x_max), (y_min, y_max)) or a float L
        (meaning [−L, L]²).
    n_grid : int or (n_x, n_y)

    Returns
    -------
    X, Y : torch.Tensor (n_y, n_x)
        ``meshgrid(..., indexing="xy")``: row i is y_i, column j is x_j (``imshow``/``contourf``).
    points : torch.Tensor (n_y·n_x, 2)
        The grid points in row-major order, so ``f(points).reshape(X.shape)`` lines up with X, Y.
    """
    if isinstance(bounds, (int, float)):
        bounds = (-bounds, bounds, -bounds, bounds)
    bounds = tuple(float(b) for b in torch.as_tensor(bounds, dtype=torch.float64).flatten().tolist())
    if len(bounds) != 4 or not (bounds[0] < bounds[1] and bounds[2] < bounds[3]):
        raise ValueError(f"bounds must be (x_min, x_max, y_min, y_max) with min < max, got {bounds}")
    nx, ny = (n_grid, n_grid) if isinstance(n_grid, int) else n_grid
    if nx < 2 or ny < 2:
        raise ValueError(f"n_grid must be >= 2, got {n_grid}")
    dtype = dtype or torch.get_default_dtype()
    xs = torch.linspace(bounds[0], bounds[1], nx, dtype=dtype, device=device)
    ys = torch.linspace(bounds[2], bounds[3], ny, dtype=dtype, device=device)
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    return X, Y, torch.stack([X.reshape(-1), Y.reshape(-1)], 1)


def _as_points(grid, model=None):
    """Accept a (M, 2) tensor or a (bounds, n_grid) pair; return points and an output shape."""
    if isinstance(grid, torch.Tensor):
        return grid, None
    if isinstance(grid, (tuple, list)) and len(grid) == 2:
        dtype = next((p.dtype for p in model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        X, _, pts = grid_2d(grid[0], grid[1], dtype=dtype)
        return pts, X.shape
    raise TypeError("grid must be a (M, 2) tensor of points or a (bounds, n_grid) pair")


def jacobian(score_fn, x):
    r"""Per-sample Jacobian J_b = ∂ψ(x_b)/∂x_b, shape (B, d, d), J[b, i, j] = ∂ψᵢ/∂xⱼ.

    Vectorised: one batched backward pass over the d basis vectors (``is_grads_batched``),
    falling back to d backward passes if an op does not support it. Rows are independent
    across the batch because ψ acts on each sample separately.

    A score that does not depend on x (a linear energy E = θᵀx, ψ = −θ, or a constant field)
    has J = 0 exactly; zeros are returned instead of autograd's "not used in the graph" error
    (``allow_unused=True``; the zeros are built here, with the batch dimension, because
    ``materialize_grads`` drops it under ``is_grads_batched``).
    """
    f = score_fn.score if hasattr(score_fn, "score") else score_fn
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        psi = f(x)
        B, d = psi.shape
        rows = None
        if psi.requires_grad:
            eye = torch.eye(d, dtype=psi.dtype, device=psi.device)
            basis = eye[:, None, :].expand(d, B, d)
            try:
                (rows,) = torch.autograd.grad(
                    psi, x, grad_outputs=basis, is_grads_batched=True, retain_graph=True, allow_unused=True
                )
            except RuntimeError:
                cols = [torch.autograd.grad(psi[:, i].sum(), x, retain_graph=True, allow_unused=True)[0]
                        for i in range(d)]
                rows = torch.stack([torch.zeros_like(x) if g is None else g for g in cols])
        if rows is None:  # ψ has no path to x: its Jacobian is zero
            rows = torch.zeros(d, *x.shape, dtype=x.dtype, device=x.device)
    return rows.permute(1, 0, 2).detach()


def curl_2d(score, grid):
    r"""Curl of a planar vector field, (∇×ψ) = ∂ψ₂/∂x₁ − ∂ψ₁/∂x₂.

    A score that is the gradient of an energy (ψ = −∇E) is curl-free; a directly parametrised
    score (``ScoreMLP``, an untied DAE) need not be — DEEN diagnoses DSM-trained score networks
    this way (Saremi et al. 2018, Fig. 1 g–h).

    Parameters
    ----------
    score : model with ``score`` or a callable x ↦ ψ(x) (B, 2)
    grid : torch.Tensor (M, 2) of points, or ``(bounds, n_grid)`` (see :func:`grid_2d`)

    Returns
    -------
    torch.Tensor (M,), or (n_y, n_x) for a ``(bounds, n_grid)`` grid.
    """
    pts, shape = _as_points(grid, score)
    if pts.dim() != 2 or pts.shape[1] != 2:
        raise ValueError(f"curl_2d needs 2-D points of shape (M, 2), got {tuple(pts.shape)}")
    J = jacobian(score, pts)
    curl = J[:, 1, 0] - J[:, 0, 1]
    return curl.reshape(shape) if shape is not None else curl


def jacobian_asymmetry(model, x):
    r"""Relative asymmetry of the score Jacobian, ‖J − Jᵀ‖_F / ‖J‖_F per sample.

    Zero for a conservative field (J = −∇²E is symmetric); generalises the 2-D curl to any d
    (Vincent 2011: tied DAE weights make the reconstruction field a gradient; Saremi et al. 2018).

    Parameters
    ----------
    model : model with ``score`` or a callable score
    x : torch.Tensor (B, d)

    Returns
    -------
    torch.Tensor (B,)
    """
    check_data(x, "x", _dim(model))
    J = jacobian(model, x)
    num = torch.linalg.matrix_norm(J - J.transpose(1, 2))
    return num / torch.linalg.matrix_norm(J).clamp_min(torch.finfo(J.dtype).tiny)


def fisher_divergence(model, x, true_score):
    r"""Fisher divergence estimate ½ mean_b ‖ψ_model(x_b) − ψ_true(x_b)‖² (sum over dims).

    With x ~ p this estimates the explicit score-matching objective J_ESM (Hyvärinen 2005);
    it is 0 exactly when the scores agree on the samples.

    Parameters
    ----------
    model : energy/score model or score function
    x : torch.Tensor (B, d)
    true_score : callable x ↦ (B, d) or a (B, d) tensor

    Returns
    -------
    0-d tensor
    """
    check_data(x, "x", _dim(model))
    target = true_score(x) if callable(true_score) else true_score
    if not isinstance(target, torch.Tensor) or target.shape != x.shape:
        raise ValueError(f"true_score must be (or return) a tensor of shape {tuple(x.shape)}")
    return 0.5 * ((score_on(model, x) - target.detach()) ** 2).sum(-1).mean()


