"""Check an experiment's selections against their grids before the units that read them train:
``python -m smlib.experiments.selection NAME [--scale paper] [--workdir DIR]``.

A value chosen at an edge of its grid (a learning rate of ``swersky2011``, ``swersky2011_features``,
``deen_mnist`` or ``deen_patches``) may be better outside it, and every claim that reads it is "not
testable" by the grid-edge gate of :mod:`smlib.experiments.verdicts`. Run this after the selection
units (``--only 'lr-*'`` or ``--only 'select-*'``) and extend the grid before hours of training go into
a gated verdict. It reads the configuration the work folder was made with (its ``config.json``), prints
each choice and exits 0 when every one is inside its grid, 3 when one sits at an edge (the gate's own
rule, :func:`~smlib.experiments.verdicts.grid_edge`), 2 when a selection has not run or the folder is
not the experiment's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import smlib.experiments as E
from smlib.experiments import records, runner
from smlib.experiments import verdicts as V

__all__ = ["check", "main"]


def check(name: str, folder: str | Path) -> list[tuple[str, float, list, V.Gate]]:
    """``(what, chosen, grid, gate)`` for each selection made in the work folder ``folder`` of experiment
    ``name``. Raises ValueError when the folder holds no run of that experiment or a selection has not run."""
    exp = E.get(name)
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} is not a work folder of {name!r} (no config.json); "
                         f"it is <workdir>/<record name>, e.g. _build/experiments/{name}")
    doc = records.read_json(path, what="config file", required=("experiment", "config"))
    if doc["experiment"] != name:
        raise ValueError(f"{folder} holds a run of {doc['experiment']!r}, not {name!r}")
    try:
        chosen = exp.selections(doc["config"], Path(folder))
    except RuntimeError as err:  # swersky2011: a selection unit that has not run
        raise ValueError(str(err)) from None
    return [(what, value, grid, V.grid_edge([value], grid, what)) for what, value, grid in chosen]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smlib.experiments.selection", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(E.EXPERIMENTS))
    parser.add_argument("--scale", default="paper", help="the preset whose work folder to read (default: paper)")
    parser.add_argument("--workdir", default=None, help="as given to python -m smlib.experiments (default: "
                        "$SMLIB_WORK_DIR or _build/experiments)")
    parser.add_argument("--record-name", default=None, help="the work folder's name if the run had --set "
                        "overrides (e.g. swersky2011_paper_custom)")
    args = parser.parse_args(argv)
    try:
        exp = E.get(args.name)
        cfg = runner.resolve(exp, args.scale)
        folder = runner.work_dir(args.workdir, "--workdir") / (args.record_name or runner.record_name(exp, args.scale, cfg))
        rows = check(args.name, folder)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not rows:
        print(f"{args.name}: no selection units in this configuration")
    for what, value, grid, gate in rows:
        print(f"{args.name}: {what} {value:g} from {[float(g) for g in grid]}: "
              + ("inside the grid" if gate.ok else f"AT THE EDGE — extend the grid before training ({gate.reason})"))
    return 0 if all(g.ok for *_, g in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
