"""Input validation shared by every smlib module.

Each helper raises ``ValueError`` with a message that names the offending argument and says
what was wrong, so that a user who passes a (B,) vector, an integer image or a batch with a NaN
learns it at the call site instead of from a silent broadcast three functions later.

The finiteness check of :func:`check_data`, and the value check of a one-element tensor given for
a number (:func:`check_positive`, :func:`check_nonnegative`), need a host/device synchronisation.
They are skipped automatically while ``torch.compile`` traces or a CUDA graph is being captured,
and can be switched off explicitly (e.g. by a training loop that checked its data and options
once, or inside ``torch.func.vmap``) with ``with smlib._checks.disabled(): ...``.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterable

import torch

__all__ = ["check_data", "check_positive", "check_nonnegative", "check_int", "check_choice", "disabled"]

_ENABLED = True


@contextlib.contextmanager
def disabled():
    """Context manager that turns the (synchronising) finiteness check of `check_data` off."""
    global _ENABLED
    old, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = old


def _tracing() -> bool:
    """True while torch.compile traces or a CUDA graph is captured (no host sync allowed)."""
    try:
        if torch.compiler.is_compiling():
            return True
    except AttributeError:  # pragma: no cover - very old torch
        pass
    return bool(torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def check_data(x, name: str = "x", d: int | None = None) -> torch.Tensor:
    """Validate a batch of data: a floating torch tensor of shape (B, d), finite, B ≥ 1.

    Parameters
    ----------
    x : torch.Tensor
        The batch to check.
    name : str
        Name used in error messages.
    d : int, optional
        Required number of columns (e.g. ``model.dim``).

    Returns
    -------
    torch.Tensor
        ``x`` itself (unchanged), so that the call can be inlined.

    Raises
    ------
    ValueError
        If ``x`` is not a tensor, is not floating point, is not 2-D, is empty, has the wrong
        number of columns, or contains NaN/Inf.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (batch, dim), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype (float32/float64), got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (batch, dim), got ndim={x.ndim} and shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    if d is not None and x.shape[1] != d:
        raise ValueError(
            f"{name} has dimension {x.shape[1]} but the model expects dim={d} (shape {tuple(x.shape)})"
        )
    if _ENABLED and not _tracing() and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains NaN or Inf values ({n_bad} non-finite entries)")
    return x


def _as_float(name: str, value):
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, torch.Tensor):
        if not _ENABLED or _tracing():  # a tensor's value needs a host sync (e.g. one member's σ inside vmap)
            return value
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive(name: str, value) -> float:
    """Raise ``ValueError("sigma must be > 0, got -1.0")`` unless ``value`` is a finite number > 0.

    Accepts Python numbers and one-element tensors; returns the value as a float.
    """
    v = _as_float(name, value)
    if isinstance(v, torch.Tensor):  # left unchecked while checks are off (see _as_float)
        return v
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def check_nonnegative(name: str, value) -> float:
    """Raise ``ValueError("lam must be >= 0, got -0.1")`` unless ``value`` is finite and ≥ 0."""
    v = _as_float(name, value)
    if isinstance(v, torch.Tensor):  # left unchecked while checks are off (see _as_float)
        return v
    if not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def check_int(name: str, value, minimum: int = 1) -> int:
    """Raise ``ValueError("n_steps must be an integer >= 1, got 0")`` unless ``value`` is an integer ≥ ``minimum``.

    Parameters
    ----------
    name : str
        Name used in the error message.
    value : object
        The value to check. Python and NumPy integers are accepted; ``bool`` (although a
        subclass of ``int``), floats (even integral ones such as ``3.0``), strings, tensors and
        ``None`` are rejected.
    minimum : int
        Smallest allowed value (default 1: a positive count; use 0 for "may be zero").

    Returns
    -------
    int
        ``value`` as a plain Python ``int``.

    Raises
    ------
    ValueError
        If ``value`` is not an integer or is smaller than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(name: str, value, choices: Iterable):
    """Raise ``ValueError`` listing the allowed values unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")
    return value
