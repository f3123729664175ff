"""What the reproduction chapters show the same way: a recorded run's provenance and the claims tables."""
from __future__ import annotations

from smlib.book import results

__all__ = ["recorded", "provenance_line", "claims_markdown", "estimator_table"]


def provenance_line(prov: dict) -> str:
    """One line: command, commit (and whether the tree was dirty), device, date, wall time."""
    dirty = " (uncommitted changes)" if prov.get("commit_dirty") else ""
    wall = prov.get("wall_time_s")
    wall = f"{wall / 60:.0f} min" if isinstance(wall, (int, float)) and wall > 600 else f"{wall} s"
    return (f"command `{prov.get('command')}`, commit {str(prov.get('commit'))[:12]}{dirty}, device {prov.get('device')}"
            f" ({prov.get('cpu', '')}), date {prov.get('date')}, wall time {wall}")


def recorded(name: str, how: str) -> dict | None:
    """The data of ``results/<name>/`` with its provenance printed, or None with the command that records it."""
    rec = results.load(name)
    if rec is None:
        print(f"recorded (paper scale): nothing recorded yet in results/{name}/. Record it with\n    {how}")
        return None
    print("recorded (paper scale): " + provenance_line(rec["provenance"]))
    return rec["data"]


def claims_markdown(live: list, rec: list | None) -> str:
    """A Markdown table of claims: rule, live numbers and verdict, recorded numbers and verdict."""
    rows = ["| claim (paper) | rule, fixed in advance | live (this run) | recorded (paper scale) |", "|---|---|---|---|"]
    for i, c in enumerate(live):
        r = rec[i] if rec else None
        if r is not None and r["claim"] != c["claim"]:
            raise ValueError(f"live and recorded claims differ: {c['claim']!r} vs {r['claim']!r}")
        rv = f"**{r['verdict']}**: {r['numbers']}" if r else "not recorded"
        rows.append(f"| {c['claim']} | {c['rule']} | **{c['verdict']}**: {c['numbers']} | {rv} |")
    return "\n".join(rows)


def estimator_table() -> str:
    """The conventions page's estimator × model table, generated from `smlib.objectives.REGISTRY`."""
    from smlib import models
    from smlib.objectives import REGISTRY

    classes = [models.GRBM, models.MCRBM, models.MPoT, models.DAEEnergy, models.MLPEnergy, models.ScoreMLP]
    rows = ["| `fit` name | what it is | " + " | ".join(f"`{c.__name__}`" for c in classes) + " |",
            "| --- | --- |" + " --- |" * len(classes)]
    for name, spec in REGISTRY.items():
        rows.append(f"| `{name}` | {spec.summary} ({spec.reference}) | " + " | ".join(spec.applies_to(c) for c in classes) + " |")
    return "\n".join(rows)
