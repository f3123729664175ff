"""What `fit` and `fit_ensemble` set up before the first step: device, optimiser, schedule.

Public, so that `smlib.ensemble` builds its optimiser and device the way `fit` does.
"""
from __future__ import annotations

import math
import numbers

import torch

from smlib._checks import check_choice
from smlib.train.config import OPTIMIZERS, SCHEDULES

__all__ = ["resolve_device", "make_optimizer", "make_schedule", "capturable", "OPTIMIZERS", "SCHEDULES"]


def resolve_device(device, option: str = "device") -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch.device.

    A device that is not available here is a ValueError that names ``option`` and says why (e.g.
    ``"cuda"`` without a GPU, ``"cuda:3"`` with two GPUs); the ``meta`` device holds no data and
    cannot train. The experiment runner checks ``--device`` with this before any set-up.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{option} {device!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"{option} {device!r}: CUDA is not available on this machine ({why}); use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"{option} {device!r} cannot train a model here; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev


def capturable(fn) -> bool:
    """Whether a resolved objective is a registered one that the CUDA-graph step can capture."""
    return fn.spec is not None and fn.spec.cuda_graph


def _number(name, value, *, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


def make_optimizer(optimizer, params, lr, momentum=0.9, weight_decay=0.0):
    """``"adam"``, ``"adamw"``, ``"sgd"`` (with ``momentum``) or a callable ``params -> Optimizer``."""
    if callable(optimizer) and not isinstance(optimizer, str):
        opt = optimizer(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optimizer callable must return a torch.optim.Optimizer, got {type(opt).__name__}")
        return opt
    check_choice("optimizer", optimizer, OPTIMIZERS)
    lr = _number("lr", lr, positive=True)
    weight_decay = _number("weight_decay", weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=_number("momentum", momentum), weight_decay=weight_decay)


def make_schedule(lr_schedule, opt, total):
    """The learning-rate scheduler of ``lr_schedule`` (None for a constant rate)."""
    if lr_schedule is None or lr_schedule == "constant":
        return None
    if callable(lr_schedule) and not isinstance(lr_schedule, str):
        return torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule)
    check_choice("lr_schedule", lr_schedule, SCHEDULES)
    if total is None:
        raise ValueError(f"lr_schedule={lr_schedule!r} needs the total number of steps: pass n_steps, or data with len()")
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if lr_schedule == "linear":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[total // 2, (3 * total) // 4], gamma=0.1)
