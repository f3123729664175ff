"""Early stopping by a validation probe: when the checks fall, when the patience rule stops, when a stop is censored.

A protocol that trains "until the validation score has not improved for ``patience`` epochs" selects a
training length. Like any selection it can sit at the edge of what was tried: the best check can be the
first one (the peak may lie before it), or training can end — at the epoch budget, or by diverging —
while the score is still improving. :func:`censored` names both; the Table 1 protocol
(:mod:`smlib.experiments.swersky2011_features`) gates its claims on it and chooses learning rates only
among uncensored runs where it can (issue 22).
"""
from __future__ import annotations

import math

__all__ = ["check_epochs", "stop_check", "censored"]


def check_epochs(early: tuple[float, ...] | list[float], n_epochs: int) -> list[float]:
    """The training times, in epochs, of the validation checks: the fractions ``early`` of the first epoch
    (each in (0, 1), increasing), then the end of every epoch up to ``n_epochs``. Probing inside the first
    epoch resolves a peak that a fast learning rate reaches before one whole epoch."""
    early = [float(t) for t in early]
    if any(not 0 < t < 1 for t in early) or any(b <= a for a, b in zip(early, early[1:])):
        raise ValueError(f"early_checks {early} must be increasing fractions of the first epoch, each in (0, 1)")
    if n_epochs < 1:
        raise ValueError(f"n_epochs must be at least 1, got {n_epochs}")
    return early + [float(e) for e in range(1, n_epochs + 1)]


def stop_check(scores, patience: float, epochs=None) -> int | None:
    """The check (1-based) after which training stops: the first at which the best score (higher is better)
    is ``patience`` epochs old or more; ``None`` while it is not. ``epochs`` are the checks' times (default:
    1, 2, …, one check per epoch, when the rule counts checks)."""
    epochs = list(range(1, len(scores) + 1)) if epochs is None else list(epochs)
    if len(epochs) < len(scores):
        raise ValueError(f"{len(scores)} scores but only {len(epochs)} check times")
    best, best_at = -math.inf, None
    for i, (s, t) in enumerate(zip(scores, epochs), 1):
        if s > best:
            best, best_at = s, t
        elif t - best_at >= patience:
            return i
    return None


def censored(result: dict, patience: float, budget: float) -> str | None:
    """Why the early-stopping point of ``result`` (a training unit's record) is censored, or ``None``.

    ``result`` carries ``val_curve`` (the score at every check made), ``check`` (1-based index of the best;
    a record made before early checks carries ``epoch``, which then is the same index), ``check_epochs``
    (the checks' times; default one per epoch), ``epochs_trained`` and ``diverged``."""
    curve = result["val_curve"]
    times = result.get("check_epochs") or list(range(1, len(curve) + 1))
    best = result.get("check", result.get("epoch"))
    if best == 1:
        return "best at the first check"
    if stop_check(curve, patience, times) is None:
        if result.get("diverged"):
            return "still improving when a divergence stopped it"
        if result["epochs_trained"] >= budget:
            return f"still improving at the {budget:g}-epoch budget"
    return None
