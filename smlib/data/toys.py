"""Low-dimensional toy densities whose log-density and score are known exactly.

Two families, both used in the 2-D experiments of Saremi et al. (2018, DEEN, Fig. 1):

* :class:`GaussianMixture` — p(x) = Σₖ πₖ N(x; μₖ, Σₖ) in any dimension, with exact ``log_prob``
  and ``score`` ψ(x) = ∇ₓ log p(x), so Fisher divergences and KL divergences to the truth can be
  computed instead of estimated; :func:`gaussian_mixture_2d` returns standard 2-D presets.
* spirals — :func:`spiral` samples a noisy Archimedean spiral; :func:`spiral_density` is the same
  construction with the curve parameter discretised, i.e. a Gaussian mixture of many small
  isotropic Gaussians strung along the curve, whose density and score are exact.

All computations are done in float64 and returned in the input's dtype; everything is plain
torch, so ``log_prob`` and ``score`` are differentiable in x (e.g. for ∂ᵢψᵢ by autograd).
"""
from __future__ import annotations

import math

import torch

from smlib._checks import check_int
from smlib.data.mixture import GaussianMixture, _generator

__all__ = [
    "GaussianMixture",
    "gaussian_mixture_2d",
    "spiral",
    "two_spirals",
    "spiral_density",
    "MIXTURE_PRESETS",
]

def _ring8(std):
    a = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return GaussianMixture(2.0 * torch.stack([torch.cos(a), torch.sin(a)], 1), stds=0.2 if std is None else std)


def _grid25(std):
    g = torch.arange(-4.0, 5.0, 2.0, dtype=torch.float64)
    means = torch.cartesian_prod(g, g)
    return GaussianMixture(means, stds=0.2 if std is None else std)


def _deen(std):
    means = [[-1.5, -1.0], [1.5, -1.0], [0.0, 1.5]]
    weights = [0.4, 0.35, 0.25]
    if std is not None:
        return GaussianMixture(means, stds=std, weights=weights)
    covs = [[[0.30, 0.15], [0.15, 0.20]], [[0.20, -0.12], [-0.12, 0.25]], [[0.40, 0.0], [0.0, 0.08]]]
    return GaussianMixture(means, covs=covs, weights=weights)


MIXTURE_PRESETS = {
    "ring8": "8 equal isotropic Gaussians (std 0.2) on a circle of radius 2 (geometry of Metz et al., 2017)",
    "grid25": "25 equal isotropic Gaussians (std 0.2) on the grid {-4,-2,0,2,4}² (geometry of Srivastava et al., 2017)",
    "deen": "3 unequal, correlated Gaussians: a stand-in for the mixture of DEEN Fig. 1(c) (parameters not published)",
}
_PRESET_BUILDERS = {"ring8": _ring8, "grid25": _grid25, "deen": _deen}


def gaussian_mixture_2d(name: str = "ring8", std: float | None = None) -> GaussianMixture:
    """A standard 2-D Gaussian mixture with exact density and score.

    Parameters
    ----------
    name : {"ring8", "grid25", "deen"}
        ``"ring8"``: 8 equal isotropic components on a circle of radius 2 (the geometry of the
        ring used by Metz et al., 2017, *Unrolled GANs*). ``"grid25"``: 25 equal components on the
        grid {−4, −2, 0, 2, 4}² (Srivastava et al., 2017, *VEEGAN*). Both papers use tiny standard
        deviations (0.02, 0.05); we default to 0.2 so the modes are resolvable at the noise levels
        σ ≈ 0.1 of DEEN's 2-D experiments. ``"deen"``: three components with unequal weights
        (0.4, 0.35, 0.25) and correlated covariances — Saremi et al. (2018, Fig. 1c) show a 2-D
        Gaussian mixture but do not publish its parameters, so this is our stand-in of that kind.
    std : float, optional
        Override every component's standard deviation (isotropic).

    Returns
    -------
    GaussianMixture
    """
    if name not in _PRESET_BUILDERS:
        raise ValueError(f"unknown mixture preset {name!r}; choose one of {sorted(_PRESET_BUILDERS)}")
    if std is not None and not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a finite number > 0, got {std!r}")
    return _PRESET_BUILDERS[name](None if std is None else float(std))


# ---------------------------------------------------------------------- spirals
def _check_spiral_args(noise, turns, radius, arms):
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    if not (isinstance(turns, (int, float)) and math.isfinite(turns) and turns > 0):
        raise ValueError(f"turns must be a finite number > 0, got {turns!r}")
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    check_int("arms", arms)


def _spiral_points(u: torch.Tensor, arm: torch.Tensor, turns: float, radius: float, arms: int) -> torch.Tensor:
    """Curve point for curve parameter u ∈ [0, 1] on arm ``arm`` (float64)."""
    theta_max = 2.0 * math.pi * turns
    theta = theta_max * torch.sqrt(u)
    phase = arm.to(torch.float64) * (2.0 * math.pi / arms)
    r = radius * torch.sqrt(u)
    return torch.stack([r * torch.cos(theta + phase), r * torch.sin(theta + phase)], dim=1)


def spiral(n: int, noise: float = 0.05, seed: int | torch.Generator | None = 0, *, turns: float = 2.0,
           radius: float = 1.0, arms: int = 1, dtype: torch.dtype | None = None) -> torch.Tensor:
    r"""Noisy Archimedean spiral in 2-D (the "spiral" toy of DEEN, Saremi et al. 2018, Fig. 1a).

    Construction: draw u ~ U(0, 1), an arm j ~ U{0, …, arms−1} and ε ~ N(0, I₂); set
    θ = 2π·turns·√u, r = radius·√u and

    .. math::
        x = r\,(\cos(\theta + 2\pi j/\text{arms}),\ \sin(\theta + 2\pi j/\text{arms}))
            + \text{noise}\cdot\varepsilon.

    The curve r ∝ θ is an Archimedean spiral; taking θ ∝ √u spreads points approximately
    uniformly in arc length (s ∝ θ² for large θ), so the inner turns are not over-populated.
    The density of these samples is known only as an integral over u; for an exact density use
    :func:`spiral_density`, the same construction with u on a fine grid.

    Parameters
    ----------
    n : int
        Number of points (> 0).
    noise : float
        Standard deviation of the isotropic Gaussian noise (≥ 0).
    seed : int, torch.Generator or None
        Seed (reproducible; default 0), a generator, or ``None`` for the global torch RNG.
    turns : float
        Number of turns of each arm.
    radius : float
        Radius of the outer end of the curve.
    arms : int
        Number of interleaved arms (2 gives :func:`two_spirals`).
    dtype : torch.dtype, optional
        Output dtype (default ``torch.get_default_dtype()``).

    Returns
    -------
    torch.Tensor, shape (n, 2)
    """
    n = check_int("n", n)
    _check_spiral_args(noise, turns, radius, arms)
    g = _generator(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    arm = torch.randint(arms, (n,), generator=g)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = _spiral_points(u, arm, float(turns), float(radius), arms) + float(noise) * eps
    return x.to(dtype or torch.get_default_dtype())


def two_spirals(n: int, noise: float = 0.05, seed: int | torch.Generator | None = 0, **kwargs) -> torch.Tensor:
    """Two interleaved noisy spirals: :func:`spiral` with ``arms=2`` (see there)."""
    return spiral(n, noise, seed, arms=2, **kwargs)


def _arc_length(turns: float, radius: float) -> float:
    """Length of the curve r = aθ, θ ∈ [0, θmax], a = radius/θmax: (a/2)[θ√(1+θ²) + asinh θ]."""
    tm = 2.0 * math.pi * turns
    a = radius / tm
    return 0.5 * a * (tm * math.sqrt(1.0 + tm * tm) + math.asinh(tm))


def spiral_density(noise: float = 0.05, *, turns: float = 2.0, radius: float = 1.0, arms: int = 1,
                   n_components: int | None = None) -> GaussianMixture:
    r"""Exact density of a Gaussian-smoothed spiral: a mixture of small Gaussians along the curve.

    The curve parameter u of :func:`spiral` is replaced by the K quantile midpoints
    uₖ = (k + ½)/K, k = 0…K−1, on each arm, so

    .. math:: p(x) = \frac{1}{K\,\text{arms}} \sum_{j,k} \mathcal N\big(x;\ c_j(u_k),\ \text{noise}^2 I_2\big),

    where c_j(u) is the curve point of :func:`spiral`. When the spacing of the centres along the
    curve is much smaller than ``noise`` this is indistinguishable from :func:`spiral`'s density
    (the default K puts ≥ 4 centres per ``noise`` of arc length), and it has exact ``log_prob`` and
    ``score`` — use it as the ground truth for KL / Fisher divergences, drawing the training data
    from ``spiral_density(...).sample(n)`` (or :func:`spiral`, its continuous limit).

    Parameters
    ----------
    noise : float
        Standard deviation of each component (> 0).
    turns, radius, arms : see :func:`spiral`.
    n_components : int, optional
        Components per arm K (default: ⌈4·arc length / noise⌉, at least 16).

    Returns
    -------
    GaussianMixture
        With K·arms equal-weight isotropic components.
    """
    _check_spiral_args(noise, turns, radius, arms)
    if noise <= 0:
        raise ValueError(f"noise must be > 0 for a density, got {noise!r}")
    if n_components is None:
        n_components = max(16, math.ceil(4.0 * _arc_length(turns, radius) / noise))
    else:
        n_components = check_int("n_components", n_components)
    K = n_components
    u = ((torch.arange(K, dtype=torch.float64) + 0.5) / K).repeat(arms)
    arm = torch.arange(arms).repeat_interleave(K)
    means = _spiral_points(u, arm, float(turns), float(radius), arms)
    return GaussianMixture(means, stds=float(noise))
