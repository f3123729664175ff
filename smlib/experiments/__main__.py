"""python -m smlib.experiments NAME --scale paper --device cpu|cuda [--only UNIT] [--seed S] [--workers N] [--record]"""
from __future__ import annotations

import argparse
import sys

from smlib import experiments
from smlib._cli import parse_value
from smlib.experiments import runner, workers
from smlib.experiments.locks import LockHeld


def claims_text(rec: dict) -> str:
    """The claims of a record as plain text: verdict, claim, numbers (one claim per paragraph)."""
    claims = (rec.get("summary") or {}).get("claims") or []
    if not claims:
        return f"{rec['record_name']}: no claims"
    width = max(len(str(c.get("verdict", ""))) for c in claims)
    lines = [f"claims of {rec['record_name']} (this run):"]
    for c in claims:
        lines.append(f"  {str(c.get('verdict', '?')):{width}s}  {c.get('claim', '?')}")
        if c.get("numbers"):
            lines.append(f"  {'':{width}s}    {c['numbers']}")
    return "\n".join(lines)


def _parser(names) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m smlib.experiments",
                                description="Run a paper's experiment (resumable; see smlib.experiments).")
    p.add_argument("name", nargs="?", help=f"one of: {', '.join(names)}")
    p.add_argument("--scale", default="ci", help="preset: ci (small, default) or paper")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--only", action="append", metavar="UNIT",
                   help="run only this unit (repeatable; a trailing * matches a prefix, e.g. 'SM-*')")
    p.add_argument("--seed", type=int, action="append", help="run only the units of this seed (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset setting (3, 0.1, true, null, [1, 2], \"text\"; finite numbers only); "
                        "the record is then named NAME_SCALE_custom")
    p.add_argument("--workers", nargs="?", type=int, const=workers.default_workers(), metavar="N",
                   help=f"run the units as N worker processes of one thread each (default N: cores - 1 = "
                        f"{workers.default_workers()}), then merge them")
    p.add_argument("--wait", action="store_true", help="wait for a unit another process is running instead of refusing it")
    p.add_argument("--record", action="store_true", help="save the record under results/ once every unit is done")
    p.add_argument("--allow-dirty-record", action="store_true",
                   help="record even though smlib's source changed since the units ran (the record says so)")
    p.add_argument("--workdir", help="checkpoints and unit results (default $SMLIB_WORK_DIR or _build/experiments)")
    p.add_argument("--list", action="store_true", help="list the experiments, or an experiment's settings and units")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --workers' processes
    return p


def main(argv=None) -> int:
    parser = _parser(experiments.EXPERIMENTS)
    args = parser.parse_args(argv)
    try:
        if args.name is None:
            if not args.list:
                parser.error("name an experiment (or --list)")
            for name in experiments.EXPERIMENTS:
                print(f"{name:22s} {experiments.get(name).title}")
            return 0
        exp = experiments.get(args.name)
        overrides = {}
        for item in args.set:
            if "=" not in item:
                raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
            key, value = item.split("=", 1)
            overrides[key.strip()] = parse_value(value, f"--set {item}")
        cfg = runner.resolve(exp, args.scale, overrides)
        units = exp.units(cfg)
        if args.list:
            print(f"{exp.name}: {exp.title}\nscale {args.scale!r} -> record {runner.record_name(exp, args.scale, cfg)}")
            for key, value in cfg.items():
                print(f"  {key} = {value!r}")
            print("units: " + ", ".join(u.key for u in units))
            return 0
        # checked here, before any set-up, so that the message names the option
        device = runner.check_device(args.device, "--device")
        runner.work_dir(args.workdir, "--workdir")
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {args.workers}")
        only = list(args.only) if args.only else None
        if args.seed:
            seeded = [u.key for u in units if u.get("seed") in args.seed]
            if not seeded:
                raise ValueError(f"--seed {args.seed} matches no unit; units: {', '.join(u.key for u in units)}")
            only = seeded if only is None else [k for k in seeded if runner._selected(k, only)]
        common = dict(overrides=overrides, device=device, only=only, workdir=args.workdir)
        if args.worker:
            workers.one_thread()
            runner.run(exp, args.scale, **common, progress=False, skip_locked=True)
            return 0
        if args.workers is not None:
            _, _, folder, _, selected, _ = runner.prepare(exp, args.scale, **common)
            todo = [u for u in selected if not (folder / f"{u.key}.json").exists()]
            first = [u.key for u in todo if u.key.startswith(tuple(exp.prerequisite_units))] if exp.prerequisite_units else []
            for phase in (first, [u.key for u in todo if u.key not in first]):  # what other units read, first
                if phase:
                    workers.run_workers(exp.name, args.scale, min(args.workers, len(phase)), **{
                        **common, "only": phase, "workdir": runner.work_dir(args.workdir)}, say=runner._log)
        rec = runner.run(exp, args.scale, **common, record=args.record, progress=not args.no_progress,
                         wait=args.wait, allow_dirty_record=args.allow_dirty_record)
        if rec is not None:
            print(claims_text(rec))
    except (ValueError, FileNotFoundError, LockHeld) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
