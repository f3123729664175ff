r"""`fit`: one training loop for every model × objective/estimator, and `fast_path_plan`."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from smlib.objectives import registry
from smlib.train import cuda_graph as graph
from smlib.train.batches import TensorBatches, as_batches
from smlib.train.checkpoint import allows, resume_checkpoint, save_checkpoint
from smlib.train.config import TrainConfig
from smlib.train.history import History
from smlib.train.setup import capturable, make_optimizer, make_schedule, resolve_device
from smlib.train.state import TrainState, apply_changes, run_config
from smlib.train.step import DivergenceGuard, EagerStep, sum_squares
from smlib._progress import progress_bar

__all__ = ["fit", "fast_path_plan", "TrainConfig"]


def fit(model, data, objective, config: TrainConfig | None = None, *, options=None, callback=None,
        **overrides) -> History:
    r"""Train ``model`` on ``data`` by minimising ``objective`` with minibatch SGD/Adam.

    Each step draws a minibatch x_t, evaluates L(θ; x_t) (a score-matching loss, or an MCMC
    estimator's surrogate mean E(x⁺) − mean E(sg[x⁻]) whose gradient is the CD/PCD/FPCD update),
    back-propagates and takes one optimiser step θ ← θ − η_t·update(∇_θ L). Descending every
    objective here fits the data (lower SM/DSM loss, or higher likelihood for the MCMC ones).

    >>> fit(model, x, DSM(sigma=0.1), TrainConfig(n_steps=1000, lr=1e-3, seed=0))   # doctest: +SKIP
    >>> fit(model, x, "dsm", options={"sigma": 0.1}, n_steps=1000, lr=1e-3)         # the same

    Parameters
    ----------
    model : torch.nn.Module
        An energy or score model; moved to ``config.device`` (and left there).
    data : torch.Tensor (N, d) | numpy array | iterable of batches (e.g. a DataLoader)
        A tensor is cast to the model's dtype, checked (floating, 2-D, ``d == model.dim``, finite)
        and reshuffled every epoch by a CPU generator seeded from ``config.seed``. An iterable
        yields tensors or ``(x, ...)`` tuples; every batch is checked.
    objective : str, objective dataclass, Objective, estimator or callable
        Anything :func:`smlib.objectives.resolve` takes: a name of
        :data:`smlib.objectives.REGISTRY` with its ``options`` (``"dsm"``, ``{"sigma": 0.1}``);
        a dataclass such as ``DSM(sigma=0.1)`` or ``PCD(n_chains=100)``; an :mod:`smlib.mcmc`
        estimator instance (its state is checkpointed); or a callable ``(model, x) -> loss`` or
        ``(model, x) -> {"loss": loss, **scalars}`` (the other scalars are logged; ``options``
        then become keyword arguments of each call).
    config : TrainConfig
        Every other setting (steps, batch size, optimiser, rate, schedule, seed, guard, device,
        logging, checkpoints), checked when it is made.
    options : dict, optional
        Options of a named objective.
    callback : callable(model, step, epoch, history) -> dict | None, optional
        Called at the end of each epoch (0-based ``epoch`` just finished) and at the end of the
        run, or every ``config.callback_every`` steps. A returned dict of scalars is appended to
        ``history.per_epoch``. It runs before the checkpoint of that step, so it may draw random
        numbers without breaking exact resume.
    **overrides
        A convenience: TrainConfig fields as keywords (``n_steps=100, lr=1e-2``), applied to
        ``config`` (or to the defaults). A name that is not a field is a TypeError naming it.

    Randomness: the run draws from its own stream — torch's generator is forked for the run and
    seeded with ``config.seed`` — so torch's global generator and default dtype are the same
    after ``fit`` as before.

    Resume (``config.resume``): continue from ``config.checkpoint`` if it exists (start fresh
    otherwise). On CPU the result is bit-identical to an uninterrupted run; a finished run is
    not retrained (the model is loaded and the history returned). Every run-defining setting
    (model class and shapes, objective and options, optimiser and its settings, lr, schedule,
    batch size, seed, data, guard) must match the checkpoint's — old and new keys alike — and a
    difference is an error naming the file and the setting, unless ``config.allow_changes``
    names it exactly (:data:`smlib.train.config.CHANGEABLE`; "objective" covers its options):
    then the new values are applied (an estimator whose options changed starts afresh),
    recorded in the checkpoint's ``changes`` and announced in a warning.

    Returns
    -------
    History

    Raises
    ------
    ValueError
        Bad data, an unknown name, a bad size, rate or device, ``resume`` without ``checkpoint``,
        a checkpoint of another run (``CheckpointError``) or one already past ``n_steps``.
    TypeError
        Unknown or missing objective options; a keyword that is no TrainConfig field.
    FloatingPointError
        Non-finite loss, gradient or parameter, or divergence (``DivergenceError``), naming the
        step and the quantity.
    """
    config = TrainConfig.of(config, overrides)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable(model, step, epoch, history)")
    device = resolve_device(config.device)
    objective = registry.resolve(objective, options)
    seed = config.seed if config.seed is not None else torch.Generator().seed() % 2**63
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return _fit(model, data, objective, config, callback, device, seed)


def _fit(model, data, objective, c, callback, device, seed):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    model.to(device)
    batches = as_batches(data, batch_size=c.batch_size, drop_last=c.drop_last, device=device, dtype=params[0].dtype,
                         dim=getattr(model, "dim", None))
    per_epoch = _len(batches)
    total = c.n_steps if c.n_steps is not None else (c.n_epochs * per_epoch if per_epoch is not None else None)
    if isinstance(batches, TensorBatches):
        batches.generator.manual_seed(seed)
    opt = make_optimizer(c.optimizer, params, c.lr, c.momentum, c.weight_decay)
    sched = make_schedule(c.lr_schedule, opt, total)
    guard = None if c.divergence_guard is None else DivergenceGuard.from_config(
        c.divergence_guard, objective_bound=None if objective.spec is None else objective.spec.lower_bound,
        label=objective.label, initial_norm=float(sum_squares(params)) ** 0.5)
    state = TrainState(model, opt, sched, objective.state, batches, guard)
    run = None if c.checkpoint is None else run_config(model, objective, c, opt, batches, guard)
    if c.resume and Path(c.checkpoint).exists():
        _resume(state, c, run, device)

    def finished():
        return state.step >= c.n_steps if c.n_steps is not None else state.epoch >= c.n_epochs

    if finished():
        return state.history
    plan = graph.plan(c.fast, device, label=objective.label, named=capturable(objective),
                      stateful=objective.state, optimizer=opt, has_schedule=sched is not None,
                      tensor_data=isinstance(batches, TensorBatches), n_rows=getattr(batches, "n", None),
                      batch_size=c.batch_size, drop_last=c.drop_last)
    # built after a checkpoint is loaded: a captured graph holds the loaded tensors
    step_fn = _make_step(model, objective, opt, params, c.grad_clip, objective.label, guard, plan, sched is not None,
                         batches)

    model.train()
    bar = progress_bar(c.progress, total=total, initial=state.step, desc=f"fit[{objective.label}]", leave=True)
    last_cb, t0 = -1, time.perf_counter()

    def save():
        nonlocal t0
        state.history.wall_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        save_checkpoint(c.checkpoint, state.state_dict(step_fn.optimizer_state_dict(), run, per_epoch))

    try:
        while not finished():
            first = state.step
            for x in batches.epoch(state.start_batch):
                loss, extras = step_fn(x, state.step + 1, state.epoch)  # one whole update
                if sched is not None:
                    sched.step()
                state.step += 1
                state.log(loss, extras, total, c.log_every, bar)
                bar.update(1)
                end_of_epoch = per_epoch is not None and batches.pos == per_epoch
                done = state.step >= c.n_steps if c.n_steps is not None else end_of_epoch and state.epoch + 1 >= c.n_epochs
                if callback is not None and last_cb != state.step and (
                        done or (state.step % c.callback_every == 0 if c.callback_every else end_of_epoch)):
                    _run_callback(callback, model, state)
                    last_cb = state.step
                if c.checkpoint is not None and c.checkpoint_every and state.step % c.checkpoint_every == 0:
                    save()
                if done and c.n_steps is not None:
                    break
            else:  # the epoch is exhausted
                if state.step == first and state.start_batch == 0:
                    raise ValueError(f"data yielded no batches in epoch {state.epoch}")
                if per_epoch is None and callback is not None and last_cb != state.step and (
                        not c.callback_every or (c.n_epochs is not None and state.epoch + 1 >= c.n_epochs)):
                    _run_callback(callback, model, state)
                    last_cb = state.step
                state.epoch, state.start_batch, batches.pos = state.epoch + 1, 0, 0
                continue
            break
    finally:
        bar.close()
        state.history.wall_time += time.perf_counter() - t0
        t0 = time.perf_counter()
    if c.checkpoint is not None:
        save()
    return state.history


def _len(batches):
    try:
        return len(batches)
    except TypeError:
        return None


def _resume(state, c, run, device):
    ck, changes = resume_checkpoint(c, run)
    changed = {c_["setting"] for c_ in changes}
    state.load_state_dict(ck, c.checkpoint, device, objective_changed=any(allows("objective", k) for k in changed))
    apply_changes(state.opt, state.sched, c, changed)
    state.changes += [{**c_, "step": ck["step"]} for c_ in changes]


def _make_step(model, loss_fn, opt, params, grad_clip, label, guard, plan, has_schedule, batches):
    """The callable ``step_fn(x, step, epoch) -> (loss, extras)`` that performs one whole update."""
    if plan.warn:
        warnings.warn(graph.FastPathWarning(f"fit runs eagerly: {plan.reason}"), stacklevel=4)
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


def fast_path_plan(model, data, objective, config: TrainConfig | None = None, *, options=None, **overrides):
    """Which step :func:`fit` would use for these arguments, and why (no training, no CUDA call).

    Takes :func:`fit`'s arguments (``n_steps`` may be left out here). Returns a
    :class:`smlib.train.cuda_graph.FastPathPlan` ``(mode, reason, warn)`` with ``mode`` in
    ``{"cuda_graph", "eager"}``; ``warn`` says whether fit would warn with ``reason``.

    Examples
    --------
    >>> fast_path_plan(model, x, "dsm", options={"sigma": 0.1}, device="cuda").mode   # doctest: +SKIP
    'cuda_graph'
    """
    if config is None and "n_steps" not in overrides and "n_epochs" not in overrides:
        overrides = {**overrides, "n_steps": 1}  # the plan does not depend on the run's length
    c = TrainConfig.of(config, overrides, where="fast_path_plan")
    device = torch.device(c.device) if c.device != "auto" else resolve_device(c.device)  # planning needs no GPU
    fn = registry.resolve(objective, options)
    if isinstance(data, torch.Tensor) or hasattr(data, "shape"):
        n_rows, tensor = int(data.shape[0]), True
    else:
        n_rows, tensor = None, False
    optimizer = c.optimizer
    if not isinstance(optimizer, str):  # fit decides on the optimiser instance a callable builds
        optimizer = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad], 1e-3)
    return graph.plan(c.fast, device, label=fn.label, named=capturable(fn), stateful=fn.state, optimizer=optimizer,
                      has_schedule=c.lr_schedule not in (None, "constant"), tensor_data=tensor, n_rows=n_rows,
                      batch_size=c.batch_size, drop_last=c.drop_last)
