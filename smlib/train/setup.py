"""What `fit` and `fit_ensemble` set up before the first step: device, objective, optimiser, schedule.

Public, so that `smlib.ensemble` builds its optimiser and device the way `fit` does.
"""
from __future__ import annotations

import math
import numbers

import torch

from smlib import objectives as _objectives
from smlib._checks import check_choice

__all__ = ["resolve_device", "resolve_objective", "make_optimizer", "make_schedule", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adam", "sgd", "adamw")
SCHEDULES = (None, "constant", "cosine", "step", "linear")


def resolve_device(device) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch.device.

    A device that is not available here is a ValueError that says so (e.g. ``"cuda"`` without a
    GPU, ``"cuda:3"`` with two GPUs); the ``meta`` device holds no data and cannot train.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but no CUDA device is available here (use 'cpu' or 'auto')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r} cannot train a model here; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev


def resolve_objective(objective, options=None):
    """Turn ``objective`` into ``(fn(model, x), label, stateful, config)``.

    ``objective`` is a name of :data:`smlib.objectives.REGISTRY` (its ``options`` a dict), an
    :class:`smlib.objectives.Objective` from :func:`smlib.objectives.make`, an MCMC estimator
    instance, or any callable ``(model, x) -> loss`` (``options`` then become keyword arguments of
    every call). ``stateful`` is the object whose ``state_dict``/``load_state_dict`` the
    checkpoints hold (or None); ``config`` describes the objective and its options (what a
    checkpoint records and compares on resume).

    Raises
    ------
    ValueError
        Unknown name or invalid option value (e.g. ``sigma <= 0``, a string for a number).
    TypeError
        Unknown or missing option, options given with an already-built objective, or an
        objective that is neither a name nor callable.
    """
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of the objective's options, got {type(options).__name__}")
    if isinstance(objective, str):
        objective = _objectives.make(objective, **(options or {}))
    elif options and isinstance(objective, _objectives.Objective):
        raise TypeError(f"{objective!r} already carries its options; pass options only with a name")
    if isinstance(objective, _objectives.Objective):
        return objective, objective.name, objective.state, objective.config()
    if not callable(objective):
        raise TypeError(f"objective must be a name in {tuple(_objectives.REGISTRY)}, an Objective, or a callable "
                        f"(model, x) -> loss; got {objective!r}")
    label = getattr(objective, "__name__", type(objective).__name__)
    stateful = objective if hasattr(objective, "state_dict") and hasattr(objective, "load_state_dict") else None
    opts = objective.config() if hasattr(objective, "config") else {k: repr(v) for k, v in (options or {}).items()}
    config = {"objective": label, "options": opts}
    if options:
        fn, kwargs = objective, dict(options)

        def objective(model, x):  # noqa: F811
            return fn(model, x, **kwargs)

    return objective, label, stateful, config


def capturable(fn) -> bool:
    """Whether a resolved objective is a registered one that the CUDA-graph step can capture."""
    return isinstance(fn, _objectives.Objective) and fn.spec.cuda_graph


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
