"""Tests of smlib.samplers: each sampler reproduces a known distribution.

Statistical tolerances: the moments are estimated from the final states of N independent chains
(N = 4000–8000), so the standard error of a mean is ≤ sqrt(2.2 / 4000) ≈ 0.024 and that of a
covariance entry ≤ 2.2·sqrt(2 / 4000) ≈ 0.05; the tolerances below are ≈ 4–5 standard errors.
Every generator is seeded, so the tests are deterministic.
"""
import math

import pytest
import torch

from smlib import samplers
from smlib.models import GRBM


pytestmark = pytest.mark.usefixtures("float64")  # every test in float64 (conftest.py)


MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=torch.float64)
LAMBDA = torch.linalg.inv(SIGMA)


class Quadratic(torch.nn.Module):
    """E(x) = ½ (x − μ)ᵀ Λ (x − μ): the Gaussian N(μ, Λ⁻¹); μ is a learnable parameter."""

    def __init__(self, mu=MU, precision=LAMBDA):
        super().__init__()
        self.mu = torch.nn.Parameter(mu.clone())
        self.register_buffer("precision", precision.clone())
        self.dim = mu.numel()

    def energy(self, x):
        z = x - self.mu
        return 0.5 * ((z @ self.precision) * z).sum(1)

    forward = energy


class GaussianGibbs(Quadratic):
    """The same Gaussian with a systematic-scan Gibbs step x₁ | x₂, then x₂ | x₁."""

    def gibbs_step(self, v, generator=None):
        v = v.clone()
        P, mu = self.precision, self.mu.detach()
        for i, j in ((0, 1), (1, 0)):
            # x_i | x_j ~ N(mu_i − P_ij/P_ii (x_j − mu_j), 1/P_ii)
            mean = mu[i] - P[i, j] / P[i, i] * (v[:, j] - mu[j])
            noise = torch.randn(v.shape[0], generator=generator, dtype=v.dtype)
            v[:, i] = mean + noise / P[i, i].sqrt()
        return v


def moments(x):
    m = x.mean(0)
    z = x - m
    return m, z.T @ z / (x.shape[0] - 1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_gaussian(x, mu, cov, tol_mean=0.1, tol_cov=0.2):
    m, c = moments(x)
    assert torch.allclose(m, mu, atol=tol_mean), (m, mu)
    assert torch.allclose(c, cov, atol=tol_cov), (c, cov)


def test_langevin_matches_the_ula_stationary_law():
    # ULA on a Gaussian: x' = (I − hΛ)x + hΛμ + √(2h)ξ has stationary covariance
    # C = Σ (I − hΛ/2)⁻¹ (solve C = (I−hΛ)C(I−hΛ) + 2hI), i.e. an O(h) bias that MALA removes.
    model = Quadratic()
    h = 0.5
    x = samplers.langevin(model, torch.zeros(8000, 2), n_steps=100, step_size=h, generator=gen())
    c_ula = SIGMA @ torch.linalg.inv(torch.eye(2) - h * LAMBDA / 2)
    assert (c_ula - SIGMA).abs().max() > 0.2  # the bias is resolvable at this sample size
    assert_gaussian(x, MU, c_ula, tol_mean=0.08, tol_cov=0.15)


def test_langevin_small_step_matches_gaussian():
    model = Quadratic()
    x = samplers.langevin(model, torch.zeros(4000, 2), n_steps=300, step_size=0.05, generator=gen(1))
    assert_gaussian(x, MU, SIGMA, tol_mean=0.1, tol_cov=0.2)


def test_mala_removes_the_discretisation_bias():
    model = Quadratic()
    x, info = samplers.mala(model, torch.zeros(4000, 2), n_steps=150, step_size=0.3, generator=gen(2), return_info=True)
    assert 0.3 < info["accept_rate"] < 1.0
    assert_gaussian(x, MU, SIGMA, tol_mean=0.1, tol_cov=0.2)


def test_hmc_with_adaptation_matches_gaussian():
    model = Quadratic()
    x0 = torch.zeros(4000, 2)
    x, info = samplers.hmc(model, x0, n_steps=60, n_leapfrog=5, step_size=1.5, generator=gen(3), return_info=True)
    assert 0.3 < info["accept_rate"] < 1.0
    assert_gaussian(x, MU, SIGMA, tol_mean=0.1, tol_cov=0.2)


def test_hmc_dual_averaging_hits_target_acceptance_in_20d():
    # d = 20, precision eigenvalues in [0.5, 2]: start from a step that accepts ~0; dual averaging
    # (Hoffman & Gelman 2014) over 50 transitions brings the mean acceptance near 0.65.
    d = 20
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen(0)))
    precision = q @ torch.diag(torch.linspace(0.5, 2.0, d)) @ q.T
    model = Quadratic(torch.zeros(d), precision)
    x, info = samplers.hmc(model, torch.zeros(1000, d), 100, 5, 1.5, generator=gen(3), return_info=True)
    assert abs(info["accept_rate"] - 0.65) < 0.1, info
    m, c = moments(x)
    assert m.abs().max() < 0.15
    assert (c - torch.linalg.inv(precision)).abs().max() < 0.25


def test_hmc_without_adaptation_keeps_step_size():
    model = Quadratic()
    _, info = samplers.hmc(model, torch.zeros(100, 2), 5, 3, 0.2, adapt=False, generator=gen(), return_info=True)
    assert info["step_size"] == 0.2


def test_gibbs_matches_gaussian():
    model = GaussianGibbs()
    x = samplers.gibbs(model, torch.zeros(4000, 2), k=30, generator=gen(4))
    assert_gaussian(x, MU, SIGMA, tol_mean=0.1, tol_cov=0.2)


def test_gibbs_on_tiny_grbm_matches_the_exact_marginal():
    # Moments of p(v) = exp(−F(v))/Z by quadrature on a fine grid (independent of the sampler
    # and of the closed-form log Z), against 4000 chains after 40 block-Gibbs sweeps.
    model = GRBM(2, 3, sigma=1.0).double()
    with torch.no_grad():
        model.W.copy_(torch.tensor([[1.5, -1.0, 0.5], [0.5, 1.2, -1.5]]))
        model.b.copy_(torch.tensor([-1.0, 0.5, -0.5]))
        model.c.copy_(torch.tensor([0.3, -0.2]))
    t = torch.linspace(-9, 9, 601)
    grid = torch.cartesian_prod(t, t)
    with torch.no_grad():
        w = torch.softmax(-model.energy(grid), 0)
    mu = w @ grid
    z = grid - mu
    cov = (w[:, None] * z).T @ z
    with torch.no_grad():  # log Z by the same quadrature agrees with the enumeration
        log_z = torch.logsumexp(-model.energy(grid), 0) + 2 * torch.log(t[1] - t[0])
    assert torch.allclose(log_z, model.log_partition(), atol=1e-6)
    x = samplers.gibbs(model, torch.zeros(4000, 2), k=40, generator=gen(6))
    assert_gaussian(x, mu, cov, tol_mean=0.12, tol_cov=0.25)


@pytest.mark.parametrize("name", ["langevin", "mala", "hmc", "gibbs"])
def test_reproducible_detached_and_no_grad_leak(name):
    model = GaussianGibbs()
    x0 = torch.randn(16, 2, generator=gen(9)).requires_grad_(True)
    run = {
        "langevin": lambda g: samplers.langevin(model, x0, 5, 0.1, generator=g),
        "mala": lambda g: samplers.mala(model, x0, 5, 0.1, generator=g),
        "hmc": lambda g: samplers.hmc(model, x0, 5, 3, 0.1, generator=g),
        "gibbs": lambda g: samplers.gibbs(model, x0, 5, generator=g),
    }[name]
    a, b, c = run(gen(7)), run(gen(7)), run(gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not a.requires_grad and a.grad_fn is None
    assert model.mu.grad is None  # nothing was accumulated into θ
    assert not torch.equal(a, x0.detach())


def test_plain_callable_energy_and_zero_steps():
    energy = lambda x: 0.5 * (x**2).sum(1)  # noqa: E731
    x0 = torch.ones(3, 2)
    assert torch.equal(samplers.langevin(energy, x0, 0, 0.1), x0)
    x = samplers.mala(energy, x0, 3, 0.1, generator=gen())
    assert x.shape == (3, 2)
    e, g = samplers.energy_and_grad(energy, x0)
    assert torch.allclose(e, torch.ones(3)) and torch.allclose(g, x0)


def test_bad_input():
    model = Quadratic()
    with pytest.raises(ValueError, match="step_size"):
        samplers.langevin(model, torch.zeros(2, 2), 1, 0.0)
    with pytest.raises(ValueError, match="shape"):
        samplers.mala(model, torch.zeros(2), 1, 0.1)
    with pytest.raises(ValueError, match="floating"):
        samplers.hmc(model, torch.zeros(2, 2, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="NaN"):
        samplers.langevin(model, torch.full((2, 2), math.nan), 1, 0.1)
    with pytest.raises(TypeError, match="gibbs_step"):
        samplers.gibbs(model, torch.zeros(2, 2), 1)
    with pytest.raises(ValueError, match="target_accept"):
        samplers.hmc(model, torch.zeros(2, 2), 1, target_accept=1.5)


def test_robbins_monro_direction():
    assert samplers.robbins_monro(0.1, 0.9) > 0.1
    assert samplers.robbins_monro(0.1, 0.2) < 0.1


# ---------------------------------------------------------------------------------------------
# annealed Langevin dynamics
# ---------------------------------------------------------------------------------------------
class GaussianLadder:
    """Data N(μ, vI): the exact noisy score s(x, σ) = −(x − μ)/(v + σ²) of q_σ = N(μ, (v + σ²)I)."""

    def __init__(self, mu=(1.0, -0.5), v=0.3):
        self.mu, self.v = torch.tensor(mu, dtype=torch.float64), v

    def score(self, x, sigma):
        return -(x - self.mu) / (self.v + sigma**2)


def annealed_moments(m0, v0, ladder, sigmas, T, eps, denoise):
    """Exact mean and variance (per coordinate) after annealed Langevin from N(m0, v0):
    each step x ← (1 − a)x + aμ + √α ξ with a = α/(2(v + σ²)), α = ε σ²/σ_L²; Tweedie scales by v/(v + σ_L²)."""
    m, var = m0 - ladder.mu, v0
    for s in sigmas:
        alpha = eps * (s / sigmas[-1]) ** 2
        a = alpha / (2 * (ladder.v + s**2))
        for _ in range(T):
            m, var = (1 - a) * m, (1 - a) ** 2 * var + alpha
    if denoise:
        r = ladder.v / (ladder.v + sigmas[-1] ** 2)
        m, var = r * m, r * r * var
    return m + ladder.mu, var


@pytest.mark.parametrize("denoise", [True, False])
def test_annealed_langevin_matches_its_exact_gaussian_law(denoise):
    # every step is linear-Gaussian, so the law after the whole schedule is known exactly; few steps
    # per level so that the result depends on each level's step size (α ∝ σ²) and on the Tweedie step
    ladder, sigmas, T, eps = GaussianLadder(), (3.0, 1.0, 0.3), 5, 0.02
    x0 = 4.0 + 2.0 * torch.randn(20000, 2, generator=gen(1))
    x = samplers.annealed_langevin(ladder, x0, sigmas, T, eps, generator=gen(2), denoise=denoise)
    m, var = annealed_moments(torch.tensor(4.0), 4.0, ladder, sigmas, T, eps, denoise)
    se_m, se_v = (var / 20000) ** 0.5, var * (2 / 20000) ** 0.5
    assert (x.mean(0) - m).abs().max() < 4.5 * se_m, (x.mean(0), m)
    assert (x.var(0) - var).abs().max() < 4.5 * se_v, (x.var(0), var)
    far = annealed_moments(torch.tensor(4.0), 4.0, ladder, sigmas, T, eps, not denoise)  # the test can tell
    assert (far[0] - m).abs().max() > 20 * se_m or abs(far[1] - var) > 20 * se_v


def test_annealed_langevin_long_run_reaches_the_data_law():
    # 200 steps per level relax the last level's chain (rate a = α/2(v + σ_L²) ≈ 0.016 per step), so it
    # samples q_{σ_L} up to ULA's O(a) bias, N(μ, (v + σ_L²)/(1 − a/2)); the Tweedie step maps that to
    # about N(μ, v²/(v + σ_L²)) (0.8 % above it)
    ladder, sigmas = GaussianLadder(), (2.0, 0.5, 0.1)
    x = samplers.annealed_langevin(ladder, torch.zeros(8000, 2), sigmas, 200, 1e-2, generator=gen(3))
    assert_gaussian(x, ladder.mu, torch.eye(2) * ladder.v**2 / (ladder.v + 0.01), tol_mean=0.04, tol_cov=0.03)


def test_annealed_langevin_seeded_and_validated():
    ladder = GaussianLadder()
    x0 = torch.zeros(50, 2)
    state = torch.random.get_rng_state()
    a = samplers.annealed_langevin(ladder, x0, (1.0, 0.1), 3, 0.01, generator=gen(5))
    b = samplers.annealed_langevin(ladder, x0, (1.0, 0.1), 3, 0.01, generator=gen(5))
    assert torch.equal(a, b) and torch.equal(state, torch.random.get_rng_state())  # the global RNG untouched
    for sig in ((0.1, 1.0), (), (1.0, -0.1), (1.0, 1.0)):
        with pytest.raises(ValueError):
            samplers.annealed_langevin(ladder, x0, sig, 3, 0.01)
    with pytest.raises(ValueError):
        samplers.annealed_langevin(ladder, x0, (1.0, 0.1), 3, 0.0)
