r"""The one way to get a score ψ(x) = ∇ₓ log p(x) = −∇ₓE(x), for losses, samplers and metrics.

* :func:`score` — ψ(x), differentiable in θ when gradients are enabled (for losses), or detached
  (``detach=True``: samplers, metrics, plots). A model's closed form ``score`` is used where it
  has one (GRBM, MCRBM, MPoT, DAEEnergy, GaussianEnergy, ScoreMLP); otherwise autograd of its
  energy.
* :func:`energy_and_grad` — E(x) and ∇ₓE(x), detached (MALA/HMC acceptance), through the same
  closed form where there is one.
* :func:`functional_score` — a ψ that ``torch.func`` transforms (``vmap``, ``jvp``, ``grad``) can
  trace, optionally with the parameters passed in (``functional_call``), for ensembles and the
  forward-mode Hessian diagonal.

"Model" means an `EnergyModel`/`ScoreModel` (anything with ``score`` or ``energy``); a plain
callable is taken to be a score function by :func:`score` and an energy function by
:func:`energy_and_grad`, as their names say.
"""
from __future__ import annotations

import torch
from torch.func import functional_call, grad

from smlib.models.base import EnergyModel

__all__ = ["energy_fn", "has_closed_form_score", "score", "energy_and_grad", "functional_score"]


def energy_fn(model):
    """A callable x -> E(x) of shape (B,): ``model.energy``, or ``model`` itself if it is a plain callable."""
    if hasattr(model, "energy"):
        return model.energy
    if callable(model):
        return model
    raise TypeError(f"expected an energy model or a callable energy function, got {type(model).__name__}")


def has_closed_form_score(model) -> bool:
    """True when ``model.score`` is the model's own formula (not `EnergyModel`'s autograd default)."""
    return hasattr(model, "score") and not (isinstance(model, EnergyModel) and type(model).score is EnergyModel.score)


def score(model, x: torch.Tensor, *, detach: bool = False) -> torch.Tensor:
    """ψ(x) = −∇ₓE(x), shape (B, d).

    ``detach=False``: ``model.score(x)``, differentiable in θ (and x) while gradients are enabled.
    ``detach=True``: no graph is kept — the closed form under ``no_grad`` where the model has one,
    else one autograd pass of the energy with ``create_graph=False``. A plain callable is a score
    function.
    """
    if not detach:
        return model.score(x) if hasattr(model, "score") else model(x)
    if has_closed_form_score(model):
        with torch.no_grad():
            return model.score(x.detach())
    if hasattr(model, "energy") and getattr(model, "has_energy", True):
        return -_energy_grad(model.energy, x)[1]
    with torch.enable_grad():  # a plain score function, or a score model that needs autograd inside
        f = model.score if hasattr(model, "score") else model
        return f(x.detach().requires_grad_(True)).detach()


def _energy_grad(energy, x):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        (g,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), g.detach()


def energy_and_grad(model, x: torch.Tensor):
    r"""Energy and its input gradient, both detached: (E(x), ∇ₓE(x)) of shapes (B,), (B, d).

    Uses the model's ``energy_and_score`` (one shared pass) or closed-form score where it has
    one (``∇ₓE = −ψ``; a third of the cost of an autograd pass for the mPoT), else autograd with
    ``create_graph=False``.
    """
    if hasattr(model, "energy_and_score"):  # one shared pass (MPoT)
        with torch.no_grad():
            e, psi = model.energy_and_score(x.detach())
        return e, -psi
    if has_closed_form_score(model) and hasattr(model, "energy"):
        with torch.no_grad():
            x = x.detach()
            return model.energy(x), -model.score(x)
    return _energy_grad(energy_fn(model), x)


def functional_score(model, params_and_buffers=None):
    """ψ as a function usable inside ``torch.func`` transforms (no ``torch.autograd.grad`` inside).

    With ``params_and_buffers=(params, buffers)`` the model is evaluated by
    ``torch.func.functional_call`` with those tensors (one member of a stacked ensemble); the
    score is then always −∇ₓE by ``torch.func.grad``. Without it, a model whose ``score`` is the
    autograd default gets −``torch.func.grad`` of its energy, and any other model its own
    ``score`` (closed forms are plain tensor code).
    """
    if params_and_buffers is not None:
        def energy_sum(z):
            return functional_call(model, params_and_buffers, (z,)).sum()

        return lambda z: -grad(energy_sum)(z)
    if getattr(model, "has_energy", False) and not has_closed_form_score(model):
        return lambda z: -grad(lambda y: model.energy(y).sum())(z)
    return model.score
