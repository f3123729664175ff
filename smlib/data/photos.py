"""The photographs that ship inside installed Python packages: a catalogue, loading, and the pool a run uses.

The papers used the van Hateren database (Saremi et al., 2018) and the Berkeley segmentation
dataset (Swersky et al., 2011), neither of which is available offline. As a clearly labelled
stand-in the patches come from the lossless photographs bundled with scikit-image
(``skimage/data/*.png``) and PyWavelets (``pywt/data/*.npz``); scikit-learn's two sample photos
and scikit-image's ``rocket.jpg`` are JPEG (8×8 DCT block artefacts, visible in 8×8 patches) and
are used only when asked for. Only files that are on disk are used; nothing is downloaded, and a
declared source that is missing is an error (it would silently change a train/test split).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["NATURAL_IMAGES", "DEFAULT_SOURCES", "list_natural_images", "load_natural_image"]

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


