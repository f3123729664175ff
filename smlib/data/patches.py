"""Natural-image patches from photographs that ship inside installed Python packages.

The papers used the van Hateren database (Saremi et al., 2018) and the Berkeley segmentation
dataset (Swersky et al., 2011), neither of which is available offline. As a clearly labelled
stand-in we draw patches from the photographs bundled with installed packages
(:mod:`smlib.data.photos`).

Preprocessing follows Swersky et al. (2011, Sec. 4): optional log transform, per-patch mean
removal, then PCA whitening retaining 99 % of the variance (:class:`PatchWhitener`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from smlib._checks import check_choice, check_int
from smlib.data.photos import DEFAULT_SOURCES, _check_sources, _pool, load_natural_image

__all__ = ["natural_patches", "natural_patches_split"]


def _extract(keys, n, size, gray, log, log_eps, remove_mean, rng, out_dtype=np.float64) -> np.ndarray:
    """n patches, images chosen ∝ number of valid positions (= uniform over all patches).

    Work is done in float64 one image at a time and stored in ``out_dtype``, so the peak memory
    is the output plus one image's share of it.
    """
    imgs = [load_natural_image(k, gray=gray) for k in keys]
    counts = np.array([(a.shape[0] - size + 1) * (a.shape[1] - size + 1) for a in imgs], dtype=np.float64)
    which = rng.choice(len(imgs), size=n, p=counts / counts.sum())
    dim = size * size * (1 if gray else 3)
    out = np.empty((n, dim), dtype=out_dtype)
    for i, img in enumerate(imgs):
        rows = np.flatnonzero(which == i)
        if rows.size == 0:
            continue
        r = rng.integers(0, img.shape[0] - size + 1, size=rows.size)
        c = rng.integers(0, img.shape[1] - size + 1, size=rows.size)
        win = np.lib.stride_tricks.sliding_window_view(img, (size, size), axis=(0, 1))
        patches = win[r, c].reshape(rows.size, dim)  # colour windows are (3, s, s): channel-first
        if log:
            patches = np.log(patches + log_eps)
        if remove_mean:
            patches = patches - patches.mean(axis=1, keepdims=True)
        out[rows] = patches
    return out


def _np_dtype(dtype: torch.dtype | None):
    return torch.empty((), dtype=dtype or torch.get_default_dtype()).numpy().dtype


def natural_patches(n: int, size: int = 16, gray: bool = True, log: bool = False, seed: int = 0, *,
                    sources: Sequence[str] = DEFAULT_SOURCES, images: Sequence[str] | None = None,
                    remove_mean: bool = True, log_eps: float = 1.0 / 255.0,
                    dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Random square patches from bundled photographs, as rows of a matrix.

    Each patch is drawn uniformly over all positions of all images in the pool (an image is
    picked with probability ∝ its number of valid positions, then a position uniformly), so the
    result depends only on ``seed`` and the pool. Pixels are intensities in [0, 1] (the 8-bit,
    gamma-encoded values / 255). Then, in order:

    1. ``log=True``: x ← log(x + ``log_eps``) (the log-intensity representation used for natural
       image statistics; note PNGs are already gamma-compressed, roughly x^{1/2.2});
    2. ``remove_mean=True``: x ← x − mean(x) over the patch's pixels (and channels), as in
       Swersky et al. (2011, Sec. 4).

    Parameters
    ----------
    n : int
        Number of patches (> 0).
    size : int
        Side of the square patch in pixels (images smaller than this are skipped; ``ValueError``
        if none fits).
    gray : bool
        ``True``: luminance patches, vectors of length size². ``False``: colour patches from the
        colour images only, length 3·size² in channel-first (C, H, W) order like CIFAR-10.
    log : bool
        Apply the log transform above.
    seed : int
        Seed of the NumPy generator (reproducible across platforms).
    sources : sequence of str
        Source groups or image keys, see :func:`list_natural_images`. Default: the lossless
        ``("skimage", "pywt")``; add ``"sklearn"`` / ``"skimage_jpeg"`` for the JPEG photos.
    images : sequence of str, optional
        Exact image keys to use (overrides ``sources``).
    remove_mean : bool
        Subtract each patch's mean.
    log_eps : float
        Offset inside the log (default 1/255, one grey level).
    dtype : torch.dtype, optional
        Output dtype (default ``torch.get_default_dtype()``); computed in float64.

    Returns
    -------
    torch.Tensor, shape (n, size²) or (n, 3·size²)
    """
    n = check_int("n", n)
    size = check_int("size", size)
    if not (isinstance(log_eps, (int, float)) and log_eps > 0):
        raise ValueError(f"log_eps must be > 0, got {log_eps!r}")
    keys = _pool(_check_sources(sources), images, gray, size)
    rng = np.random.default_rng(seed)
    out = _extract(keys, n, size, gray, log, float(log_eps), remove_mean, rng, _np_dtype(dtype))
    return torch.from_numpy(out)


def natural_patches_split(n_train: int, n_test: int, size: int = 16, gray: bool = True, log: bool = False,
                          seed: int = 0, *, by: str = "images", test_images: Sequence[str] | None = None,
                          test_fraction: float = 0.25, sources: Sequence[str] = DEFAULT_SOURCES,
                          remove_mean: bool = True, log_eps: float = 1.0 / 255.0,
                          dtype: torch.dtype | None = None, return_images: bool = False):
    """Training and test patches that do not share images (``by="images"``) or draws (``by="draws"``).

    Parameters
    ----------
    n_train, n_test : int
        Numbers of patches (> 0).
    size, gray, log, sources, remove_mean, log_eps, dtype
        As in :func:`natural_patches`.
    seed : int
        Seed of both the image partition and the patch positions.
    by : {"images", "draws"}
        ``"images"`` (default): the pool is split into disjoint sets of photographs, so no test
        pixel was ever seen in training — the honest protocol for generalisation. The test set is
        ``test_images`` if given, else ⌈test_fraction·M⌉ of the M eligible images chosen by
        ``seed``. ``"draws"``: both sets come from the whole pool, with independent random
        positions (two independent streams of ``seed``); test patches can overlap training
        patches in pixels — a same-distribution split, not an unseen-image one.
    test_images : sequence of str, optional
        Image keys to hold out (``by="images"`` only).
    test_fraction : float
        Fraction of images held out when ``test_images`` is not given, in (0, 1).
    return_images : bool
        Also return the lists of training and test image keys.

    Returns
    -------
    train, test : torch.Tensor
        Shapes (n_train, D) and (n_test, D).
    train_images, test_images : list of str
        Only if ``return_images``.
    """
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    size = check_int("size", size)
    check_choice("by", by, ("images", "draws"))
    if not (isinstance(log_eps, (int, float)) and log_eps > 0):
        raise ValueError(f"log_eps must be > 0, got {log_eps!r}")
    pool = _pool(_check_sources(sources), None, gray, size)
    ss_train, ss_test, ss_split = np.random.SeedSequence(seed).spawn(3)
    if by == "draws":
        if test_images is not None:
            raise ValueError("test_images is only used with by='images'")
        train_keys = test_keys = pool
    elif test_images is not None:
        test_keys = sorted(_pool((), test_images, gray, size))
        train_keys = [k for k in pool if k not in test_keys]
    else:
        if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        if len(pool) < 2:
            raise ValueError(f"by='images' needs at least 2 images of size >= {size}, found {pool}")
        m = min(len(pool) - 1, max(1, math.ceil(test_fraction * len(pool))))
        perm = np.random.default_rng(ss_split).permutation(len(pool))
        test_keys = sorted(pool[i] for i in perm[:m])
        train_keys = [k for k in pool if k not in test_keys]
    if not train_keys:
        raise ValueError("no training images left after holding out test_images")
    opts = dict(size=size, gray=gray, log=log, log_eps=float(log_eps), remove_mean=remove_mean,
                out_dtype=_np_dtype(dtype))
    train = torch.from_numpy(_extract(train_keys, n_train, rng=np.random.default_rng(ss_train), **opts))
    test = torch.from_numpy(_extract(test_keys, n_test, rng=np.random.default_rng(ss_test), **opts))
    if return_images:
        return train, test, list(train_keys), list(test_keys)
    return train, test


