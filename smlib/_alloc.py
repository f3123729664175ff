r"""Opt-in: keep large CPU temporaries in the heap instead of fresh pages from the kernel.

PyTorch's CPU tensors come from glibc's ``malloc``. A block above the *mmap threshold* is mapped
from the kernel when it is allocated and unmapped when it is freed, so a training step that
allocates the same 16–64 MB temporaries every time pays page faults on each of them again; and
freed heap memory above the *trim threshold* is handed back to the kernel at once. On the exact-SM
step of the MNIST energy (784-128-128-256-1, batch 128, one CPU core) both costs are visible in a
profile (`chapters/10_cost_scaling.md` gives the measured effect).

Nothing here runs on import. A user opts in either by calling :func:`keep_large_blocks` once at
the start of a process, or — without any code, for any program — through glibc's own environment
variables, read when the process starts::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 python -m bench

:func:`from_environment` applies :func:`keep_large_blocks` when ``SMLIB_KEEP_LARGE_BLOCKS=1`` is
set, for entry points (the benchmark, the experiment runner) that want a switch of their own. The
price is memory: the process keeps its peak heap until it exits. glibc only (Linux); elsewhere the
functions return ``False`` and change nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ENV_VAR", "from_environment", "keep_large_blocks"]

#: environment variable read by :func:`from_environment`
ENV_VAR = "SMLIB_KEEP_LARGE_BLOCKS"

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


def keep_large_blocks(trim_threshold: int = 1 << 30) -> bool:
    """Serve every block from the heap (``M_MMAP_MAX = 0``) and return freed memory to the kernel
    only above ``trim_threshold`` bytes (``M_TRIM_THRESHOLD``, default 1 GiB).

    Returns ``True`` when glibc accepted both settings. Affects the whole process from the call on.

    Raises
    ------
    ValueError
        If ``trim_threshold`` is not a positive integer below 2³¹ (glibc's parameter is a C ``int``).
    """
    if isinstance(trim_threshold, bool) or not isinstance(trim_threshold, int) or not 0 < trim_threshold < 2**31:
        raise ValueError(f"trim_threshold must be a positive integer number of bytes below 2**31, got {trim_threshold!r}")
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def from_environment() -> bool:
    """:func:`keep_large_blocks` if ``SMLIB_KEEP_LARGE_BLOCKS`` is ``1`` (``0`` or unset: nothing).

    Raises
    ------
    ValueError
        If the variable holds anything other than ``0``, ``1`` or an empty string.
    """
    value = os.environ.get(ENV_VAR, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{ENV_VAR} must be 0 or 1, got {value!r}")
    return keep_large_blocks() if value == "1" else False
