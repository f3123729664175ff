"""Cache folder, checksums, atomic writes and downloads shared by the dataset loaders.

Every file that a loader keeps on disk is written *atomically*: the bytes go to a uniquely named
temporary file in the destination folder, are flushed and ``fsync``-ed, their checksum is
verified, and only then is the file moved into place with :func:`os.replace` (atomic on POSIX and
Windows). A reader therefore sees either no file or a complete, verified one; an interrupted run
leaves no half-written cache entry (the temporary file is removed on every error path).
"""
from __future__ import annotations

import contextlib

import os
import urllib.request
import warnings
from pathlib import Path
from typing import Iterator

from smlib._io import atomic_write, hasher

__all__ = ["data_dir", "file_hash", "atomic_write", "verified", "discard_corrupt", "download", "DataSourceError"]

_CHUNK = 1 << 20


class DataSourceError(RuntimeError):
    """A dataset could not be found in the cache nor fetched from any of its sources."""


def data_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder where smlib caches datasets.

    Parameters
    ----------
    cache_dir : str or path-like, optional
        Explicit folder. When ``None``: ``$SMLIB_DATA_DIR`` if set, else
        ``$XDG_CACHE_HOME/smlib``, else ``~/.cache/smlib``.

    Returns
    -------
    pathlib.Path
        The folder (not created here; loaders create it when they first write).
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SMLIB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "smlib"


def file_hash(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks (``algorithm``: ``"sha256"`` or ``"md5"``)."""
    h = hasher(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verified(path: Path, expected: str | None, algorithm: str = "sha256") -> bool:
    """True when ``path`` exists and (if ``expected`` is given) has that digest."""
    if not path.is_file():
        return False
    return expected is None or file_hash(path, algorithm) == expected.lower()


def discard_corrupt(path: Path, expected: str, algorithm: str = "sha256") -> str | None:
    """Delete a cached file whose checksum is wrong, warn, and return a note saying so (None if fine or absent)."""
    if not path.is_file():
        return None
    got = file_hash(path, algorithm)
    if got == expected.lower():
        return None
    note = (f"the cached {path} was corrupt ({algorithm} {got}, expected {expected.lower()}; "
            f"{path.stat().st_size} bytes) and was deleted")
    path.unlink()
    warnings.warn(note + "; fetching a fresh copy", stacklevel=3)
    return note


@contextlib.contextmanager
def cache_lock(folder: Path):
    """Hold an exclusive lock on a cache folder while it is filled.

    Two processes filling one cache at once (pytest-xdist workers, two experiment units) would
    otherwise fetch twice and race on each other's temporary files. POSIX only; elsewhere a no-op.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; concurrent fills stay the user's concern
        yield
        return
    # beside the folder, not in it: the folder holds the verified files only (and may not exist yet)
    with open(folder.parent / f".{folder.name}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download(url: str, timeout: float = 30.0) -> Iterator[bytes]:
    """Open ``url`` and return an iterator over its body in 1 MiB chunks.

    Raises whatever :func:`urllib.request.urlopen` raises (``URLError``, ``OSError``,
    ``TimeoutError``) when the host is unreachable; callers collect those into one message.
    """
    request = urllib.request.Request(url, headers={"User-Agent": "smlib (python urllib)"})
    response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (https/http only)

    def body() -> Iterator[bytes]:
        with response:
            yield from iter(lambda: response.read(_CHUNK), b"")

    return body()
