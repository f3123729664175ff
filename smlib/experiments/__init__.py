r"""The papers' experiments, each written once: presets, protocol, evaluations and verdict rules.

=========================  ====================================================================
name                       what it reproduces
=========================  ====================================================================
``swersky2011``            Swersky et al. (2011) Fig. 1 (a–f) and Fig. 2 on colour patches
``swersky2011_features``   Swersky et al. (2011) Table 1 on a labelled substitute (MNIST)
``deen_2d``                Saremi et al. (2018) Fig. 1: DEEN, a score network and Langevin CD in 2-D
``deen_mnist``             Saremi et al. (2018) Fig. 2: DEEN on MNIST, single-step denoising
``deen_patches``           Saremi et al. (2018) Fig. 3: DEEN on natural-image patches
``multiscale``             one σ vs many (Song & Ermon 2019) on 2-D toys with exact densities
``multiscale_mnist``       annealed Langevin from a multi-σ score network on MNIST, with checks
=========================  ====================================================================

Run one from Python (the chapters do, at the ``"ci"`` scale)::

    from smlib import experiments
    record = experiments.run("swersky2011", scale="ci")

or from the command line, with smlib's runtime dependencies only (no papermill, jupytext or
IPython)::

    python -m smlib.experiments swersky2011 --scale paper --device cpu --record
    python -m smlib.experiments swersky2011 --scale paper --only SM-s0     # one unit per process
    python -m smlib.experiments swersky2011 --scale paper --workers 3 --record  # 3 one-thread workers

A killed run continues from its last checkpoint when the same command is given again; see
:mod:`smlib.experiments.runner`. Presets are frozen dataclasses (:mod:`smlib.experiments.presets`,
one class per experiment in :mod:`smlib.experiments.configs`); records and their provenance:
:mod:`smlib.experiments.records`, their typed schema: :mod:`smlib.experiments.schema`.
"""
from __future__ import annotations

import importlib

from smlib.experiments import runner
from smlib.experiments.runner import Experiment, Unit, load_record, record_name, resolve, unit_times, work_dir

__all__ = ["EXPERIMENTS", "get", "run", "load_record", "resolve", "record_name", "work_dir", "unit_times", "Experiment", "Unit"]

#: name -> (module, class) of every experiment
EXPERIMENTS = {
    "swersky2011": ("smlib.experiments.swersky2011", "Swersky2011"),
    "swersky2011_features": ("smlib.experiments.swersky2011_features", "Swersky2011Features"),
    "deen_2d": ("smlib.experiments.deen_2d", "Deen2D"),
    "deen_mnist": ("smlib.experiments.deen_mnist", "DeenMnist"),
    "deen_patches": ("smlib.experiments.deen_patches", "DeenPatches"),
    "multiscale": ("smlib.experiments.multiscale", "Multiscale"),
    "multiscale_mnist": ("smlib.experiments.multiscale_mnist", "MultiscaleMnist"),
}


def get(name: str) -> Experiment:
    """The experiment ``name`` (ValueError listing the names otherwise)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    module, cls = EXPERIMENTS[name]
    return getattr(importlib.import_module(module), cls)()


def run(name: str, scale: str = "ci", **kwargs):
    """Run experiment ``name`` at ``scale``; see :func:`smlib.experiments.runner.run` for the options."""
    return runner.run(get(name), scale, **kwargs)
