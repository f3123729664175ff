"""Gaussian mixtures in any dimension with exact log-density and score (the toy densities' truth).

p(x) = Σₖ πₖ N(x; μₖ, Σₖ); ``score`` ψ(x) = ∇ₓ log p(x) is exact, so Fisher divergences and KL
divergences to the truth can be computed instead of estimated. Computations are float64 and
returned in the input's dtype; everything is plain torch, hence differentiable in x.
"""
from __future__ import annotations

import math

import torch

from smlib._checks import check_int

__all__ = ["GaussianMixture"]

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
