"""The settings of a training run, typed: :class:`TrainConfig` and the divergence guard's :class:`GuardConfig`.

Both are frozen dataclasses that check themselves when they are made, with the user's argument
names in every message, so that a bad setting fails before any set-up and nothing invalid can
be recorded. ``dataclasses.asdict`` of a config, with the objective's options, is the run
configuration a checkpoint stores (see :func:`smlib.train.state.run_config`).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["TrainConfig", "GuardConfig", "CHANGEABLE", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adam", "sgd", "adamw")
SCHEDULES = (None, "constant", "cosine", "step", "linear")
#: settings a resume may change when the call names them in ``allow_changes`` (matched exactly;
#: "objective" and "divergence_guard" name groups and cover their own sub-settings)
CHANGEABLE = ("lr", "momentum", "weight_decay", "grad_clip", "objective", "n_steps", "n_epochs", "divergence_guard")


def _real(name, value, *, positive=False, allow_none=False, low=0.0):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value < low or (positive and value == low):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} {low:g}, got {value}")
    return value


def _int(name, value, *, minimum=1, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def _bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


@dataclass(frozen=True)
class GuardConfig:
    """Settings of :class:`smlib.train.step.DivergenceGuard` (``fit(..., divergence_guard={...})``).

    Parameters
    ----------
    factor : float > 1
        Stop when |loss| or ‖θ‖ exceeds ``factor`` times its scale at the start.
    lower_bound : float, optional
        A value the loss cannot cross; None: the objective's own (0 for DSM and AE).
    stall_steps : int or None
        Window of the stall check: stop when, over the last ``stall_steps`` steps, the loss
        changed by less than ``stall_rtol`` relative to its size while ‖θ‖ kept growing and
        stands at ``stall_growth``× or more its scale at the start — a run moving its parameters
        without changing its loss (e.g. a score-matching loss stuck at exactly 0 while the
        weights run away). None: no stall check.
    stall_rtol : float ≥ 0
    stall_growth : float > 1
    """

    factor: float = 1e4
    lower_bound: float | None = None
    stall_steps: int | None = 50
    stall_rtol: float = 1e-6
    stall_growth: float = 10.0

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "factor", _real("divergence_guard 'factor'", self.factor, positive=True, low=1.0))
        if self.lower_bound is not None:
            if isinstance(self.lower_bound, bool) or not isinstance(self.lower_bound, numbers.Real) \
                    or not math.isfinite(self.lower_bound):
                raise ValueError(f"divergence_guard 'lower_bound' must be a finite number or None, got {self.lower_bound!r}")
            set_(self, "lower_bound", float(self.lower_bound))
        set_(self, "stall_steps", _int("divergence_guard 'stall_steps'", self.stall_steps, allow_none=True))
        set_(self, "stall_rtol", _real("divergence_guard 'stall_rtol'", self.stall_rtol))
        set_(self, "stall_growth", _real("divergence_guard 'stall_growth'", self.stall_growth, positive=True, low=1.0))

    @classmethod
    def of(cls, value) -> "GuardConfig | None":
        """``True`` → the defaults, ``False``/None → no guard, a dict of these fields or a GuardConfig."""
        if value is True:
            return cls()
        if value is False or value is None:
            return None
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = [f.name for f in dataclasses.fields(cls)]
            unknown = sorted(set(value) - set(known))
            if unknown:
                raise TypeError(f"unknown divergence_guard setting(s) {unknown}; accepted: {known}")
            return cls(**value)
        raise TypeError(f"divergence_guard must be True, False, a dict such as {{'factor': 1e5}} or a GuardConfig, "
                        f"got {value!r}")


#: fields that do not change what a run computes: left out of the run configuration a resume compares
NOT_RUN_SETTINGS = ("device", "fast", "progress", "log_every", "callback_every", "checkpoint", "checkpoint_every",
                    "resume", "allow_changes")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of :func:`smlib.train.fit` but the model, data, objective and callback.

    Parameters
    ----------
    n_steps, n_epochs : int
        Exactly one: the number of optimiser steps, or of passes over the data.
    batch_size : int
        Rows per step (tensor data); more than the rows gives one full batch per epoch, unless
        ``drop_last`` (then it is an error).
    drop_last : bool
        Drop the last incomplete batch of each epoch (tensor data).
    optimizer : {"adam", "sgd", "adamw"} or callable(params) -> torch.optim.Optimizer
        ``"sgd"`` uses ``momentum``; ``weight_decay`` is the optimiser's (L2 for adam/sgd).
    lr, momentum, weight_decay : float
    lr_schedule : None | "constant" | "cosine" | "linear" | "step" | callable(step) -> factor
        Stepped every optimiser step; ``"step"`` multiplies lr by 0.1 at 50 % and 75 % of the run.
    grad_clip : float, optional
        Clip the global gradient norm to this value.
    seed : int or None
        Seeds the run's own random stream (noise, projections, estimator generators) and the
        data order; torch's global generator is left as it was. None: a fresh seed.
    divergence_guard : bool, dict or GuardConfig
        See :class:`GuardConfig` (``True``: its defaults; ``False``: only NaN/Inf stop the run).
    device : "auto" | "cpu" | "cuda" | "cuda:N" | torch.device
    fast : {"auto", True, False}
        The CUDA-graph step (:mod:`smlib.train.cuda_graph`).
    progress : bool
        Progress bar with the live loss.
    log_every : int
        Log into the history every this many steps (window means).
    callback_every : int, optional
        Call ``fit``'s callback every this many steps (default: at the end of each epoch).
    checkpoint : path, optional
        Checkpoint file, written atomically every ``checkpoint_every`` steps and at the end.
    checkpoint_every : int, optional
    resume : bool
        Continue from ``checkpoint`` if it exists (see :func:`smlib.train.fit`).
    allow_changes : tuple of str
        Settings a resume may change, from :data:`CHANGEABLE` (checked on every call).
    """

    n_steps: int | None = None
    n_epochs: int | None = None
    batch_size: int = 128
    drop_last: bool = False
    optimizer: object = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: object = None
    grad_clip: float | None = None
    seed: int | None = 0
    divergence_guard: object = True
    device: object = "auto"
    fast: object = "auto"
    progress: bool = True
    log_every: int = 1
    callback_every: int | None = None
    checkpoint: object = None
    checkpoint_every: int | None = None
    resume: bool = False
    allow_changes: tuple = field(default=())

    def __post_init__(self):
        set_ = object.__setattr__
        if (self.n_steps is None) == (self.n_epochs is None):
            raise ValueError("pass exactly one of n_steps and n_epochs")
        for name in ("n_steps", "n_epochs", "batch_size", "log_every", "callback_every", "checkpoint_every"):
            set_(self, name, _int(name, getattr(self, name), allow_none=name != "batch_size" and name != "log_every"))
        set_(self, "seed", _int("seed", self.seed, minimum=0, allow_none=True))
        set_(self, "lr", _real("lr", self.lr, positive=True))
        set_(self, "momentum", _real("momentum", self.momentum))
        set_(self, "weight_decay", _real("weight_decay", self.weight_decay))
        set_(self, "grad_clip", _real("grad_clip", self.grad_clip, positive=True, allow_none=True))
        for name in ("drop_last", "progress", "resume"):
            _bool(name, getattr(self, name))
        if not callable(self.optimizer) and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(map(repr, OPTIMIZERS))} "
                             "or pass a callable params -> torch.optim.Optimizer")
        if not callable(self.lr_schedule) and self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {', '.join(map(repr, SCHEDULES))} "
                             "or pass a callable step -> factor")
        if self.fast not in ("auto", True, False):
            raise ValueError(f"fast must be True, False or 'auto', got {self.fast!r}")
        if not isinstance(self.device, (str, torch.device)):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {self.device!r}")
        set_(self, "divergence_guard", GuardConfig.of(self.divergence_guard))
        self._check_checkpointing()
        set_(self, "allow_changes", _allowed(self.allow_changes))

    def _check_checkpointing(self):
        if self.checkpoint is not None:
            if not isinstance(self.checkpoint, (str, Path)):
                raise ValueError(f"checkpoint must be a file path, got {self.checkpoint!r}")
            if Path(self.checkpoint).is_dir():
                raise ValueError(f"checkpoint {self.checkpoint} is a directory; give a file path such as "
                                 f"{Path(self.checkpoint) / 'run.pt'}")
        if self.resume and self.checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path")
        if self.checkpoint_every is not None and self.checkpoint is None:
            raise ValueError("checkpoint_every needs a checkpoint path")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def of(cls, config: "TrainConfig | None", overrides: dict, where: str = "fit") -> "TrainConfig":
        """``config`` with ``overrides`` (keyword arguments that must be field names) applied."""
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}: not a TrainConfig "
                            f"setting (settings: {', '.join(cls.field_names())})")
        if config is None:
            return cls(**overrides)
        if not isinstance(config, cls):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        return dataclasses.replace(config, **overrides) if overrides else config


def _allowed(names) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"allow_changes must be a list of setting names, got the string {names!r}")
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError(f"allow_changes must be a list of setting names, got {names!r}") from None
    bad = [n for n in names if n not in CHANGEABLE]
    if bad:
        raise ValueError(f"allow_changes names unknown setting(s) {bad}; a resume may change {list(CHANGEABLE)}")
    return names
