r"""One training loop for every model × objective/estimator: :func:`fit`.

``fit`` minimises an objective L(θ) — a score-matching loss from :mod:`smlib.objectives` or the
surrogate of an MCMC estimator from :mod:`smlib.estimators` — by stochastic gradient descent:

.. math:: \theta_{t+1} = \theta_t - \eta_t\, \mathrm{opt}\big(\nabla_\theta L(\theta_t; x_t)\big),

with minibatches x_t, a learning-rate schedule η_t, SGD-with-momentum or Adam. It handles device
selection, seeds, a notebook-aware progress bar, logging into a :class:`History`, per-epoch
callbacks, periodic **atomic** checkpoints with exact resume, and a NaN/Inf guard.

Reproducibility: on CPU, ``fit(..., seed=s)`` is deterministic, and a run interrupted after a
checkpoint and continued with ``resume=True`` ends bit-identical to an uninterrupted run (the
checkpoint holds model, optimiser, scheduler, estimator state, the torch CPU/CUDA RNG states,
the data-order generator, the current epoch's permutation and position, and the history).

Reference for the estimators it drives: Swersky et al. (2011), §5 (SM, CD, PCD, FPCD, AE);
Saremi et al. (2018) (DEEN: DSM with Adam, lr 1e-3).
"""
from __future__ import annotations

import io
import math
import time
import warnings
from pathlib import Path

import torch

from smlib import objectives as _objectives
from smlib._checks import check_choice, check_data, check_int, check_positive
from smlib._io import atomic_write

__all__ = ["History", "fit", "fast_path_plan", "resolve_objective", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "smlib.fit/1"


# ============================================================================================
# History
# ============================================================================================
class History(dict):
    """Training record: a dict ``key -> list of floats`` plus aligned ``steps`` and ``epochs``.

    Every logged entry (one per ``log_every`` steps) appends to each key (``"loss"``, ``"lr"``
    and every other scalar the objective returned) and to ``history.steps`` (the global step,
    1-based: the number of optimiser updates done) and ``history.epochs`` (0-based epoch of
    that step). Values logged with ``log_every > 1`` are means over the window since the last
    entry. ``history.per_epoch`` is a second dict of lists with keys ``"step"``, ``"epoch"`` and
    whatever the ``callback`` of :func:`fit` returned (per-epoch metrics).
    ``history.wall_time`` is the training time in seconds (not part of the exact-resume check).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.per_epoch: dict[str, list] = {}
        self.wall_time = 0.0

    def log(self, step: int, epoch: int, **values) -> None:
        """Append one entry (keys not seen before are back-filled with NaN)."""
        n = len(self.steps)
        self.steps.append(int(step))
        self.epochs.append(int(epoch))
        for k, v in values.items():
            self.setdefault(k, [math.nan] * n).append(float(v))
        for k, lst in self.items():
            if len(lst) < n + 1:
                lst.append(math.nan)

    def log_epoch(self, step: int, epoch: int, **values) -> None:
        """Append one per-epoch entry to ``per_epoch`` (NaN back-fill as in :meth:`log`)."""
        pe = self.per_epoch
        n = len(pe.get("step", []))
        values = {"step": step, "epoch": epoch, **values}
        for k, v in values.items():
            pe.setdefault(k, [math.nan] * n).append(float(v) if not isinstance(v, (int,)) else v)
        for lst in pe.values():
            if len(lst) < n + 1:
                lst.append(math.nan)

    def last(self, key: str = "loss") -> float:
        """Last logged value of ``key``."""
        return self[key][-1]

    def state_dict(self) -> dict:
        """Plain-Python representation (used in checkpoints)."""
        return {
            "data": {k: list(v) for k, v in self.items()},
            "steps": list(self.steps),
            "epochs": list(self.epochs),
            "per_epoch": {k: list(v) for k, v in self.per_epoch.items()},
            "wall_time": self.wall_time,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "History":
        """Inverse of :meth:`state_dict`."""
        h = cls({k: list(v) for k, v in state["data"].items()})
        h.steps, h.epochs = list(state["steps"]), list(state["epochs"])
        h.per_epoch = {k: list(v) for k, v in state["per_epoch"].items()}
        h.wall_time = float(state.get("wall_time", 0.0))
        return h

    def __repr__(self):
        last = {k: round(v[-1], 6) for k, v in self.items() if v}
        return f"History(n_logged={len(self.steps)}, last={last}, per_epoch_keys={list(self.per_epoch)})"


# ============================================================================================
# objectives
# ============================================================================================
def resolve_objective(objective, options=None):
    """Turn ``objective`` into ``(fn(model, x), label, stateful, config)``.

    ``objective`` is a name of :data:`smlib.objectives.REGISTRY` (its ``options`` a dict), an
    :class:`smlib.objectives.Objective` from :func:`smlib.objectives.make`, an MCMC estimator
    instance, or any callable ``(model, x) -> loss`` (``options`` then become keyword arguments of
    every call). ``stateful`` is the object whose ``state_dict``/``load_state_dict`` the
    checkpoints hold (or None); ``config`` describes the objective and its options (what a
    checkpoint records).

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
    config = {"objective": label, "options": {k: repr(v) for k, v in (options or {}).items()}}
    if options:
        fn, kwargs = objective, dict(options)

        def objective(model, x):  # noqa: F811
            return fn(model, x, **kwargs)

    return objective, label, stateful, config


def _split_output(out, step):
    """Objective output -> (loss tensor, {key: scalar tensor}); non-scalar extras are dropped."""
    if isinstance(out, dict):
        if "loss" not in out:
            raise ValueError(f"objective returned a dict without a 'loss' key (keys: {sorted(out)})")
        loss = out["loss"]
        extras = {}
        for k, v in out.items():
            if k == "loss":
                continue
            if isinstance(v, torch.Tensor):
                if v.numel() == 1:
                    extras[k] = v.detach().reshape(())
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                extras[k] = torch.tensor(float(v))
    else:
        loss, extras = out, {}
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"objective must return a scalar tensor (or a dict with one), got {type(loss).__name__} at step {step}")
    if not loss.requires_grad:
        raise ValueError(f"the loss at step {step} does not depend on any trainable parameter (no grad)")
    return loss.reshape(()), extras


# ============================================================================================
# checkpoints
# ============================================================================================
def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically (`smlib._io.atomic_write`).

    A crash at any moment leaves either the previous checkpoint or the new one, never a torn
    file; the directory is fsynced too (where the OS allows) so the rename is durable.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(Path(path), buf.getvalue(), what="checkpoint")


def load_checkpoint(path) -> dict:
    """Load a checkpoint written by :func:`fit` (on CPU; ``weights_only=True``)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an smlib.fit checkpoint (format={state.get('format')!r})")
    return state


# ============================================================================================
# data
# ============================================================================================
class _TensorBatches:
    """Minibatches of a (N, d) tensor, reshuffled each epoch by a seeded CPU generator."""

    def __init__(self, data, batch_size, drop_last, generator, device):
        self.data = data.to(device)
        self.n = data.shape[0]
        self.batch_size = min(batch_size, self.n)
        self.drop_last = drop_last
        self.generator = generator
        self.perm = None
        self.pos = 0  # batches of the current epoch already used

    def __len__(self):
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def epoch(self, start=0):
        if self.perm is None or start == 0:
            self.perm = torch.randperm(self.n, generator=self.generator)
        perm = self.perm.to(self.data.device)
        for b in range(start, len(self)):
            self.pos = b + 1
            yield self.data[perm[b * self.batch_size : (b + 1) * self.batch_size]]


class _IterableBatches:
    """Batches from a DataLoader / iterable; ``(x, y)`` tuples give x. Validated per batch."""

    def __init__(self, data, device, dtype, dim):
        self.data, self.device, self.dtype, self.dim = data, device, dtype, dim
        self.perm = None
        self.pos = 0
        try:
            self._len = len(data)
        except TypeError:
            self._len = None

    def __len__(self):
        if self._len is None:
            raise TypeError("len() of an iterable without __len__")
        return self._len

    def epoch(self, start=0):
        for b, batch in enumerate(self.data):
            if b < start:
                continue
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            if not isinstance(batch, torch.Tensor):
                batch = torch.as_tensor(batch)
            check_data(batch, f"batch {b} of data", self.dim)
            self.pos = b + 1
            yield batch.to(device=self.device, dtype=self.dtype)


def _as_tensor_data(data):
    try:
        import numpy as np

        if isinstance(data, np.ndarray):
            return torch.from_numpy(data)
    except ImportError:  # pragma: no cover
        pass
    return data


# ============================================================================================
# optimiser and schedule
# ============================================================================================
def _make_optimizer(optimizer, params, lr, momentum, weight_decay):
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(params)
    check_choice("optimizer", optimizer, ("adam", "sgd", "adamw"))
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _make_schedule(lr_schedule, opt, total):
    if lr_schedule is None or lr_schedule == "constant":
        return None
    if callable(lr_schedule) and not isinstance(lr_schedule, str):
        return torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule)
    check_choice("lr_schedule", lr_schedule, (None, "constant", "cosine", "step", "linear"))
    if total is None:
        raise ValueError(f"lr_schedule={lr_schedule!r} needs the total number of steps: pass n_steps, or data with len()")
    if lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if lr_schedule == "linear":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[total // 2, (3 * total) // 4], gamma=0.1)


# ============================================================================================
# the step: eager, or captured in a CUDA graph (smlib.fastpath)
# ============================================================================================
def _make_step(model, loss_fn, opt, params, grad_clip, label, plan, has_schedule, batch_shape):
    """The callable ``step_fn(x, step, epoch) -> (loss, extras)`` that performs one whole update."""
    from smlib import fastpath

    if plan.warn:
        warnings.warn(fastpath.FastPathWarning(f"fit runs eagerly: {plan.reason}"), stacklevel=3)
    if plan.mode == "cuda_graph":
        return fastpath.GraphStep(model, loss_fn, opt, params, grad_clip, label,
                                  batch_shape=batch_shape, has_schedule=has_schedule)
    return fastpath.EagerStep(model, loss_fn, opt, params, grad_clip, label)


def fast_path_plan(model, data, objective, *, options=None, fast="auto", device="auto", batch_size=128,
                   drop_last=False, optimizer="adam", lr_schedule=None):
    """Which step :func:`fit` would use for these arguments, and why (no training, no CUDA call).

    Returns a :class:`smlib.fastpath.FastPathPlan` ``(mode, reason, warn)`` with ``mode`` in
    ``{"cuda_graph", "eager"}``; ``warn`` says whether fit would emit a
    :class:`smlib.fastpath.FastPathWarning` with ``reason``. The arguments mean what they mean
    for :func:`fit` (``model`` is not used beyond what fit would check).

    Examples
    --------
    >>> fast_path_plan(model, x, "dsm", options={"sigma": 0.1}, device="cuda").mode   # doctest: +SKIP
    'cuda_graph'
    >>> fast_path_plan(model, x, "pcd", options={"n_chains": 100}, device="cuda").reason   # doctest: +SKIP
    "objective 'pcd' (PCD) keeps state between steps ..."
    """
    from smlib import fastpath

    fastpath._check_fast(fast)
    device = _resolve_device(device)
    fn, label, stateful, _ = resolve_objective(objective, options)
    data = _as_tensor_data(data)
    tensor = isinstance(data, torch.Tensor)
    if not isinstance(optimizer, str):  # fit decides on the optimiser instance a callable builds
        optimizer = _make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], 1e-3, 0.9, 0.0)
    return fastpath.plan(fast, device, label=label, named=_capturable(fn), stateful=stateful,
                         optimizer=optimizer,
                         has_schedule=lr_schedule not in (None, "constant"), tensor_data=tensor,
                         n_rows=data.shape[0] if tensor else None, batch_size=batch_size, drop_last=drop_last)


def _capturable(fn):
    """Whether a resolved objective is a registered one that the CUDA-graph step can capture."""
    return isinstance(fn, _objectives.Objective) and fn.spec.cuda_graph


def _guard(model, loss, step, epoch, label):
    """NaN/Inf guard: raise FloatingPointError naming the step and the bad quantity."""
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(
            f"non-finite loss ({float(loss)}) at step {step} (epoch {epoch}) with objective {label!r}; "
            "try a smaller lr, a larger sigma or grad_clip"
        )
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if named and not bool(torch.stack([torch.isfinite(g).all() for _, g in named]).all()):
        bad = [n for n, g in named if not bool(torch.isfinite(g).all())]
        raise FloatingPointError(f"non-finite gradient of parameter(s) {bad} at step {step} (epoch {epoch}) with objective {label!r}")


def _guard_params(model, step, epoch, label):
    params = [(n, p) for n, p in model.named_parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
        bad = [n for n, p in params if not bool(torch.isfinite(p).all())]
        raise FloatingPointError(f"non-finite value of parameter(s) {bad} after the update at step {step} (epoch {epoch}) with objective {label!r}")


def _resolve_device(device):
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None


# ============================================================================================
# fit
# ============================================================================================
def fit(
    model,
    data,
    objective,
    *,
    options=None,
    n_steps=None,
    n_epochs=None,
    batch_size=128,
    optimizer="adam",
    lr=1e-3,
    momentum=0.9,
    weight_decay=0.0,
    lr_schedule=None,
    device="auto",
    seed=0,
    progress=True,
    log_every=1,
    checkpoint=None,
    checkpoint_every=None,
    resume=False,
    callback=None,
    callback_every=None,
    drop_last=False,
    grad_clip=None,
    fast="auto",
) -> History:
    r"""Train ``model`` on ``data`` by minimising ``objective`` with minibatch SGD/Adam.

    Each step draws a minibatch x_t, evaluates L(θ; x_t) (a score-matching loss, or an MCMC
    estimator's surrogate mean E(x⁺) − mean E(sg[x⁻]) whose gradient is the CD/PCD/FPCD update),
    back-propagates and takes one optimiser step θ ← θ − η_t·update(∇_θ L). Descending every
    objective here fits the data (lower SM/DSM loss, or higher likelihood for the MCMC ones).

    Parameters
    ----------
    model : torch.nn.Module
        An energy or score model; moved to ``device`` (and left there).
    data : torch.Tensor (N, d) | numpy array | iterable of batches (e.g. a DataLoader)
        A tensor is cast to the model's dtype, checked (floating, 2-D, ``d == model.dim``,
        finite) and reshuffled every epoch by a CPU generator seeded from ``seed``. An iterable
        yields tensors or ``(x, ...)`` tuples; every batch is checked.
    objective : str, Objective or callable
        A name of :data:`smlib.objectives.REGISTRY` (``"sm"``, ``"dsm"``, ``"ssm"``, ``"ssm_vr"``,
        ``"kingma_lecun"``, ``"ae"``, ``"cd"``, ``"pcd"``, ``"fpcd"``, ``"langevin_cd"``) with its
        options in ``options``; an objective built by :func:`smlib.objectives.make`; an estimator
        instance (its state is checkpointed); or a callable ``(model, x) -> loss`` or
        ``(model, x) -> {"loss": loss, **other_scalars}`` (other scalars, e.g. the Theorem-1
        terms, are logged).
    options : dict, optional
        Options of a named objective, e.g. ``{"sigma": 0.1}`` for ``"dsm"``, ``{"n_chains": 100}``
        for ``"pcd"``, ``{"n_steps": 1, "step_size": 0.01}`` for ``"langevin_cd"`` (see
        ``smlib.objectives.REGISTRY[name].options``); for a callable, keyword arguments of each call.
    n_steps, n_epochs : int
        Exactly one: the number of optimiser steps, or of passes over the data.
    batch_size : int
    optimizer : {"adam", "sgd", "adamw"} or callable(params) -> torch.optim.Optimizer
        ``"sgd"`` uses ``momentum``; ``weight_decay`` is the optimiser's (L2 for adam/sgd).
    lr : float
    lr_schedule : None | "constant" | "cosine" | "linear" | "step" | callable(step) -> factor
        Stepped every optimiser step; ``"step"`` multiplies lr by 0.1 at 50 % and 75 % of the
        run; a callable gives the multiplier of ``lr`` (``LambdaLR``).
    device : "auto" | str | torch.device
        ``"auto"``: CUDA when available, else CPU.
    seed : int or None
        Seeds the global torch RNG (MCMC/noise draws, estimator generators) and the data order.
    progress : bool
        Progress bar (``tqdm.auto``: a widget in notebooks) with the live loss.
    log_every : int
        Log into the history every this many steps (window means).
    checkpoint : path, optional
        Checkpoint file, written atomically every ``checkpoint_every`` steps and at the end.
    checkpoint_every : int, optional
    resume : bool
        Continue from ``checkpoint`` if it exists (start fresh otherwise). On CPU the result is
        bit-identical to an uninterrupted run. A finished run is not retrained: the model is
        loaded and the history returned.
    callback : callable(model, step, epoch, history) -> dict | None, optional
        Called at the end of each epoch (0-based ``epoch`` just finished) and at the end of the
        run, or every ``callback_every`` steps if given. A returned dict of scalars is appended
        to ``history.per_epoch``. It runs before the checkpoint of that step, so it may draw
        random numbers without breaking exact resume.
    callback_every : int, optional
    drop_last : bool
        Drop the last incomplete batch of each epoch (tensor data). Without it, that batch is
        trained on (eagerly, on the CUDA fast path).
    grad_clip : float, optional
        Clip the global gradient norm to this value.
    fast : {"auto", True, False}
        The CUDA fast path (:mod:`smlib.fastpath`): the whole step (loss, backward, guard
        flags, optimiser update) captured in a CUDA graph and replayed, with the same results
        semantics as the eager loop (same guard and error messages, same checkpoints).
        ``"auto"`` (default) uses it on a CUDA device for tensor data with a stateless named
        objective and Adam/AdamW/SGD (SGD without a schedule); ``True`` also tries custom
        objectives and iterable data; ``False`` is always eager. CPU is always eager. Where a
        fast path was asked for but does not apply (an MCMC estimator, a custom optimiser, ...)
        fit warns with the reason (:class:`smlib.fastpath.FastPathWarning`);
        :func:`fast_path_plan` tells in advance. On the fast path the first 2 full-size steps
        run eagerly (warm-up) and the last partial batch of each epoch runs eagerly
        (``drop_last=True`` drops it); after ``resume`` the graph is captured anew from the
        loaded state.
    Returns
    -------
    History

    Raises
    ------
    ValueError
        Bad data (shape, dtype, non-finite), unknown objective/optimizer/schedule/device name,
        both or neither of ``n_steps``/``n_epochs``, non-positive sizes or rates, ``resume``
        without ``checkpoint``, a checkpoint for other data.
    TypeError
        Unknown or missing objective options.
    FloatingPointError
        Non-finite loss, gradient or parameter, naming the step and the quantity.
    """
    # ---------------------------------------------------------------- validation
    if (n_steps is None) == (n_epochs is None):
        raise ValueError("pass exactly one of n_steps and n_epochs")
    for name, v in (("n_steps", n_steps), ("n_epochs", n_epochs), ("batch_size", batch_size),
                    ("log_every", log_every), ("checkpoint_every", checkpoint_every),
                    ("callback_every", callback_every)):
        if v is not None:
            check_int(name, v)
    check_positive("lr", lr)
    if weight_decay < 0 or momentum < 0:
        raise ValueError(f"weight_decay and momentum must be >= 0, got {weight_decay}, {momentum}")
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every needs a checkpoint path")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable(model, step, epoch, history)")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = _resolve_device(device)
    from smlib import fastpath

    fastpath._check_fast(fast)
    loss_fn, label, stateful, objective_config = resolve_objective(objective, options)

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    dtype = params[0].dtype
    dim = getattr(model, "dim", None)
    model.to(device)

    data = _as_tensor_data(data)
    if isinstance(data, torch.Tensor):
        check_data(data, "data", dim)
        batches = _TensorBatches(data.to(dtype), batch_size, drop_last, torch.Generator(), device)
        if len(batches) == 0:
            raise ValueError("drop_last=True with batch_size > number of rows leaves no batches")
    elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"data must be a (N, d) tensor, an array or an iterable of batches, got {type(data).__name__}")
    else:
        batches = _IterableBatches(data, device, dtype, dim)
    try:
        per_epoch = len(batches)
    except TypeError:
        per_epoch = None
    total = n_steps if n_steps is not None else (n_epochs * per_epoch if per_epoch is not None else None)

    # ---------------------------------------------------------------- state
    if seed is not None:
        torch.manual_seed(seed)
        if isinstance(batches, _TensorBatches):
            batches.generator.manual_seed(seed)
    elif isinstance(batches, _TensorBatches):
        batches.generator.seed()
    opt = _make_optimizer(optimizer, params, lr, momentum, weight_decay)
    sched = _make_schedule(lr_schedule, opt, total)
    history = History()
    step, epoch, start_batch = 0, 0, 0

    if resume and Path(checkpoint).exists():
        ck = load_checkpoint(checkpoint)
        cfg = ck.get("config", {})
        for key, value in (("objective", label), ("batch_size", batch_size), ("seed", seed)):
            if key in cfg and cfg[key] != value:
                warnings.warn(f"resuming {checkpoint} written with {key}={cfg[key]!r} using {key}={value!r}", stacklevel=2)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck["scheduler"] is not None:
            sched.load_state_dict(ck["scheduler"])
        if stateful is not None and ck["objective_state"] is not None:
            stateful.load_state_dict(ck["objective_state"])
        torch.set_rng_state(ck["rng"]["torch"])
        if ck["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        if isinstance(batches, _TensorBatches):
            if ck["perm"] is not None and ck["perm"].numel() != batches.n:
                raise ValueError(f"checkpoint {checkpoint} was written for data with {ck['perm'].numel()} rows, got {batches.n}")
            if ck["rng"]["data"] is not None:
                batches.generator.set_state(ck["rng"]["data"])
            batches.perm = ck["perm"]
        step, epoch, start_batch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        history = History.from_state_dict(ck["history"])
        log_acc = {k: v.to(device) for k, v in ck["log_window"]["acc"].items()}
        log_n = ck["log_window"]["n"]
    else:
        log_acc, log_n = {}, 0

    def make_checkpoint():
        # a checkpoint taken on the last batch of an epoch points at the start of the next one
        at_end = per_epoch is not None and batches.pos >= per_epoch
        return {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "epoch": epoch + 1 if at_end else epoch,
            "batch_in_epoch": 0 if at_end else batches.pos,
            "log_window": {"acc": {k: v.detach().cpu() for k, v in acc.items()}, "n": n_acc},
            "perm": None if batches.perm is None else batches.perm.cpu(),
            "model": model.state_dict(),
            "optimizer": step_fn.optimizer_state_dict(),  # portable (no capturable flag / tensor lr)
            "scheduler": None if sched is None else sched.state_dict(),
            "objective_state": None if stateful is None else stateful.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "data": batches.generator.get_state() if isinstance(batches, _TensorBatches) else None,
            },
            "history": history.state_dict(),
            "config": {"objective": label, "n_steps": n_steps, "n_epochs": n_epochs, "batch_size": batch_size,
                       "optimizer": optimizer if isinstance(optimizer, str) else "custom", "lr": lr, "seed": seed},
        }

    def finished():
        if n_steps is not None:
            return step >= n_steps
        return epoch >= n_epochs

    if finished():
        return history

    # ---------------------------------------------------------------- loop
    from tqdm.auto import tqdm

    plan = fastpath.plan(fast, device, label=label, named=_capturable(loss_fn), stateful=stateful,
                         optimizer=opt, has_schedule=sched is not None,
                         tensor_data=isinstance(batches, _TensorBatches),
                         n_rows=getattr(batches, "n", None), batch_size=batch_size, drop_last=drop_last)
    # built after a checkpoint is loaded: a captured graph holds the loaded tensors
    step_fn = _make_step(model, loss_fn, opt, params, grad_clip, label, plan, sched is not None,
                         (batches.batch_size, batches.data.shape[1]) if isinstance(batches, _TensorBatches) else None)
    model.train()
    bar = tqdm(total=total, initial=step, disable=not progress, desc=f"fit[{label}]", leave=True)
    acc, n_acc = log_acc, log_n
    last_cb_step = -1
    t0 = time.perf_counter()
    try:
        while not finished():
            step_at_epoch_start = step
            for x in batches.epoch(start_batch):
                # loss, backward, guard, clip, optimizer step (eager or one CUDA-graph replay)
                loss, extras = step_fn(x, step + 1, epoch)
                if sched is not None:
                    sched.step()
                step += 1
                # -- logging (window means)
                for k, v in {"loss": loss, **extras}.items():
                    acc[k] = acc.get(k, 0.0) + v.to(torch.float64)
                n_acc += 1
                if step % log_every == 0 or (total is not None and step == total):
                    values = {k: float(v) / n_acc for k, v in acc.items()}
                    values["lr"] = opt.param_groups[0]["lr"]
                    history.log(step, epoch, **values)
                    bar.set_postfix(loss=f"{values['loss']:.4g}", refresh=False)
                    acc, n_acc = {}, 0
                bar.update(1)
                end_of_epoch = per_epoch is not None and batches.pos == per_epoch
                done = (step >= n_steps) if n_steps is not None else (end_of_epoch and epoch + 1 >= n_epochs)
                # -- callbacks (before the checkpoint of this step)
                if callback is not None:
                    due = (step % callback_every == 0) if callback_every else end_of_epoch
                    if due or (done and last_cb_step != step):
                        _run_callback(callback, model, step, epoch, history)
                        last_cb_step = step
                if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                    history.wall_time += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    save_checkpoint(checkpoint, make_checkpoint())
                if done and n_steps is not None:
                    break
            else:  # epoch exhausted
                if step == step_at_epoch_start and start_batch == 0:
                    raise ValueError(f"data yielded no batches in epoch {epoch}")
                if per_epoch is None and callback is not None and last_cb_step != step:
                    if not callback_every or (n_epochs is not None and epoch + 1 >= n_epochs):
                        _run_callback(callback, model, step, epoch, history)
                        last_cb_step = step
                epoch += 1
                start_batch = 0
                batches.pos = 0
                continue
            break
    finally:
        bar.close()
        history.wall_time += time.perf_counter() - t0
    if checkpoint is not None:
        save_checkpoint(checkpoint, make_checkpoint())
    return history


def _run_callback(callback, model, step, epoch, history):
    was_training = model.training
    out = callback(model, step, epoch, history)
    model.train(was_training)
    if isinstance(out, dict):
        history.log_epoch(step, epoch, **{k: (float(v.detach()) if isinstance(v, torch.Tensor) else v) for k, v in out.items()})
