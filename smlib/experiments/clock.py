"""Where a unit's time goes: training steps, evaluation, data preparation.

The runner starts a :class:`Clock` for each unit it runs. :func:`fit` (`smlib.train.fit`, timed)
adds the time of its loop to ``train_s`` and the time of its ``callback`` (the per-epoch
evaluations of a protocol) to ``eval_s``; a protocol marks evaluation outside a fit with
``with timing("eval"):``. The runner adds the unit's wall time and the set-up (data) time of the
process that ran it. A unit's record then holds, in seconds of the session that finished it::

    "time": {"wall_s":  the unit's run in this session,
             "train_s": in fit loops (steps, checkpoint writes), their callbacks excluded,
             "eval_s":  in fit callbacks and timing("eval") blocks,
             "other_s": wall_s - train_s - eval_s (model set-up, evaluation not marked, results),
             "data_s":  set-up of the process that ran it (shared by the units that process ran),
             "session": an id of that process, to count each set-up once,
             "resumed": whether the unit continued from a checkpoint (earlier sessions not counted)}

``train_s``, ``eval_s`` and ``other_s`` are None (unknown, never 0) when the unit did not train
through :func:`fit` or mark a block.
"""
from __future__ import annotations

import contextlib
import time

from smlib import train

__all__ = ["Clock", "timing", "fit", "current"]

_current: "Clock | None" = None


class Clock:
    """Seconds a unit spends training and evaluating (see the module docstring)."""

    def __init__(self):
        self.train_s = self.eval_s = 0.0
        self.measured = False  # a fit or a timing block ran
        self._busy = False  # inside a timed block: nested ones are not counted twice
        self._t0 = time.perf_counter()

    def __enter__(self):
        global _current
        self._prev, _current = _current, self
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        global _current
        self.wall_s = time.perf_counter() - self._t0
        _current = self._prev

    def split(self, *, data_s: float | None, session: str, resumed: bool) -> dict:
        wall = getattr(self, "wall_s", time.perf_counter() - self._t0)
        r = lambda v: None if v is None else round(float(v), 3)  # noqa: E731
        if not self.measured:
            train_s = eval_s = other_s = None
        else:
            train_s, eval_s = self.train_s, self.eval_s
            other_s = max(0.0, wall - train_s - eval_s)
        return {"wall_s": r(wall), "train_s": r(train_s), "eval_s": r(eval_s), "other_s": r(other_s),
                "data_s": r(data_s), "session": session, "resumed": bool(resumed)}


def current() -> Clock | None:
    """The clock of the unit this process is running, or None outside a unit."""
    return _current


@contextlib.contextmanager
def timing(part: str):
    """Count the block's seconds as ``part`` of the running unit (``"eval"`` or ``"train"``); no-op outside a unit."""
    if part not in ("eval", "train"):
        raise ValueError(f"timing part must be 'eval' or 'train', got {part!r}")
    clock = _current
    if clock is None or clock._busy:
        yield
        return
    clock._busy, t0 = True, time.perf_counter()
    try:
        yield
    finally:
        clock._busy = False
        clock.measured = True
        setattr(clock, f"{part}_s", getattr(clock, f"{part}_s") + time.perf_counter() - t0)


def fit(*args, callback=None, callback_is_training: bool = False, **kwargs):
    """:func:`smlib.train.fit` with its loop counted as training and its ``callback`` as evaluation
    of the running unit (same arguments, same result); ``callback_is_training=True`` counts the callback as
    training too (e.g. an EMA of the weights updated after every step)."""
    clock = _current
    if clock is None or clock._busy:
        return train.fit(*args, callback=callback, **kwargs)
    spent = [0.0]

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return callback(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t

    clock._busy, t0 = True, time.perf_counter()
    try:
        return train.fit(*args, callback=timed if callable(callback) and not callback_is_training else callback, **kwargs)
    finally:
        clock._busy = False
        clock.measured = True
        clock.eval_s += spent[0]
        clock.train_s += time.perf_counter() - t0 - spent[0]
