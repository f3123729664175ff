r"""The CUDA fast path of :func:`smlib.train.fit`: one training step captured in a CUDA graph.

Why. A score-matching step on a small network is a few hundred tiny kernels (forward, the
input gradient with ``create_graph=True``, the parameter backward through it, the optimiser).
On a GPU each launch costs several microseconds of host time while the arithmetic costs less,
so an eager step is bound by launches, not by FLOPs. A CUDA graph records the whole step once
and replays it with a single launch.

What is captured (:class:`GraphStep`): the loss, its backward, the NaN/Inf flags, a snapshot of
the parameters and optimiser state, gradient clipping and ``optimizer.step()``, with

* a static input buffer (each minibatch is copied into it before the replay);
* the random draws (DSM noise, SSM projections) inside the graph: PyTorch registers the
  default CUDA generator with the graph and advances its offset on every replay, so every
  replay draws fresh numbers and ``torch.cuda.get_rng_state()`` stays meaningful for
  checkpoints;
* a *capturable* optimiser: Adam/AdamW get ``capturable=True`` (their step counter lives on
  the GPU) and, when a learning-rate schedule is used, a tensor learning rate that the
  scheduler updates in place. SGD is captured with a constant learning rate.

Semantics kept from the eager loop (:class:`EagerStep`):

* the guards still run every step: the graph writes the loss, two flags (loss finite,
  gradients finite) and ‖θ‖² after the update (finite iff the parameters are), read back with
  one synchronisation per step for the NaN/Inf and divergence guards. If the loss or a gradient is not finite, the snapshot taken inside the graph is copied
  back, so the parameters and optimiser state are those *before* the failed step, exactly as
  in the eager loop, which raises before ``optimizer.step()``; the same ``FloatingPointError``
  (same message) is raised;
* batches of another shape (the last partial batch of an epoch when the number of rows is not
  a multiple of ``batch_size`` and ``drop_last=False``) run eagerly with the same optimiser
  and the same arithmetic; ``drop_last=True`` drops them instead;
* the first ``warmup`` full-size steps run eagerly (on a side stream, as the CUDA-graph
  recipe requires: they allocate the optimiser state and the library workspaces), then the
  graph is captured and replayed. Eager and replayed steps use the same (capturable) optimiser,
  so they compute the same thing;
* checkpoints hold a portable optimiser state (the original ``capturable`` flag, a float
  learning rate), and the graph is built *after* a checkpoint is loaded (``fit`` creates the
  step after resuming), so a resumed run replays a graph of the loaded tensors;
* if capturing fails (e.g. a custom objective that synchronises with the host), fit warns
  with the reason (:class:`FastPathWarning`) and continues eagerly;
* a callback may change parameter *values* in place (the graph reads the same memory), but must
  not rebind parameters (``p.data = ...``) or replace the optimiser's state tensors.

When it applies (:func:`plan`): ``fast="auto"`` uses it on a CUDA device for tensor data (fixed
batch shape) with a registered objective that the registry marks ``cuda_graph`` (the stateless
score-matching losses, ``smlib.objectives.names(cuda_graph=True)``) and Adam, AdamW or SGD (SGD
only without a schedule). MCMC estimators keep chains, fast weights and generators in Python
objects that a captured graph would freeze, and their samplers synchronise with the host
(rejection loops, ``.item()``), so they always run eagerly; on a GPU fit says so in a warning.
``fast=True`` also tries custom objectives and iterable data (the first batch's shape is
captured). On CPU every setting is eager (no warning for ``"auto"``).

Why not ``torch.compile(mode="reduce-overhead")``: the score-matching losses differentiate
through ``torch.autograd.grad(..., create_graph=True)``, and compiled autograd does not
support double backward, so the compiled step breaks into eager pieces. ``python -m bench``
times both on a GPU (``compile_ms`` next to ``cuda_graph_ms`` in ``training_loop``).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from smlib.train.step import EagerStep, all_finite, raise_non_finite, split_output, sum_squares

__all__ = ["FastPathPlan", "FastPathWarning", "plan", "GraphStep", "check_fast", "EMULATE", "WARMUP_STEPS"]

#: full-size eager steps before the capture
WARMUP_STEPS = 2

#: test seam: ``on`` lets :func:`plan` choose the graph step on CPU with "replay" = rerun of the
#: recorded Python step; ``capturable`` allows torch's capturable Adam there. Set only by the tests
#: (``tests/graph_emulation.py``), which also patch torch's list of capturable devices.
EMULATE = {"on": False, "capturable": False}


class FastPathWarning(UserWarning):
    """fit could not use (or stopped using) the CUDA-graph fast path; the message says why."""


class FastPathPlan(NamedTuple):
    """Which path :func:`smlib.train.fit` takes for a step, and why.

    ``mode`` is ``"cuda_graph"`` or ``"eager"``; ``reason`` is one sentence; ``warn`` says
    whether fit emits a :class:`FastPathWarning` with that reason (a fast path was asked for,
    or would have been expected on this device, but does not apply).
    """

    mode: str
    reason: str
    warn: bool = False


def check_fast(fast):
    if fast is not True and fast is not False and fast != "auto":
        raise ValueError(f"fast must be True, False or 'auto', got {fast!r}")


def plan(fast, device, *, label, named, stateful=None, optimizer="adam", has_schedule=False,
         tensor_data=True, n_rows=None, batch_size=None, drop_last=False) -> FastPathPlan:
    """Decide between the CUDA-graph step and the eager step (pure logic: testable on CPU).

    Parameters
    ----------
    fast : {"auto", True, False}
    device : torch.device
        The training device (only its type is looked at: no CUDA call is made).
    label : str
        Objective name (or the callable's name).
    named : bool
        Whether the objective was given by name (fit knows it is stateless) or as a callable.
    stateful : object or None
        The objective's state holder (an MCMC estimator), if any.
    optimizer : str or torch.optim.Optimizer
        The optimiser (name or instance).
    has_schedule : bool
        Whether a learning-rate schedule changes the learning rate during the run.
    tensor_data : bool
        Tensor data (fixed batch shape) vs. an iterable of batches.
    n_rows, batch_size, drop_last :
        For tensor data: how many rows and how they are batched (to report the partial batch).
    """
    check_fast(fast)
    device = torch.device(device)
    if fast is False:
        return FastPathPlan("eager", "fast=False")
    if device.type != "cuda" and not EMULATE["on"]:
        return FastPathPlan("eager", f"device is {device.type}: the CUDA-graph step needs a CUDA device",
                            warn=fast is True)
    if stateful is not None:
        return FastPathPlan(
            "eager",
            f"objective {label!r} ({type(stateful).__name__}) keeps state between steps (MCMC chains, fast "
            "weights, its own generator) in Python and its sampler synchronises with the host; a captured "
            "graph would freeze that state",
            warn=True)
    if not named and fast == "auto":
        return FastPathPlan(
            "eager",
            f"custom objective {label!r}: it may keep Python state or synchronise with the host; "
            "pass fast=True to try capturing it", warn=True)
    if not tensor_data and fast == "auto":
        return FastPathPlan(
            "eager",
            "the batches come from an iterable whose shapes are not known in advance; pass fast=True to "
            "capture the first batch's shape (batches of other shapes then run eagerly)", warn=True)
    name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__
    kind = name.lower()
    if kind not in ("adam", "adamw", "sgd"):
        return FastPathPlan("eager", f"optimizer {name!r} is not one fit can capture (Adam, AdamW, SGD)", warn=True)
    if kind == "sgd" and has_schedule:
        return FastPathPlan(
            "eager",
            "SGD with a learning-rate schedule: torch's SGD reads a tensor learning rate on the host, "
            "which a CUDA graph cannot capture (use Adam/AdamW, or no schedule)", warn=True)
    reason = (f"CUDA graph: the whole {label!r} step (loss, backward, guard flags, {kind} update) is "
              f"captured after {WARMUP_STEPS} eager warm-up steps and replayed")
    if tensor_data and n_rows is not None and batch_size is not None:
        b = min(batch_size, n_rows)
        rest = n_rows % b
        if rest and not drop_last:
            reason += f"; the last batch of each epoch ({rest} of {b} rows) runs eagerly (drop_last=True drops it)"
    elif not tensor_data:
        reason += "; batches whose shape differs from the first one run eagerly"
    return FastPathPlan("cuda_graph", reason)


def _state_tensors(opt, params):
    return [v for p in params for v in opt.state.get(p, {}).values() if isinstance(v, torch.Tensor)]


class GraphStep(EagerStep):
    """The training step captured once in a CUDA graph and replayed (see the module docstring).

    Parameters
    ----------
    model, loss_fn, optimizer, params, grad_clip, label :
        As for :class:`EagerStep`.
    batch_shape : tuple or None
        Shape of the captured batch (None: the first batch's shape).
    has_schedule : bool
        Make the learning rate a device tensor that the scheduler updates in place.
    warmup : int
        Eager full-size steps before the capture.
    """

    def __init__(self, model, loss_fn, optimizer, params, grad_clip, label, guard=None, *, batch_shape=None,
                 has_schedule=False, warmup=WARMUP_STEPS):
        super().__init__(model, loss_fn, optimizer, params, grad_clip, label, guard)
        self.batch_shape = None if batch_shape is None else tuple(batch_shape)
        self.warmup = int(warmup)
        self.n_warm = 0
        self.graph = None
        self.disabled = None  # reason, once capture failed
        self.emulated = EMULATE["on"]
        self.device = params[0].device
        self._original = [(g.get("capturable"), g["lr"]) for g in optimizer.param_groups]
        self._make_capturable(has_schedule)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    # ------------------------------------------------------------------ optimiser
    def _make_capturable(self, tensor_lr):
        opt = self.opt
        if not isinstance(opt, torch.optim.Adam):  # SGD: nothing to convert (constant lr)
            return
        if self.device.type == "cpu" and not EMULATE.get("capturable"):
            return  # torch supports capturable Adam on accelerators only (test double on CPU)
        for group in opt.param_groups:
            group["capturable"] = True
            if tensor_lr and not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), dtype=self.params[0].dtype, device=self.device)
        for p in self.params:  # a loaded checkpoint keeps Adam's step counter on the CPU
            st = opt.state.get(p, {})
            if isinstance(st.get("step"), torch.Tensor) and st["step"].device != p.device:
                st["step"] = st["step"].to(p.device)

    def optimizer_state_dict(self):
        """The optimiser state with the original ``capturable`` flag and float learning rates."""
        sd = self.opt.state_dict()
        for group, (capturable, lr) in zip(sd["param_groups"], self._original):
            if capturable is None:
                group.pop("capturable", None)
            else:
                group["capturable"] = capturable
            if isinstance(group["lr"], torch.Tensor) and not isinstance(lr, torch.Tensor):
                group["lr"] = float(group["lr"])
        return sd

    # ------------------------------------------------------------------ the step
    def __call__(self, x, step, epoch):
        if self.disabled is not None:
            return super().__call__(x, step, epoch)
        if self.batch_shape is None:
            self.batch_shape = tuple(x.shape)
        if tuple(x.shape) != self.batch_shape:  # e.g. the last partial batch of an epoch
            return super().__call__(x, step, epoch)
        if self.graph is None:
            if self.n_warm < self.warmup:
                self.n_warm += 1
                return self._side_stream(super().__call__, x, step, epoch)
            try:
                self._capture(x, step)
            except Exception as err:  # noqa: BLE001 - any capture failure falls back
                self._fail(err, step)
                return super().__call__(x, step, epoch)
        return self._replay(x, step, epoch)

    def _side_stream(self, fn, *args):
        if self.stream is None:
            return fn(*args)
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = fn(*args)
        current.wait_stream(self.stream)
        return out

    def _body(self, step):
        """The recorded step; returns (loss, extras, stats) as tensors (no host synchronisation).

        ``stats`` = [loss finite, gradients finite, loss, ‖θ‖²] after the update, in float64."""
        loss, extras = split_output(self.loss_fn(self.model, self.static_x), step)
        loss.backward()
        grads = [p.grad for p in self.all_params if p.grad is not None]
        grads_ok = all_finite(grads) if grads else torch.ones((), dtype=torch.bool, device=self.device)
        loss_ok = torch.isfinite(loss.detach())
        if self.live:
            torch._foreach_copy_(self.backup, self.live)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        if self.project is not None:  # tensor ops only (no host sync), so it is captured with the step
            self.project()
        f64 = torch.float64  # everything the host needs after a replay, read in one synchronisation
        stats = torch.stack([loss_ok.to(f64), grads_ok.to(f64), loss.detach().to(f64), sum_squares(self.all_params).to(f64)])
        return loss.detach(), {k: v.detach() for k, v in extras.items()}, stats

    def _capture(self, x, step):
        self.static_x = x.detach().clone()
        # floating buffers too: a projection may update one (MPoT's running filter norm), and a rejected step
        # must leave it as the eager loop would (never updated)
        buffers = [b for b in self.model.buffers() if b.is_floating_point()] if self.project is not None else []
        self.live = [p.detach() for p in self.params] + _state_tensors(self.opt, self.params) + buffers
        self.backup = [t.clone() for t in self.live]
        if self.emulated:
            self.graph = "emulated"
            return
        self.opt.zero_grad(set_to_none=True)  # the gradients are allocated inside the graph
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static = self._body(step)
        self.static_grads = [(p, p.grad) for p in self.params if p.grad is not None]
        self.graph = graph

    def _replay(self, x, step, epoch):
        self.static_x.copy_(x)
        if self.emulated:
            self.opt.zero_grad(set_to_none=True)
            loss, extras, stats = self._body(step)
        else:
            self.graph.replay()
            loss, extras, stats = self.static
            for p, g in self.static_grads:  # eager steps in between may have rebound .grad
                p.grad = g
        loss_ok, grads_ok, value, sq = stats.tolist()  # the one synchronisation per step
        if not (loss_ok and grads_ok):
            if self.live:
                torch._foreach_copy_(self.live, self.backup)  # undo the update, as the eager loop never made it
            raise_non_finite(self.model, loss, step, epoch, self.label)
        self.check_values(value, sq, step, epoch)
        return loss, extras

    def _fail(self, err, step):
        self.disabled = f"{type(err).__name__}: {err}"
        self.graph = None
        self.opt.zero_grad(set_to_none=True)
        warnings.warn(FastPathWarning(
            f"CUDA-graph capture of the {self.label!r} step failed at step {step} ({self.disabled}); "
            "continuing eagerly"), stacklevel=4)
