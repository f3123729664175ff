"""A reproduction in a chapter: the recorded paper-scale run beside the live one, and the claims table.

The record of an experiment (`smlib.experiments.run`) has the same layout whether it was made
live by the chapter or loaded from ``results/<name>/``, so a chapter draws both with the same
code; this module only finds the recorded one, says where it came from, and puts the two sets of
verdicts side by side.
"""
from __future__ import annotations

from smlib.book import results as _results

__all__ = ["recorded", "claims_table", "command"]


def command(name: str) -> str:
    """The command line that records experiment ``name`` at paper scale on this CPU."""
    return (f"OMP_NUM_THREADS=1 python -m smlib.experiments {name} --scale paper --device cpu --record "
            "--no-progress   # resumable: give it again after an interruption")


def recorded(name: str) -> dict | None:
    """The record of ``results/<name>/`` (its provenance printed and kept under "provenance"), or None with the command."""
    doc = _results.load(name)
    if doc is None:
        print(f"recorded (paper scale): nothing recorded yet in results/{name}/. Record it with\n    {command(name)}")
        return None
    p = doc["provenance"]
    dirty = " (uncommitted changes)" if p.get("commit_dirty") else ""
    wall = p.get("wall_time_s")
    took = f"{wall:.0f} s ({wall / 60:.1f} min) of training and evaluation" if wall is not None else "wall time unknown"
    print(f"recorded (paper scale): results/{name}/, commit {str(p.get('commit'))[:12]}{dirty}, {p.get('date')}, "
          f"{p.get('device')} ({p.get('cpu', '?')}, {p.get('torch_threads', '?')} thread(s)), {took}\n"
          f"    command: {'; '.join(p.get('unit_commands') or [p.get('command', '?')])}")
    return {**doc["data"], "provenance": p}  # the units' own times and commands live in the provenance


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_table(live: list[dict] | None, recorded: list[dict] | None, *, live_label: str = "live",
                 recorded_label: str = "recorded") -> str:
    """A Markdown table of claims with a live and a recorded column (verdict, then its numbers).

    Rows are matched by the claim's text; a claim only one run judged says "not run" in the other
    column. Each row gives the rule (the recorded run's; the live run's too where its sizes make it
    read differently); a verdict that the architecture decided says so.
    """
    live, recorded = live or [], recorded or []
    order = [c["claim"] for c in live] + [c["claim"] for c in recorded if c["claim"] not in {x["claim"] for x in live}]
    by = {"live": {c["claim"]: c for c in live}, "rec": {c["claim"]: c for c in recorded}}
    rows = [f"| claim | rule | {live_label} | {recorded_label} |", "|---|---|---|---|"]
    for claim in order:
        ref = by["rec"].get(claim) or by["live"][claim]
        rule = ref["rule"]
        if claim in by["live"] and claim in by["rec"] and by["live"][claim]["rule"] != rule:
            rule += f" — {live_label}: {by['live'][claim]['rule']}"
        cols = []
        for side in ("live", "rec"):
            c = by[side].get(claim)
            arch = " (decided by the architecture)" if c and c.get("decided_by") == "architecture" else ""
            cols.append(f"**{c['verdict']}**{arch}: {_cell(c['numbers'])}" if c else "not run")
        rows.append(f"| {_cell(claim)} | {_cell(rule)} | {cols[0]} | {cols[1]} |")
    return "\n".join(rows)
