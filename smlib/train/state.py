"""The resume state of `fit` (:class:`TrainState`) and the run configuration a checkpoint records."""
from __future__ import annotations

import dataclasses
import json
import math

import torch

from smlib.train.batches import TensorBatches, fingerprint
from smlib.train.checkpoint import CHECKPOINT_FORMAT
from smlib.train.config import NOT_RUN_SETTINGS
from smlib.train.history import History

__all__ = ["TrainState", "run_config", "apply_changes"]


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def run_config(model, objective, config, opt, batches, guard) -> dict:
    """Everything that defines a run, as plain values (what a resume must match).

    The run-defining fields of the :class:`~smlib.train.config.TrainConfig` (all but device,
    logging and checkpoint handling), the objective's options, the model's class, dtype and
    shapes, the data's fingerprint and the divergence guard's settings. ``momentum`` is recorded
    for SGD only (the other optimisers ignore it); ``n_steps``/``n_epochs`` only when a schedule
    depends on the run's length (else a finished run may be extended).
    """
    cfg = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in NOT_RUN_SETTINGS}
    if not isinstance(config.optimizer, str):
        cfg["optimizer"] = {"name": "custom", "class": type(opt).__name__,
                            "defaults": {k: _jsonable(v) for k, v in opt.defaults.items() if k != "params"}}
    if config.optimizer != "sgd":
        cfg["momentum"] = None
    if cfg["lr_schedule"] is not None and not isinstance(cfg["lr_schedule"], str):
        cfg["lr_schedule"] = "callable"
    if cfg["lr_schedule"] in (None, "constant"):
        del cfg["n_steps"], cfg["n_epochs"]
    cfg["divergence_guard"] = None if guard is None else dataclasses.asdict(guard.settings)
    cfg["model"] = {"class": type(model).__qualname__, "dtype": str(next(model.parameters()).dtype),
                    "parameters": {n: list(p.shape) for n, p in model.named_parameters()}}
    cfg["objective"] = {"name": objective.label, **{k: _jsonable(v) for k, v in objective.config()["options"].items()}}
    cfg["data"] = fingerprint(batches)
    return cfg


def apply_changes(opt, sched, config, changed) -> None:
    """Apply the allowed optimiser changes of a resume (names in ``changed``) from ``config`` now."""
    for group in opt.param_groups:
        if "lr" in changed:
            group["lr"] = config.lr
        if "momentum" in changed and "momentum" in group:
            group["momentum"] = config.momentum
        if "weight_decay" in changed:
            group["weight_decay"] = config.weight_decay
    if "lr" in changed and sched is not None:
        sched.base_lrs = [config.lr for _ in sched.base_lrs]


class TrainState:
    """What changes during a run and must come back on resume: counters, history, log window, RNGs.

    Together with the objects it is given (model, optimiser, scheduler, estimator, batches,
    divergence guard), :meth:`state_dict` is a complete checkpoint and :meth:`load_state_dict`
    restores it, so that a resumed CPU run ends bit-identical to an uninterrupted one.
    """

    def __init__(self, model, opt, sched, stateful, batches, guard):
        self.model, self.opt, self.sched, self.stateful, self.batches, self.guard = model, opt, sched, stateful, batches, guard
        self.step, self.epoch, self.start_batch = 0, 0, 0
        self.history = History()
        self.acc, self.n_acc = {}, 0
        self.changes = []

    def state_dict(self, optimizer_state, config, per_epoch) -> dict:
        # a checkpoint taken on the last batch of an epoch points at the start of the next one
        at_end = per_epoch is not None and self.batches.pos >= per_epoch
        b = self.batches
        return {
            "format": CHECKPOINT_FORMAT, "step": self.step, "epoch": self.epoch + 1 if at_end else self.epoch,
            "batch_in_epoch": 0 if at_end else b.pos,
            "log_window": {"acc": {k: v.detach().cpu() for k, v in self.acc.items()}, "n": self.n_acc},
            "perm": None if b.perm is None else b.perm.cpu(), "model": self.model.state_dict(),
            "optimizer": optimizer_state, "scheduler": None if self.sched is None else self.sched.state_dict(),
            "objective_state": None if self.stateful is None else self.stateful.state_dict(),
            "guard": None if self.guard is None else self.guard.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "data": b.generator.get_state() if isinstance(b, TensorBatches) else None},
            "history": self.history.state_dict(), "config": config, "changes": list(self.changes),
        }

    def load_state_dict(self, ck, path, device, *, objective_changed=False) -> None:
        """Restore a checkpoint (already loaded and checked against the run's configuration)."""
        try:
            self.model.load_state_dict(ck["model"])
            self.opt.load_state_dict(ck["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise ValueError(f"checkpoint {path} does not fit this model/optimiser: {str(err).splitlines()[0]}") from None
        if self.sched is not None and ck["scheduler"] is not None:
            self.sched.load_state_dict(ck["scheduler"])
        if self.stateful is not None and ck["objective_state"] is not None and not objective_changed:
            self.stateful.load_state_dict(ck["objective_state"])
        if self.guard is not None and ck.get("guard") is not None:
            self.guard.load_state_dict(ck["guard"])
        torch.set_rng_state(ck["rng"]["torch"])
        if ck["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        b = self.batches
        if isinstance(b, TensorBatches):
            if ck["perm"] is not None and ck["perm"].numel() != b.n:
                raise ValueError(f"checkpoint {path} was written for data with {ck['perm'].numel()} rows, got {b.n}")
            if ck["rng"]["data"] is not None:
                b.generator.set_state(ck["rng"]["data"])
            b.perm = ck["perm"]
        self.step, self.epoch, self.start_batch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        self.history = History.from_state_dict(ck["history"])
        self.acc = {k: v.to(device) for k, v in ck["log_window"]["acc"].items()}
        self.n_acc = ck["log_window"]["n"]
        self.changes = list(ck.get("changes", []))

    def log(self, loss, extras, total, log_every, bar) -> None:
        """Accumulate one step into the log window; write the window means every ``log_every`` steps."""
        for k, v in {"loss": loss, **extras}.items():
            self.acc[k] = self.acc.get(k, 0.0) + v.to(torch.float64)
        self.n_acc += 1
        if self.step % log_every == 0 or (total is not None and self.step == total):
            values = {k: float(v) / self.n_acc for k, v in self.acc.items()}
            values["lr"] = self.opt.param_groups[0]["lr"]
            self.history.log(self.step, self.epoch, **values)
            if math.isfinite(values["loss"]):
                bar.set_postfix(loss=f"{values['loss']:.4g}", refresh=False)
            self.acc, self.n_acc = {}, 0
