"""Recorded results: JSON + PNG under ``results/`` with provenance.

A paper-scale rerun (a papermill run on a GPU, see ``smlib.book.rerun``) calls :func:`save` at its end;
the chapter's live CPU run calls :func:`load` to show the recorded numbers beside its own, labelled
as recorded. Provenance answers *who made this, how, where, when and how long it took*.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

import smlib
from smlib._io import atomic_write

__all__ = ["results_dir", "provenance", "save", "load", "dumps", "atomic_write_bytes"]



def results_dir() -> Path:
    """Folder of recorded results.

    ``$SMLIB_RESULTS_DIR`` when set (the Makefile sets it for the book, the tests and reruns);
    otherwise the ``results/`` folder of the book the current directory belongs to: the first of
    the current directory and its parents that holds ``_toc.yml`` and ``results/`` (so a chapter
    opened in Jupyter, whose working directory is ``chapters/``, finds it); otherwise
    ``./results``. The location never depends on where smlib is installed.
    """
    env = os.environ.get("SMLIB_RESULTS_DIR")
    if env:
        return Path(env).expanduser()
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "results").is_dir():
            return folder / "results"
    return here / "results"


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see the old file or the whole new one, never half."""
    atomic_write(path, payload)


def _git(*args: str) -> str | None:
    """Run git in the book folder that holds the results (None when that is not a git checkout)."""
    try:
        out = subprocess.run(["git", *args], cwd=results_dir().resolve().parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _device_name(device: str | None) -> str:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _versions(torch_version: str, smlib_version: str) -> dict:
    """Versions of Python, PyTorch, smlib and the numerical packages a result can depend on."""
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch_version, "smlib": smlib_version}
    for dist in ("numpy", "scipy", "scikit-image", "scikit-learn", "PyWavelets"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(*, wall_time_s: float | None = None, device: str | None = None,
               command: str | None = None, parameters: dict | None = None) -> dict:
    """Who/what/where/when of a run: command, commit, device, date, wall time, versions.

    ``command`` defaults to ``$SMLIB_RERUN_COMMAND`` (set by ``python -m smlib.book.rerun``), else argv.
    """
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": command or os.environ.get("SMLIB_RERUN_COMMAND") or " ".join(sys.argv),
        "commit": commit,
        "commit_dirty": bool(dirty) if dirty is not None else None,
        "device": _device_name(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 2),
        "parameters": parameters or {},
        "versions": _versions(torch.__version__, smlib.__version__),
        "cpu": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
    }


def dumps(obj, *, sort_keys: bool = True) -> str:
    """JSON text of a record: one key per line, but a list of plain values (a curve, a filter) on one line.

    ``json.dumps(indent=...)`` gives every number of a list its own line, which made a record of
    100-epoch curves and dewhitened filters several times larger than its content. The text parses
    back to exactly what ``json.dumps`` would have written.
    """
    def enc(o, depth):
        inner, outer = " " * (depth + 1), " " * depth
        if isinstance(o, dict) and o:
            keys = sorted(o, key=str) if sort_keys else list(o)
            items = (f"{inner}{json.dumps(k if isinstance(k, str) else json.dumps(k))}: {enc(o[k], depth + 1)}" for k in keys)
            return "{\n" + ",\n".join(items) + "\n" + outer + "}"
        if isinstance(o, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in o):
            return "[\n" + ",\n".join(inner + enc(v, depth + 1) for v in o) + "\n" + outer + "]"
        return json.dumps(o)

    return enc(obj, 0)


def save(name: str, data: dict, *, provenance: dict, figures: dict | None = None) -> Path:
    """Record ``data`` (JSON-serialisable) and ``figures`` (name -> matplotlib Figure) as ``results/<name>/``.

    Returns the folder. ``provenance`` comes from :func:`provenance` and is required: a result
    without its command, commit, device and date is not a recorded result.
    """
    missing = {"command", "commit", "device", "date", "wall_time_s"} - set(provenance)
    if missing:
        raise ValueError(f"provenance lacks {sorted(missing)}; build it with smlib.results.provenance()")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"result name must be a plain folder name, got {name!r}")
    folder = results_dir() / name
    doc = {"provenance": provenance, "data": data}
    atomic_write_bytes(folder / "results.json", json.dumps(doc, indent=1, sort_keys=True).encode())
    for fig_name, fig in (figures or {}).items():
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        atomic_write_bytes(folder / f"{fig_name}.png", buf.getvalue())
    return folder


def load(name: str) -> dict | None:
    """The recorded ``{"provenance": ..., "data": ...}`` of ``results/<name>/``, or None if not recorded."""
    path = results_dir() / name / "results.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())
