r"""Training: one loop, :func:`fit`, for every model × objective/estimator.

``fit`` minimises an objective L(θ) — a score-matching loss or the surrogate of an MCMC estimator
(:mod:`smlib.objectives.registry` names them all) — by stochastic gradient descent,

.. math:: \theta_{t+1} = \theta_t - \eta_t\, \mathrm{opt}\big(\nabla_\theta L(\theta_t; x_t)\big),

with device selection, seeds, a progress bar, logging into a :class:`History`, callbacks,
periodic **atomic** checkpoints with exact, checked resume, NaN/Inf and divergence guards, and
a CUDA-graph step on GPUs. The modules import only downward:

=================  ==============================================================================
`history`          the training record (:class:`History`)
`batches`          minibatches of a tensor or an iterable; the data fingerprint
`config`           the typed settings: :class:`TrainConfig`, :class:`GuardConfig`
`setup`            device, optimiser and schedule (also used by `smlib.ensemble`)
`checkpoint`       atomic save, a careful loader, comparison of run configurations
`state`            :class:`TrainState`, the resume state; the run configuration
`step`             one eager step with its guards (:class:`DivergenceGuard`)
`cuda_graph`       the CUDA-graph step and its plan (:class:`FastPathWarning`)
`loop`             :func:`fit` and :func:`fast_path_plan`
=================  ==============================================================================

Reproducibility: on CPU, ``fit(..., seed=s)`` is deterministic (the run draws from its own
stream; torch's global generator is left alone), and a run interrupted after a
checkpoint and continued with ``resume=True`` ends bit-identical to an uninterrupted run.
References: Swersky et al. (2011), §4 (SM, CD, PCD, FPCD, AE); Saremi et al. (2018) (DEEN).
"""
from smlib.train.batches import fingerprint
from smlib.train.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from smlib.train.config import CHANGEABLE, GuardConfig, TrainConfig
from smlib.train.cuda_graph import FastPathPlan, FastPathWarning
from smlib.train.history import History
from smlib.train.loop import fast_path_plan, fit
from smlib.train.setup import make_optimizer, make_schedule, resolve_device
from smlib.train.step import DivergenceError, DivergenceGuard

__all__ = ["fit", "TrainConfig", "GuardConfig", "CHANGEABLE", "fast_path_plan", "History", "save_checkpoint", "load_checkpoint", "CheckpointError",
           "CHECKPOINT_FORMAT", "FastPathPlan", "FastPathWarning", "DivergenceError", "DivergenceGuard",
           "resolve_device", "make_optimizer", "make_schedule", "fingerprint"]
