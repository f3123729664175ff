"""PCA and ZCA whitening of patches, keeping a fraction of the variance (Swersky et al. 2011, §4)."""
from __future__ import annotations

import numpy as np
import torch

from smlib._checks import check_choice

__all__ = ["PatchWhitener", "whitened_variance_ratio", "WienerFilter"]


class PatchWhitener:
    r"""PCA (default) or ZCA whitening that keeps a fraction of the variance.

    Fit: μ = mean of the data, C = cov of the data (N − 1 denominator) = U Λ Uᵀ with eigenvalues in
    decreasing order; keep the first k components, k the smallest number with
    Σ_{i≤k} λᵢ / Σᵢ λᵢ ≥ ``keep``. Eigenvalues below 1e-10·λ_max are always dropped: per-patch
    mean removal makes C singular (the constant direction has zero variance), and whitening it
    would divide by zero.

    * PCA whitening (``method="pca"``): z = Λₖ^{-1/2} Uₖᵀ (x − μ), k-dimensional. This is what
      Swersky et al. (2011) did (99 % of the variance: 105 of 768 dimensions for 16×16 colour
      patches); it also drops the high-frequency, low-variance directions that are mostly noise.
    * ZCA whitening (``method="zca"``): z = Uₖ Λₖ^{-1/2} Uₖᵀ (x − μ), rotated back to pixel space
      (d-dimensional, rank k). Whitened patches still look like images, and local filters stay
      local; use it when a model or a figure needs pixel coordinates.

    Parameters
    ----------
    keep : float in (0, 1]
        Fraction of the variance to keep.
    method : {"pca", "zca"}

    Attributes (after :meth:`fit`)
    ------------------------------
    mean_ : (d,) tensor; components_ : (d, k) tensor Uₖ; eigenvalues_ : (k,) tensor Λₖ;
    n_components_ : int k; explained_variance_ratio_ : float.
    """

    def __init__(self, keep: float = 0.99, method: str = "pca"):
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not (0 < keep <= 1):
            raise ValueError(f"keep must be in (0, 1], got {keep!r}")
        check_choice("whitening method", method, ("pca", "zca"))
        self.keep = float(keep)
        self.method = method
        self.mean_ = None

    # conversions: numpy in -> numpy out, torch in -> torch out, same floating dtype
    @staticmethod
    def _to64(x, name="x"):
        is_np = isinstance(x, np.ndarray)
        t = torch.from_numpy(np.asarray(x)) if is_np else x
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{name} must have shape (N, D), got {tuple(t.shape)}")
        dtype = t.dtype if t.is_floating_point() else torch.float64
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf")
        return t.detach().to(dtype=torch.float64, device="cpu"), is_np, dtype, t.device

    @staticmethod
    def _back(t, is_np, dtype, device):
        return t.to(dtype).numpy() if is_np else t.to(dtype=dtype, device=device)

    def _require_fit(self):
        if self.mean_ is None:
            raise RuntimeError("PatchWhitener is not fitted: call fit(x) first")

    def fit(self, x) -> "PatchWhitener":
        """Estimate μ, Uₖ, Λₖ from data ``x`` of shape (N, d), N ≥ 2."""
        x, *_ = self._to64(x)
        if x.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 samples, got {x.shape[0]}")
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / (x.shape[0] - 1)
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.flip(1)
        if evals[0] <= 0:
            raise ValueError("the data have zero variance: nothing to whiten")
        positive = int((evals > 1e-10 * evals[0]).sum())
        evals, evecs = evals[:positive], evecs[:, :positive]
        frac = torch.cumsum(evals, 0) / evals.sum()
        k = min(positive, int((frac < self.keep - 1e-12).sum()) + 1)
        # fix the sign of each eigenvector (largest-magnitude entry positive) for reproducibility
        idx = evecs[:, :k].abs().argmax(0)
        signs = torch.sign(evecs[idx, torch.arange(k)])
        self.components_ = evecs[:, :k] * signs
        self.eigenvalues_ = evals[:k]
        self.mean_ = mean
        self.n_components_ = k
        self.explained_variance_ratio_ = float(self.eigenvalues_.sum() / torch.diagonal(cov).sum())
        return self

    @property
    def whitening_matrix(self) -> torch.Tensor:
        """V with z = (x − μ) V: Uₖ Λₖ^{-1/2} (d, k) for PCA, Uₖ Λₖ^{-1/2} Uₖᵀ (d, d) for ZCA."""
        self._require_fit()
        v = self.components_ / torch.sqrt(self.eigenvalues_)
        return v @ self.components_.T if self.method == "zca" else v

    @property
    def dewhitening_matrix(self) -> torch.Tensor:
        """D with x − μ = z D: Λₖ^{1/2} Uₖᵀ (k, d) for PCA, Uₖ Λₖ^{1/2} Uₖᵀ (d, d) for ZCA."""
        self._require_fit()
        dw = (self.components_ * torch.sqrt(self.eigenvalues_)).T
        return self.components_ @ dw if self.method == "zca" else dw

    def transform(self, x):
        """Whiten rows of ``x`` (N, d) → (N, k) for PCA, (N, d) for ZCA."""
        self._require_fit()
        t, *back = self._to64(x)
        if t.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"x must have {self.mean_.shape[0]} columns, got {t.shape[1]}")
        return self._back((t - self.mean_) @ self.whitening_matrix, *back)

    def fit_transform(self, x):
        """:meth:`fit` then :meth:`transform`."""
        return self.fit(x).transform(x)

    def inverse_transform(self, z):
        """Map whitened rows back to pixel space: x = z D + μ (exact on the kept subspace)."""
        self._require_fit()
        t, *back = self._to64(z, "z")
        n_in = self.n_components_ if self.method == "pca" else self.mean_.shape[0]
        if t.shape[1] != n_in:
            raise ValueError(f"z must have {n_in} columns, got {t.shape[1]}")
        return self._back(t @ self.dewhitening_matrix + self.mean_, *back)

    def dewhiten_filters(self, W, kind: str = "basis"):
        r"""Map weights learned on whitened data back to pixel space, for display.

        ``W`` has one filter per **column**, shape (n_in, m) with n_in = k (PCA) or d (ZCA) — the
        layout of ``GRBM.W`` (n_visible, n_hidden). Returns shape (d, m).

        * ``kind="basis"`` (default): Dᵀ w, the pixel-space pattern whose whitened coordinates are w
          (the dewhitening used for the filter figures of Ranzato & Hinton, 2010 and
          Swersky et al., 2011). Smooth, image-like.
        * ``kind="filter"``: V w, the pixel-space receptive field, wᵀz = (V w)ᵀ(x − μ). High-pass
          looking (whitening flattens the 1/f² spectrum).
        """
        self._require_fit()
        check_choice("kind", kind, ("basis", "filter"))
        t, *back = self._to64(W, "W")
        n_in = self.n_components_ if self.method == "pca" else self.mean_.shape[0]
        if t.shape[0] != n_in:
            raise ValueError(f"W must have shape ({n_in}, n_filters) (one filter per column), got {tuple(t.shape)}")
        m = self.dewhitening_matrix.T if kind == "basis" else self.whitening_matrix
        return self._back(m @ t, *back)


def whitened_variance_ratio(whitener: PatchWhitener, x_train, x_test, center: str = "train") -> dict:
    r"""Per-component variance of whitened test data over that of whitened training data, averaged.

    With z = whitener.transform(x) and components i = 1…k,

        rᵢ = s²ᵢ(test) / s²ᵢ(train),   ratio = (1/k) Σᵢ rᵢ,

    where s²ᵢ is the mean of (zᵢ − cᵢ)² with cᵢ the training mean of zᵢ (``center="train"``: the
    second moment a denoiser fitted on training data sees, so a shift of the mean counts as
    mismatch) or each set's own mean (``center="own"``, N − 1 denominator). A whitener fitted on
    ``x_train`` gives s²ᵢ(train) ≈ 1 (exactly 1 for ``center="own"``); a test set from the same
    distribution gives ratio ≈ 1 (issue 22's gate: [0.8, 1.25]; held-out photographs gave 2.40).

    Parameters
    ----------
    whitener : PatchWhitener, fitted (normally on ``x_train``)
    x_train, x_test : (N, d) pixel-space patches (tensors or arrays)
    center : {"train", "own"}

    Returns
    -------
    dict  ``{"ratio": float, "per_component": (k,) tensor rᵢ, "train": mean s²(train),
    "test": mean s²(test)}``
    """
    check_choice("center", center, ("train", "own"))
    z_tr = whitener.transform(PatchWhitener._to64(x_train, "x_train")[0])
    z_te = whitener.transform(PatchWhitener._to64(x_test, "x_test")[0])
    if z_tr.shape[0] < 2 or z_te.shape[0] < 2:
        raise ValueError("x_train and x_test need at least 2 rows each")
    if center == "own":
        v_tr, v_te = z_tr.var(0), z_te.var(0)
    else:
        mu = z_tr.mean(0)
        v_tr, v_te = ((z_tr - mu) ** 2).mean(0), ((z_te - mu) ** 2).mean(0)
    r = v_te / v_tr
    return {"ratio": float(r.mean()), "per_component": r, "train": float(v_tr.mean()), "test": float(v_te.mean())}


class WienerFilter:
    r"""Per-component Wiener filter: the best linear denoiser of data with independent components.

    Fitted on clean training data z (normally whitened patches), with per-component mean μᵢ and
    variance vᵢ; for a noisy observation z̃ = z + σε, ε ~ N(0, I),

        ẑᵢ = μᵢ + vᵢ / (vᵢ + σ²) · (z̃ᵢ − μᵢ),

    the linear minimum-mean-squared-error estimate of each component from its own noisy value,
    with expected error vᵢσ² / (vᵢ + σ²) per component (Wiener 1949; for Gaussian data it is the
    posterior mean, so no denoiser does better). On data whitened with the training statistics
    vᵢ ≈ 1 and the filter is z̃/(1 + σ²); a test set of another distribution (e.g. held-out
    photographs, whitened variance 2.4) is where it stops being optimal — a baseline for every
    denoising curve, beside predict-zero and the noisy input (issue 22).

    Parameters
    ----------
    sigma : float > 0
        Noise standard deviation σ.

    Attributes (after :meth:`fit`)
    ------------------------------
    mean_ : (k,) μ;  variance_ : (k,) v (N − 1 denominator);  gain_ : (k,) v/(v + σ²);
    expected_mse_ : float, (1/k) Σᵢ vᵢσ²/(vᵢ + σ²) (mean over components, as ``metrics.mse``).
    """

    def __init__(self, sigma: float):
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.gain_ = None

    def fit(self, z) -> "WienerFilter":
        """Estimate μᵢ and vᵢ from clean training rows ``z`` (N, k), N ≥ 2."""
        t, *_ = PatchWhitener._to64(z, "z")
        if t.shape[0] < 2:
            raise ValueError(f"fit needs at least 2 samples, got {t.shape[0]}")
        self.mean_, self.variance_ = t.mean(0), t.var(0)
        self.gain_ = self.variance_ / (self.variance_ + self.sigma**2)
        self.expected_mse_ = float((self.variance_ * self.sigma**2 / (self.variance_ + self.sigma**2)).mean())
        return self

    def denoise(self, noisy):
        """ẑ = μ + gain ⊙ (z̃ − μ), rows of ``noisy`` (M, k); same type and dtype as the input."""
        if self.gain_ is None:
            raise RuntimeError("WienerFilter is not fitted: call fit(z_train) first")
        t, *back = PatchWhitener._to64(noisy, "noisy")
        if t.shape[1] != self.gain_.shape[0]:
            raise ValueError(f"noisy must have {self.gain_.shape[0]} columns, got {t.shape[1]}")
        return PatchWhitener._back(self.mean_ + self.gain_ * (t - self.mean_), *back)
