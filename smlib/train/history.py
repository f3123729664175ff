"""The training record of `smlib.train.fit`: logged scalars, per-epoch metrics, wall time."""
from __future__ import annotations

import math

__all__ = ["History"]


class History(dict):
    """Training record: a dict ``key -> list of floats`` plus aligned ``steps`` and ``epochs``.

    Every logged entry (one per ``log_every`` steps) appends to each key (``"loss"``, ``"lr"``
    and every other scalar the objective returned) and to ``history.steps`` (the global step,
    1-based: the number of optimiser updates done) and ``history.epochs`` (0-based epoch of
    that step). Values logged with ``log_every > 1`` are means over the window since the last
    entry. ``history.per_epoch`` is a second dict of lists with keys ``"step"``, ``"epoch"`` and
    whatever the ``callback`` of :func:`fit` returned (per-epoch metrics).
    ``history.wall_time`` is the training time in seconds (not part of the exact-resume check).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.per_epoch: dict[str, list] = {}
        self.wall_time = 0.0

    def log(self, step: int, epoch: int, **values) -> None:
        """Append one entry (keys not seen before are back-filled with NaN)."""
        n = len(self.steps)
        self.steps.append(int(step))
        self.epochs.append(int(epoch))
        for k, v in values.items():
            self.setdefault(k, [math.nan] * n).append(float(v))
        for lst in self.values():
            if len(lst) < n + 1:
                lst.append(math.nan)

    def log_epoch(self, step: int, epoch: int, **values) -> None:
        """Append one per-epoch entry to ``per_epoch`` (NaN back-fill as in :meth:`log`)."""
        pe = self.per_epoch
        n = len(pe.get("step", []))
        values = {"step": step, "epoch": epoch, **values}
        for k, v in values.items():
            pe.setdefault(k, [math.nan] * n).append(float(v) if not isinstance(v, (int,)) else v)
        for lst in pe.values():
            if len(lst) < n + 1:
                lst.append(math.nan)

    def last(self, key: str = "loss") -> float:
        """Last logged value of ``key``."""
        return self[key][-1]

    def state_dict(self) -> dict:
        """Plain-Python representation (used in checkpoints)."""
        return {
            "data": {k: list(v) for k, v in self.items()},
            "steps": list(self.steps),
            "epochs": list(self.epochs),
            "per_epoch": {k: list(v) for k, v in self.per_epoch.items()},
            "wall_time": self.wall_time,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "History":
        """Inverse of :meth:`state_dict`."""
        h = cls({k: list(v) for k, v in state["data"].items()})
        h.steps, h.epochs = list(state["steps"]), list(state["epochs"])
        h.per_epoch = {k: list(v) for k, v in state["per_epoch"].items()}
        h.wall_time = float(state.get("wall_time", 0.0))
        return h

    def __repr__(self):
        last = {k: round(v[-1], 6) for k, v in self.items() if v}
        return f"History(n_logged={len(self.steps)}, last={last}, per_epoch_keys={list(self.per_epoch)})"
