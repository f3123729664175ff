"""One training step: loss, backward, the guards, clipping and the update (eager).

Guards, every step, at the cost of two host synchronisations:

* before the update: the loss and every gradient finite (else ``FloatingPointError`` naming the
  step and the tensors; the parameters are left as they were);
* after the update: every parameter finite, read from one fused sum of squares that also gives
  the parameter norm ‖θ‖;
* :class:`DivergenceGuard`: a run that diverges without producing NaN/Inf — a loss or a
  parameter norm grown by orders of magnitude over its scale at the start, a loss below
  the bound its objective cannot cross, or a loss that stalls while ‖θ‖ runs away — stops with :class:`DivergenceError`, naming the step,
  the quantity and what to try.
"""
from __future__ import annotations

import collections
import math

import torch

from smlib.train.config import GuardConfig

__all__ = ["DivergenceError", "DivergenceGuard", "EagerStep", "split_output", "all_finite", "sum_squares"]


#: the stall check's "still growing": ‖θ‖ grew by more than 0.1 % over the stalled window
_STILL_GROWING = 1.001


class DivergenceError(FloatingPointError):
    """Training diverged (a runaway loss or parameter norm); the message names the step and the quantity."""


def split_output(out, step):
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


def all_finite(tensors) -> torch.Tensor:
    """True (a bool tensor) iff every element of every tensor is finite.

    Σ 0·t is 0 for finite entries and NaN as soon as one entry is ±inf or NaN, and it cannot
    overflow: one concatenation, one multiply, one sum (about 10× cheaper on CPU than
    ``isfinite().all()`` per tensor, which costs two kernels per tensor on a GPU).
    """
    return torch.cat([t.detach().reshape(-1) for t in tensors]).mul_(0).sum() == 0


def sum_squares(tensors) -> torch.Tensor:
    """Σ t² over all entries: finite iff every entry is finite and ‖θ‖² did not overflow (one fused pass)."""
    return torch.cat([t.detach().reshape(-1) for t in tensors]).square_().sum()


def raise_non_finite(model, loss, step, epoch, label):
    """Name the non-finite loss or gradient (called only once a fused check failed)."""
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(
            f"non-finite loss ({float(loss)}) at step {step} (epoch {epoch}) with objective {label!r}; "
            "try a smaller lr, a larger sigma or grad_clip")
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    raise FloatingPointError(f"non-finite gradient of parameter(s) {bad} at step {step} (epoch {epoch}) with objective {label!r}")


def raise_non_finite_params(model, step, epoch, label, norm_sq):
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise FloatingPointError(f"non-finite value of parameter(s) {bad} after the update at step {step} (epoch {epoch}) "
                                 f"with objective {label!r}")
    raise DivergenceError(f"the parameter norm overflowed (‖θ‖² = {norm_sq}) after the update at step {step} "
                          f"(epoch {epoch}) with objective {label!r}; try a smaller lr or grad_clip")


class DivergenceGuard:
    """Stop a run whose loss or parameter norm runs away, before it turns into NaN.

    Scales: the parameter norm ‖θ₀‖ before the first update (if it is 0, the norm after the
    first update) and the loss of the first step (at least 1, so that a loss that starts near 0 may
    grow to order one). The run stops when

    * ‖θ‖ or |loss| exceeds ``factor`` times its scale. ``factor=1e4`` leaves room for the
      legitimate growth of an SM loss, whose magnitude grows as the curvature sharpens (30× in
      the chapter-8 runs), while stopping a runaway run within a few steps;
    * the loss falls below ``lower_bound``, a value its objective cannot cross (0 for DSM and AE,
      whose losses are sums of squares);
    * the loss stalls while the parameters run away: over the last ``stall_steps`` steps the
      loss moved by less than ``stall_rtol`` of its size, (max − min) ≤ rtol·max|loss|, while
      ‖θ‖ kept growing (by more than 0.1 % over those steps) and stands at ``stall_growth``
      times or more its scale at the start. Updates that keep moving θ without changing the
      loss follow a direction the loss cannot see: SSM-VR with SGD at lr = 1 and momentum 0.9
      on the spiral saturates its tanh units within ten steps, after which the loss is exactly
      0 and ‖θ‖ creeps on to ~750× its start, under the ``factor`` limit. The growth is
      measured from the start, not within the window, because such a runaway grows in a burst
      before the loss freezes (×2 over the 50 steps after it, ×750 in all).

    The settings are those of :class:`smlib.train.config.GuardConfig`, checked with their names.
    Costs one float read per step, shared with the finiteness check.
    """

    def __init__(self, factor: float = 1e4, lower_bound: float | None = None, label: str = "",
                 initial_norm: float | None = None, *, stall_steps: int | None = 50, stall_rtol: float = 1e-6,
                 stall_growth: float = 10.0):
        self.settings = GuardConfig(factor=factor, lower_bound=lower_bound, stall_steps=stall_steps,
                                    stall_rtol=stall_rtol, stall_growth=stall_growth)
        self.factor, self.lower_bound, self.label = self.settings.factor, self.settings.lower_bound, label
        self.loss_scale = None
        self.norm_scale = initial_norm if initial_norm else None
        n = self.settings.stall_steps
        self.window = collections.deque(maxlen=None if n is None else n + 1)  # (loss, ‖θ‖) of the last n + 1 steps

    @classmethod
    def from_config(cls, config: GuardConfig, *, objective_bound=None, label="", initial_norm=None):
        """The guard of ``config``; its ``lower_bound`` if set, else the objective's ``objective_bound``."""
        bound = config.lower_bound if config.lower_bound is not None else objective_bound
        return cls(config.factor, bound, label, initial_norm, stall_steps=config.stall_steps,
                   stall_rtol=config.stall_rtol, stall_growth=config.stall_growth)

    def state_dict(self) -> dict:
        return {"loss_scale": self.loss_scale, "norm_scale": self.norm_scale, "window": [list(w) for w in self.window]}

    def load_state_dict(self, state: dict) -> None:
        self.loss_scale, self.norm_scale = state["loss_scale"], state["norm_scale"]
        self.window.clear()
        self.window.extend(tuple(w) for w in state.get("window", []))

    def check(self, step: int, epoch: int, loss: float, norm: float) -> None:
        where = f"at step {step} (epoch {epoch}) with objective {self.label!r}"
        if self.lower_bound is not None and loss < self.lower_bound:
            raise DivergenceError(f"the loss {loss:.6g} fell below {self.lower_bound:g}, a bound objective "
                                  f"{self.label!r} cannot cross in exact arithmetic, {where}: a numerical failure; "
                                  "try float64, a smaller lr or grad_clip")
        self._check_stall(where, loss, norm)
        if self.loss_scale is None:
            self.loss_scale = max(abs(loss), 1.0)
        if self.norm_scale is None:
            self.norm_scale = norm if norm > 0 else None
            return
        for name, value, scale in (("|loss|", abs(loss), self.loss_scale), ("parameter norm ‖θ‖", norm, self.norm_scale)):
            if value > self.factor * scale:
                raise DivergenceError(
                    f"training diverged {where}: {name} = {value:.4g} is {value / scale:.3g}× its scale at the start "
                    f"({scale:.4g}; the guard stops beyond {self.factor:g}×). Try a smaller lr, grad_clip, or "
                    "fit(..., divergence_guard=False) to train on regardless")

    def _check_stall(self, where, loss, norm):
        n = self.settings.stall_steps
        if n is None:
            return
        self.window.append((loss, norm))
        if len(self.window) <= n:
            return
        first, last = self.window[0][1], norm
        start = self.norm_scale or first
        if not (last > first * _STILL_GROWING and last >= self.settings.stall_growth * start):
            return  # the cheap test first: the loss is read only while ‖θ‖ runs away
        losses = [w[0] for w in self.window]
        spread, size = max(losses) - min(losses), max(abs(v) for v in losses)
        if spread <= self.settings.stall_rtol * size:
            raise DivergenceError(
                f"training diverged {where}: over the last {n} steps the loss stayed at {loss:.6g} (relative change "
                f"{0.0 if size == 0 else spread / size:.2g} ≤ {self.settings.stall_rtol:g}) while the parameter norm ‖θ‖ "
                f"kept growing ({first:.4g} → {last:.4g}), {last / start:.3g}× its scale at the start ({start:.4g}; "
                f"the guard stops a stalled loss beyond {self.settings.stall_growth:g}×): the updates move θ along a "
                "direction the loss does not see. Try a smaller lr or momentum, grad_clip, or "
                "divergence_guard={'stall_steps': None} to train on regardless")


class EagerStep:
    """One eager training step: zero the gradients, loss, backward, guard, clip, update, project, guard.

    A model with a ``project_()`` method (e.g. `smlib.models.MPoT` with ``filter_norm``) has it called
    after every optimizer update: a projected gradient step onto the model's constraint set.
    """

    def __init__(self, model, loss_fn, optimizer, params, grad_clip, label, guard=None):
        self.model, self.loss_fn, self.opt = model, loss_fn, optimizer
        self.params, self.grad_clip, self.label, self.guard = params, grad_clip, label, guard
        self.all_params = list(model.parameters())
        self.project = getattr(model, "project_", None)

    def __call__(self, x, step, epoch):
        self.opt.zero_grad(set_to_none=True)
        loss, extras = split_output(self.loss_fn(self.model, x), step)
        loss.backward()
        loss = loss.detach()
        grads = [p.grad for p in self.all_params if p.grad is not None]
        if not bool(all_finite([loss, *grads])):
            raise_non_finite(self.model, loss, step, epoch, self.label)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        if self.project is not None:
            self.project()
        self.after_update(loss, step, epoch)
        return loss, extras

    def after_update(self, loss, step, epoch):
        """The parameter and divergence guards (one host read of the loss and ‖θ‖²)."""
        value, sq = torch.stack([loss.to(torch.float64), sum_squares(self.all_params).to(torch.float64)]).tolist()
        self.check_values(value, sq, step, epoch)

    def check_values(self, value, sq, step, epoch):
        """The guards on host values: ‖θ‖² finite (else name the parameters) and the divergence guard."""
        if not math.isfinite(sq):
            raise_non_finite_params(self.model, step, epoch, self.label, sq)
        if self.guard is not None:
            self.guard.check(step, epoch, value, math.sqrt(sq))

    def optimizer_state_dict(self):
        """The optimiser state for a checkpoint."""
        return self.opt.state_dict()
