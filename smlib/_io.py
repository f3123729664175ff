"""One atomic writer for every file smlib writes: checkpoints, data caches and recorded results.

The bytes go to a uniquely named temporary file (``.<name>.<random>.tmp``) in the destination
folder, are flushed and ``fsync``-ed, optionally checked against a digest, and only then moved
into place with :func:`os.replace` (atomic on POSIX and Windows); the folder is fsynced too, so
the rename survives a power cut. A reader sees the old file or the whole new one, never half.
A process killed mid-write (SIGKILL) leaves its ``.tmp`` file behind: :func:`remove_stale_temporaries`
deletes those of one destination, and :func:`atomic_write` calls it before every write.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

__all__ = ["atomic_write", "remove_stale_temporaries", "hasher"]


def hasher(algorithm: str = "sha256"):
    """A hashlib object for ``"sha256"`` or ``"md5"`` (md5 only as a published checksum)."""
    if algorithm == "md5":
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algorithm)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files that killed writes of ``path`` left; return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, chunks: bytes | Iterable[bytes], *, expected: str | None = None,
                 algorithm: str = "sha256", what: str | None = None) -> Path:
    """Write bytes to ``path`` atomically, verifying their checksum before the file appears.

    Parameters
    ----------
    path : str or path-like
        Destination; its folder is created if needed. A folder at ``path`` is an error.
    chunks : bytes or iterable of bytes
        The content (an iterable is streamed, so a large download never sits in memory at once).
    expected : str, optional
        Expected hex digest; on mismatch ``ValueError`` is raised and nothing is left on disk.
    algorithm : {"sha256", "md5"}
        Hash used for ``expected``.
    what : str, optional
        Name used in the error message (default: the file name).

    Returns
    -------
    pathlib.Path
        ``path``. The file gets the permissions of a normally created file (umask applied).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {what or 'a file'} to {path}: it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        chunks = (bytes(chunks),)
    h = hasher(algorithm)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if expected is not None and h.hexdigest() != expected.lower():
            raise ValueError(
                f"checksum mismatch for {what or path.name}: {algorithm} is {h.hexdigest()}, "
                f"expected {expected.lower()} (the file is corrupt or not the published one; nothing was written)")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path
