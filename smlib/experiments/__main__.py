"""python -m smlib.experiments NAME --scale paper --device cpu|cuda [--only UNIT] [--seed S] [--record]"""
from __future__ import annotations

import argparse
import json
import sys

from smlib import experiments
from smlib.experiments import runner


def _value(text: str):
    """A typed value for --set: JSON (3, 0.1, true, [1, 2], "x") or else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smlib.experiments",
                                     description="Run a paper's experiment (resumable; see smlib.experiments).")
    parser.add_argument("name", nargs="?", help=f"one of: {', '.join(experiments.EXPERIMENTS)}")
    parser.add_argument("--scale", default="ci", help="preset: ci (small, default) or paper")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--only", action="append", metavar="UNIT",
                        help="run only this unit (repeatable; a trailing * matches a prefix, e.g. 'SM-*')")
    parser.add_argument("--seed", type=int, action="append", help="run only the units of this seed (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset setting (typed as JSON); the record is then named NAME_SCALE_custom")
    parser.add_argument("--record", action="store_true", help="save the record under results/ once every unit is done")
    parser.add_argument("--workdir", help="checkpoints and unit results (default $SMLIB_WORK_DIR or _build/experiments)")
    parser.add_argument("--list", action="store_true", help="list the experiments, or an experiment's settings and units")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        if args.name is None:
            if not args.list:
                parser.error("name an experiment (or --list)")
            for name in experiments.EXPERIMENTS:
                exp = experiments.get(name)
                print(f"{name:22s} {exp.title}")
            return 0
        exp = experiments.get(args.name)
        overrides = {}
        for item in args.set:
            if "=" not in item:
                raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            overrides[key] = _value(value)
        cfg = runner.resolve(exp, args.scale, overrides)
        units = exp.units(cfg)
        if args.list:
            print(f"{exp.name}: {exp.title}\nscale {args.scale!r} -> record {runner.record_name(exp, args.scale, cfg)}")
            for key, value in cfg.items():
                print(f"  {key} = {value!r}")
            print("units: " + ", ".join(u.key for u in units))
            return 0
        only = list(args.only) if args.only else None
        if args.seed:
            seeded = [u.key for u in units if u.get("seed") in args.seed]
            if not seeded:
                raise ValueError(f"--seed {args.seed} matches no unit; units: {', '.join(u.key for u in units)}")
            only = seeded if only is None else [k for k in seeded if runner._selected(k, only)]
        runner.run(exp, args.scale, overrides=overrides, device=args.device, only=only, workdir=args.workdir,
                   record=args.record, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
