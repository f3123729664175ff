"""A reproduction in a chapter: the recorded paper-scale run beside the live one, and the claims table.

The record of an experiment (`smlib.experiments.run`) has the same layout whether it was made
live by the chapter or loaded from ``results/<name>/``, so a chapter draws both with the same
code; this module only finds the recorded one, says where it came from, and puts the two sets of
verdicts side by side.
"""
from __future__ import annotations

from smlib.book import results as _results

__all__ = ["recorded", "claims_table", "command", "gate_changes", "rules_table"]


def command(name: str) -> str:
    """The command line that records experiment ``name`` at paper scale on this CPU."""
    return (f"python -m smlib.experiments {name} --scale paper --device cpu --workers --record "
            "--no-progress   # one thread per worker, cores - 1 workers; resumable: give it again after an interruption")


def recorded(name: str) -> dict | None:
    """The record of ``results/<name>/`` (its provenance printed and kept under "provenance"), or None with the command."""
    doc = _results.load(name)
    if doc is None:
        print(f"recorded (paper scale): nothing recorded yet in results/{name}/. Record it with\n    {command(name)}")
        return None
    p = doc["provenance"]
    state = p.get("commit_dirty")
    if state is None and p.get("commit_unknown_reason"):  # never shown as clean when it was not known
        dirty = f" (uncommitted state unknown: {p['commit_unknown_reason']})"
    else:
        dirty = " (uncommitted changes)" if state else ""
    if p.get("source_changed_since_units"):
        dirty += " (the code changed between the units and the record: recorded with --allow-dirty-record)"
    wall = p.get("wall_time_s")
    took = f"{wall:.0f} s ({wall / 60:.1f} min) of training and evaluation" if wall is not None else "wall time unknown"
    print(f"recorded (paper scale): results/{name}/, commit {str(p.get('commit'))[:12]}{dirty}, {p.get('date')}, "
          f"{p.get('device')} ({p.get('cpu', '?')}, {p.get('torch_threads', '?')} thread(s)), {took}\n"
          f"    command: {'; '.join(p.get('unit_commands') or [p.get('command', '?')])}")
    return {**doc["data"], "provenance": p}  # the units' own times and commands live in the provenance


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _key(c: dict) -> str:
    """A claim's stable id; the first records' claims, written before ids existed, by their wording."""
    return c.get("id") or c["claim"]


def claims_table(live: list[dict] | None, recorded: list[dict] | None, *, live_label: str = "live",
                 recorded_label: str = "recorded") -> str:
    """A Markdown table of claims with a live and a recorded column (verdict, then its numbers).

    Rows are matched by the claim's stable id (by its text for claims without one); a claim only one
    run judged says "not run" in the other column. Each row gives the rule (the recorded run's; the
    live run's too where its sizes make it read differently); a verdict that the architecture decided
    says so, and a verdict that a health gate refused reads "not testable: <reason>".
    """
    live, recorded = live or [], recorded or []
    seen = {_key(x) for x in live}
    order = [_key(c) for c in live] + [_key(c) for c in recorded if _key(c) not in seen]
    by = {"live": {_key(c): c for c in live}, "rec": {_key(c): c for c in recorded}}
    rows = [f"| claim | rule | {live_label} | {recorded_label} |", "|---|---|---|---|"]
    for key in order:
        ref = by["rec"].get(key) or by["live"][key]
        rule = ref["rule"]
        if key in by["live"] and key in by["rec"] and by["live"][key]["rule"] != rule:
            rule += f" — {live_label}: {by['live'][key]['rule']}"
        cols = []
        for side in ("live", "rec"):
            c = by[side].get(key)
            if not c:
                cols.append("not run")
                continue
            gated = c["verdict"].startswith("not testable:")
            arch = (" (decided by the architecture: a bound on this substitute)"
                    if c.get("decided_by") == "architecture" and not gated else "")
            alone = f" (the rule alone: {c['ungated']})" if gated and c.get("ungated") else ""
            cols.append(f"**{_cell(c['verdict'])}**{alone}{arch}: {_cell(c['numbers'])}")
        rows.append(f"| {_cell(ref['claim'])} | {_cell(rule)} | {cols[0]} | {cols[1]} |")
    return "\n".join(rows)


def gate_changes(stored: list[dict] | None, gated: list[dict], reworded: dict | None = None) -> str:
    """What the health gates changed on a record: each claim's verdict as stored with it (``stored``)
    beside its verdict recomputed from the same record with today's rules and gates (one sentence when
    none moved, as on a record made with them). Stored claims are matched by id,
    or — the first records have no ids — by their wording then (``reworded``: id → the first wording)."""
    if not stored:
        return "no claims stored in the record"
    first = {_key(c): c["verdict"] for c in stored}
    reworded = reworded or {}
    olds = [first.get(c["id"]) or first.get(reworded.get(c["id"], c["claim"]), "not in the record") for c in gated]
    if all(o == c["verdict"] for o, c in zip(olds, gated)):  # a record made with today's rules and gates
        return (f"Every verdict stored with the record ({len(gated)} claim{'s' * (len(gated) != 1)}) equals the one recomputed from it now: "
                "the record was made with today's rules and gates.")
    rows = ["| id | claim | stored with the record | with today's rules and gates |", "|---|---|---|---|"]
    for old, c in zip(olds, gated):
        rows.append(f"| `{c['id']}` | {_cell(c['claim'])} | {_cell(old)} | {_cell(c['verdict'])} |")
    return "\n".join(rows)


def rules_table(rows: list[tuple[str, str, str]]) -> str:
    """The rules table of a chapter: each rule's outcome on the untrained model and on a planted positive."""
    out = ["| rule | untrained model | planted positive |", "|---|---|---|"]
    out += [f"| {_cell(r)} | {_cell(u)} | {_cell(p)} |" for r, u, p in rows]
    return "\n".join(out)
