r"""Multi-scale denoising score matching (Song & Ermon 2019) for noise-conditional models.

With a ladder σ₁ > σ₂ > … > σ_L, a level ℓ drawn uniformly per sample, x̃ = x + σ_ℓ ε:

.. math::
    J_{\mathrm{MSDSM}}(\theta) = \operatorname{mean}_b\ \lambda(\sigma_{\ell_b})\,
        \tfrac12\big\|s_\theta(\tilde x_b, \sigma_{\ell_b}) + \varepsilon_b/\sigma_{\ell_b}\big\|^2,
    \qquad \lambda(\sigma) = \sigma^2 \ \text{(default)},

i.e. the book's J_DSM at each σ (sum over dimensions, mean over the batch), averaged over the
levels with weight λ(σ). With λ = σ² the level-ℓ term is ½‖σ s + ε‖² = ½‖ε − ε̂‖² (ε̂ = −σ s,
Ho et al. 2020's ε-prediction loss), whose minimum over s is ½(d − σ² E‖∇log q_σ‖²) ∈ [0, d/2]
at every σ: the levels are comparable. With λ = 1 the minimum is ≈ d/(2σ²) at small σ and the
smallest σ dominates the sum. Each level's minimiser is the score of q_σ = p ∗ N(0, σ²I)
(Vincent 2011), whatever λ > 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from smlib._checks import check_choice, check_data, check_int

__all__ = ["geometric_sigmas", "MultiScaleDSM", "WEIGHTINGS"]

#: λ(σ) by name
WEIGHTINGS = {"sigma2": lambda s: s * s, "none": lambda s: torch.ones_like(s)}


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> tuple[float, ...]:
    """σ_ℓ = σ_max (σ_min/σ_max)^{(ℓ−1)/(L−1)}, ℓ = 1…L: a geometric ladder from σ_max down to σ_min.

    Constant ratio σ_ℓ/σ_{ℓ+1} (Song & Ermon 2019, §4.2); L = 1 needs σ_max == σ_min.
    """
    n_levels = check_int("n_levels", n_levels)
    hi, lo = float(sigma_max), float(sigma_min)
    if not (math.isfinite(hi) and math.isfinite(lo) and hi >= lo > 0):
        raise ValueError(f"need finite sigma_max >= sigma_min > 0, got sigma_max={sigma_max}, sigma_min={sigma_min}")
    if n_levels == 1:
        if hi != lo:
            raise ValueError("n_levels=1 needs sigma_max == sigma_min")
        return (hi,)
    if hi == lo:
        raise ValueError(f"a ladder of {n_levels} levels needs sigma_max > sigma_min, both are {hi}")
    r = (lo / hi) ** (1.0 / (n_levels - 1))
    return tuple(hi * r**i for i in range(n_levels - 1)) + (lo,)


@dataclass(frozen=True)
class MultiScaleDSM:
    """Multi-scale DSM (module docstring): give ``sigmas`` (strictly decreasing) or the geometric
    ladder's ``sigma_max``, ``sigma_min``, ``n_levels``; ``weighting`` "sigma2" (λ = σ²) or "none".

    ``objective(model, x)`` returns the scalar loss; ``model.score(x̃, σ)`` takes σ as a (B,)
    tensor (`smlib.models.NoiseConditionalEnergy` / `NoiseConditionalScore`). Pass ``noise``
    (standard normal, shape of x) and ``levels`` (int64 indices into ``sigmas``, shape (B,)) to
    compare implementations on identical draws; else both come from ``generator`` (or the global RNG,
    which `smlib.train.fit` seeds).
    """

    sigmas: tuple | None = None
    sigma_max: float | None = None
    sigma_min: float | None = None
    n_levels: int | None = None
    weighting: str = "sigma2"

    def __post_init__(self):
        check_choice("weighting of MultiScaleDSM", self.weighting, tuple(WEIGHTINGS))
        ladder = (self.sigma_max, self.sigma_min, self.n_levels)
        if self.sigmas is None:
            if any(v is None for v in ladder):
                raise ValueError("MultiScaleDSM needs sigmas, or all of sigma_max, sigma_min and n_levels")
            sig = geometric_sigmas(*ladder)
        else:
            if any(v is not None for v in ladder):
                raise ValueError("give MultiScaleDSM either sigmas or (sigma_max, sigma_min, n_levels), not both")
            try:
                sig = tuple(float(s) for s in self.sigmas)
            except (TypeError, ValueError):
                raise ValueError(f"sigmas must be a sequence of numbers, got {self.sigmas!r}") from None
            if not sig or not all(math.isfinite(s) and s > 0 for s in sig):
                raise ValueError(f"sigmas must be a non-empty sequence of finite numbers > 0, got {sig}")
            if any(a <= b for a, b in zip(sig[:-1], sig[1:])):
                raise ValueError(f"sigmas must be strictly decreasing (σ₁ > … > σ_L), got {sig}")
        object.__setattr__(self, "sigmas", sig)

    def config(self) -> dict:
        """The options as a dict (what `smlib.train.fit`'s checkpoints record and compare on resume)."""
        return {"sigmas": list(self.sigmas), "weighting": self.weighting}

    def draw(self, x: torch.Tensor, generator=None):
        """(noise, levels) for a batch x: ε ~ N(0, I) of x's shape, ℓ uniform on {0, …, L−1}."""
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        levels = torch.randint(len(self.sigmas), (x.shape[0],), device=x.device, generator=generator)
        return noise, levels

    def per_sample(self, model, x, noise=None, levels=None, generator=None):
        """λ(σ_ℓ) ½‖s(x̃, σ_ℓ) + ε/σ_ℓ‖² per sample, shape (B,), and the levels ℓ used."""
        check_data(x, "x", getattr(model, "dim", None))
        if (noise is None) != (levels is None):
            raise ValueError("pass both noise and levels, or neither")
        if noise is None:
            noise, levels = self.draw(x, generator)
        if noise.shape != x.shape:
            raise ValueError(f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}")
        if levels.shape != (x.shape[0],) or levels.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"levels must be an integer tensor of shape ({x.shape[0]},), got {levels.dtype} {tuple(levels.shape)}")
        if levels.device.type == "cpu" and (int(levels.min()) < 0 or int(levels.max()) >= len(self.sigmas)):
            raise ValueError(f"levels must lie in [0, {len(self.sigmas) - 1}]")
        sig = torch.tensor(self.sigmas, dtype=x.dtype, device=x.device)[levels]
        s = sig[:, None]
        psi = model.score(x + s * noise, sig)
        return WEIGHTINGS[self.weighting](sig) * 0.5 * ((psi + noise / s) ** 2).sum(-1), levels

    def __call__(self, model, x, noise=None, levels=None, generator=None):
        """J_MSDSM: mean over the batch of :meth:`per_sample` (a 0-d tensor, differentiable in θ)."""
        return self.per_sample(model, x, noise, levels, generator)[0].mean()
