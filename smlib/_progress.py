"""Progress bars of long runs (tqdm), and a silent stand-in where none is wanted or tqdm is absent.

tqdm is imported only when a bar is asked for: a run with ``progress=False`` needs no tqdm at all
(the lent GPU machine's Python has none).
"""
from __future__ import annotations

import warnings

__all__ = ["progress_bar"]


class _NoBar:
    """The part of tqdm's interface the library uses, doing nothing (iterating over ``iterable``)."""

    def __init__(self, iterable=None):
        self.iterable = () if iterable is None else iterable

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass

    def __iter__(self):
        return iter(self.iterable)


def progress_bar(enabled: bool, iterable=None, **kwargs):
    """``tqdm.auto.tqdm(iterable, **kwargs)`` if ``enabled``, else an object with the same methods (and,
    given ``iterable``, iterating over it). Asked for without tqdm installed: a warning, and no bar."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            warnings.warn("progress=True but tqdm is not installed: running without a progress bar "
                          "(pip install tqdm, or pass progress=False)", stacklevel=2)
        else:
            return tqdm(iterable, **kwargs)
    return _NoBar(iterable)
