"""Small helpers shared by the unit tests (importable because pyproject puts tests/ on the path)."""
import torch

from smlib.book.helpers import randomise


def randomize(model, scale=0.5, seed=0):
    """Move every parameter away from its (often symmetric / zero) initialisation (seeded)."""
    return randomise(model, scale, generator=torch.Generator().manual_seed(seed), add=True)


def assert_sample_moments(x, mean, cov, *, k_mean=5.0, k_cov=5.0):
    """Sample mean and covariance of ``x`` (n, d) within k Gaussian standard errors of the truth.

    Standard errors: sqrt(Σᵢᵢ/n) for a mean, sqrt((ΣᵢᵢΣⱼⱼ + Σᵢⱼ²)/n) for a covariance entry.
    """
    n = x.shape[0]
    var = torch.diagonal(cov)
    assert ((x.mean(0) - mean).abs() < k_mean * (var / n).sqrt()).all(), (x.mean(0), mean)
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((torch.cov(x.T) - cov).abs() < k_cov * se_cov).all(), (torch.cov(x.T), cov)
