"""What changed since the first record: each claim's first verdict beside the new record's, by stable id.

The first records' claims are frozen in ``results/<name>/first_record_claims.json``
(:mod:`smlib.experiments.first_claims`, each row mapped by hand to the id of the claim that replaces it);
the reasons for a change are written by hand in ``results/<name>/what_changed.json`` (``{id: reason}``).
While ``results/<name>/results.json`` is still the first record (same SHA-256), :func:`what_changed`
says so; once a new record lands, the table appears by itself.
"""
from __future__ import annotations

from smlib.experiments import first_claims, records

__all__ = ["what_changed", "reasons"]

_NEW = "new (no claim in the first record)"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def reasons(name: str) -> dict:
    """The hand-written ``{id: reason}`` of ``results/<name>/what_changed.json`` ({} when there is none);
    every value must be a non-empty string."""
    path = records.results_dir() / name / "what_changed.json"
    if not path.is_file():
        return {}
    doc = records.read_json(path, what=f"what_changed.json of {name!r}")
    bad = [k for k, v in doc.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"{path}: the reason of {bad} is not a non-empty string")
    return doc


def what_changed(name: str) -> str:
    """Markdown: the line "still the first record" while it is, else a table of every claim —
    its new wording, the first record's verdict, the new record's and why.

    Rows follow the new record's claims, matched to the first record's by the successor ids of
    ``first_record_claims.json``; a new claim whose id no first-record claim maps to reads
    "new"; a first-record claim whose successor the new record lacks (or that has none) is listed
    last with the first wording. A verdict that moved without a reason in ``what_changed.json``
    says "reason not written yet".

    Raises
    ------
    ValueError
        A claim of the new record without an ``id``, or a reason for an id that neither record has.
    """
    first = first_claims.load(name)
    path = records.results_dir() / name / "results.json"
    if not path.is_file():
        return f"No record in results/{name}/ (the first record, commit {first['provenance']['commit']}, is frozen)."
    p = first["provenance"]
    if first_claims.sha256(path) == first["sha256"]:
        return (f"`results/{name}/`: the record is still the first one (commit {str(p['commit'])[:7]}, {p['date']}); "
                "the re-recording is under way.")
    rec = records.load(name)
    new = (rec["data"].get("summary") or {}).get("claims") or []
    no_id = [c.get("claim", "?") for c in new if not c.get("id")]
    if no_id:
        raise ValueError(f"results/{name}/results.json has claims without an id ({no_id[:2]}): "
                         "a new record's claims carry the stable ids of the claim code")
    why = reasons(name)
    old_by_id: dict[str, list[dict]] = {}
    for c in first["claims"]:
        if c["successor"]:
            old_by_id.setdefault(c["successor"], []).append(c)
    known = {c["id"] for c in new} | set(old_by_id)
    stray = sorted(set(why) - known)
    if stray:
        raise ValueError(f"results/{name}/what_changed.json gives reasons for ids that neither record has: {stray}")
    rows = [f"First record: commit {str(p['commit'])[:7]}, {p['date']}; new record: commit "
            f"{str(rec['provenance'].get('commit'))[:7]}, {rec['provenance'].get('date')}.", "",
            "| claim | first record | new record | why |", "|---|---|---|---|"]
    for c in new:
        olds = old_by_id.get(c["id"])
        old = "; ".join(o["verdict"] for o in olds) if olds else _NEW
        reason = why.get(c["id"]) or (first["new_without_predecessor"].get(c["id"], "") if not olds else "")
        if olds and not reason and any(o["verdict"] != c["verdict"] for o in olds):
            reason = "reason not written yet"
        rows.append(f"| {_cell(c['claim'])} `{c['id']}` | {_cell(old)} | **{_cell(c['verdict'])}** | {_cell(reason)} |")
    ids = {c["id"] for c in new}
    for c in first["claims"]:
        if c["successor"] in ids:
            continue
        gone = "not in the new record" if c["successor"] else "withdrawn"
        reason = why.get(c["successor"] or "") or c.get("why") or ""
        tag = f" `{c['successor']}`" if c["successor"] else ""
        rows.append(f"| {_cell(c['claim'])} (first wording){tag} | {_cell(c['verdict'])} | {gone} | {_cell(reason)} |")
    return "\n".join(rows)
