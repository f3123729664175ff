r"""What an experiment's record holds, as frozen dataclasses that check it: :class:`ClaimRow`,
:class:`RecordData` (the ``data`` of ``results/<name>/results.json``) and :class:`Record` (the file).

``from_dict`` checks a record as read or about to be written and raises ValueError naming the file
(``source``) and the field that is wrong (``data.summary.claims[2].id``); ``to_dict`` gives back
exactly the dict that was read or that the runner builds, so ``to_dict(from_dict(d)) == d``.

The first records (written before claims had ids) are **legacy**: their claim rows lack ``id``,
``ungated`` and ``gates`` (some ``decided_by`` too). They load with ``allow_legacy=True`` (then
``Record.legacy`` is True) until they are re-recorded; a new record must give every claim its id.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from smlib.experiments import verdicts as V
from smlib.experiments.records import PROVENANCE_KEYS, unit_key

__all__ = ["ClaimRow", "RecordData", "Record"]

_VERDICTS = (V.HOLDS, V.PARTLY, V.FAILS, V.UNTESTABLE)
_CLAIM_KEYS = ("id", "claim", "rule", "numbers", "verdict", "ungated", "decided_by", "gates")  # verdicts.claim's order
_LEGACY_OPTIONAL = ("id", "ungated", "decided_by", "gates")
_DATA_KEYS = ("experiment", "scale", "record_name", "config", "units", "summary", "unit_wall_time_s")  # runner.run's order


def _err(source: str, field: str, what: str) -> ValueError:
    return ValueError(f"{source}: {field} {what}")


def _need(d, key: str, kind, source: str, field: str):
    if key not in d:
        raise _err(source, f"{field}.{key}" if field else key, "is missing")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _err(source, f"{field}.{key}" if field else key, f"must be a {name}, got {type(v).__name__} {v!r:.60}")
    return v


def _verdict_ok(v: str) -> bool:
    return v in _VERDICTS or (v.startswith(V.NOT_TESTABLE + ": ") and len(v) > len(V.NOT_TESTABLE) + 2)


@dataclass(frozen=True)
class ClaimRow:
    """One row of a claims table as `smlib.experiments.verdicts.claim` writes it (``id`` is its stable name)."""

    id: str | None
    claim: str
    rule: str
    numbers: str
    verdict: str
    ungated: str | None
    decided_by: str | None
    gates: tuple[dict, ...] | None
    legacy: bool = False  # a row of a first record: the keys it lacks are None and are not written back

    @classmethod
    def from_dict(cls, d, *, source: str, field: str, allow_legacy: bool = False) -> ClaimRow:
        if not isinstance(d, dict):
            raise _err(source, field, f"must be an object, got {type(d).__name__}")
        extra = sorted(set(d) - set(_CLAIM_KEYS))
        if extra:
            raise _err(source, field, f"has unknown keys {extra}")
        legacy = "id" not in d
        if legacy and not allow_legacy:
            raise _err(source, f"{field}.id", "is missing: a new record gives every claim a stable id "
                       "(smlib.experiments.verdicts.claim)")
        for key in ("claim", "rule", "numbers", "verdict") + (() if legacy else _LEGACY_OPTIONAL[:3]):
            _need(d, key, str, source, field)
        if not legacy and "gates" not in d:
            raise _err(source, f"{field}.gates", "is missing")
        if not legacy and not V._ID.match(d["id"]):
            raise _err(source, f"{field}.id", f"must be a lower-case slug like 'sm-curvature', got {d['id']!r}")
        for key in ("verdict", "ungated"):
            if d.get(key) is not None and not _verdict_ok(d[key]):
                raise _err(source, f"{field}.{key}", f"is not a verdict: {d[key]!r}")
        gates = d.get("gates")
        if gates is not None:
            if not isinstance(gates, list):
                raise _err(source, f"{field}.gates", f"must be a list, got {type(gates).__name__}")
            for i, g in enumerate(gates):
                if not isinstance(g, dict) or set(g) != {"name", "ok", "reason"} or g["ok"] not in (True, False, None):
                    raise _err(source, f"{field}.gates[{i}]", f"must be {{'name', 'ok': bool or None, 'reason'}}, got {g!r}")
            gates = tuple(gates)
        if not legacy:  # the verdict is the ungated one unless a gate refused it (verdicts.gated)
            expected = V.gated(d["ungated"], [V.Gate(g["name"], g["ok"], g["reason"]) for g in gates])
            if d["verdict"] != expected:
                raise _err(source, f"{field}.verdict", f"is {d['verdict']!r}, but its ungated verdict and gates "
                           f"give {expected!r}")
        return cls(id=d.get("id"), claim=d["claim"], rule=d["rule"], numbers=d["numbers"], verdict=d["verdict"],
                   ungated=d.get("ungated"), decided_by=d.get("decided_by"), gates=gates, legacy=legacy)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in _CLAIM_KEYS}
        out["gates"] = None if self.gates is None else [dict(g) for g in self.gates]
        if self.legacy:
            out = {k: v for k, v in out.items() if not (k in _LEGACY_OPTIONAL and v is None)}
        return out


@dataclass(frozen=True)
class RecordData:
    """The ``data`` of an experiment's record: what `smlib.experiments.runner.run` returns."""

    experiment: str
    scale: str
    record_name: str
    config: dict
    units: dict  # unit key -> the unit's result
    summary: dict  # numbers and figures' data; its "claims" are checked as ClaimRow
    unit_wall_time_s: dict  # unit key -> seconds
    claims: tuple[ClaimRow, ...] | None = None

    @property
    def legacy(self) -> bool:
        return any(c.legacy for c in self.claims or ())

    @classmethod
    def from_dict(cls, d, *, source: str, allow_legacy: bool = False, field: str = "data") -> RecordData:
        if not isinstance(d, dict):
            raise _err(source, field, f"must be an object, got {type(d).__name__}")
        extra = sorted(set(d) - set(_DATA_KEYS))
        if extra:
            raise _err(source, field, f"has unknown keys {extra}")
        for key in ("experiment", "scale", "record_name"):
            if not _need(d, key, str, source, field):
                raise _err(source, f"{field}.{key}", "is empty")
        if not d["record_name"].startswith(d["experiment"]):
            raise _err(source, f"{field}.record_name", f"{d['record_name']!r} does not start with the experiment's "
                       f"name {d['experiment']!r}")
        for key in ("config", "units", "summary", "unit_wall_time_s"):
            _need(d, key, dict, source, field)
        for key in d["units"]:
            try:
                unit_key(key)
            except ValueError:
                raise _err(source, f"{field}.units", f"has a key that is no unit key: {key!r}") from None
        times = d["unit_wall_time_s"]
        if set(times) != set(d["units"]):
            raise _err(source, f"{field}.unit_wall_time_s", f"names other units than {field}.units "
                       f"({sorted(set(times) ^ set(d['units']))})")
        for key, t in times.items():
            if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0):
                raise _err(source, f"{field}.unit_wall_time_s.{key}", f"must be a number of seconds >= 0, got {t!r}")
        claims = None
        if "claims" in d["summary"]:
            rows = d["summary"]["claims"]
            if not isinstance(rows, list):
                raise _err(source, f"{field}.summary.claims", f"must be a list, got {type(rows).__name__}")
            claims = tuple(ClaimRow.from_dict(r, source=source, field=f"{field}.summary.claims[{i}]",
                                              allow_legacy=allow_legacy) for i, r in enumerate(rows))
            ids = [c.id for c in claims if c.id is not None]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise _err(source, f"{field}.summary.claims", f"repeat the ids {dup}")
        return cls(experiment=d["experiment"], scale=d["scale"], record_name=d["record_name"], config=d["config"],
                   units=d["units"], summary=d["summary"], unit_wall_time_s=times, claims=claims)

    def to_dict(self) -> dict:
        summary = dict(self.summary)
        if self.claims is not None:
            summary["claims"] = [c.to_dict() for c in self.claims]
        return {"experiment": self.experiment, "scale": self.scale, "record_name": self.record_name,
                "config": self.config, "units": self.units, "summary": summary, "unit_wall_time_s": self.unit_wall_time_s}


@dataclass(frozen=True)
class Record:
    """A record file, ``{"provenance": ..., "data": ...}`` (:func:`smlib.experiments.records.save`)."""

    provenance: dict
    data: RecordData

    @property
    def legacy(self) -> bool:
        """A first record, whose claims have no ids (loaded until it is re-recorded)."""
        return self.data.legacy

    @classmethod
    def from_dict(cls, d, *, source: str, allow_legacy: bool = False) -> Record:
        if not isinstance(d, dict):
            raise _err(source, "the record", f"must be an object, got {type(d).__name__}")
        extra = sorted(set(d) - {"provenance", "data"})
        if extra:
            raise _err(source, "the record", f"has unknown keys {extra}")
        prov = _need(d, "provenance", dict, source, "")
        missing = [k for k in PROVENANCE_KEYS if k not in prov]
        if missing:
            raise _err(source, "provenance", f"lacks {missing}")
        return cls(provenance=prov, data=RecordData.from_dict(_need(d, "data", dict, source, ""), source=source,
                                                              allow_legacy=allow_legacy))

    def to_dict(self) -> dict:
        return {"provenance": self.provenance, "data": self.data.to_dict()}
