"""Elementwise activations φ of the MLPs with their first two derivatives (φ, φ', φ'').

`ACTIVATIONS` maps a name to z ↦ (φ(z), φ'(z), φ''(z)) (used by the exact second derivatives of
`smlib.models.mlp_derivatives` and `ScoreMLP`); `FAST` maps it to φ alone (the forward pass).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from smlib.models.base import softplus

__all__ = ["ACTIVATIONS", "FAST"]

_SQRT_2PI = 2.5066282746310002


def _tanh(z):
    t = torch.tanh(z)
    d1 = 1 - t * t
    return t, d1, -2 * t * d1


def _softplus(z):
    s = torch.sigmoid(z)
    return softplus(z), s, s * (1 - s)


def _elu(z):
    e = torch.expm1(z.clamp_max(0.0))  # e^z − 1 on z ≤ 0
    pos = z > 0
    one = torch.ones_like(z)
    return torch.where(pos, z, e), torch.where(pos, one, e + 1), torch.where(pos, 0 * z, e + 1)


def _swish(z):
    s = torch.sigmoid(z)
    ds = s * (1 - s)
    return z * s, s + z * ds, ds * (2 + z * (1 - 2 * s))


def _relu(z):
    pos = (z > 0).to(z.dtype)
    return z * pos, pos, 0 * z


def _gelu(z):
    pdf = torch.exp(-0.5 * z * z) / _SQRT_2PI
    cdf = 0.5 * (1 + torch.erf(z / 2**0.5))
    return z * cdf, cdf + z * pdf, pdf * (2 - z * z)


def _sigmoid(z):
    s = torch.sigmoid(z)
    ds = s * (1 - s)
    return s, ds, ds * (1 - 2 * s)


#: name -> function z ↦ (φ(z), φ'(z), φ''(z))
ACTIVATIONS = {
    "tanh": _tanh,
    "softplus": _softplus,
    "elu": _elu,
    "swish": _swish,
    "silu": _swish,
    "relu": _relu,
    "gelu": _gelu,
    "sigmoid": _sigmoid,
}
#: name -> φ alone (the forward pass)
FAST = {
    "tanh": torch.tanh,
    "softplus": softplus,
    "elu": F.elu,
    "swish": F.silu,
    "silu": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
}
