"""Helpers that several chapters and the tests share (defined once here, imported there)."""
from __future__ import annotations

import torch

__all__ = ["randomise", "all_states"]


def randomise(model: torch.nn.Module, scale: float = 1.0, *, generator: torch.Generator | None = None,
              add: bool = False) -> torch.nn.Module:
    """Give every parameter (biases too) N(0, scale²) draws, so that a check sees a generic θ.

    With ``add=True`` the draws are added to the current values instead of replacing them.
    ``generator=None`` draws from the global torch RNG. Returns ``model`` (changed in place).
    """
    with torch.no_grad():
        for p in model.parameters():
            z = scale * torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            p.add_(z) if add else p.copy_(z)
    return model


def all_states(n: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """All 2^n binary vectors as rows, shape (2^n, n), bit i of row r in column i."""
    idx = torch.arange(2**n)
    return ((idx[:, None] >> torch.arange(n)) & 1).to(dtype or torch.get_default_dtype())
