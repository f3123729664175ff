"""Records of experiments: where they live, how they are written and read, and their provenance.

A record is ``results/<name>/results.json`` (``{"provenance": ..., "data": ...}``) plus small PNG
figures, written by :func:`save` and read by :func:`load`. Every JSON file of the experiments
(records, a work folder's unit files and ``config.json``) is written by :func:`write_json` in the
compact layout of :func:`dumps` and read back through :func:`read_json`, which names the file and
what is wrong with it.

Provenance (:func:`provenance`) says who made a result, how, where, when and how long it took. Its
``commit`` and ``commit_dirty`` are those of the source tree ``smlib`` was imported from (not of
the results folder), and ``source_digest`` is a SHA-256 of that package's ``.py`` files as they are
on disk, so that a change of the code between the units and the record can be detected with or
without git. What cannot be known is recorded as unknown (``None`` with ``commit_unknown_reason``),
never as clean. Records hold no absolute path of the recording machine (:func:`save` refuses one).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

import smlib
from smlib._io import atomic_write

__all__ = ["results_dir", "provenance", "source_state", "save", "load", "dumps", "write_json", "read_json",
           "unit_key", "absolute_paths", "merge_provenance", "PROVENANCE_KEYS"]

#: keys every record's provenance must have
PROVENANCE_KEYS = ("command", "commit", "commit_dirty", "device", "date", "wall_time_s")


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


def unit_key(*parts, seed: int | None = None) -> str:
    """The key of a unit of work, the one way keys are built: ``unit_key("SM", seed=0) == "SM-s0"``,
    ``unit_key("DEEN", "spiral", seed=1) == "DEEN-spiral-s1"``, ``unit_key("parzen") == "parzen"``."""
    words = [str(p) for p in parts] + ([] if seed is None else [f"s{int(seed)}"])
    key = "-".join(words)
    if not words or any(not w for w in words) or any(c in key for c in "/\\ ") or key.startswith("."):
        raise ValueError(f"a unit key is made of plain non-empty words without '/', '\\' or spaces, got {words!r}")
    return key


# ------------------------------------------------------------------------------------ JSON files
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


def write_json(path: str | os.PathLike, obj, *, what: str | None = None) -> Path:
    """Write ``obj`` to ``path`` atomically in the layout of :func:`dumps`."""
    return atomic_write(path, dumps(obj).encode(), what=what or Path(path).name)


def read_json(path: str | os.PathLike, *, what: str, required=(), hint: str = "") -> dict:
    """Read a JSON object from ``path``, or raise an error that names the file and what is wrong with it.

    Parameters
    ----------
    path : path-like
    what : str
        What the file is, for the messages (``"unit file"``, ``"config.json of the work folder"``).
    required : iterable of str
        Keys the object must have.
    hint : str
        What the user can do about a bad file (appended to the messages).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        ``path`` is a folder; the file is unreadable, empty, not JSON, not an object, or lacks a key.
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a file{tail}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise ValueError(f"cannot read {what} {path}: {err.strerror or err}{tail}") from None
    if not raw.strip():
        raise ValueError(f"{what} {path} is empty ({len(raw)} bytes){tail}")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {err.start}){tail}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno} "
                         f"({len(raw)} bytes; cut short or edited by hand?){tail}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{what} {path} holds a JSON {type(doc).__name__}, not an object{tail}")
    missing = [k for k in required if k not in doc]
    if missing:
        raise ValueError(f"{what} {path} lacks {', '.join(map(repr, missing))}{tail}")
    return doc


def absolute_paths(obj, where: str = "") -> list[str]:
    """Where ``obj`` (a JSON-able tree) holds an absolute file-system path: ``["provenance.command: /home/..."]``.

    A path is a whitespace-separated word (quotes and ``=`` stripped) that is absolute and has at
    least two components (``/usr/bin``, ``C:\\data``), so a lone ``/`` or ``1/2`` is not one.
    """
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += absolute_paths(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += absolute_paths(v, f"{where}[{i}]")
    elif isinstance(obj, str):
        for word in obj.split():
            word = word.strip("'\"(),;").split("=", 1)[-1]
            if (word.startswith(("/", "~/")) and len([p for p in word.split("/") if p]) >= 2) or \
                    (len(word) > 3 and word[1:3] in (":\\", ":/") and word[0].isalpha()):
                out.append(f"{where}: {word}")
    return out


# ------------------------------------------------------------------------------------ provenance
def _git(folder: Path, *args: str) -> tuple[str | None, str | None]:
    """``(stdout, None)`` of git run in ``folder``, or ``(None, why not)``."""
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except FileNotFoundError:
        return None, "git is not installed"
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"git failed ({type(err).__name__})"
    if out.returncode != 0:
        return None, (out.stderr.strip().splitlines() or ["git failed"])[0]
    return out.stdout, None


def package_dir() -> Path:
    """The folder of the ``smlib`` package that is running."""
    return Path(smlib.__file__).resolve().parent


def source_digest(folder: Path | None = None) -> str:
    """``sha256:<hex>`` of the package's ``.py`` files (relative paths and bytes), as they are on disk now."""
    folder = folder or package_dir()
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()


def source_state() -> dict:
    """Commit and state of the source tree ``smlib`` was imported from, read now.

    Returns ``{"commit", "commit_dirty", "commit_unknown_reason", "source_digest"}``: ``commit`` is
    the checkout's HEAD when smlib's files are tracked in it; ``commit_dirty`` is True when a file of
    the package differs from that commit (changed, staged, deleted or new and not ignored), False
    when none does, and None (with the reason) when this cannot be read — an installed copy, no git.
    """
    pkg = package_dir()
    state = {"commit": None, "commit_dirty": None, "commit_unknown_reason": None, "source_digest": source_digest(pkg)}
    top, why = _git(pkg, "rev-parse", "--show-toplevel")
    if top is None:
        state["commit_unknown_reason"] = f"smlib was not imported from a git checkout ({why})"
        return state
    tracked, why = _git(pkg, "ls-files", "--", "__init__.py")
    if not tracked or not tracked.strip():
        state["commit_unknown_reason"] = ("smlib was imported from a folder inside a git checkout that does not "
                                          "track it (an installed copy?)")
        return state
    head, why = _git(pkg, "rev-parse", "HEAD")
    status, why2 = _git(pkg, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    if head is None or status is None:
        state["commit_unknown_reason"] = f"git could not read the checkout ({why or why2})"
        return state
    state["commit"] = head.strip()
    state["commit_dirty"] = bool(status.strip())
    return state


def _device_name(device: str | None) -> str:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _versions() -> dict:
    """Versions of Python, PyTorch, smlib and the numerical packages a result can depend on."""
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__, "smlib": smlib.__version__}
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


def default_command() -> str:
    """The command of this process as a user would type it: ``$SMLIB_RERUN_COMMAND`` when set, else
    ``python`` and the arguments, with the script named by its file name (no machine path)."""
    env = os.environ.get("SMLIB_RERUN_COMMAND")
    if env:
        return env
    args = list(sys.argv)
    if args and os.path.isabs(args[0]):
        args[0] = Path(args[0]).name
    return " ".join(["python", *args]).strip()


def provenance(*, wall_time_s: float | None = None, device: str | None = None,
               command: str | None = None, parameters: dict | None = None) -> dict:
    """Who/what/where/when of a run: command, commit (see :func:`source_state`), device, date, wall time,
    versions. ``command`` defaults to :func:`default_command`."""
    return {
        "command": command or default_command(),
        **source_state(),
        "device": _device_name(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 2),
        "parameters": parameters or {},
        "versions": _versions(),
        "cpu": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
    }


def _dirty(states) -> tuple[bool | None, str | None]:
    """Tri-state "uncommitted changes" of several provenances: True if any, None if any is unknown, else False."""
    states = list(states)
    if any(p.get("commit_dirty") is True for p in states):
        return True, None
    unknown = [p for p in states if p.get("commit_dirty") is None]
    if unknown:
        return None, unknown[0].get("commit_unknown_reason") or "not recorded"
    return False, None


def merge_provenance(units: dict, *, command: str, device: str, parameters: dict, summary_s: float,
                     allow_changed: bool = False) -> dict:
    """One provenance for a record from its units' (``{key: unit provenance}``).

    The units must have run one code (one commit and one source digest, also where a unit was
    resumed); the code now on disk (which computes the summary and claims) must be that code, unless
    ``allow_changed``, and then the record says ``source_changed_since_units``. ``commit_dirty`` is
    True when any unit or the record ran on uncommitted changes, None (with the reason) when one of
    them cannot tell, False only when all are known clean.
    """
    sessions = list(units.values()) + [p["started"] for p in units.values() if isinstance(p.get("started"), dict)]
    commits = sorted({str(p.get("commit")) for p in sessions})
    digests = sorted({p["source_digest"] for p in sessions if p.get("source_digest")})
    if len(commits) != 1 or len(digests) > 1:
        raise ValueError("the units were run at different commits or with different smlib sources "
                         + "; ".join(f"{k}: {p.get('commit')} {p.get('source_digest', '')[:19]}" for k, p in units.items())
                         + " — rerun them at one commit before recording")
    now = source_state()
    changed = (bool(digests) and digests[0] != now["source_digest"]) or (
        commits[0] != "None" and now["commit"] is not None and commits[0] != now["commit"])
    if changed and not allow_changed:
        raise ValueError(f"smlib's source changed since the units ran (units: commit {commits[0]}, "
                         f"{digests[0] if digests else 'no digest'}; now: commit {now['commit']}, {now['source_digest']}), "
                         "so the summary and claims would be computed by other code than the units. Rerun the units, "
                         "or pass --allow-dirty-record (allow_dirty_record=True) to record anyway; the record then says so")
    wall = sum(float(p.get("train_wall_time_s") or p.get("wall_time_s") or 0.0) for p in units.values()) + summary_s
    prov = provenance(wall_time_s=wall, device=device, command=command, parameters=parameters)
    prov.update({f"record_{k}": prov[k] for k in ("commit", "commit_dirty", "commit_unknown_reason", "source_digest")})
    prov["commit"] = None if commits[0] == "None" else commits[0]  # the code that trained and evaluated the units
    prov["source_digest"] = digests[0] if digests else None
    prov["commit_dirty"], prov["commit_unknown_reason"] = _dirty(sessions + [now])
    if changed:
        prov["commit_dirty"] = True
        prov["source_changed_since_units"] = {"units_commit": prov["commit"], "units_source_digest": prov["source_digest"],
                                              "record_commit": now["commit"], "record_source_digest": now["source_digest"]}
    if os.environ.get("SMLIB_RERUN_COMMAND"):
        prov["via"] = os.environ["SMLIB_RERUN_COMMAND"]
    prov["unit_commands"] = sorted({p["command"] for p in units.values()})
    prov["unit_devices"] = sorted({p["device"] for p in units.values()})
    prov["units"] = {k: {"wall_time_s": p.get("train_wall_time_s") or p["wall_time_s"], "date": p["date"],
                         "started": (p.get("started") or {}).get("date"), "device": p["device"], "time": p.get("time")}
                     for k, p in units.items()}
    prov["time"] = _time_totals(units, summary_s)
    return prov


def _time_totals(units: dict, summary_s: float) -> dict:
    """Seconds of the record's units by part (None where a unit did not measure it); set-up counted once per process."""
    times = [p.get("time") or {} for p in units.values()]
    out = {}
    for part in ("train_s", "eval_s", "other_s", "wall_s"):
        vals = [t.get(part) for t in times]
        out[part] = None if any(v is None for v in vals) else round(sum(vals), 3)
    setups = {t.get("session"): t.get("data_s") for t in times if t.get("session")}
    out["data_s"] = None if not setups or any(v is None for v in setups.values()) else round(sum(setups.values()), 3)
    out["summary_s"] = round(summary_s, 3)
    return out


# ------------------------------------------------------------------------------------ records
def save(name: str, data: dict, *, provenance: dict, figures: dict | None = None) -> Path:
    """Record ``data`` (JSON-serialisable) and ``figures`` (name -> matplotlib Figure) as ``results/<name>/``.

    Returns the folder. ``provenance`` comes from :func:`provenance` and is required: a result
    without its command, commit, device and date is not a recorded result. The JSON is written by
    :func:`dumps`; a record that names an absolute path of this machine is refused.
    """
    missing = sorted(set(PROVENANCE_KEYS) - set(provenance))
    if missing:
        raise ValueError(f"provenance lacks {missing}; build it with smlib.experiments.records.provenance()")
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"result name must be a plain folder name, got {name!r}")
    doc = {"provenance": provenance, "data": data}
    paths = absolute_paths(doc)
    if paths:
        raise ValueError(f"record {name!r} would hold absolute paths of this machine ({'; '.join(paths[:3])}); "
                         "records name files relative to the book or by their name")
    folder = results_dir() / name
    write_json(folder / "results.json", doc)
    for fig_name, fig in (figures or {}).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
        atomic_write(folder / f"{fig_name}.png", buf.getvalue())
    return folder


def load(name: str) -> dict | None:
    """The recorded ``{"provenance": ..., "data": ...}`` of ``results/<name>/``, or None if not recorded."""
    path = results_dir() / name / "results.json"
    if not path.exists():
        return None
    return read_json(path, what=f"record {name!r}", required=("provenance", "data"))
