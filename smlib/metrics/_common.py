"""Helpers shared by the metric modules."""
from __future__ import annotations

from smlib.scores import score


def _dim(model):
    return getattr(model, "dim", None)


def score_on(model, x):
    r"""Score ψ(x) = −∇ₓE(x) of a model (or a score function), detached, shape (B, d).

    The same as ``smlib.scores.score(model, x, detach=True)``.
    """
    return score(model, x, detach=True)
