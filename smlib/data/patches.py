"""Natural-image patches from photographs that ship inside installed Python packages.

The papers used the van Hateren database (Saremi et al., 2018) and the Berkeley segmentation
dataset (Swersky et al., 2011), neither of which is available offline. As a clearly labelled
stand-in we draw patches from the lossless photographs bundled with scikit-image
(``skimage/data/*.png``) and PyWavelets (``pywt/data/*.npz``); scikit-learn's two sample photos
and scikit-image's ``rocket.jpg`` are JPEG (8×8 DCT block artefacts, visible in 8×8 patches) and
are used only when asked for. Only files that are on disk are used; nothing is downloaded.

Preprocessing follows Swersky et al. (2011, Sec. 4): optional log transform, per-patch mean
removal, then PCA whitening retaining 99 % of the variance (:class:`PatchWhitener`).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from smlib._checks import check_choice, check_int

__all__ = [
    "NATURAL_IMAGES",
    "DEFAULT_SOURCES",
    "list_natural_images",
    "load_natural_image",
    "natural_patches",
    "natural_patches_split",
    "PatchWhitener",
]

#: Catalogue of candidate photographs: key -> (package, file, description). Keys are
#: ``"<source>:<name>"``; the source groups are "skimage" (PNG), "pywt" (lossless npz),
#: "skimage_jpeg" and "sklearn" (JPEG).
NATURAL_IMAGES = {
    "skimage:astronaut": ("skimage", "astronaut.png", "astronaut Eileen Collins, NASA (RGB)"),
    "skimage:brick": ("skimage", "brick.png", "brick wall texture (gray)"),
    "skimage:camera": ("skimage", "camera.png", "cameraman (gray)"),
    "skimage:chelsea": ("skimage", "chelsea.png", "Chelsea the cat (RGB)"),
    "skimage:coffee": ("skimage", "coffee.png", "coffee cup (RGB)"),
    "skimage:coins": ("skimage", "coins.png", "Greek coins (gray)"),
    "skimage:grass": ("skimage", "grass.png", "grass texture (gray)"),
    "skimage:gravel": ("skimage", "gravel.png", "gravel texture (gray)"),
    "skimage:moon": ("skimage", "moon.png", "lunar surface (gray)"),
    "skimage:motorcycle_left": ("skimage", "motorcycle_left.png", "motorcycle, left stereo view (RGB)"),
    "pywt:ascent": ("pywt", "ascent.npz", "people climbing stairs (gray)"),
    "pywt:aero": ("pywt", "aero.npz", "aerial photograph (gray)"),
    "skimage_jpeg:rocket": ("skimage", "rocket.jpg", "SpaceX rocket launch (RGB, JPEG)"),
    "sklearn:china": ("sklearn", "china.jpg", "Chinese temple (RGB, JPEG)"),
    "sklearn:flower": ("sklearn", "flower.jpg", "flower (RGB, JPEG)"),
}
# Not in the catalogue on purpose: motorcycle_right (near-duplicate of the left view, would leak
# across an image-disjoint split), pywt camera (identical to skimage camera), synthetic or
# non-photographic images (chessboard, color, phantom, logo, horse, page, text, cell, ihc, ...).

#: Lossless sources used by default.
DEFAULT_SOURCES = ("skimage", "pywt")
_ALL_SOURCES = ("skimage", "pywt", "skimage_jpeg", "sklearn")
_LUMA = np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709 luminance, as skimage.color.rgb2gray


def _package_dir(package: str) -> Path | None:
    try:
        if package == "skimage":
            import skimage

            return Path(skimage.__file__).parent / "data"
        if package == "pywt":
            import pywt

            return Path(pywt.__file__).parent / "data"
        if package == "sklearn":
            import sklearn.datasets

            return Path(sklearn.datasets.__file__).parent / "images"
    except ImportError:
        return None
    raise ValueError(package)


def _path(key: str) -> Path | None:
    package, filename, _ = NATURAL_IMAGES[key]
    folder = _package_dir(package)
    return None if folder is None else folder / filename


def _check_sources(sources) -> tuple:
    if isinstance(sources, str):
        sources = (sources,)
    sources = tuple(sources)
    if not sources:
        raise ValueError("sources must name at least one source")
    for s in sources:
        if s not in _ALL_SOURCES and s not in NATURAL_IMAGES:
            raise ValueError(f"unknown image source {s!r}; choose from {list(_ALL_SOURCES)} "
                             f"or image keys {sorted(NATURAL_IMAGES)}")
    return sources


_PACKAGE_OF = {"skimage": "scikit-image", "skimage_jpeg": "scikit-image", "pywt": "PyWavelets", "sklearn": "scikit-learn"}


def _require_sources(sources) -> None:
    """Every declared source is there: a missing one would silently change the pool and the split."""
    for source in sources:
        group = source.split(":")[0]
        keys = [source] if ":" in source else [k for k in NATURAL_IMAGES if k.split(":")[0] == group]
        if _package_dir(NATURAL_IMAGES[keys[0]][0]) is None:
            raise FileNotFoundError(
                f"image source {source!r} needs {_PACKAGE_OF[group]}, which is not installed; without it the "
                "pool of photographs, and so the train/test split, would silently change. Install it, or "
                "name the sources to use explicitly (e.g. sources=('skimage',)).")
        missing = [k for k in keys if not _path(k).is_file()]
        if missing:
            raise FileNotFoundError(
                f"image source {source!r}: {', '.join(missing)} not found in this {_PACKAGE_OF[group]} "
                f"installation ({_path(missing[0]).parent}); name the images to use explicitly (images=...)")


def list_natural_images(sources: Sequence[str] = _ALL_SOURCES, gray: bool | None = None) -> list[str]:
    """Keys of the catalogued photographs that are present on disk.

    Parameters
    ----------
    sources : sequence of str
        Source groups (``"skimage"``, ``"pywt"``, ``"skimage_jpeg"``, ``"sklearn"``) and/or
        individual keys such as ``"skimage:grass"``. Default: all groups.
    gray : bool, optional
        ``None``: every image. ``True``: every image (colour ones are converted to luminance).
        ``False``: only colour images.

    Returns
    -------
    list of str
        Sorted keys, e.g. ``["pywt:aero", ..., "skimage:gravel"]``.
    """
    sources = _check_sources(sources)
    keys = [k for k in NATURAL_IMAGES if k in sources or k.split(":")[0] in sources]
    keys = [k for k in keys if (p := _path(k)) is not None and p.is_file()]
    if gray is False:
        keys = [k for k in keys if _load_raw(k).ndim == 3]
    return sorted(keys)


@functools.lru_cache(maxsize=None)
def _load_raw(key: str) -> np.ndarray:
    path = _path(key)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"natural image {key!r} is not installed (looked for {path})")
    if path.suffix == ".npz":
        with np.load(path) as z:
            arr = np.asarray(z["data"])
    else:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"{key}: expected a uint8 gray or RGB image, got {arr.dtype} {arr.shape}")
    arr = arr.copy()
    arr.setflags(write=False)
    return arr


def load_natural_image(key: str, gray: bool = True) -> np.ndarray:
    """One catalogued photograph as float64 in [0, 1]: (H, W) if ``gray`` else (H, W, 3).

    Colour images are converted to gray with the BT.709 luminance weights (0.2125, 0.7154, 0.0721),
    as :func:`skimage.color.rgb2gray`. Asking for colour from a gray image raises ``ValueError``.
    """
    if key not in NATURAL_IMAGES:
        raise ValueError(f"unknown natural image {key!r}; choose from {sorted(NATURAL_IMAGES)}")
    arr = _load_raw(key).astype(np.float64) / 255.0
    if gray and arr.ndim == 3:
        arr = arr @ _LUMA
    elif not gray and arr.ndim == 2:
        raise ValueError(f"{key} is a gray image; use gray=True")
    return arr


def _pool(sources, images, gray: bool, size: int) -> list[str]:
    if images is not None:
        keys = [images] if isinstance(images, str) else list(images)
        for k in keys:
            if k not in NATURAL_IMAGES:
                raise ValueError(f"unknown natural image {k!r}; choose from {sorted(NATURAL_IMAGES)}")
        missing = [k for k in keys if not ((p := _path(k)) is not None and p.is_file())]
        if missing:
            raise FileNotFoundError(f"natural images not installed: {missing}")
    else:
        _require_sources(sources)
        keys = list_natural_images(sources, gray=None if gray else False)
        if not keys:
            raise FileNotFoundError(
                f"no natural images found for sources {tuple(sources)}: install scikit-image and/or "
                "PyWavelets (they ship the photographs), or pass other sources"
            )
    if not gray:
        gray_only = [k for k in keys if _load_raw(k).ndim == 2]
        if gray_only:
            raise ValueError(f"gray=False needs colour images, but {gray_only} are gray")
    fits = [k for k in keys if min(_load_raw(k).shape[:2]) >= size]
    if not fits:
        largest = max(min(_load_raw(k).shape[:2]) for k in keys)
        raise ValueError(f"size={size} is too large: the largest patch that fits the images {keys} is {largest}")
    return sorted(fits)


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


# ---------------------------------------------------------------------- whitening
class PatchWhitener:
    r"""PCA (default) or ZCA whitening that keeps a fraction of the variance.

    Fit: μ = mean of the data, C = cov of the data (N − 1 denominator) = U Λ Uᵀ with eigenvalues in
    decreasing order; keep the first k components, k the smallest number with
    Σ_{i≤k} λᵢ / Σᵢ λᵢ ≥ ``keep``. Eigenvalues below 1e-10·λ_max are always dropped: per-patch
    mean removal makes C singular (the constant direction has zero variance), and whitening it
    would divide by zero.

    * PCA whitening (``method="pca"``): z = Λₖ^{-1/2} Uₖᵀ (x − μ), k-dimensional. This is what
      Swersky et al. (2011) did (99 % of the variance: 105 of 768 dimensions for 16×16 colour
      patches); it also drops the high-frequency, low-variance directions that are mostly noise.
    * ZCA whitening (``method="zca"``): z = Uₖ Λₖ^{-1/2} Uₖᵀ (x − μ), rotated back to pixel space
      (d-dimensional, rank k). Whitened patches still look like images, and local filters stay
      local; use it when a model or a figure needs pixel coordinates.

    Parameters
    ----------
    keep : float in (0, 1]
        Fraction of the variance to keep.
    method : {"pca", "zca"}

    Attributes (after :meth:`fit`)
    ------------------------------
    mean_ : (d,) tensor; components_ : (d, k) tensor Uₖ; eigenvalues_ : (k,) tensor Λₖ;
    n_components_ : int k; explained_variance_ratio_ : float.
    """

    def __init__(self, keep: float = 0.99, method: str = "pca"):
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not (0 < keep <= 1):
            raise ValueError(f"keep must be in (0, 1], got {keep!r}")
        check_choice("whitening method", method, ("pca", "zca"))
        self.keep = float(keep)
        self.method = method
        self.mean_ = None

    # conversions: numpy in -> numpy out, torch in -> torch out, same floating dtype
    @staticmethod
    def _to64(x, name="x"):
        is_np = isinstance(x, np.ndarray)
        t = torch.from_numpy(np.asarray(x)) if is_np else x
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{name} must have shape (N, D), got {tuple(t.shape)}")
        dtype = t.dtype if t.is_floating_point() else torch.float64
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf")
        return t.detach().to(dtype=torch.float64, device="cpu"), is_np, dtype, t.device

    @staticmethod
    def _back(t, is_np, dtype, device):
        return t.to(dtype).numpy() if is_np else t.to(dtype=dtype, device=device)

    def _require_fit(self):
        if self.mean_ is None:
            raise RuntimeError("PatchWhitener is not fitted: call fit(x) first")

    def fit(self, x) -> "PatchWhitener":
        """Estimate μ, Uₖ, Λₖ from data ``x`` of shape (N, d), N ≥ 2."""
        x, *_ = self._to64(x)
        if x.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 samples, got {x.shape[0]}")
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / (x.shape[0] - 1)
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.flip(1)
        if evals[0] <= 0:
            raise ValueError("the data have zero variance: nothing to whiten")
        positive = int((evals > 1e-10 * evals[0]).sum())
        evals, evecs = evals[:positive], evecs[:, :positive]
        frac = torch.cumsum(evals, 0) / evals.sum()
        k = min(positive, int((frac < self.keep - 1e-12).sum()) + 1)
        # fix the sign of each eigenvector (largest-magnitude entry positive) for reproducibility
        idx = evecs[:, :k].abs().argmax(0)
        signs = torch.sign(evecs[idx, torch.arange(k)])
        self.components_ = evecs[:, :k] * signs
        self.eigenvalues_ = evals[:k]
        self.mean_ = mean
        self.n_components_ = k
        self.explained_variance_ratio_ = float(self.eigenvalues_.sum() / torch.diagonal(cov).sum())
        return self

    @property
    def whitening_matrix(self) -> torch.Tensor:
        """V with z = (x − μ) V: Uₖ Λₖ^{-1/2} (d, k) for PCA, Uₖ Λₖ^{-1/2} Uₖᵀ (d, d) for ZCA."""
        self._require_fit()
        v = self.components_ / torch.sqrt(self.eigenvalues_)
        return v @ self.components_.T if self.method == "zca" else v

    @property
    def dewhitening_matrix(self) -> torch.Tensor:
        """D with x − μ = z D: Λₖ^{1/2} Uₖᵀ (k, d) for PCA, Uₖ Λₖ^{1/2} Uₖᵀ (d, d) for ZCA."""
        self._require_fit()
        dw = (self.components_ * torch.sqrt(self.eigenvalues_)).T
        return self.components_ @ dw if self.method == "zca" else dw

    def transform(self, x):
        """Whiten rows of ``x`` (N, d) → (N, k) for PCA, (N, d) for ZCA."""
        self._require_fit()
        t, *back = self._to64(x)
        if t.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"x must have {self.mean_.shape[0]} columns, got {t.shape[1]}")
        return self._back((t - self.mean_) @ self.whitening_matrix, *back)

    def fit_transform(self, x):
        """:meth:`fit` then :meth:`transform`."""
        return self.fit(x).transform(x)

    def inverse_transform(self, z):
        """Map whitened rows back to pixel space: x = z D + μ (exact on the kept subspace)."""
        self._require_fit()
        t, *back = self._to64(z, "z")
        n_in = self.n_components_ if self.method == "pca" else self.mean_.shape[0]
        if t.shape[1] != n_in:
            raise ValueError(f"z must have {n_in} columns, got {t.shape[1]}")
        return self._back(t @ self.dewhitening_matrix + self.mean_, *back)

    def dewhiten_filters(self, W, kind: str = "basis"):
        r"""Map weights learned on whitened data back to pixel space, for display.

        ``W`` has one filter per **column**, shape (n_in, m) with n_in = k (PCA) or d (ZCA) — the
        layout of ``GRBM.W`` (n_visible, n_hidden). Returns shape (d, m).

        * ``kind="basis"`` (default): Dᵀ w, the pixel-space pattern whose whitened coordinates are w
          (the dewhitening used for the filter figures of Ranzato & Hinton, 2010 and
          Swersky et al., 2011). Smooth, image-like.
        * ``kind="filter"``: V w, the pixel-space receptive field, wᵀz = (V w)ᵀ(x − μ). High-pass
          looking (whitening flattens the 1/f² spectrum).
        """
        self._require_fit()
        check_choice("kind", kind, ("basis", "filter"))
        t, *back = self._to64(W, "W")
        n_in = self.n_components_ if self.method == "pca" else self.mean_.shape[0]
        if t.shape[0] != n_in:
            raise ValueError(f"W must have shape ({n_in}, n_filters) (one filter per column), got {tuple(t.shape)}")
        m = self.dewhitening_matrix.T if kind == "basis" else self.whitening_matrix
        return self._back(m @ t, *back)
