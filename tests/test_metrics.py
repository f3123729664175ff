"""Tests of smlib.metrics against closed forms (float64)."""
import math

import pytest
import torch

from smlib import metrics
from smlib.models import GRBM, MLPEnergy, ScoreMLP

DT = torch.float64


pytestmark = pytest.mark.usefixtures("float64")  # every test in float64 (conftest.py)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Gaussian(torch.nn.Module):
    """E(x) = ½ (x − μ)ᵀ Λ (x − μ) + const: the Gaussian N(μ, Λ⁻¹) (unnormalised by `const`)."""

    def __init__(self, mu, cov, const=0.0):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.as_tensor(mu, dtype=DT))
        self.register_buffer("prec", torch.linalg.inv(torch.as_tensor(cov, dtype=DT)))
        self.cov = torch.as_tensor(cov, dtype=DT)
        self.const = const
        self.dim = self.mu.numel()

    def energy(self, x):
        z = x - self.mu
        return 0.5 * ((z @ self.prec) * z).sum(1) + self.const

    def score(self, x):
        return -(x - self.mu) @ self.prec

    def reconstruct(self, x):
        return x + self.score(x)  # one gradient step of size 1 on E

    def log_prob(self, x):
        return torch.distributions.MultivariateNormal(self.mu.detach(), self.cov).log_prob(x)


COV = [[1.0, 0.4], [0.4, 0.5]]


def test_free_energy_gap_sign_and_value():
    # For E = ½‖x‖² and x = 0: F(σε) − F(0) = ½σ²‖ε‖², so the gap is ½σ² mean‖ε‖² > 0.
    model = Gaussian([0.0, 0.0], torch.eye(2))
    x = torch.zeros(5, 2)
    eps = torch.randn(5, 2, generator=gen())
    gap = metrics.free_energy_gap(model, x, 0.3, noise=eps)
    assert torch.allclose(gap, 0.5 * 0.09 * (eps**2).sum(1).mean())
    assert gap > 0 and not gap.requires_grad
    assert float(f"{gap:.3f}") == pytest.approx(float(gap), abs=5e-4)  # formats like a float
    with pytest.raises(ValueError, match="noise_std"):
        metrics.free_energy_gap(model, x, 0.0)


def test_tweedie_on_gaussian_prior_is_the_posterior_mean():
    # x ~ N(μ, τ²I), ξ = x + σε ⇒ p_σ = N(μ, (τ² + σ²)I) and E[x|ξ] = (τ²ξ + σ²μ)/(τ² + σ²).
    tau2, sigma = 0.7, 0.5
    mu = torch.tensor([1.0, -2.0])
    noisy_prior = Gaussian(mu, (tau2 + sigma**2) * torch.eye(2))
    xi = torch.randn(20, 2, generator=gen(1)) * 2
    x_hat = metrics.denoise_tweedie(noisy_prior, xi, sigma)
    assert torch.allclose(x_hat, (tau2 * xi + sigma**2 * mu) / (tau2 + sigma**2), atol=1e-12)
    # a score function works too, and so does an energy network's autograd score
    assert torch.allclose(metrics.denoise_tweedie(noisy_prior.score, xi, sigma), x_hat)
    net = MLPEnergy(2, hidden=(8,)).double()
    assert torch.allclose(metrics.denoise_tweedie(net, xi, 0.3), xi + 0.09 * net.score(xi).detach())


@pytest.mark.parametrize("method,n_steps,lr", [("lbfgs", 50, 1.0), ("gd", 400, 0.1)])
def test_map_denoising_of_gaussian_prior(method, n_steps, lr):
    # argmin_v ½(v−μ)ᵀΛ(v−μ) + λ/2‖v − ξ‖² = (Λ + λI)⁻¹(Λμ + λξ)
    model = Gaussian([0.5, -0.5], COV)
    lam = 2.0
    xi = torch.randn(10, 2, generator=gen(2))
    expected = torch.linalg.solve(model.prec + lam * torch.eye(2), (model.prec @ model.mu.detach() + lam * xi).T).T
    v = metrics.denoise_map(model, xi, lam, n_steps=n_steps, lr=lr, method=method)
    assert torch.allclose(v, expected, atol=1e-6)


def test_mean_field_denoising_uses_reconstruct():
    grbm = GRBM(3, 4).double()
    x = torch.randn(6, 3, generator=gen(3))
    assert torch.allclose(metrics.denoise_mean_field(grbm, x), grbm.reconstruct(x).detach())
    with pytest.raises(TypeError, match="reconstruct"):
        metrics.denoise_mean_field(MLPEnergy(3, hidden=(4,)).double(), x)


def test_mse_conventions():
    x, y = torch.zeros(4, 3), torch.ones(4, 3)
    assert metrics.mse(x, y) == 1.0 and metrics.mse(x, y, per="sample") == 3.0


def test_curl_of_gradient_field_is_zero_and_of_rotation_is_two_omega():
    net = MLPEnergy(2, hidden=(16, 16)).double()
    pts = torch.randn(50, 2, generator=gen(4))
    assert metrics.curl_2d(net, pts).abs().max() < 1e-12
    omega = 0.7
    A = torch.tensor([[-1.0, -omega], [omega, -0.3]])  # ψ = A x: ∂ψ₂/∂x₁ − ∂ψ₁/∂x₂ = ω − (−ω)
    curl = metrics.curl_2d(lambda x: x @ A.T, ((-2, 2, -1, 1), 7))
    assert curl.shape == (7, 7) and torch.allclose(curl, torch.full((7, 7), 2 * omega))
    # a ScoreMLP is not constrained to be conservative
    assert metrics.curl_2d(ScoreMLP(2, hidden=(16,)).double(), pts).abs().max() > 1e-3


def test_jacobian_and_asymmetry():
    A = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0], [3.0, 0.0, 2.0]])
    x = torch.randn(5, 3, generator=gen(5))
    J = metrics.jacobian(lambda z: torch.tanh(z) @ A.T, x)
    expected = A[None] * (1 - torch.tanh(x) ** 2)[:, None, :]
    assert torch.allclose(J, expected)
    lin = lambda z: z @ A.T  # noqa: E731
    asym = metrics.jacobian_asymmetry(lin, x)
    assert torch.allclose(asym, torch.full((5,), float(torch.linalg.norm(A - A.T) / torch.linalg.norm(A))))
    net = MLPEnergy(3, hidden=(8,)).double()
    assert metrics.jacobian_asymmetry(net, x).max() < 1e-12


class _LinearEnergy(torch.nn.Module):
    """E(x) = θᵀx: its score ψ = −θ does not depend on x (no path to x in the score's graph)."""

    def __init__(self, theta):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.as_tensor(theta, dtype=DT))
        self.dim = self.theta.numel()

    def energy(self, x):
        return x @ self.theta

    def score(self, x):
        return -self.theta.expand(x.shape[0], self.dim)


@pytest.mark.parametrize("field", ["linear_energy", "constant_callable"])
def test_jacobian_curl_and_asymmetry_of_an_x_independent_score_are_zero(field):
    # regression: autograd raised "One of the differentiated Tensors appears to not have been used in
    # the graph" (ψ = −θ) or "does not require grad" (a constant field) instead of returning J = 0
    x = torch.randn(6, 2, generator=gen(9))
    score = _LinearEnergy([0.3, -1.2]) if field == "linear_energy" else (lambda z: torch.ones(len(z), 2))
    J = metrics.jacobian(score, x)
    assert J.shape == (6, 2, 2) and J.dtype == DT and torch.equal(J, torch.zeros(6, 2, 2))
    curl = metrics.curl_2d(score, ((-1, 1, -1, 1), 3))
    assert curl.shape == (3, 3) and torch.equal(curl, torch.zeros(3, 3))
    asym = metrics.jacobian_asymmetry(score, x)
    assert asym.shape == (6,) and torch.equal(asym, torch.zeros(6))


def test_jacobian_of_a_score_that_ignores_some_coordinates():
    # ψ₁ = −x₁², ψ₂ = 5 (constant), ψ₃ = 0 · x₂: only ∂ψ₁/∂x₁ is non-zero
    x = torch.randn(4, 3, generator=gen(10))
    J = metrics.jacobian(lambda z: torch.stack([-z[:, 0] ** 2, torch.full_like(z[:, 0], 5.0), 0 * z[:, 1]], 1), x)
    expected = torch.zeros(4, 3, 3)
    expected[:, 0, 0] = -2 * x[:, 0]
    assert torch.equal(J, expected)


def test_fisher_divergence_zero_at_truth_and_known_offset():
    model = Gaussian([0.0, 0.0], COV)
    x = torch.randn(30, 2, generator=gen(6))
    assert metrics.fisher_divergence(model, x, model.score) == 0.0
    shift = torch.tensor([0.3, -0.4])  # ψ_true = ψ_model + shift ⇒ ½‖shift‖² = 0.125
    assert torch.allclose(metrics.fisher_divergence(model, x, lambda z: model.score(z) + shift), torch.tensor(0.125))


def test_log_likelihood_grid_matches_analytic_gaussian():
    model = Gaussian([0.5, -0.3], COV, const=3.7)  # unnormalised: log Z = 3.7·(−1) + log(2π|Σ|^{½})
    x = torch.randn(25, 2, generator=gen(7)) * 0.5
    out = metrics.log_likelihood_grid_2d(model, x, bounds=(-6, 7, -6, 6), n_grid=301)
    assert torch.allclose(out["log_prob"], model.log_prob(x), atol=1e-8)
    log_z = -3.7 + math.log(2 * math.pi) + 0.5 * math.log(torch.linalg.det(model.cov))
    assert out["log_z"].item() == pytest.approx(log_z, abs=1e-8)
    assert float(out["density"].sum() * out["cell_area"]) == pytest.approx(1.0, abs=1e-12)
    assert out["X"].shape == out["density"].shape == (301, 301)
    # grid orientation: row i ↔ y_i, column j ↔ x_j
    i, j = 40, 200
    pt = torch.stack([out["X"][i, j], out["Y"][i, j]])[None]
    assert torch.allclose(out["log_density"][i, j], model.log_prob(pt)[0], atol=1e-8)


def test_kl_grid_matches_closed_form():
    p = Gaussian([0.0, 0.0], COV)
    q = Gaussian([0.5, 0.2], torch.eye(2))
    X, Y, pts = metrics.grid_2d(8.0, 321)
    kl = metrics.kl_grid_2d(p.log_prob(pts).reshape(X.shape), -q.energy(pts).reshape(X.shape))
    Sp, Sq, dm = p.cov, q.cov, (q.mu - p.mu).detach()
    exact = 0.5 * (torch.trace(torch.linalg.solve(Sq, Sp)) + dm @ torch.linalg.solve(Sq, dm) - 2
                   + torch.logdet(Sq) - torch.logdet(Sp))
    assert torch.allclose(kl, exact, atol=1e-6)
    assert metrics.kl_grid_2d(p.log_prob(pts), p.log_prob(pts) + 5.0) < 1e-12


def test_grbm_exact_log_likelihood_matches_quadrature():
    torch.manual_seed(0)
    grbm = GRBM(2, 3).double()
    with torch.no_grad():
        grbm.W.mul_(4.0)
    x = torch.randn(10, 2, generator=gen(8))
    exact = metrics.grbm_exact_log_likelihood(grbm, x)
    grid = metrics.log_likelihood_grid_2d(grbm, x, bounds=9.0, n_grid=401)
    assert torch.allclose(exact, grid["log_prob"], atol=1e-7)
    with pytest.raises(TypeError, match="log_partition"):
        metrics.grbm_exact_log_likelihood(MLPEnergy(2, hidden=(4,)).double(), x)


def exact_phases_by_enumeration(model, v):
    """Positive and negative phases of eq-ch1-mle-grad, E[∂E/∂θ], from the joint energy's
    derivatives (∂E/∂W = −vhᵀ/σ², ∂E/∂b = −h, ∂E/∂c = −(v − c)/σ²) and p(h) by enumeration."""
    H = torch.tensor([[float(b) for b in format(k, f"0{model.n_hidden}b")] for k in range(2**model.n_hidden)])
    s2 = model.sigma.detach() ** 2
    with torch.no_grad():
        h_hat = model.p_h_given_v(v)
        positive = {"W": -(v.T @ h_hat) / len(v) / s2, "b": -h_hat.mean(0), "c": -(v - model.c).mean(0) / s2}
        # p(h) ∝ ∫ exp(−E(v, h)) dv: quadrature-free, by Bayes on v₀ = 0 (p(h|0) / p(0|h))
        p0 = model.p_h_given_v(torch.zeros(1, model.n_visible))
        mean_v = model.mean_v_given_h(H)  # E[v|h] = c + Wh
        log_w = (H * p0.log() + (1 - H) * (-p0).log1p()).sum(-1) + (mean_v**2).sum(-1) / (2 * s2)
        p_h = torch.softmax(log_w, 0)
        negative = {"W": -((mean_v.T * p_h) @ H) / s2, "b": -(p_h @ H), "c": -(p_h @ (mean_v - model.c)) / s2}
    return positive, negative


def test_grbm_exact_gradient_and_phases():
    torch.manual_seed(1)
    grbm = GRBM(2, 3, sigma=0.9, learn_sigma=True).double()
    with torch.no_grad():
        for p in grbm.parameters():
            p.add_(0.8 * torch.randn(p.shape, generator=gen(2), dtype=DT))
    v = torch.randn(20, 2, generator=gen(3))
    grad = metrics.grbm_exact_gradient(grbm, v)
    assert set(grad) == {"W", "b", "c", "log_sigma"}
    assert all(not g.requires_grad and g.shape == p.shape for (n, p), g in zip(grbm.named_parameters(), grad.values()))
    # central finite differences of the exact mean log-likelihood
    h = 1e-5
    for name, p in grbm.named_parameters():
        fd = torch.zeros_like(p)
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += h
                up = metrics.grbm_exact_log_likelihood(grbm, v).mean()
                p.view(-1)[i] -= 2 * h
                down = metrics.grbm_exact_log_likelihood(grbm, v).mean()
                p.view(-1)[i] += h
            fd.view(-1)[i] = (up - down) / (2 * h)
        torch.testing.assert_close(grad[name], fd, rtol=1e-7, atol=1e-8)
    # phases: expectations of ∇θE under the data and under the model; gradient = negative − positive
    phases = metrics.grbm_exact_phases(grbm, v)
    positive, negative = exact_phases_by_enumeration(grbm, v)
    for name in ("W", "b", "c"):
        torch.testing.assert_close(phases["positive"][name], positive[name])
        torch.testing.assert_close(phases["negative"][name], negative[name])
    for name in grad:
        torch.testing.assert_close(grad[name], phases["negative"][name] - phases["positive"][name])
    with pytest.raises(TypeError, match="log_partition"):
        metrics.grbm_exact_gradient(MLPEnergy(2, hidden=(4,)).double(), v)


def test_linear_probe_separates_separable_toy():
    g = gen(9)
    centres = torch.tensor([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    labels = torch.arange(3).repeat_interleave(40)
    feats = centres[labels] + 0.3 * torch.randn(120, 3, generator=g)
    acc = metrics.linear_probe_accuracy(feats[::2], labels[::2], feats[1::2], labels[1::2], C=1.0)
    assert acc == 1.0
    noise = torch.randn(120, 3, generator=g)  # features carrying no label information
    assert metrics.linear_probe_accuracy(noise[::2], labels[::2], noise[1::2], labels[1::2]) < 0.75
