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

__all__ = [
    "GaussianMixture",
    "gaussian_mixture_2d",
    "gaussian_mixture",
    "spiral",
    "two_spirals",
    "spiral_density",
    "MIXTURE_PRESETS",
]

_LOG_2PI = math.log(2.0 * math.pi)
_MAX_CHUNK_ELEMENTS = 1 << 22  # B·K·d elements per chunk in log_prob / score


def _generator(seed, generator=None) -> torch.Generator | None:
    """A CPU ``torch.Generator`` from ``seed`` (int), or ``generator``; ``None`` = global RNG."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if isinstance(seed, torch.Generator):
        return seed
    if generator is not None:
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, a torch.Generator or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


class GaussianMixture:
    r"""Mixture of Gaussians with exact log-density and score.

    .. math::
        p(x) = \sum_{k=1}^{K} \pi_k\, \mathcal N(x; \mu_k, \Sigma_k), \qquad
        \psi(x) = \nabla_x \log p(x) = -\sum_k r_k(x)\, \Sigma_k^{-1}(x - \mu_k),

    with responsibilities :math:`r_k(x) = \pi_k \mathcal N(x;\mu_k,\Sigma_k) / p(x)`. The energy
    :math:`E(x) = -\log p(x)` is normalised (Z = 1), so ψ = −∇E as in the book's conventions.

    Parameters
    ----------
    means : array-like, shape (K, d)
        Component means μₖ.
    covs : array-like, shape (K, d, d) or (d, d), optional
        Full covariances Σₖ (symmetric positive definite; one (d, d) matrix is shared by all).
    stds : float or array-like, shape (K,) or (K, d), optional
        Standard deviations instead of ``covs``: one number for all components, one per
        component (isotropic Σₖ = sₖ² I) or one per component and axis (diagonal Σₖ).
        Give exactly one of ``covs`` and ``stds``.
    weights : array-like, shape (K,), optional
        Mixing weights πₖ ≥ 0 summing to 1 (within 1e-6). Default: uniform.

    Raises
    ------
    ValueError
        On wrong shapes, non-finite values, negative or unnormalised weights, non-positive
        standard deviations, or covariances that are not symmetric positive definite.

    Examples
    --------
    >>> gm = GaussianMixture([[0.0, 0.0], [3.0, 0.0]], stds=0.5, weights=[0.3, 0.7])
    >>> x = gm.sample(1000, seed=0)
    >>> gm.log_prob(x).shape, gm.score(x).shape
    (torch.Size([1000]), torch.Size([1000, 2]))
    """

    def __init__(self, means, covs=None, stds=None, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64).detach().cpu()
        if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
            raise ValueError(f"means must have shape (K, d) with K, d >= 1, got {tuple(means.shape)}")
        if not torch.isfinite(means).all():
            raise ValueError("means must be finite")
        K, d = means.shape
        if (covs is None) == (stds is None):
            raise ValueError("give exactly one of covs (full covariances) and stds (standard deviations)")

        self._std = None  # (K, d) for diagonal components
        self._scale_tril = None  # (K, d, d) Cholesky factors for full components
        if stds is not None:
            s = torch.as_tensor(stds, dtype=torch.float64).detach().cpu()
            if s.ndim == 0:
                s = s.expand(K, d)
            elif s.shape == (K,):
                s = s[:, None].expand(K, d)
            elif s.shape != (K, d):
                raise ValueError(f"stds must be a number or have shape ({K},) or ({K}, {d}), got {tuple(s.shape)}")
            if not (torch.isfinite(s).all() and (s > 0).all()):
                raise ValueError("stds must be finite and > 0")
            self._std = s.clone()
        else:
            c = torch.as_tensor(covs, dtype=torch.float64).detach().cpu()
            if c.shape == (d, d):
                c = c.expand(K, d, d)
            if c.shape != (K, d, d):
                raise ValueError(f"covs must have shape ({K}, {d}, {d}) or ({d}, {d}), got {tuple(c.shape)}")
            if not torch.isfinite(c).all():
                raise ValueError("covs must be finite")
            scale = c.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-300)
            if not torch.allclose(c / scale, c.mT / scale, atol=1e-10, rtol=0):
                raise ValueError("covs must be symmetric")
            L, info = torch.linalg.cholesky_ex(c)
            bad = torch.nonzero(info).flatten().tolist()
            if bad:
                raise ValueError(f"covs[{bad[0]}] is not positive definite")
            self._scale_tril = L.clone()

        if weights is None:
            w = torch.full((K,), 1.0 / K, dtype=torch.float64)
        else:
            w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
            if w.shape != (K,):
                raise ValueError(f"weights must have shape ({K},), got {tuple(w.shape)}")
            if not torch.isfinite(w).all() or (w < 0).any():
                raise ValueError("weights must be finite and >= 0")
            if abs(float(w.sum()) - 1.0) > 1e-6:
                raise ValueError(f"weights must sum to 1, they sum to {float(w.sum())!r}")
            w = w / w.sum()
        self.means = means.clone()
        self.weights = w
        self._log_weights = torch.log(w)  # -inf for zero weights: those components never count

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Dimension d of x."""
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return self.means.shape[0]

    @property
    def covs(self) -> torch.Tensor:
        """Covariances Σₖ, shape (K, d, d), float64."""
        if self._std is not None:
            return torch.diag_embed(self._std**2)
        return self._scale_tril @ self._scale_tril.mT

    def mean(self) -> torch.Tensor:
        """Mixture mean Σₖ πₖ μₖ, shape (d,)."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Mixture covariance Σₖ πₖ (Σₖ + μₖμₖᵀ) − m mᵀ, shape (d, d)."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :])
        return second - torch.outer(m, m)

    def __repr__(self) -> str:
        kind = "diagonal" if self._std is not None else "full"
        return f"GaussianMixture(n_components={self.n_components}, dim={self.dim}, covariances={kind})"

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None, seed: int | None = None,
               dtype: torch.dtype | None = None, return_labels: bool = False):
        """Draw ``n`` samples: k ~ Categorical(π), then x = μₖ + Lₖ ε with ε ~ N(0, I), LₖLₖᵀ = Σₖ.

        Parameters
        ----------
        n : int
            Number of samples (> 0).
        generator : torch.Generator, optional
            CPU generator to draw from. Mutually exclusive with ``seed``.
        seed : int, optional
            Seed for a fresh generator. With neither ``generator`` nor ``seed`` the global torch
            RNG is used.
        dtype : torch.dtype, optional
            Output dtype (default ``torch.get_default_dtype()``); drawing is done in float64.
        return_labels : bool
            Also return the component index of each sample (int64, shape (n,)).

        Returns
        -------
        x : torch.Tensor, shape (n, d)
        labels : torch.Tensor, shape (n,), only if ``return_labels``
        """
        n = check_int("n", n)
        g = _generator(seed, generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        eps = torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        if self._std is not None:
            x = self.means[k] + self._std[k] * eps
        else:
            x = self.means[k] + (self._scale_tril[k] @ eps[:, :, None])[:, :, 0]
        x = x.to(dtype or torch.get_default_dtype())
        return (x, k) if return_labels else x

    # ------------------------------------------------------------------ density
    def _check_x(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x, dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            x = x.to(torch.float64)
        return x

    def _terms(self, x64: torch.Tensor):
        """log πₖ + log N(x; μₖ, Σₖ) (B, K) and Σₖ⁻¹(x − μₖ) (B, K, d), in float64."""
        dev = x64.device
        mu = self.means.to(dev)
        diff = x64[:, None, :] - mu[None, :, :]
        d = self.dim
        if self._std is not None:
            s = self._std.to(dev)
            z = diff / s
            prec_diff = z / s
            logdet_half = torch.log(s).sum(-1)  # ½ log det Σₖ
        else:
            L = self._scale_tril.to(dev)
            zt = torch.linalg.solve_triangular(L, diff.permute(1, 2, 0), upper=False)  # (K, d, B)
            prec_diff = torch.linalg.solve_triangular(L.mT, zt, upper=True).permute(2, 0, 1)
            z = zt.permute(2, 0, 1)
            logdet_half = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        log_comp = self._log_weights.to(dev) - 0.5 * (z * z).sum(-1) - logdet_half - 0.5 * d * _LOG_2PI
        return log_comp, prec_diff

    def _chunks(self, x: torch.Tensor):
        size = max(1, _MAX_CHUNK_ELEMENTS // (self.n_components * self.dim))
        return x.split(size) if x.shape[0] > size else (x,)

    def log_prob(self, x) -> torch.Tensor:
        """Exact log p(x) = logsumexpₖ [log πₖ + log N(x; μₖ, Σₖ)], shape (B,), in x's dtype."""
        x = self._check_x(x)
        out = [torch.logsumexp(self._terms(c.to(torch.float64))[0], dim=1) for c in self._chunks(x)]
        return torch.cat(out).to(x.dtype)

    def energy(self, x) -> torch.Tensor:
        """Normalised energy E(x) = −log p(x), shape (B,)."""
        return -self.log_prob(x)

    def score(self, x) -> torch.Tensor:
        """Exact score ψ(x) = ∇ₓ log p(x) = −Σₖ rₖ(x) Σₖ⁻¹(x − μₖ), shape (B, d), in x's dtype."""
        x = self._check_x(x)
        out = []
        for c in self._chunks(x):
            log_comp, prec_diff = self._terms(c.to(torch.float64))
            r = torch.softmax(log_comp, dim=1)
            out.append(-(r[:, :, None] * prec_diff).sum(1))
        return torch.cat(out).to(x.dtype)

    def responsibilities(self, x) -> torch.Tensor:
        """Posterior component probabilities rₖ(x), shape (B, K)."""
        x = self._check_x(x)
        out = [torch.softmax(self._terms(c.to(torch.float64))[0], dim=1) for c in self._chunks(x)]
        return torch.cat(out).to(x.dtype)


# ---------------------------------------------------------------------- 2-D presets
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


#: Alias kept for the name used in the project's API contract.
gaussian_mixture = gaussian_mixture_2d


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
