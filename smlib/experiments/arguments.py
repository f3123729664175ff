"""The arguments of a run, checked before anything is set up or written: the device, the work folder,
and the command line that a record names (as a user types it)."""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from smlib.train.setup import resolve_device

__all__ = ["work_dir", "check_device", "command_line"]


def work_dir(workdir=None, option: str = "workdir") -> Path:
    """Folder of checkpoints and unit results: ``workdir``, ``$SMLIB_WORK_DIR`` or ``./_build/experiments``;
    ValueError naming ``option`` when it (or a folder above it) is a file."""
    path = Path(workdir if workdir is not None else os.environ.get("SMLIB_WORK_DIR", Path("_build") / "experiments"))
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "" if p == path else f" ({p} is a file)"
                raise ValueError(f"{option} {path} is not a folder{where}; give a folder for checkpoints and unit results")
            break
    return path


def check_device(device, option: str = "device") -> str:
    """``device`` as given if `fit` can train on it here (cpu, cuda, cuda:N): the check `fit` makes
    (`smlib.train.setup.resolve_device`), run before any set-up; ValueError naming ``option`` otherwise.
    ``"auto"`` is refused: a record names the device its units ran on."""
    if device == "auto":
        raise ValueError(f"{option} 'auto' would leave the record's device open; give cpu, cuda or cuda:N")
    resolve_device(device, option)
    return str(device)


def command_line(name: str, scale: str, *, overrides=None, device="cpu", only=None, record=False) -> str:
    """The command that runs this configuration, as a user types it (no machine paths, work folder or
    progress options: they do not change a result)."""
    parts = ["python", "-m", "smlib.experiments", name, "--scale", scale, "--device", str(device)]
    for key in sorted(overrides or {}):
        parts += ["--set", f"{key}={json.dumps(overrides[key])}"]
    for pattern in ([only] if isinstance(only, str) else only or []):
        parts += ["--only", pattern]
    return shlex.join(parts + (["--record"] if record else []))
