"""The book's conventions page, generated where it can be: the estimator × model table from the registry."""
from __future__ import annotations

from smlib import models
from smlib.objectives import REGISTRY

__all__ = ["estimator_table"]


def estimator_table() -> str:
    """The conventions page's estimator × model table, generated from `smlib.objectives.REGISTRY`."""
    classes = [models.GRBM, models.MCRBM, models.MPoT, models.DAEEnergy, models.MLPEnergy, models.ScoreMLP,
               models.NoiseConditionalEnergy, models.NoiseConditionalScore]
    rows = ["| `fit` name | what it is | " + " | ".join(f"`{c.__name__}`" for c in classes) + " |",
            "| --- | --- |" + " --- |" * len(classes)]
    for name, spec in REGISTRY.items():
        rows.append(f"| `{name}` | {spec.summary} ({spec.reference}) | " + " | ".join(spec.applies_to(c) for c in classes) + " |")
    return "\n".join(rows)
