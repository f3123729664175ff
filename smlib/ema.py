"""An exponential moving average (EMA) of a model's weights, kept in the model's own buffers.

Song & Ermon (2020, "Improved techniques for training score-based generative models", technique 5)
sample score networks with θ̄ ← m θ̄ + (1 − m) θ after every step. Here θ̄ is a set of buffers of the
model, so ``model.state_dict()`` — and so every training checkpoint of `smlib.train.fit` — carries it, and
a resumed run continues it exactly. Update it from a ``fit`` callback with ``callback_every=1``.
"""
from __future__ import annotations

import copy

import torch

__all__ = ["add_ema", "ema_update", "ema_copy"]

_EMA = "ema__"


def add_ema(model):
    r"""Give ``model`` an exponential moving average θ̄ of its parameters, θ̄ ← θ now (Song & Ermon 2020, technique 5).

    θ̄ lives in buffers (``ema__<name>``), so it is in ``model.state_dict()``: the training checkpoint
    carries it and a resumed run continues it exactly. Returns ``model``.
    """
    for name, p in model.named_parameters():
        model.register_buffer(_EMA + name.replace(".", "__"), p.detach().clone())
    return model


def _ema_pairs(model):
    bufs = dict(model.named_buffers())
    pairs = [(bufs.get(_EMA + n.replace(".", "__")), p) for n, p in model.named_parameters()]
    if not pairs or any(b is None for b, _ in pairs):
        raise ValueError("the model has no EMA buffers for all its parameters: call add_ema(model) first")
    return pairs


def ema_update(model, decay: float):
    r"""θ̄ ← decay·θ̄ + (1 − decay)·θ, one training step's update (decay in [0, 1))."""
    if not (isinstance(decay, (int, float)) and 0 <= decay < 1):
        raise ValueError(f"ema decay must be a number in [0, 1), got {decay!r}")
    with torch.no_grad():
        for b, p in _ema_pairs(model):
            b.lerp_(p.detach(), 1 - decay)


def ema_copy(model):
    """A copy of ``model`` whose parameters are its EMA θ̄ (what the samplers use)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for b, p in _ema_pairs(m):
            p.copy_(b)
    return m
