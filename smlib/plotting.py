r"""Figures for the book: energy landscapes, score fields, curl maps, filter grids, curves.

Every function draws into ``ax`` (or a new figure), never calls ``plt.show()``, and returns the
matplotlib ``Figure`` (``fig.axes`` gives the axes). Grids follow :func:`smlib.metrics.grid_2d`
(row i ↔ y_i, column j ↔ x_j).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from smlib import metrics
from smlib._checks import check_choice

__all__ = ["energy_landscape", "score_field", "curl_map", "filter_grid", "training_curves"]


def _axes(ax, figsize=(4.5, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def _dtype(model):
    if isinstance(model, torch.nn.Module):
        p = next(model.parameters(), None)
        if p is not None:
            return p.dtype, p.device
    return torch.get_default_dtype(), None


def _np(t):
    return t.detach().cpu().numpy()


def _extent(X, Y):
    return (float(X.min()), float(X.max()), float(Y.min()), float(Y.max()))


def energy_landscape(model, bounds, n_grid=150, ax=None, kind="density", cmap="viridis", colorbar=True,
                     data=None, title=None):
    r"""Image of an energy model on a 2-D grid.

    ``kind="density"``: q(x) = exp(−E(x)) / Z with Z by quadrature on the grid (as DEEN
    Fig. 1 a, c plot q = exp(−E)); ``"log_density"``: log q; ``"energy"``: E(x) itself.

    Parameters
    ----------
    model : energy model or callable energy (B, 2) -> (B,)
    bounds : (x_min, x_max, y_min, y_max) or L (see :func:`smlib.metrics.grid_2d`)
    n_grid : int
    ax : matplotlib Axes, optional
    kind : {"density", "log_density", "energy"}
    data : (N, 2) tensor/array, optional
        Points overlaid as a light scatter.

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_choice("kind", kind, ("density", "log_density", "energy"))
    fig, ax = _axes(ax)
    dtype, device = _dtype(model)
    X, Y, pts = metrics.grid_2d(bounds, n_grid, dtype=dtype, device=device)
    energy = model.energy if hasattr(model, "energy") else model
    with torch.no_grad():
        E = energy(pts).reshape(X.shape)
    if kind == "energy":
        img, label = E, "E(x)"
    else:
        cell = float((X[0, 1] - X[0, 0]) * (Y[1, 0] - Y[0, 0]))
        log_q = -E - (torch.logsumexp(-E.reshape(-1), 0) + math.log(cell))
        img, label = (log_q.exp(), "q(x)") if kind == "density" else (log_q, "log q(x)")
    im = ax.imshow(_np(img), origin="lower", extent=_extent(X, Y), cmap=cmap, aspect="auto")
    if data is not None:
        d = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        ax.scatter(d[:, 0], d[:, 1], s=2, c="w", alpha=0.3, linewidths=0)
    if colorbar:
        fig.colorbar(im, ax=ax, label=label, fraction=0.046)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    return fig


def score_field(model, bounds, n_grid=20, ax=None, kind="quiver", normalize=False, color=None, title=None):
    r"""Arrows (or streamlines) of the score ψ(x) = −∇E(x) on a 2-D grid (DEEN Fig. 1 b, d).

    Parameters
    ----------
    model : energy/score model or a score function (B, 2) -> (B, 2)
    bounds, n_grid : see :func:`smlib.metrics.grid_2d`
    kind : {"quiver", "stream"}
    normalize : bool
        Unit-length arrows, coloured by ‖ψ‖ (shows direction where magnitudes vary a lot).

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_choice("kind", kind, ("quiver", "stream"))
    fig, ax = _axes(ax)
    dtype, device = _dtype(model)
    X, Y, pts = metrics.grid_2d(bounds, n_grid, dtype=dtype, device=device)
    psi = metrics.score_on(model, pts)
    U, V = _np(psi[:, 0].reshape(X.shape)), _np(psi[:, 1].reshape(X.shape))
    mag = np.hypot(U, V)
    if kind == "quiver":
        if normalize:
            U, V = U / np.maximum(mag, 1e-12), V / np.maximum(mag, 1e-12)
            ax.quiver(_np(X), _np(Y), U, V, mag, cmap="viridis", angles="xy")
        else:
            ax.quiver(_np(X), _np(Y), U, V, color=color or "k", angles="xy")
    else:
        ax.streamplot(_np(X), _np(Y), U, V, color=mag if color is None else color, cmap="viridis", density=1.0)
    ax.set_xlim(float(X.min()), float(X.max()))
    ax.set_ylim(float(Y.min()), float(Y.max()))
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    return fig


def curl_map(model, bounds, n_grid=100, ax=None, cmap="RdBu_r", colorbar=True, title=None):
    r"""Image of the curl ∂ψ₂/∂x₁ − ∂ψ₁/∂x₂ of a 2-D score field (DEEN Fig. 1 g, h).

    Zero for any energy model (ψ = −∇E); a symmetric colour scale centred at 0 makes a
    non-conservative score network stand out.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _axes(ax)
    curl = _np(metrics.curl_2d(model, (bounds, n_grid)))
    X, Y, _ = metrics.grid_2d(bounds, n_grid)
    vmax = max(float(np.abs(curl).max()), 1e-12)
    im = ax.imshow(curl, origin="lower", extent=_extent(X, Y), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
    if colorbar:
        fig.colorbar(im, ax=ax, label=r"$\nabla\times\psi$", fraction=0.046)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    return fig


def filter_grid(filters, shape, ax=None, n_cols=None, normalize="each", pad=1, cmap="gray", title=None):
    r"""Tile filters (e.g. the columns of a GRBM's W, Swersky et al. 2011 Fig. 2) as images.

    Parameters
    ----------
    filters : (n_filters, prod(shape)) tensor/array
        One filter per row (pass ``W.T`` for a GRBM whose W is (n_visible, n_hidden)).
    shape : (h, w) or (h, w, 3)
        Image shape of one filter; a trailing 3 gives colour tiles.
    n_cols : int, optional
        Tiles per row (default ≈ √n).
    normalize : {"each", "global"}
        Map each tile's (or all tiles') [min, max] to [0, 1].
    pad : int
        Pixels of white border between tiles.

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_choice("normalize", normalize, ("each", "global"))
    F = filters.detach().cpu().numpy() if isinstance(filters, torch.Tensor) else np.asarray(filters)
    shape = tuple(shape)
    if F.ndim != 2 or F.shape[1] != int(np.prod(shape)):
        raise ValueError(f"filters must be (n_filters, {int(np.prod(shape))}) for shape {shape}, got {F.shape}")
    colour = len(shape) == 3
    if colour and shape[2] != 3:
        raise ValueError(f"colour filters need shape (h, w, 3), got {shape}")
    n = F.shape[0]
    n_cols = n_cols or int(math.ceil(math.sqrt(n)))
    n_rows = int(math.ceil(n / n_cols))
    if normalize == "global":
        lo, hi = F.min(), F.max()
        F = (F - lo) / max(hi - lo, 1e-12)
    else:
        lo, hi = F.min(1, keepdims=True), F.max(1, keepdims=True)
        F = (F - lo) / np.maximum(hi - lo, 1e-12)
    h, w = shape[:2]
    canvas = np.ones((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad) + ((3,) if colour else ()))
    for k in range(n):
        r, c = divmod(k, n_cols)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y0 : y0 + h, x0 : x0 + w] = F[k].reshape(shape)
    fig, ax = _axes(ax, figsize=(max(2.0, 0.4 * n_cols), max(2.0, 0.4 * n_rows)))
    ax.imshow(canvas, cmap=None if colour else cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def training_curves(history, keys=None, ax=None, log_y=False, smooth=None, x="steps", title=None):
    r"""Plot logged quantities of a :class:`smlib.train.History` against the step.

    Parameters
    ----------
    history : History (or a dict of lists)
    keys : list of str, optional
        Default: every logged key except ``"lr"``. Keys found only in ``history.per_epoch`` are
        plotted against its ``"step"``.
    log_y : bool
    smooth : int, optional
        Width of a trailing moving average (the raw curve is drawn faintly behind it).
    x : {"steps", "epochs"}

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_choice("x", x, ("steps", "epochs"))
    per_epoch = getattr(history, "per_epoch", {}) or {}
    if keys is None:
        keys = [k for k in history if k != "lr"]
    elif isinstance(keys, str):
        keys = [keys]
    fig, ax = _axes(ax, figsize=(5, 3.2))
    steps = getattr(history, x, None)
    for key in keys:
        if key in history:
            y = np.asarray(history[key], dtype=float)
            t = np.asarray(steps if steps else range(1, len(y) + 1), dtype=float)
        elif key in per_epoch:
            y = np.asarray(per_epoch[key], dtype=float)
            t = np.asarray(per_epoch["step" if x == "steps" else "epoch"], dtype=float)
        else:
            raise KeyError(f"{key!r} is not in the history (keys: {sorted(history)}, per-epoch: {sorted(per_epoch)})")
        if smooth and smooth > 1 and len(y) >= smooth:
            (line,) = ax.plot(t, y, alpha=0.25)
            ys = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            ax.plot(t[smooth - 1 :], ys, color=line.get_color(), label=key)
        else:
            ax.plot(t, y, label=key, marker="o" if len(y) < 30 else None, markersize=3)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("step" if x == "steps" else "epoch")
    if len(keys) > 1:
        ax.legend()
    else:
        ax.set_ylabel(keys[0] if keys else "")
    if title:
        ax.set_title(title)
    return fig
