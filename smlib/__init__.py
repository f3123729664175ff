"""smlib: score matching and friends for energy-based models.

One small PyTorch package behind the book *Score Matching for Energy-Based Models*: models
(`smlib.models`), objectives (`smlib.objectives`), MCMC estimators (`smlib.mcmc`),
samplers, one training loop (`smlib.train.fit`), metrics, data and plotting.
"""
__version__ = "0.1.0"

from smlib import (  # noqa: E402,F401  (submodules are the public API)
    data,
    mcmc,
    metrics,
    models,
    objectives,
    plotting,
    samplers,
    train,
)
