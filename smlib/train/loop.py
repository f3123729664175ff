r"""`fit`: one training loop for every model × objective/estimator, and `fast_path_plan`."""
from __future__ import annotations

import numbers
import time
import warnings
from pathlib import Path

import torch

from smlib._checks import check_int
from smlib.objectives import registry
from smlib.train import cuda_graph as graph
from smlib.train.batches import TensorBatches, as_batches
from smlib.train.checkpoint import compare_configs, load_checkpoint, save_checkpoint
from smlib.train.setup import capturable, make_optimizer, make_schedule, resolve_device, resolve_objective, _number
from smlib.train.state import TrainState, run_config
from smlib.train.step import DivergenceGuard, EagerStep, sum_squares

__all__ = ["fit", "fast_path_plan"]


def fit(model, data, objective, *, options=None, n_steps=None, n_epochs=None, batch_size=128, optimizer="adam",
        lr=1e-3, momentum=0.9, weight_decay=0.0, lr_schedule=None, device="auto", seed=0, progress=True, log_every=1,
        checkpoint=None, checkpoint_every=None, resume=False, allow_changes=(), callback=None, callback_every=None,
        drop_last=False, grad_clip=None, divergence_guard=True, fast="auto"):
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
        A tensor is cast to the model's dtype, checked (floating, 2-D, ``d == model.dim``, finite)
        and reshuffled every epoch by a CPU generator seeded from ``seed``. An iterable yields
        tensors or ``(x, ...)`` tuples; every batch is checked.
    objective : str, Objective or callable
        A name of :data:`smlib.objectives.REGISTRY` with its options in ``options``; an objective
        built by :func:`smlib.objectives.make`; an estimator instance (its state is checkpointed);
        or a callable ``(model, x) -> loss`` or ``(model, x) -> {"loss": loss, **scalars}`` (the
        other scalars, e.g. the Theorem-1 terms, are logged).
    options : dict, optional
        Options of a named objective, e.g. ``{"sigma": 0.1}`` for ``"dsm"`` (see
        ``smlib.objectives.REGISTRY[name].options``); for a callable, keyword arguments of each call.
    n_steps, n_epochs : int
        Exactly one: the number of optimiser steps, or of passes over the data.
    batch_size : int
        Rows per step (tensor data); more than the rows gives one full batch per epoch, unless
        ``drop_last`` (then it is an error).
    optimizer : {"adam", "sgd", "adamw"} or callable(params) -> torch.optim.Optimizer
        ``"sgd"`` uses ``momentum``; ``weight_decay`` is the optimiser's (L2 for adam/sgd).
    lr : float
    lr_schedule : None | "constant" | "cosine" | "linear" | "step" | callable(step) -> factor
        Stepped every optimiser step; ``"step"`` multiplies lr by 0.1 at 50 % and 75 % of the run.
    device : "auto" | "cpu" | "cuda" | "cuda:N" | torch.device
        ``"auto"``: CUDA when available, else CPU. A device that is not available is an error.
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
        bit-identical to an uninterrupted run; a finished run is not retrained (the model is
        loaded and the history returned). Every setting that defines the run (model class and
        shapes, objective and options, optimiser and its settings, lr, schedule, batch size,
        seed, data) must match the checkpoint's; a difference is an error naming the file and the
        setting, unless ``allow_changes`` names it.
    allow_changes : iterable of str
        Settings a resume may change (``"lr"``, ``"momentum"``, ``"weight_decay"``,
        ``"grad_clip"``, ``"objective"``, ``"n_steps"``, ``"n_epochs"``, ``"divergence_guard"``):
        the new values are applied (an estimator whose options changed starts afresh), recorded
        in the checkpoint's ``changes`` and announced in a warning.
    callback : callable(model, step, epoch, history) -> dict | None, optional
        Called at the end of each epoch (0-based ``epoch`` just finished) and at the end of the
        run, or every ``callback_every`` steps. A returned dict of scalars is appended to
        ``history.per_epoch``. It runs before the checkpoint of that step, so it may draw random
        numbers without breaking exact resume.
    callback_every : int, optional
    drop_last : bool
        Drop the last incomplete batch of each epoch (tensor data).
    grad_clip : float, optional
        Clip the global gradient norm to this value.
    divergence_guard : bool or dict
        Stop a run whose loss or parameter norm grows by orders of magnitude over its scale in
        the first steps, or whose loss leaves the bound its objective cannot cross
        (:class:`smlib.train.step.DivergenceGuard`; a dict sets its ``factor``, default 1e4).
        NaN/Inf always stop the run.
    fast : {"auto", True, False}
        The CUDA-graph step (:mod:`smlib.train.cuda_graph`): ``"auto"`` uses it on a CUDA device for
        tensor data with a registered stateless objective and Adam/AdamW/SGD; ``True`` also tries
        custom objectives and iterable data; ``False`` is always eager. Where it was asked for but
        does not apply, fit warns with the reason (``FastPathWarning``); :func:`fast_path_plan`
        tells in advance. CPU is always eager.

    Returns
    -------
    History

    Raises
    ------
    ValueError
        Bad data, an unknown name, a bad size, rate or device, ``resume`` without ``checkpoint``,
        a checkpoint of another run (``CheckpointError``) or one already past ``n_steps``.
    TypeError
        Unknown or missing objective options; a setting of the wrong type.
    FloatingPointError
        Non-finite loss, gradient or parameter, or divergence (``DivergenceError``), naming the
        step and the quantity.
    """
    _validate(model, n_steps, n_epochs, batch_size, log_every, checkpoint, checkpoint_every, callback,
              callback_every, resume, grad_clip, lr, momentum, weight_decay, allow_changes, seed)
    device = resolve_device(device)
    graph.check_fast(fast)
    loss_fn, label, stateful, objective_config = resolve_objective(objective, options)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    model.to(device)
    batches = as_batches(data, batch_size=batch_size, drop_last=drop_last, device=device, dtype=params[0].dtype,
                         dim=getattr(model, "dim", None))
    per_epoch = _len(batches)
    total = n_steps if n_steps is not None else (n_epochs * per_epoch if per_epoch is not None else None)
    if seed is not None:
        torch.manual_seed(seed)
    if isinstance(batches, TensorBatches):
        batches.generator.manual_seed(seed) if seed is not None else batches.generator.seed()
    opt = make_optimizer(optimizer, params, lr, momentum, weight_decay)
    sched = make_schedule(lr_schedule, opt, total)
    guard = _guard(divergence_guard, loss_fn, label, params)
    state = TrainState(model, opt, sched, stateful, batches, guard)
    config = None if checkpoint is None else run_config(
        model, objective_config, optimizer, opt, lr=lr, momentum=momentum, weight_decay=weight_decay,
        lr_schedule=lr_schedule, grad_clip=grad_clip, batch_size=batch_size, drop_last=drop_last, seed=seed,
        batches=batches, n_steps=n_steps, n_epochs=n_epochs, guard=guard)
    if resume and Path(checkpoint).exists():
        _resume(state, checkpoint, config, allow_changes, device, n_steps, n_epochs, lr, momentum, weight_decay)

    def finished():
        return state.step >= n_steps if n_steps is not None else state.epoch >= n_epochs

    if finished():
        return state.history
    plan = graph.plan(fast, device, label=label, named=capturable(loss_fn), stateful=stateful, optimizer=opt,
                      has_schedule=sched is not None, tensor_data=isinstance(batches, TensorBatches),
                      n_rows=getattr(batches, "n", None), batch_size=batch_size, drop_last=drop_last)
    # built after a checkpoint is loaded: a captured graph holds the loaded tensors
    step_fn = _make_step(model, loss_fn, opt, params, grad_clip, label, guard, plan, sched is not None, batches)
    from tqdm.auto import tqdm

    model.train()
    bar = tqdm(total=total, initial=state.step, disable=not progress, desc=f"fit[{label}]", leave=True)
    last_cb, t0 = -1, time.perf_counter()

    def save():
        nonlocal t0
        state.history.wall_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        save_checkpoint(checkpoint, state.state_dict(step_fn.optimizer_state_dict(), config, per_epoch))

    try:
        while not finished():
            first = state.step
            for x in batches.epoch(state.start_batch):
                loss, extras = step_fn(x, state.step + 1, state.epoch)  # one whole update
                if sched is not None:
                    sched.step()
                state.step += 1
                state.log(loss, extras, total, log_every, bar)
                bar.update(1)
                end_of_epoch = per_epoch is not None and batches.pos == per_epoch
                done = state.step >= n_steps if n_steps is not None else end_of_epoch and state.epoch + 1 >= n_epochs
                if callback is not None and last_cb != state.step and (
                        done or (state.step % callback_every == 0 if callback_every else end_of_epoch)):
                    _run_callback(callback, model, state)
                    last_cb = state.step
                if checkpoint is not None and checkpoint_every and state.step % checkpoint_every == 0:
                    save()
                if done and n_steps is not None:
                    break
            else:  # the epoch is exhausted
                if state.step == first and state.start_batch == 0:
                    raise ValueError(f"data yielded no batches in epoch {state.epoch}")
                if per_epoch is None and callback is not None and last_cb != state.step and (
                        not callback_every or (n_epochs is not None and state.epoch + 1 >= n_epochs)):
                    _run_callback(callback, model, state)
                    last_cb = state.step
                state.epoch, state.start_batch, batches.pos = state.epoch + 1, 0, 0
                continue
            break
    finally:
        bar.close()
        state.history.wall_time += time.perf_counter() - t0
        t0 = time.perf_counter()
    if checkpoint is not None:
        save()
    return state.history


def _validate(model, n_steps, n_epochs, batch_size, log_every, checkpoint, checkpoint_every, callback,
              callback_every, resume, grad_clip, lr, momentum, weight_decay, allow_changes, seed):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if (n_steps is None) == (n_epochs is None):
        raise ValueError("pass exactly one of n_steps and n_epochs")
    for name, v in (("n_steps", n_steps), ("n_epochs", n_epochs), ("batch_size", batch_size), ("log_every", log_every),
                    ("checkpoint_every", checkpoint_every), ("callback_every", callback_every)):
        if v is not None:
            check_int(name, v)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an integer or None, got {seed!r} ({type(seed).__name__})")
    _number("lr", lr, positive=True)
    _number("momentum", momentum)
    _number("weight_decay", weight_decay)
    if grad_clip is not None:
        _number("grad_clip", grad_clip, positive=True)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    if checkpoint_every is not None and checkpoint is None:
        raise ValueError("checkpoint_every needs a checkpoint path")
    if checkpoint is not None and Path(checkpoint).is_dir():
        raise ValueError(f"checkpoint {checkpoint} is a directory; give a file path such as {Path(checkpoint) / 'run.pt'}")
    if isinstance(allow_changes, str):
        raise TypeError(f"allow_changes must be a list of setting names, got the string {allow_changes!r}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable(model, step, epoch, history)")


def _len(batches):
    try:
        return len(batches)
    except TypeError:
        return None


def _guard(divergence_guard, loss_fn, label, params):
    if divergence_guard is False or divergence_guard is None:
        return None
    if not isinstance(divergence_guard, (bool, dict)):
        raise TypeError(f"divergence_guard must be True, False or a dict such as {{'factor': 1e5}}, got {divergence_guard!r}")
    kw = {} if divergence_guard is True else dict(divergence_guard)
    bound = loss_fn.spec.lower_bound if isinstance(loss_fn, registry.Objective) else None
    return DivergenceGuard(lower_bound=bound, label=label, initial_norm=float(sum_squares(params)) ** 0.5, **kw)


def _resume(state, checkpoint, config, allow, device, n_steps, n_epochs, lr, momentum, weight_decay):
    ck = load_checkpoint(checkpoint)
    changes = compare_configs(checkpoint, ck["config"], config, tuple(allow))
    if n_steps is not None and ck["step"] > n_steps:
        raise ValueError(f"checkpoint {checkpoint} is at step {ck['step']}, beyond n_steps={n_steps}: "
                         "a resume cannot return a model trained for fewer steps")
    if n_epochs is not None and ck["epoch"] > n_epochs:
        raise ValueError(f"checkpoint {checkpoint} is at epoch {ck['epoch']}, beyond n_epochs={n_epochs}")
    state.load_state_dict(ck, checkpoint, device, objective_changed=any(c["setting"].startswith("objective")
                                                                         for c in changes))
    changed = {c["setting"].split(".")[0] for c in changes}
    for group in state.opt.param_groups:  # allowed optimiser changes take effect now
        if "lr" in changed:
            group["lr"] = lr
        if "momentum" in changed and "momentum" in group:
            group["momentum"] = momentum
        if "weight_decay" in changed:
            group["weight_decay"] = weight_decay
    if "lr" in changed and state.sched is not None:
        state.sched.base_lrs = [lr for _ in state.sched.base_lrs]
    state.changes += [{**c, "step": ck["step"]} for c in changes]


def _make_step(model, loss_fn, opt, params, grad_clip, label, guard, plan, has_schedule, batches):
    """The callable ``step_fn(x, step, epoch) -> (loss, extras)`` that performs one whole update."""
    if plan.warn:
        warnings.warn(graph.FastPathWarning(f"fit runs eagerly: {plan.reason}"), stacklevel=3)
    if plan.mode == "cuda_graph":
        shape = (batches.batch_size, batches.data.shape[1]) if isinstance(batches, TensorBatches) else None
        return graph.GraphStep(model, loss_fn, opt, params, grad_clip, label, guard, batch_shape=shape,
                               has_schedule=has_schedule)
    return EagerStep(model, loss_fn, opt, params, grad_clip, label, guard)


def _run_callback(callback, model, state):
    was_training = model.training
    out = callback(model, state.step, state.epoch, state.history)
    model.train(was_training)
    if isinstance(out, dict):
        state.history.log_epoch(state.step, state.epoch,
                                **{k: (float(v.detach()) if isinstance(v, torch.Tensor) else v) for k, v in out.items()})


def fast_path_plan(model, data, objective, *, options=None, fast="auto", device="auto", batch_size=128,
                   drop_last=False, optimizer="adam", lr_schedule=None):
    """Which step :func:`fit` would use for these arguments, and why (no training, no CUDA call).

    Returns a :class:`smlib.train.cuda_graph.FastPathPlan` ``(mode, reason, warn)`` with ``mode`` in
    ``{"cuda_graph", "eager"}``; ``warn`` says whether fit would warn with ``reason``.

    Examples
    --------
    >>> fast_path_plan(model, x, "dsm", options={"sigma": 0.1}, device="cuda").mode   # doctest: +SKIP
    'cuda_graph'
    """
    graph.check_fast(fast)
    device = torch.device(device) if device != "auto" else resolve_device(device)  # planning needs no GPU
    fn, label, stateful, _ = resolve_objective(objective, options)
    if isinstance(data, torch.Tensor) or hasattr(data, "shape"):
        n_rows, tensor = int(data.shape[0]), True
    else:
        n_rows, tensor = None, False
    if not isinstance(optimizer, str):  # fit decides on the optimiser instance a callable builds
        optimizer = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], 1e-3)
    return graph.plan(fast, device, label=label, named=capturable(fn), stateful=stateful, optimizer=optimizer,
                      has_schedule=lr_schedule not in (None, "constant"), tensor_data=tensor, n_rows=n_rows,
                      batch_size=batch_size, drop_last=drop_last)
