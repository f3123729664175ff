"""The fast evaluation of the Swersky protocol gives the numbers of the plain one on a fixed model."""
import pytest
import torch

from smlib import metrics, models
from smlib.experiments import swersky2011_eval as E


def _model(d, n_cov, seed=0):
    torch.manual_seed(seed)
    m = models.MPoT(d, n_cov=n_cov, n_mean=5, gamma=1.0).double()
    with torch.no_grad():  # a model away from its initialisation: larger filters, non-zero biases
        m.C.mul_(3.0)
        m.b_visible.normal_()
    return m


@pytest.mark.parametrize("d,n_cov", [(12, 20), (12, 5)])  # the dense (K >= d) and the Woodbury route
def test_conditional_mean_denoise_equals_library(d, n_cov):
    m = _model(d, n_cov)
    x = torch.randn(150, d, dtype=torch.float64)
    ref = metrics.denoise_conditional_mean(m, x)
    fast = E.conditional_mean_denoise(m, x, chunk=32)  # chunks that do not divide the batch
    assert torch.allclose(fast, ref, rtol=1e-10, atol=1e-10)


def test_conditional_mean_denoise_rejects_bad_input():
    m = _model(6, 8)
    with pytest.raises(ValueError, match="x_noisy must be"):
        E.conditional_mean_denoise(m, torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="needs an mPoT"):
        E.conditional_mean_denoise(models.GRBM(6, 4).double(), torch.zeros(3, 6, dtype=torch.float64))


def test_evaluate_equals_plain_evaluation():
    d, n_den, s = 10, 40, 1.0
    m = _model(d, 16, seed=1)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, d, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 60, d, generator=g, dtype=torch.float64)
    Xv = torch.randn(20, d, generator=g, dtype=torch.float64)
    Nv = Xv + s * torch.randn(20, d, generator=g, dtype=torch.float64)
    ctx = {"X_eval": X, "X_test": X, "eps_test": eps, "X_val": Xv, "N_val": Nv,
           "noisy_test": [X[:n_den] + s * e[:n_den] for e in eps]}
    cfg = {"noise_std": s, "n_denoise": n_den, "map_lambdas": [0.5, 1.0, 2.0], "map_steps": 10}
    got = E.evaluate(ctx, cfg, m, True)
    # the plain evaluation, written out: library denoisers on noisy copies made at the call
    clean = X[:n_den]
    for r, e in enumerate(eps):
        mf = metrics.denoise_conditional_mean(m, clean + s * e[:n_den])
        assert got[f"mf_mse_{r}"] == pytest.approx(float(metrics.mse(clean, mf)), rel=1e-9)
        assert got[f"gap_{r}"] == pytest.approx(float(metrics.free_energy_gap(m, X, s, noise=e)), rel=1e-12)
    lam, _ = metrics.select_map_lambda(m, Xv, Nv, cfg["map_lambdas"], n_steps=10, lr=1.0)
    assert got["map_lambda"] == lam
    mp = metrics.denoise_map(m, clean + s * eps[1][:n_den], lam, n_steps=10, lr=1.0)
    assert got["map_mse_1"] == pytest.approx(float(metrics.mse(clean, mp)), rel=1e-9)
    assert set(E.evaluate(ctx, cfg, m, False)) == {"reconstruction", "variance", "curvature", "total", "gap_0", "gap_1"}


def test_wilson_interval():
    from smlib.experiments.swersky2011 import wilson_interval
    lo, hi = wilson_interval(0.0, 64)
    assert lo == 0.0 and 0.05 < hi < 0.06  # z²/(n + z²) = 3.84/67.84 ≈ 0.057
    lo, hi = wilson_interval(0.5, 64)
    assert hi - 0.5 == pytest.approx(0.5 - lo) and 0.11 < hi - 0.5 < 0.13  # ≈ 1.96·√(¼/64)·(1 − small)
