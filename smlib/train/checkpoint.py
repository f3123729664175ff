"""Checkpoints of `smlib.train.fit`: atomic writes, one careful loader, and the settings a resume must match.

A checkpoint holds everything a run needs to continue bit-identically (model, optimiser,
scheduler, estimator state, RNG states, data order and position, history, divergence-guard
scales) and the **run configuration**: model class and shapes, objective and all its options,
optimiser and its settings, learning rate and schedule, batch size, seed and a fingerprint of
the data. Resuming compares that configuration with the one of the call; every difference is an
error naming the file and the setting, unless the call allows it by name (``allow_changes``):
then the new value is applied, recorded in the checkpoint's list of changes, and a warning says so.
"""
from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from smlib._io import atomic_write
from smlib.train.config import CHANGEABLE, _allowed

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "compare_configs",
           "CHANGEABLE", "allows", "resume_checkpoint"]

#: /3: the run configuration is TrainConfig's fields (momentum at the top level) and the guard's settings
CHECKPOINT_FORMAT = "smlib.fit/3"
_KEYS = ("step", "epoch", "batch_in_epoch", "model", "optimizer", "scheduler", "objective_state", "rng", "history",
         "perm", "log_window", "config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names the file and what is wrong."""


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically (`smlib._io.atomic_write`).

    A crash at any moment leaves either the previous checkpoint or the new one, never a torn
    file (and no stale temporary file once the next write has run).
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(Path(path), buf.getvalue(), what="checkpoint")


def load_checkpoint(path) -> dict:
    """Load a checkpoint written by `fit` (on CPU, ``weights_only=True``), or say precisely why not.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    CheckpointError
        ``path`` is a folder; the file is empty, truncated, corrupt or not a ``torch.save`` file;
        it holds something other than an smlib.fit checkpoint, or one of an older format.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; give a file path such as {path / 'run.pt'}")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): not written by smlib's atomic writer "
                              "(which never leaves a partial file); delete it to start afresh")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} ({size} bytes) is truncated, corrupt or not a torch.save file "
                              f"({type(err).__name__}: {first}); delete it to start afresh") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not an smlib.fit checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a checkpoint of format {state['format']!r}; this smlib reads "
                              f"{CHECKPOINT_FORMAT!r} (the settings of an older checkpoint cannot be checked on resume)")
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}: not written by smlib.train.fit")
    return state


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "data":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def allows(name: str, setting: str) -> bool:
    """Whether ``allow_changes`` entry ``name`` covers the flattened ``setting``: the same key, or a
    sub-setting of a group ("objective" covers "objective.sigma"). Never a string prefix: "lr"
    does not cover "lr_schedule"."""
    return setting == name or setting.startswith(name + ".")


def compare_configs(path, saved: dict, current: dict, allow=()) -> list[dict]:
    """The allowed differences between a checkpoint's run configuration and the call's.

    Every setting either configuration holds is compared (the union of their keys: a setting the
    checkpoint did not record differs from any value now). Raises :class:`CheckpointError` naming
    the file and every setting that differs and is not covered by a name in ``allow`` (see
    :func:`allows`; the names must be in :data:`CHANGEABLE`). Returns the allowed differences as
    ``[{"setting", "from", "to"}]``.
    """
    allow = _allowed(allow)
    old, new = _flatten(saved), _flatten(current)
    diffs = [(k, old.get(k, "<absent>"), new.get(k, "<absent>")) for k in sorted(set(old) | set(new))
             if old.get(k, "<absent>") != new.get(k, "<absent>")]
    refused = [d for d in diffs if not any(allows(n, d[0]) for n in allow)]
    if refused:
        lines = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, a, b in refused)
        hint = sorted({n for k, _, _ in refused for n in CHANGEABLE if allows(n, k)})
        fixed = all(any(allows(n, k) for n in CHANGEABLE) for k, _, _ in refused)
        more = f" — or pass allow_changes={hint} to apply them" if fixed else ""
        raise CheckpointError(f"cannot resume {path}: the run was set up differently ({lines}). "
                              f"Use the original settings, another checkpoint path{more}")
    changes = [{"setting": k, "from": a, "to": b} for k, a, b in diffs]
    if changes:
        warnings.warn(f"resuming {path} with changed settings: "
                      + "; ".join(f"{c['setting']} {c['from']!r} -> {c['to']!r}" for c in changes), stacklevel=6)
    return changes


def resume_checkpoint(config, run: dict) -> tuple[dict, list[dict]]:
    """The checkpoint ``config.checkpoint`` and its allowed changes, checked against the run configuration
    ``run`` (:func:`compare_configs`) and against ``config``'s length (a checkpoint past ``n_steps`` or
    ``n_epochs`` cannot give a shorter run)."""
    ck = load_checkpoint(config.checkpoint)
    changes = compare_configs(config.checkpoint, ck["config"], run, config.allow_changes)
    if config.n_steps is not None and ck["step"] > config.n_steps:
        raise ValueError(f"checkpoint {config.checkpoint} is at step {ck['step']}, beyond n_steps={config.n_steps}: "
                         "a resume cannot return a model trained for fewer steps")
    if config.n_epochs is not None and ck["epoch"] > config.n_epochs:
        raise ValueError(f"checkpoint {config.checkpoint} is at epoch {ck['epoch']}, beyond n_epochs={config.n_epochs}")
    return ck, changes
