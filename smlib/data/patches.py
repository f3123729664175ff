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
from smlib.data.patch_sampling import _check_patch_opts, _extract, _whole, remove_flat_patches
from smlib.data.photos import DEFAULT_SOURCES, _check_sources, _load_raw, _pool

__all__ = ["natural_patches", "natural_patches_split", "natural_patches_regions", "tile_regions", "remove_flat_patches"]


def _np_dtype(dtype: torch.dtype | None):
    return torch.empty((), dtype=dtype or torch.get_default_dtype()).numpy().dtype


def natural_patches(n: int, size: int = 16, gray: bool = True, log: bool = False, seed: int = 0, *,
                    sources: Sequence[str] = DEFAULT_SOURCES, images: Sequence[str] | None = None,
                    remove_mean: bool = True, log_eps: float = 1.0 / 255.0,
                    dtype: torch.dtype | None = None, drop_flat: float | None = None,
                    flat_threshold: float | None = None, return_info: bool = False):
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
    drop_flat : float in (0, 1), optional
        Replace near-flat patches by fresh draws: a patch whose pixel standard deviation (after
        the log and the mean removal, before whitening) is below ``drop_flat`` × the median
        patch's (issue 22: 0.01). Off by default.
    flat_threshold : float, optional
        An absolute threshold instead (e.g. the training set's, from ``return_info``).
    return_info : bool
        Also return ``{"n_flat": flat patches in the first draw (replaced), "flat_threshold": t}``.

    Returns
    -------
    torch.Tensor, shape (n, size²) or (n, 3·size²); with ``return_info`` a tuple (patches, info).
    """
    n = check_int("n", n)
    size = check_int("size", size)
    _check_patch_opts(log_eps, drop_flat, flat_threshold)
    keys = _pool(_check_sources(sources), images, gray, size)
    rng = np.random.default_rng(seed)
    out, n_flat, t = _extract(_whole(keys), n, size, gray, log, float(log_eps), remove_mean, rng, _np_dtype(dtype),
                              drop_flat=drop_flat, flat_threshold=flat_threshold)
    if return_info:
        return torch.from_numpy(out), {"n_flat": n_flat, "flat_threshold": t}
    return torch.from_numpy(out)


def natural_patches_split(n_train: int, n_test: int, size: int = 16, gray: bool = True, log: bool = False,
                          seed: int = 0, *, by: str = "images", test_images: Sequence[str] | None = None,
                          test_fraction: float = 0.25, sources: Sequence[str] = DEFAULT_SOURCES,
                          remove_mean: bool = True, log_eps: float = 1.0 / 255.0,
                          dtype: torch.dtype | None = None, return_images: bool = False,
                          block: int = 32, drop_flat: float | None = None, return_info: bool = False):
    """Training and test patches from disjoint images, disjoint regions of every image, or disjoint draws.

    Parameters
    ----------
    n_train, n_test : int
        Numbers of patches (> 0).
    size, gray, log, sources, remove_mean, log_eps, dtype
        As in :func:`natural_patches`.
    seed : int
        Seed of the partition (images or blocks) and of the patch positions.
    by : {"images", "regions", "draws"}
        ``"images"`` (default): the pool is split into disjoint sets of photographs, so no test
        pixel was ever seen in training. The test set is ``test_images`` if given, else
        ⌈test_fraction·M⌉ of the M eligible images chosen by ``seed``. Test and training
        distributions then differ by the photographs' content (issue 22: whitened test variance
        2.4× the training one). ``"regions"``: every photograph is cut into ``block``×``block``
        tiles, a ``test_fraction`` of each image's tiles is held out (see
        :func:`natural_patches_regions`): same distribution, no shared pixel. ``"draws"``: both
        sets come from the whole pool with independent positions; test patches can overlap
        training patches in pixels.
    test_images : sequence of str, optional
        Image keys to hold out (``by="images"`` only).
    test_fraction : float
        Fraction of images (``"images"``) or of each image's tiles (``"regions"``) held out, in (0, 1).
    return_images : bool
        Also return the lists of training and test image keys.
    block : int
        Tile side in pixels for ``by="regions"``.
    drop_flat : float in (0, 1), optional
        Replace near-flat patches (see :func:`natural_patches`); the threshold is set on the
        training draw and applied unchanged to the test draw.
    return_info : bool
        Also return a dict: ``n_flat`` per set, ``flat_threshold`` (and the regions' counts).

    Returns
    -------
    train, test : torch.Tensor
        Shapes (n_train, D) and (n_test, D).
    train_images, test_images : list of str
        Only if ``return_images``.
    info : dict
        Only if ``return_info`` (last).
    """
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    size = check_int("size", size)
    check_choice("by", by, ("images", "regions", "draws"))
    _check_patch_opts(log_eps, drop_flat, None)
    if by == "regions":
        if test_images is not None:
            raise ValueError("test_images is only used with by='images'")
        _check_fraction("test_fraction", test_fraction)
        train, _, test, info = natural_patches_regions(
            n_train, 0, n_test, size, gray, log, seed, block=block, fractions=(1 - test_fraction, 0.0, test_fraction),
            sources=sources, remove_mean=remove_mean, log_eps=log_eps, dtype=dtype, drop_flat=drop_flat,
            return_info=True)
        out = (train, test) + ((info["images"], info["images"]) if return_images else ())
        return out + (info,) if return_info else out
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
        _check_fraction("test_fraction", test_fraction)
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
    train, n_flat_train, t = _extract(_whole(train_keys), n_train, rng=np.random.default_rng(ss_train),
                                      drop_flat=drop_flat, **opts)
    test, n_flat_test, _ = _extract(_whole(test_keys), n_test, rng=np.random.default_rng(ss_test),
                                    flat_threshold=t, **opts)
    out = (torch.from_numpy(train), torch.from_numpy(test))
    if return_images:
        out += (list(train_keys), list(test_keys))
    if return_info:
        out += ({"n_flat": {"train": n_flat_train, "test": n_flat_test}, "flat_threshold": t},)
    return out


def _check_fraction(name, f, low_open=True):
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not (0 < f < 1 if low_open else 0 <= f < 1):
        raise ValueError(f"{name} must be in {'(0' if low_open else '[0'}, 1), got {f!r}")


def tile_regions(keys: Sequence[str], size: int, block: int, fractions, seed: int = 0) -> dict:
    r"""Cut every photograph into ``block``×``block`` tiles and deal each image's tiles to three sets.

    Tiles start at (0, 0) and step by ``block``; an edge tile narrower than ``size`` in either
    direction is dropped (no patch fits). Each image's tiles are shuffled (NumPy generator of
    ``seed``, images in sorted order) and the first ⌊f_test·m⌉ go to "test", the next
    ⌊f_val·m⌉ to "val", the rest to "train" (each non-zero fraction gets ≥ 1 tile), so every
    photograph contributes to every set in proportion to its area.

    Returns
    -------
    dict  ``{"train": [...], "val": [...], "test": [...]}`` of regions (key, row0, row1, col0, col1).
    """
    f_train, f_val, f_test = (float(f) for f in fractions)
    rng = np.random.default_rng(seed)
    out = {"train": [], "val": [], "test": []}
    for key in sorted(keys):
        h, w = _load_raw(key).shape[:2]
        tiles = [(key, r, min(r + block, h), c, min(c + block, w)) for r in range(0, h, block)
                 for c in range(0, w, block) if min(r + block, h) - r >= size and min(c + block, w) - c >= size]
        m = len(tiles)
        n_test = max(1, round(f_test * m)) if f_test > 0 else 0
        n_val = max(1, round(f_val * m)) if f_val > 0 else 0
        if m - n_test - n_val < 1:
            raise ValueError(f"{key} ({h}×{w}) has {m} tiles of side {block}: too few for the fractions "
                             f"{tuple(fractions)}; choose a smaller block")
        perm = rng.permutation(m)
        out["test"] += [tiles[i] for i in perm[:n_test]]
        out["val"] += [tiles[i] for i in perm[n_test:n_test + n_val]]
        out["train"] += [tiles[i] for i in perm[n_test + n_val:]]
    return out


def natural_patches_regions(n_train: int, n_val: int, n_test: int, size: int = 16, gray: bool = True,
                            log: bool = False, seed: int = 0, *, block: int = 32, fractions=(0.7, 0.1, 0.2),
                            sources: Sequence[str] = DEFAULT_SOURCES, images: Sequence[str] | None = None,
                            remove_mean: bool = True, log_eps: float = 1.0 / 255.0,
                            dtype: torch.dtype | None = None, drop_flat: float | None = None,
                            return_info: bool = False):
    r"""Training, validation and test patches from spatially disjoint regions of every photograph.

    Each photograph of the pool is cut into ``block``×``block`` tiles dealt at random to the
    three sets in the proportions ``fractions`` (:func:`tile_regions`); a patch lies inside one
    tile, so no patch straddles two sets and no pixel is shared between sets. Every photograph
    feeds every set ∝ its area, so the three sets are draws from the same distribution (what a
    held-out photograph cannot give: issue 22 measured a whitened test/train variance ratio of
    2.40 for the image-disjoint split). Neighbouring tiles of different sets are still
    correlated at their common border; that is the price of using every image.

    Parameters
    ----------
    n_train, n_val, n_test : int
        Numbers of patches (n_val may be 0 when fractions[1] = 0).
    size, gray, log, sources, images, remove_mean, log_eps, dtype
        As in :func:`natural_patches`.
    seed : int
        Seed of the tile assignment and of the three sets' positions (independent streams).
    block : int
        Tile side in pixels (≥ size). 32 for 16×16 patches of the RGB pool gives ~1,800 tiles; the
        whitened test/train variance ratio then varied 0.95–1.05 over three seeds (64: 0.84–1.02,
        fewer tiles, more between-tile variability).
    fractions : (f_train, f_val, f_test)
        Shares of each image's tiles, summing to 1.
    drop_flat : float in (0, 1), optional
        Replace near-flat patches (:func:`natural_patches`); threshold set on the training draw
        and applied unchanged to validation and test.
    return_info : bool
        Also return ``{"images", "block", "n_tiles": per set, "n_flat": per set, "flat_threshold"}``.

    Returns
    -------
    train, val, test : torch.Tensor of shapes (n_train, D), (n_val, D), (n_test, D) [, info]
    """
    n_train, n_test = check_int("n_train", n_train), check_int("n_test", n_test)
    n_val = check_int("n_val", n_val, 0)
    size, block = check_int("size", size), check_int("block", block)
    if block < size:
        raise ValueError(f"block ({block}) must be >= size ({size}): a patch must fit inside one tile")
    _check_patch_opts(log_eps, drop_flat, None)
    try:
        fr = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions!r}") from None
    if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0 or fr[2] <= 0 or abs(sum(fr) - 1) > 1e-9:
        raise ValueError(f"fractions must be (train > 0, val >= 0, test > 0) summing to 1, got {fractions!r}")
    if (n_val > 0) != (fr[1] > 0):
        raise ValueError(f"n_val={n_val} but the validation fraction is {fr[1]}: both zero or both positive")
    keys = _pool(_check_sources(sources), images, gray, size)
    ss_split, ss_train, ss_val, ss_test = np.random.SeedSequence(seed).spawn(4)
    regions = tile_regions(keys, size, block, fr, seed=int(ss_split.generate_state(1)[0]))
    opts = dict(size=size, gray=gray, log=log, log_eps=float(log_eps), remove_mean=remove_mean,
                out_dtype=_np_dtype(dtype))
    train, n_flat_train, t = _extract(regions["train"], n_train, rng=np.random.default_rng(ss_train),
                                      drop_flat=drop_flat, **opts)
    flat = {"train": n_flat_train}
    sets = {"train": torch.from_numpy(train)}
    for name, n, ss in (("val", n_val, ss_val), ("test", n_test, ss_test)):
        if n == 0:
            sets[name] = torch.empty((0, train.shape[1]), dtype=sets["train"].dtype)
            flat[name] = 0
            continue
        x, flat[name], _ = _extract(regions[name], n, rng=np.random.default_rng(ss), flat_threshold=t, **opts)
        sets[name] = torch.from_numpy(x)
    out = (sets["train"], sets["val"], sets["test"])
    if return_info:
        info = {"images": list(keys), "block": block, "n_tiles": {k: len(v) for k, v in regions.items()},
                "n_flat": flat, "flat_threshold": t}
        return out + (info,)
    return out
