"""CIFAR-10 (Krizhevsky, 2009) for users with internet: the python-pickle archive, MD5 checked.

The archive ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html) holds
``cifar-10-batches-py/data_batch_1`` … ``data_batch_5`` (10 000 images each) and ``test_batch``;
each is a pickled dict with ``b"data"`` (uint8, shape (10000, 3072), each row the 1024 red, then
1024 green, then 1024 blue values of a 32×32 image in row-major order) and ``b"labels"`` (list of
ints 0–9). The archive is downloaded once, verified against the MD5 published on that page, and
cached atomically as ``<data_dir>/cifar10/cifar-10-python.tar.gz``.

The pickles are read with a restricted unpickler that can only rebuild NumPy arrays and builtin
containers, so even an unverified archive cannot run code.
"""
from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from smlib.data._cache import DataSourceError, atomic_write, data_dir, discard_corrupt, download, file_hash

__all__ = ["load_cifar10", "CIFAR10_URL", "CIFAR10_MD5", "CIFAR10_CLASSES"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: MD5 of cifar-10-python.tar.gz as published on https://www.cs.toronto.edu/~kriz/cifar.html
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_ARCHIVE = "cifar-10-python.tar.gz"
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_URL_TIMEOUT_S = 60


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only allows what a CIFAR batch contains (NumPy arrays, dicts, lists)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a CIFAR-10 batch")


def _read_batch(fileobj, name: str):
    try:
        d = _ArrayUnpickler(fileobj, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"CIFAR-10 batch {name}: cannot unpickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"CIFAR-10 batch {name}: expected a dict with b'data' and b'labels'")
    x = np.asarray(d[b"data"])
    y = np.asarray(d[b"labels"], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise ValueError(f"CIFAR-10 batch {name}: b'data' must be uint8 of shape (N, 3072), got {x.dtype} {x.shape}")
    if y.shape != (x.shape[0],) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise ValueError(f"CIFAR-10 batch {name}: b'labels' must be {x.shape[0]} ints in 0-9")
    return x, y


def _read_archive(path: Path, split: str):
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            parts = []
            for b in _BATCHES[split]:
                m = members.get(f"cifar-10-batches-py/{b}")
                if m is None:
                    raise ValueError(f"{path.name} has no cifar-10-batches-py/{b}")
                parts.append(_read_batch(tar.extractfile(m), b))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"cannot read CIFAR-10 archive {path}: {e}") from None
    return parts


def _read_folder(path: Path, split: str):
    parts = []
    for b in _BATCHES[split]:
        f = path / b
        if not f.is_file():
            raise FileNotFoundError(f"{path} has no {b}")
        with open(f, "rb") as fh:
            parts.append(_read_batch(fh, b))
    return parts


def load_cifar10(split: str = "train", cache_dir: str | os.PathLike | None = None, url: str = CIFAR10_URL, *,
                 path: str | os.PathLike | None = None, md5: str | None = CIFAR10_MD5):
    """Load CIFAR-10 (Krizhevsky, 2009, *Learning multiple layers of features from tiny images*).

    Parameters
    ----------
    split : {"train", "test"}
        50 000 training or 10 000 test images.
    cache_dir : path-like, optional
        Cache root (default :func:`smlib.data.data_dir`); the archive lives in
        ``<cache_dir>/cifar10/``.
    url : str
        Where to download ``cifar-10-python.tar.gz`` from when it is not cached.
    path : path-like, optional
        A local copy instead of a download: the ``.tar.gz`` archive (MD5 checked, not copied) or
        an extracted ``cifar-10-batches-py`` folder (read as is; no archive to check).
    md5 : str or None
        Expected MD5 of the archive (default: the published one). ``None`` skips the check — this
        is the hook the tests use to read a small generated archive in the real format; do not use
        it for real data.

    Returns
    -------
    images : torch.Tensor, float32, shape (N, 3072)
        ``uint8 / 255`` in [0, 1], each row channel-first (3, 32, 32) flattened: R plane, G plane,
        B plane — ``images.view(-1, 3, 32, 32)`` gives CHW images.
    labels : torch.Tensor, int64, shape (N,)
        Class indices 0–9, names in :data:`CIFAR10_CLASSES`.

    Raises
    ------
    ValueError
        Unknown split, checksum mismatch, or malformed archive / batches.
    smlib.data.DataSourceError
        Not cached and the download failed (no internet): the message says how to fix it.
    """
    if split not in _BATCHES:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    if path is not None:
        path = Path(path).expanduser()
        if path.is_dir():
            inner = path / "cifar-10-batches-py"
            parts = _read_folder(inner if inner.is_dir() else path, split)
        elif path.is_file():
            if md5 is not None and (got := file_hash(path, "md5")) != md5.lower():
                raise ValueError(f"checksum mismatch for {path}: md5 is {got}, expected {md5.lower()}")
            parts = _read_archive(path, split)
        else:
            raise FileNotFoundError(f"CIFAR-10 path {path} does not exist")
    else:
        archive = data_dir(cache_dir) / "cifar10" / _ARCHIVE
        note = discard_corrupt(archive, md5, "md5") if md5 is not None else None  # reported, not hidden
        if not archive.is_file():
            try:
                body = download(url, timeout=_URL_TIMEOUT_S)
            except Exception as e:  # noqa: BLE001  (URLError, HTTPError, timeouts)
                raise DataSourceError(
                    (f"{note}; " if note else "") +
                    f"CIFAR-10 not found: {archive} is not cached and downloading {url} failed "
                    f"({type(e).__name__}: {e}). Download cifar-10-python.tar.gz on a machine with "
                    "internet and pass path=<that file>, or copy it to the cache path above."
                ) from None
            atomic_write(archive, body, expected=md5, algorithm="md5", what=f"{_ARCHIVE} from {url}")
        parts = _read_archive(archive, split)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    images = torch.from_numpy(x.astype(np.float32) / np.float32(255.0))
    return images, torch.from_numpy(y)
