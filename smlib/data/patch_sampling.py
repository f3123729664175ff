"""Drawing patches uniformly inside rectangular regions of photographs, and removing near-flat patches.

A region is ``(key, row0, row1, col0, col1)``: a rectangle of one catalogued photograph
(:mod:`smlib.data.photos`). A whole photograph is one region; :func:`smlib.data.patches.tile_regions`
cuts photographs into tiles so that training and test patches come from disjoint pixels of every
image. A patch lies inside one region, never across two.
"""
from __future__ import annotations

import numpy as np
import torch

from smlib.data.photos import _load_raw, load_natural_image

__all__ = ["remove_flat_patches"]


def _whole(keys):
    """One region per image: the whole photograph, as (key, row0, row1, col0, col1)."""
    return [(k, 0, _load_raw(k).shape[0], 0, _load_raw(k).shape[1]) for k in keys]


def _draw(regions, n, size, gray, log, log_eps, remove_mean, rng, out, rows_out, std_out):
    """Fill ``out[rows_out]`` with n patches, each inside one region, uniform over all valid positions.

    A region is chosen ∝ its number of valid top-left positions, then a position uniformly in
    it, so a patch never straddles two regions. Work is done in float64 one region at a time
    and stored in ``out``'s dtype; the patch's pixel standard deviation (after the log and the
    mean removal, before whitening) goes to ``std_out``.
    """
    counts = np.array([(r1 - r0 - size + 1) * (c1 - c0 - size + 1) for _, r0, r1, c0, c1 in regions], dtype=np.float64)
    which = rng.choice(len(regions), size=n, p=counts / counts.sum())
    dim, images = out.shape[1], {}
    for i, (key, r0, r1, c0, c1) in enumerate(regions):
        rows = np.flatnonzero(which == i)
        if rows.size == 0:
            continue
        if key not in images:  # one float64 copy per image and call, shared by its regions
            images[key] = load_natural_image(key, gray=gray)
        img = images[key]
        r = rng.integers(0, r1 - r0 - size + 1, size=rows.size) + r0
        c = rng.integers(0, c1 - c0 - size + 1, size=rows.size) + c0
        win = np.lib.stride_tricks.sliding_window_view(img, (size, size), axis=(0, 1))
        patches = win[r, c].reshape(rows.size, dim)  # colour windows are (3, s, s): channel-first
        if log:
            patches = np.log(patches + log_eps)
        if remove_mean:
            patches = patches - patches.mean(axis=1, keepdims=True)
        out[rows_out[rows]] = patches
        std_out[rows_out[rows]] = patches.std(axis=1)


def _extract(regions, n, size, gray, log, log_eps, remove_mean, rng, out_dtype=np.float64, *,
             drop_flat=None, flat_threshold=None):
    """n patches from ``regions`` (see :func:`_draw`), near-flat ones replaced by fresh draws.

    Flat patches: pixel standard deviation below ``flat_threshold``, or, if that is None, below
    ``drop_flat`` × the median standard deviation of this draw. Each is redrawn (same regions,
    same rule) until none is left, so the result has exactly n patches from the distribution
    conditioned on "not flat". Returns (patches, number flat in the first draw, threshold).
    """
    dim = size * size * (1 if gray else 3)
    out = np.empty((n, dim), dtype=out_dtype)
    std = np.empty(n, dtype=np.float64)
    _draw(regions, n, size, gray, log, log_eps, remove_mean, rng, out, np.arange(n), std)
    if drop_flat is None and flat_threshold is None:
        return out, 0, None
    threshold = float(flat_threshold) if flat_threshold is not None else float(drop_flat) * float(np.median(std))
    bad = np.flatnonzero(std < threshold)
    n_flat = int(bad.size)
    for _ in range(1000):
        if bad.size == 0:
            return out, n_flat, threshold
        _draw(regions, bad.size, size, gray, log, log_eps, remove_mean, rng, out, bad, std)
        bad = bad[std[bad] < threshold]
    raise ValueError(f"after 1000 redraws {bad.size} patches are still flat (std < {threshold:.3g}): "
                     "the pool is almost all flat; lower drop_flat or choose other images")


def remove_flat_patches(x, drop_flat: float = 0.01, threshold: float | None = None):
    r"""Drop the rows of ``x`` whose pixel standard deviation is below a threshold.

    Threshold t = ``threshold`` if given, else ``drop_flat`` × median over rows of std(row): a
    patch with std(x) < t carries (almost) no signal but, after whitening, sits on one point that
    score matching can make arbitrarily likely (issue 22: 0.91 % of the training patches are
    exactly flat). Pass the training threshold to filter a test set by the same rule.

    Returns
    -------
    kept : same type as ``x``, rows with std ≥ t
    info : dict  ``{"n_removed": int, "threshold": t}``
    """
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"x must have shape (N, D) with N >= 1, got {tuple(arr.shape)}")
    if threshold is None and not (isinstance(drop_flat, (int, float)) and 0 < drop_flat < 1):
        raise ValueError(f"drop_flat must be in (0, 1), got {drop_flat!r}")
    std = arr.std(axis=1)
    t = float(threshold) if threshold is not None else float(drop_flat) * float(np.median(std))
    keep = std >= t
    kept = x[torch.from_numpy(keep)] if isinstance(x, torch.Tensor) else np.asarray(x)[keep]
    return kept, {"n_removed": int((~keep).sum()), "threshold": t}


def _check_patch_opts(log_eps, drop_flat, flat_threshold):
    if not (isinstance(log_eps, (int, float)) and log_eps > 0):
        raise ValueError(f"log_eps must be > 0, got {log_eps!r}")
    if drop_flat is not None and not (isinstance(drop_flat, (int, float)) and 0 < drop_flat < 1):
        raise ValueError(f"drop_flat must be None or in (0, 1), got {drop_flat!r}")
    if flat_threshold is not None and not (isinstance(flat_threshold, (int, float)) and flat_threshold >= 0):
        raise ValueError(f"flat_threshold must be None or >= 0, got {flat_threshold!r}")
