r"""How an experiment runs: presets, units of work, resumable training, and one record.

An :class:`Experiment` is a paper's protocol written once: presets of its sizes (``"ci"``, small
enough for the book's live build, and ``"paper"``), the list of **units** a configuration needs
(one estimator × seed, one data set × model, ...), how to run one unit, and how to turn the
units' results into numbers, figures and claims. :func:`run` executes it:

* each unit trains through `smlib.train.fit` with a checkpoint in the work folder
  (``<workdir>/<record name>/<unit>.pt``), so a run killed at any moment continues where its
  last checkpoint left off when the same command is given again; a finished unit leaves
  ``<unit>.json`` (its result and provenance) and is not run again;
* units can be run one per process (``only=``), on different cores, days or machines, as long
  as they share the work folder; ``record=True`` then merges them;
* the configuration is stored in the work folder and compared on every run: a unit is never
  continued or reused under a changed setting (the error names each difference);
* the record goes to ``results/<name>/`` only when the configuration is exactly the paper
  preset; any other configuration is recorded as ``<name>_<scale>`` (``_custom`` with
  overrides), so a smaller run can never be shown under the paper-scale name.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import sys
import time
from pathlib import Path

from smlib import train
from smlib.experiments import records as _results

__all__ = ["Experiment", "Unit", "resolve", "run", "record_name", "load_record", "work_dir", "default_dtype", "fit_by_epoch", "unit_times"]


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
    presets: dict = {}

    def units(self, cfg: dict) -> list[Unit]:  # pragma: no cover - abstract
        raise NotImplementedError

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
    """The configuration: the preset ``scale`` with ``overrides`` applied, each checked by type."""
    if scale not in experiment.presets:
        raise ValueError(f"unknown scale {scale!r} for experiment {experiment.name!r}; "
                         f"choose one of {sorted(experiment.presets)}")
    cfg = dict(experiment.presets[scale])
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise ValueError(f"unknown setting {key!r} for experiment {experiment.name!r}; "
                             f"settings: {', '.join(sorted(cfg))}")
        default = cfg[key]
        ok = (type(value) is type(default) or (isinstance(default, float) and isinstance(value, int)
              and not isinstance(value, bool)) or default is None)
        if isinstance(default, (list, tuple)):
            ok = isinstance(value, (list, tuple))
        if not ok:
            raise ValueError(f"setting {key!r} of experiment {experiment.name!r} must be of type "
                             f"{type(default).__name__} like its preset value {default!r}, got {value!r}")
        cfg[key] = float(value) if isinstance(default, float) else value
    return _json_safe(cfg)


def record_name(experiment: Experiment, scale: str, cfg: dict) -> str:
    """``name`` for exactly the paper preset, else ``name_<scale>`` (``_custom`` if overridden)."""
    if cfg == _json_safe(experiment.presets[scale]):
        return experiment.name if scale == "paper" else f"{experiment.name}_{scale}"
    return f"{experiment.name}_{scale}_custom"


def work_dir(workdir=None) -> Path:
    """Folder of checkpoints and unit results: ``workdir``, ``$SMLIB_WORK_DIR`` or ``./_build/experiments``."""
    if workdir is not None:
        return Path(workdir)
    return Path(os.environ.get("SMLIB_WORK_DIR", Path("_build") / "experiments"))


def _diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys if old.get(k) != new.get(k)]


def _write_json(path: Path, obj) -> None:
    _results.write_json(path, obj)


def _command() -> str:
    return _results.default_command()


def _log(msg: str) -> None:
    stamp = _dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", file=sys.stderr, flush=True)


def run(experiment: Experiment, scale: str = "ci", *, overrides: dict | None = None, device="cpu", only=None,
        workdir=None, record: bool = False, progress: bool = True, quiet: bool = False) -> dict | None:
    """Run (or continue) the units of ``experiment`` and, when all are done, return its record.

    Parameters
    ----------
    experiment : Experiment
    scale : str
        A preset name, e.g. ``"ci"`` or ``"paper"``.
    overrides : dict, optional
        Settings that replace preset values (the record is then named ``<name>_<scale>_custom``).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
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

    Returns
    -------
    dict or None
        ``{"experiment", "scale", "record_name", "config", "units": {key: result}, "summary"}``
        when every unit is done; None when ``only`` left some units to other processes.
    """
    say = (lambda m: None) if quiet else _log
    cfg = resolve(experiment, scale, overrides)
    name = record_name(experiment, scale, cfg)
    folder = work_dir(workdir) / name
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = folder / "config.json"
    stored = {"experiment": experiment.name, "scale": scale, "config": cfg}
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diffs = _diff(old.get("config", {}), cfg)
        if old.get("experiment") != experiment.name or diffs:
            raise ValueError(f"{folder} holds a run of {old.get('experiment')!r} with another configuration "
                             f"({'; '.join(diffs) or 'experiment differs'}); use another workdir or delete it")
    else:
        _write_json(cfg_path, stored)
    units = experiment.units(cfg)
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate unit keys in {experiment.name}: {keys}")
    selected = units if only is None else [u for u in units if _selected(u.key, only)]
    if only is not None and not selected:
        raise ValueError(f"--only {list(only)} matches no unit of {experiment.name}; units: {', '.join(keys)}")
    say(f"{experiment.name} [{name}]: {len(units)} units, running {len(selected)} on {device}; work folder {folder}")
    ctx = None
    for i, unit in enumerate(selected, 1):
        done = folder / f"{unit.key}.json"
        if done.exists():
            say(f"  unit {i}/{len(selected)} {unit.key}: already done")
            continue
        if ctx is None:
            t0 = time.perf_counter()
            ctx = experiment.setup(cfg, device)
            say(f"  set-up (data) in {time.perf_counter() - t0:.1f} s")
        ck = folder / f"{unit.key}.pt"
        start = folder / f"{unit.key}.start.json"
        if not start.exists():  # the commit a unit started at: resuming it at another one is reported
            _write_json(start, _results.provenance(device=str(device), command=_command()))
        say(f"  unit {i}/{len(selected)} {unit.key}: {'resuming from ' + ck.name if ck.exists() else 'starting'}")
        t0 = time.perf_counter()
        result = experiment.run_unit(ctx, unit, cfg, checkpoint=ck, device=device, progress=progress)
        wall = time.perf_counter() - t0
        prov = _results.provenance(wall_time_s=wall, device=str(device), command=_command(),
                                   parameters={"unit": unit.key, **dict(unit)})
        prov["started"] = json.loads(start.read_text())
        prov["train_wall_time_s"] = result.pop("train_wall_time_s", None) if isinstance(result, dict) else None
        _write_json(done, {"unit": unit.key, "params": dict(unit), "result": _json_safe(result), "provenance": prov})
        say(f"  unit {i}/{len(selected)} {unit.key}: done in {wall:.1f} s (this session)")
    missing = [k for k in keys if not (folder / f"{k}.json").exists()]
    if missing:
        say(f"{experiment.name}: {len(missing)} unit(s) not done yet: {', '.join(missing)}")
        if record:
            raise ValueError(f"cannot record {name}: units not done: {', '.join(missing)}")
        return None
    docs = {k: json.loads((folder / f"{k}.json").read_text()) for k in keys}
    if ctx is None:
        ctx = experiment.setup(cfg, device)
    t0 = time.perf_counter()
    summary = experiment.summarise(ctx, cfg, {k: d["result"] for k, d in docs.items()})
    rec = {"experiment": experiment.name, "scale": scale, "record_name": name, "config": cfg,
           "units": {k: d["result"] for k, d in docs.items()}, "summary": _json_safe(summary),
           "unit_wall_time_s": {k: d["provenance"]["wall_time_s"] for k, d in docs.items()}}
    if record:
        prov = _merged_provenance(docs, cfg, scale, device, time.perf_counter() - t0)
        figs = experiment.figures(rec)
        out = _results.save(name, rec, provenance=prov, figures=figs)
        _close(figs)
        say(f"recorded {out}")
    return rec


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


def _merged_provenance(docs: dict, cfg: dict, scale: str, device, summary_s: float) -> dict:
    """One provenance for the record: the units' commit (which must be one), commands, devices, wall times."""
    provs = {k: d["provenance"] for k, d in docs.items()}
    commits = sorted({str(p.get("commit")) for p in provs.values()} | {str(p["started"].get("commit"))
                                                                        for p in provs.values() if "started" in p})
    if len(commits) != 1:
        raise ValueError("the units were run at different commits "
                         + "; ".join(f"{k}: {p.get('commit')}" for k, p in provs.items())
                         + " — rerun them at one commit before recording")
    # wall time of the units: fit's own training time (all sessions of a resumed unit) where known
    wall = sum(float(p.get("train_wall_time_s") or p.get("wall_time_s") or 0.0) for p in provs.values()) + summary_s
    prov = _results.provenance(wall_time_s=wall, device=str(device), command=_command(),
                               parameters={"scale": scale, **cfg})
    prov["record_commit"] = prov["commit"]  # the code that merged the units and computed the summary
    prov["commit"] = None if commits[0] == "None" else commits[0]  # the code that trained and evaluated them
    prov["commit_dirty"] = any(bool(p.get("commit_dirty")) for p in provs.values())
    prov["unit_commands"] = sorted({p["command"] for p in provs.values()})
    prov["unit_devices"] = sorted({p["device"] for p in provs.values()})
    prov["units"] = {k: {"wall_time_s": p.get("train_wall_time_s") or p["wall_time_s"], "date": p["date"],
                         "started": p.get("started", {}).get("date"), "device": p["device"]}
                     for k, p in provs.items()}
    return prov


def load_record(name: str) -> dict | None:
    """The recorded ``{"provenance", "data"}`` of ``results/<name>/``, or None (see `smlib.experiments.records`)."""
    return _results.load(name)


@contextlib.contextmanager
def default_dtype(dtype):
    """Run a block with ``torch.get_default_dtype() == dtype`` (model initialisation independent of the caller's)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def fit_by_epoch(model, X, objective, options, cfg: dict, *, seed: int, device, progress: bool, checkpoint, callback):
    """`smlib.train.fit` as a protocol runs it: ``cfg``'s epochs, batch size and optimiser, one log line,
    one checkpoint and one ``callback`` per epoch, resuming from ``checkpoint`` when it exists."""
    per_epoch = math.ceil(len(X) / cfg["batch_size"])
    return train.fit(model, X, objective, options=options, n_epochs=cfg["n_epochs"], batch_size=cfg["batch_size"],
                     optimizer=cfg["optimizer"], lr=cfg["lr"], momentum=cfg["momentum"], device=device, seed=seed,
                     progress=progress, log_every=per_epoch, checkpoint=checkpoint, checkpoint_every=per_epoch,
                     resume=True, callback=callback)


def unit_times(record: dict) -> dict:
    """Seconds per unit: a resumed unit's training time over all its sessions where the record carries its
    provenance (a loaded record, `smlib.book.reproduction.recorded`), else the wall time of its last session."""
    units = (record.get("provenance") or {}).get("units") or {}
    return {k: float(units.get(k, {}).get("wall_time_s", v)) for k, v in record.get("unit_wall_time_s", {}).items()}

