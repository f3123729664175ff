r"""How an experiment runs: presets, units of work, resumable training, and one record.

An :class:`Experiment` is a paper's protocol written once: presets of its sizes (``"ci"``, small
enough for the book's live build, and ``"paper"``), the list of **units** a configuration needs
(one estimator × seed, one data set × model, ...), how to run one unit, and how to turn the
units' results into numbers, figures and claims. :func:`run` executes it:

* every argument is checked before anything is set up or written (settings by type and
  finiteness, the device's availability, the work folder);
* each unit trains through `smlib.train.fit` with a checkpoint in the work folder
  (``<workdir>/<record name>/<unit>.pt``), so a run killed at any moment continues where its
  last checkpoint left off when the same command is given again; a finished unit leaves
  ``<unit>.json`` (its result, time split and provenance) and is not run again;
* a unit is run under a lock (:mod:`smlib.experiments.locks`): a second process refuses it, or
  waits (``wait=True``), and a lock left by a crashed process is taken over; so units can be run
  one per process (``only=``) or by workers (:mod:`smlib.experiments.workers`) sharing the work
  folder, and ``record=True`` then merges them;
* the configuration is stored in the work folder and compared on every run: a unit is never
  continued or reused under a changed setting (the error names each difference);
* the record goes to ``results/<name>/`` only when the configuration is exactly the paper
  preset; any other configuration is recorded as ``<name>_<scale>`` (``_custom`` with
  overrides), so a smaller run can never be shown under the paper-scale name. Its provenance is
  read from the code that ran (:mod:`smlib.experiments.records`); code changed between the units
  and the record is an error unless ``allow_dirty_record=True``, and then the record says so.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import secrets
import sys
import time
from pathlib import Path

from smlib.experiments import records, schema
from smlib.experiments.arguments import check_device, command_line, work_dir
from smlib.experiments.clock import Clock, fit, timing
from smlib.experiments.locks import LockHeld, UnitLock
from smlib.experiments.presets import Preset, override, preset_dict
from smlib.train.checkpoint import load_checkpoint

__all__ = ["Experiment", "Unit", "resolve", "run", "prepare", "record_name", "load_record", "work_dir",
           "check_device", "command_line", "default_dtype", "fit", "fit_by_epoch", "timing", "unit_times", "LockHeld"]

_SESSION = f"{os.getpid()}-{secrets.token_hex(4)}"  # this process, to count each set-up once in a record


class Unit(dict):
    """One unit of work: ``Unit(key, **params)``; ``unit.key`` names it (a file-name-safe string)."""

    def __init__(self, key: str, **params):
        if not key or any(c in key for c in "/\\ ") or key.startswith("."):
            raise ValueError(f"unit key must be a plain name without '/', '\\' or spaces, got {key!r}")
        super().__init__(params)
        self.key = key


class Experiment:
    """Base class of a paper's protocol (see the module docstring); subclasses fill in the hooks."""

    name: str = ""
    title: str = ""
    presets: dict = {}  # scale name -> a `smlib.experiments.presets.Preset` instance
    #: key prefixes of units that other units read (a learning-rate selection): ``--workers`` runs them first
    prerequisite_units: tuple[str, ...] = ()

    def units(self, cfg: dict) -> list[Unit]:  # pragma: no cover - abstract
        raise NotImplementedError

    def selections(self, cfg: dict, folder: Path) -> list[tuple[str, float, list]]:
        """``(what, chosen value, grid)`` of each selection its prerequisite units made in the work folder
        ``folder`` (`smlib.experiments.selection` checks them against their grids before training)."""
        return []

    def setup(self, cfg: dict, device) -> dict:
        """Data and anything else every unit needs (deterministic given ``cfg``)."""
        return {}

    def run_unit(self, ctx: dict, unit: Unit, cfg: dict, *, checkpoint: Path, device, progress: bool) -> dict:
        raise NotImplementedError  # pragma: no cover - abstract

    def summarise(self, ctx: dict, cfg: dict, results: dict) -> dict:
        """Numbers and claims from the units' results (JSON-able)."""
        return {}

    def figures(self, record: dict) -> dict:
        """Matplotlib figures drawn from a record alone (live or recorded)."""
        return {}


def _json_safe(obj):
    """Round-trip through JSON (tuples become lists, NaN stays NaN) so live and recorded data match."""
    return json.loads(json.dumps(obj, allow_nan=True))


def resolve(experiment: Experiment, scale: str = "ci", overrides: dict | None = None) -> dict:
    """The configuration: the preset ``scale`` with ``overrides`` applied, each checked against its field's
    type and for finiteness (:func:`smlib.experiments.presets.override`); the JSON-safe dict the hooks get."""
    if scale not in experiment.presets:
        raise ValueError(f"unknown scale {scale!r} for experiment {experiment.name!r}; "
                         f"choose one of {sorted(experiment.presets)}")
    preset = experiment.presets[scale]
    if not isinstance(preset, Preset):
        raise TypeError(f"experiment {experiment.name!r}: preset {scale!r} must be a smlib.experiments.presets.Preset "
                        f"dataclass (see smlib.experiments.configs), got {type(preset).__name__}")
    return _json_safe(override(preset, overrides or {}, experiment.name).as_dict())


def record_name(experiment: Experiment, scale: str, cfg: dict) -> str:
    """``name`` for exactly the paper preset, else ``name_<scale>`` (``_custom`` if overridden)."""
    if cfg == _json_safe(preset_dict(experiment.presets, scale)):
        return experiment.name if scale == "paper" else f"{experiment.name}_{scale}"
    return f"{experiment.name}_{scale}_custom"


def _diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys if old.get(k) != new.get(k)]


def _log(msg: str) -> None:
    stamp = _dt.datetime.now().strftime("%H:%M:%S")
    worker = os.environ.get("SMLIB_WORKER")
    print(f"[{stamp}]{f' [worker {worker}]' if worker else ''} {msg}", file=sys.stderr, flush=True)


def prepare(experiment: Experiment, scale: str = "ci", *, overrides=None, device="cpu", workdir=None, only=None):
    """Check every argument, then create the work folder and its ``config.json`` (or check it against
    this configuration). Returns ``(cfg, name, folder, units, selected, device)``; nothing is written
    when an argument is wrong."""
    cfg = resolve(experiment, scale, overrides)
    device = check_device(device)
    root = work_dir(workdir)
    name = record_name(experiment, scale, cfg)
    units = experiment.units(cfg)
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate unit keys in {experiment.name}: {keys}")
    selected = units if only is None else [u for u in units if _selected(u.key, only)]
    if only is not None and not selected:
        raise ValueError(f"--only {list(only)} matches no unit of {experiment.name}; units: {', '.join(keys)}")
    json.dumps(cfg, allow_nan=False)  # nothing non-finite reaches config.json (resolve checked each override)
    folder = root / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the work folder {folder}: {err.strerror or err}") from None
    cfg_path = folder / "config.json"
    if cfg_path.exists():
        old = records.read_json(cfg_path, what="config file", required=("experiment", "config"),
                                hint="it is not a work folder's config; delete the folder or use another workdir")
        diffs = _diff(old["config"], cfg) if isinstance(old["config"], dict) else ["config is not an object"]
        if old.get("experiment") != experiment.name or diffs:
            raise ValueError(f"{folder} holds a run of {old.get('experiment')!r} with another configuration "
                             f"({'; '.join(diffs) or 'experiment differs'}); use another workdir or delete it")
    else:
        records.write_json(cfg_path, {"experiment": experiment.name, "scale": scale, "config": cfg})
    return cfg, name, folder, units, selected, device


def _unit_file(folder: Path, key: str, suffix: str) -> Path:
    return folder / f"{key}{suffix}"


def _read_unit(folder: Path, unit: Unit) -> dict:
    path = _unit_file(folder, unit.key, ".json")
    doc = records.read_json(path, what=f"unit file of {unit.key}", required=("unit", "params", "result", "provenance"),
                            hint=f"delete it to run unit {unit.key} again")
    if doc["unit"] != unit.key or doc["params"] != _json_safe(dict(unit)):
        raise ValueError(f"unit file {path} was written for unit {doc['unit']!r} with {doc['params']!r}, "
                         f"not {unit.key!r} with {dict(unit)!r}; delete it to run the unit again")
    return doc


def run(experiment: Experiment, scale: str = "ci", *, overrides: dict | None = None, device="cpu", only=None,
        workdir=None, record: bool = False, progress: bool = True, quiet: bool = False, wait: bool = False,
        allow_dirty_record: bool = False, skip_locked: bool = False) -> dict | None:
    """Run (or continue) the units of ``experiment`` and, when all are done, return its record.

    Parameters
    ----------
    experiment : Experiment
    scale : str
        A preset name, e.g. ``"ci"`` or ``"paper"``.
    overrides : dict, optional
        Settings that replace preset values (the record is then named ``<name>_<scale>_custom``).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (checked before anything is set up).
    only : iterable of str, optional
        Run just these units (keys, or prefixes ending in ``*``); the others are left as they are.
    workdir : path, optional
        See :func:`work_dir`.
    record : bool
        Save the record under ``results/`` (:mod:`smlib.experiments.records`) once every unit is done.
    progress : bool
        Progress bars of the training loops.
    quiet : bool
        No progress lines on stderr.
    wait : bool
        Wait for a unit that another process is running, instead of refusing it (:class:`LockHeld`,
        raised after the other units are run).
    allow_dirty_record : bool
        Record even though smlib's source changed since the units ran (the record then says so).
    skip_locked : bool
        Leave a unit another process runs to that process, silently (the workers' mode).

    Returns
    -------
    dict or None
        ``{"experiment", "scale", "record_name", "config", "units": {key: result}, "summary",
        "unit_wall_time_s"}`` when every unit is done; None when some are left to other processes.
    """
    say = (lambda m: None) if quiet else _log
    cfg, name, folder, units, selected, device = prepare(experiment, scale, overrides=overrides, device=device,
                                                         workdir=workdir, only=only)
    command = command_line(experiment.name, scale, overrides=overrides, device=device, only=only, record=record)
    say(f"{experiment.name} [{name}]: {len(units)} units, running {len(selected)} on {device}; work folder {folder}")
    session, held = {"ctx": None, "data_s": None}, []
    for i, unit in enumerate(selected, 1):
        tag = f"  unit {i}/{len(selected)} {unit.key}"
        if _unit_file(folder, unit.key, ".json").exists():
            _read_unit(folder, unit)
            say(f"{tag}: already done")
            continue
        lock = UnitLock(_unit_file(folder, unit.key, ".lock"), what=f"unit {unit.key} of {name}", note=command)
        try:
            lock.acquire(wait=wait, say=say)
        except LockHeld as err:
            if not skip_locked:
                held.append(str(err))
                say(f"{tag}: {err}")
            continue
        try:
            if lock.stale:
                say(f"{tag}: took over the lock of process {lock.stale.get('pid')} (since {lock.stale.get('since')}), "
                    "which is no longer running")
            if _unit_file(folder, unit.key, ".json").exists():
                say(f"{tag}: done meanwhile by another process")
                continue
            _run_unit(experiment, session, unit, cfg, folder, device, progress, command, tag, say)
        finally:
            lock.release()
    if held:
        raise LockHeld("; ".join(held))
    if skip_locked:
        return None  # a worker leaves the merge to the command that started it
    missing = [u.key for u in units if not _unit_file(folder, u.key, ".json").exists()]
    if missing:
        say(f"{experiment.name}: {len(missing)} unit(s) not done yet: {', '.join(missing)}")
        if record:
            raise ValueError(f"cannot record {name}: units not done: {', '.join(missing)}")
        return None
    docs = {u.key: _read_unit(folder, u) for u in units}
    ctx = session["ctx"] if session["ctx"] is not None else experiment.setup(cfg, device)
    t0 = time.perf_counter()
    summary = experiment.summarise(ctx, cfg, {k: d["result"] for k, d in docs.items()})
    rec = {"experiment": experiment.name, "scale": scale, "record_name": name, "config": cfg,
           "units": {k: d["result"] for k, d in docs.items()}, "summary": _json_safe(summary),
           "unit_wall_time_s": {k: d["provenance"]["wall_time_s"] for k, d in docs.items()}}
    if record:
        schema.RecordData.from_dict(rec, source=f"the record {name}")  # a record is checked before it is written
        prov = records.merge_provenance({k: d["provenance"] for k, d in docs.items()}, command=command,
                                        device=device, parameters={"scale": scale, **cfg},
                                        summary_s=time.perf_counter() - t0, allow_changed=allow_dirty_record)
        figs = experiment.figures(rec)
        out = records.save(name, rec, provenance=prov, figures=figs)
        _close(figs)
        say(f"recorded {out}")
    return rec


def _run_unit(experiment, session, unit, cfg, folder, device, progress, command, tag, say) -> None:
    """Run one unit (the caller holds its lock) and write ``<unit>.json``."""
    import torch

    if session["ctx"] is None:
        t0 = time.perf_counter()
        session["ctx"] = experiment.setup(cfg, device)
        session["data_s"] = time.perf_counter() - t0
        say(f"  set-up (data) in {session['data_s']:.1f} s")
    ck, start = _unit_file(folder, unit.key, ".pt"), _unit_file(folder, unit.key, ".start.json")
    if start.exists():  # the code a unit started with: resuming it with other code is reported at the record
        started = records.read_json(start, what=f"start file of {unit.key}", required=("commit", "date"),
                                    hint=f"delete it and {unit.key}.pt to run the unit afresh")
    else:
        started = records.provenance(device=device, command=command)
        records.write_json(start, started)
    resumed = ck.exists()
    say(f"{tag}: {'resuming from ' + ck.name if resumed else 'starting'}")
    dtype = torch.get_default_dtype()
    with Clock() as clock:
        try:
            result = experiment.run_unit(session["ctx"], unit, cfg, checkpoint=ck, device=device, progress=progress)
        finally:
            leaked = torch.get_default_dtype()
            torch.set_default_dtype(dtype)
    if leaked != dtype:
        raise RuntimeError(f"unit {unit.key} left torch's global default dtype at {leaked} (it was {dtype}; "
                           "restored): a protocol passes dtypes explicitly or uses runner.default_dtype")
    prov = records.provenance(wall_time_s=clock.wall_s, device=device, command=command,
                              parameters={"unit": unit.key, **dict(unit)})
    prov["started"] = started
    prov["train_wall_time_s"] = result.pop("train_wall_time_s", None) if isinstance(result, dict) else None
    prov["time"] = clock.split(data_s=session["data_s"], session=_SESSION, resumed=resumed)
    records.write_json(_unit_file(folder, unit.key, ".json"),
                       {"unit": unit.key, "params": dict(unit), "result": _json_safe(result), "provenance": prov})
    say(f"{tag}: done in {clock.wall_s:.1f} s (this session)")


def _selected(key: str, only) -> bool:
    for pattern in ([only] if isinstance(only, str) else only):
        if pattern == key or (pattern.endswith("*") and key.startswith(pattern[:-1])):
            return True
    return False


def _close(figs):
    try:
        import matplotlib.pyplot as plt

        for f in figs.values():
            plt.close(f)
    except ImportError:  # pragma: no cover
        pass


def load_record(name: str) -> dict | None:
    """The recorded ``{"provenance", "data"}`` of ``results/<name>/``, or None (see `smlib.experiments.records`),
    checked by :class:`smlib.experiments.schema.Record` (a first record, whose claims lack ids, is accepted as
    legacy until it is re-recorded)."""
    doc = records.load(name)
    if doc is not None:
        schema.Record.from_dict(doc, source=str(records.results_dir() / name / "results.json"), allow_legacy=True)
    return doc


@contextlib.contextmanager
def default_dtype(dtype):
    """Build models inside the block with ``torch.get_default_dtype() == dtype`` (initial draws independent
    of the caller's default). Torch's default is global: it is restored when the block exits, however it
    exits, and the runner checks after every unit that it is unchanged."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def fit_by_epoch(model, X, objective, options, cfg: dict, *, seed: int, device, progress: bool, checkpoint, callback,
                 stop_on_divergence: bool = False):
    """`smlib.train.fit` as a protocol runs it: ``cfg``'s epochs, batch size and optimiser, one log line,
    one checkpoint and one ``callback`` per epoch, resuming from ``checkpoint`` when it exists. Timed into
    the unit's record (:mod:`smlib.experiments.clock`): the loop as training, the callback as evaluation.

    With ``stop_on_divergence``, training that diverges (``FloatingPointError``: the divergence guard or a
    non-finite value) after at least one whole epoch ends at the last epoch's checkpoint instead: the model
    and the returned history are those of that epoch, and ``history.diverged`` says where and why
    (``None`` when training finished). A divergence in the first epoch is raised."""
    per_epoch = math.ceil(len(X) / cfg["batch_size"])

    def run(n_epochs, **allow):
        return fit(model, X, objective, options=options, n_epochs=n_epochs, batch_size=cfg["batch_size"],
                   optimizer=cfg["optimizer"], lr=cfg["lr"], momentum=cfg["momentum"], device=device, seed=seed,
                   progress=progress, log_every=per_epoch, checkpoint=checkpoint, checkpoint_every=per_epoch,
                   resume=True, callback=callback, **allow)

    try:
        history = run(cfg["n_epochs"])
    except FloatingPointError as err:
        done = (load_checkpoint(checkpoint)["epoch"]
                if stop_on_divergence and checkpoint is not None and Path(checkpoint).exists() else 0)
        if done < 1:
            raise
        history = run(done, allow_changes=("n_epochs",))  # reloads the last whole epoch; trains nothing
        history.diverged = f"epoch {done + 1}: {err}"
        return history
    history.diverged = None
    return history


def unit_times(record: dict) -> dict:
    """Seconds per unit: a resumed unit's training time over all its sessions where the record carries its
    provenance (a loaded record, `smlib.book.reproduction.recorded`), else the wall time of its last session."""
    units = (record.get("provenance") or {}).get("units") or {}
    return {k: float(units.get(k, {}).get("wall_time_s", v)) for k, v in record.get("unit_wall_time_s", {}).items()}
