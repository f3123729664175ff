"""Rerun a chapter with overridden parameters: ``python -m smlib.book.rerun CHAPTER.md -p NAME VALUE ...``.

Papermill reads notebooks, not MyST markdown, so the chapter is converted with jupytext first.
Every ``-p NAME`` must be a variable assigned in the chapter's cell tagged ``parameters``:
an unknown name is an error, never silently ignored (papermill itself only warns).
The executed notebook lands in ``_build/reruns/<chapter>.ipynb`` unless ``-o`` says otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from smlib._cli import parse_value

__all__ = ["chapter_parameters", "check_types", "rerun", "main"]


def _load(chapter: str | os.PathLike):
    import jupytext

    path = Path(chapter)
    if not path.exists():
        raise FileNotFoundError(f"no chapter at {path}")
    return jupytext.read(path)


def chapter_parameters(chapter: str | os.PathLike) -> dict:
    """Names and default values (as source text) of the chapter's ``parameters`` cell."""
    from papermill.inspection import _infer_parameters

    nb = _load(chapter)
    for cell in nb.cells:  # papermill expects every cell to carry a tags list
        cell.metadata.setdefault("tags", [])
    tagged = [c for c in nb.cells if "parameters" in c.metadata.tags]
    if len(tagged) > 1:
        raise ValueError(f"{chapter} has {len(tagged)} cells tagged 'parameters'; it must have one")
    if not tagged:
        return {}
    return {p.name: p.default for p in _infer_parameters(nb)}


def _shown(chapter) -> str:
    """The chapter's path as a user types it: relative to the current folder, never a machine's absolute path."""
    path = Path(chapter)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return f"chapters/{path.name}"


def _typed(value) -> str:
    """A value as typed on the command line, so that `parse_value` reads it back."""
    if isinstance(value, str) and parse_value(value) == value:
        return value
    return json.dumps(value)


def rerun(chapter: str | os.PathLike, parameters: dict | None = None, output: str | os.PathLike | None = None,
          *, kernel: str = "python3", timeout: int | None = None, progress: bool = True) -> Path:
    """Execute ``chapter`` (MyST .md) with ``parameters`` injected by papermill; return the output path."""
    import jupytext
    import papermill as pm

    parameters = dict(parameters or {})
    known = chapter_parameters(chapter)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        where = f"its parameters cell defines: {', '.join(sorted(known))}" if known else "it has no parameters cell"
        raise ValueError(f"unknown parameter(s) {unknown} for {chapter}; {where}")
    check_types(chapter, parameters)
    output = Path(output or Path("_build/reruns") / (Path(chapter).stem + ".ipynb"))
    output.parent.mkdir(parents=True, exist_ok=True)
    source = output.with_suffix(".source.ipynb")
    jupytext.write(_load(chapter), source)
    os.environ.setdefault("SMLIB_RERUN_COMMAND", "python -m smlib.book.rerun " + " ".join(
        [shlex.quote(_shown(chapter))] + [f"-p {k} {shlex.quote(_typed(v))}" for k, v in parameters.items()]))
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(source), str(output), parameters=parameters, kernel_name=kernel,
                            cwd=str(Path(chapter).resolve().parent), progress_bar=progress,
                            execution_timeout=timeout)
    finally:
        source.unlink(missing_ok=True)
    print(f"{chapter}: executed in {time.perf_counter() - start:.1f} s -> {output}")
    return output


def check_types(chapter, parameters: dict) -> None:
    """Each value must fit the type of its default in the parameters cell (an int where an int stands,
    a number where a float stands, …); a default of None accepts anything. ValueError names the parameter."""
    import ast

    defaults = chapter_parameters(chapter)
    for name, value in parameters.items():
        try:
            default = ast.literal_eval(defaults[name])
        except (ValueError, SyntaxError, KeyError):
            continue  # not a literal default: nothing to check against
        if default is None:
            continue
        ok = {bool: lambda v: isinstance(v, bool),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str),
              list: lambda v: isinstance(v, list), tuple: lambda v: isinstance(v, (list, tuple)),
              dict: lambda v: isinstance(v, dict)}.get(type(default), lambda v: True)
        if not ok(value):
            raise ValueError(f"parameter {name!r} of {chapter} is a {type(default).__name__} (default "
                             f"{defaults[name]}); got {value!r} ({type(value).__name__})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smlib.book.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("chapter", help="path of a chapter, e.g. chapters/09_deen.md")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a parameter (typed as by python -m smlib.experiments --set: 3, 1e-4, True, None, "
                             "[1, 2], \"text\", else a string; finite numbers only)")
    parser.add_argument("-r", "--raw", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a parameter with a raw string value")
    parser.add_argument("-o", "--output", help="executed notebook path (default _build/reruns/<chapter>.ipynb)")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    parser.add_argument("--list", action="store_true", help="print the chapter's parameters and exit")
    args = parser.parse_args(argv)
    try:
        if args.list:
            for name, default in chapter_parameters(args.chapter).items():
                print(f"{name} = {default}")
            return 0
        params = {name: parse_value(v, f"-p {name} {v}") for name, v in args.parameter}
        params.update({name: v for name, v in args.raw})
        rerun(args.chapter, params, args.output, timeout=args.timeout)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
