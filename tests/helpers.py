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


#: per experiment: the "ci" preset of the Swersky protocols shrunk so that a run takes seconds (same code path)
TINY_SWERSKY = {
    "swersky2011": dict(n_train=512, n_epochs=2, n_cov=8, n_mean=4, n_test=200, n_val=40, n_denoise=40, n_eval=200,
                        n_gabor=2, map_steps=3, denoise_dense_until=2, smd_sweep=[]),
    "swersky2011_features": dict(n_seeds=2, n_patches=600, n_epochs=1, n_cov=4, n_mean=2, n_train_images=60,
                                 n_val_images=40, n_test_images=60, patience=1, probe_iter=5, probe_Cs=[1.0]),
}


def is_verdict(verdict: str) -> bool:
    """A verdict of `smlib.experiments.verdicts`: a rule's outcome, or a gate's "not testable: <reason>"."""
    from smlib.experiments import verdicts as V

    return (verdict in (V.HOLDS, V.PARTLY, V.FAILS, V.UNTESTABLE)
            or verdict.startswith(V.NOT_TESTABLE + ": ") and len(verdict) > len(V.NOT_TESTABLE) + 2)
