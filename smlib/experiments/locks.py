"""A lock per unit of work, so that two processes never run one unit at once.

:class:`UnitLock` is a file ``<unit>.lock`` in the work folder that names its holder (process
id, host, start). It is held with ``fcntl.flock`` (released by the kernel when the holder exits,
however it exits) and removed on release. A lock file left by a holder that crashed is stale: its
process id no longer runs (or runs a process that started later), and the next process takes it
over and says so. The process id is checked too, so a live holder is respected on a file system
where ``flock`` does nothing. A second process refuses the unit (:class:`LockHeld`, naming the
holder) or, with ``wait=True``, waits for it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the process-id check alone guards the unit
    fcntl = None

__all__ = ["UnitLock", "LockHeld", "pid_running"]


class LockHeld(RuntimeError):
    """The unit is being run by another process."""


def _start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_running(pid: int, start: int | None = None) -> bool:
    """True when process ``pid`` runs (and, where ``start`` and /proc are known, is the one started then)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    now = _start_ticks(pid)
    return start is None or now is None or now == start


def _describe(holder: dict) -> str:
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (since {holder.get('since', '?')}"
            f"{', ' + holder['what'] if holder.get('what') else ''})")


class UnitLock:
    """``with UnitLock(folder / "SM-s0.lock", what="unit SM-s0"):`` — see the module docstring.

    Attributes
    ----------
    stale : dict or None
        After :meth:`acquire`: the holder of a stale lock that was taken over, else None.
    """

    def __init__(self, path, *, what: str, note: str = ""):
        self.path, self.what, self.note = Path(path), what, note
        self.fd, self.stale = None, None

    def _alive(self, holder: dict) -> bool:
        if not holder or holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return False
        if holder.get("host") != socket.gethostname():
            return True  # another machine's process: it cannot be checked from here, so it is respected
        return pid_running(int(holder.get("pid", -1)), holder.get("start"))

    def _read(self) -> dict:
        try:
            doc = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _try(self) -> dict | None:
        """Take the lock (return None) or return its live holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return self._read() or {"pid": "?"}
                try:  # the file may have been released (unlinked) between open and flock
                    if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                        return {"retry": True}
                except FileNotFoundError:
                    return {"retry": True}
            holder = self._read()
            if self._alive(holder):
                return holder
            self.stale = holder or None
            me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_ticks(os.getpid()),
                  "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "what": self.note}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            os.fsync(fd)
            self.fd, fd = fd, None
            return None
        finally:
            if fd is not None:
                os.close(fd)

    def acquire(self, *, wait: bool = False, poll_s: float = 1.0, say=None) -> "UnitLock":
        """Take the lock; if another live process holds it, raise :class:`LockHeld` or (``wait``) wait."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        told = False
        while True:
            holder = self._try()
            if holder is None:
                return self
            if holder.get("retry"):
                continue
            if not wait:
                raise LockHeld(f"{self.what} is being run by {_describe(holder)}; lock file {self.path}. "
                               "Wait for it to finish (or pass --wait), or, if that process is gone, delete the lock file")
            if say is not None and not told:
                say(f"  {self.what}: waiting for {_describe(holder)}")
                told = True
            time.sleep(poll_s)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # removed while still held: a waiting process re-opens the path
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
