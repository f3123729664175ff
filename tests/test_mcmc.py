"""Tests of smlib.mcmc (CD-k, PCD, FPCD, Langevin CD).

Ground truth: a tiny GRBM (2 visible, 3–4 hidden units) whose exact negative log-likelihood
NLL(θ) = mean F(x) + log Z(θ) is available by enumerating the hidden states
(`GRBM.log_partition`), so its exact gradient is autograd of NLL. All generators are seeded.
"""
import pytest
import torch

from smlib import mcmc
from smlib.models import GRBM

DT = torch.float64


pytestmark = pytest.mark.usefixtures("float64")  # every test in float64 (conftest.py)


def tiny_grbm():
    m = GRBM(2, 3, sigma=1.0).double()
    with torch.no_grad():
        m.W.copy_(torch.tensor([[2.5, -2.0, 0.5], [1.0, 2.0, -2.5]]))
        m.b.copy_(torch.tensor([-1.0, 0.5, -0.5]))
        m.c.copy_(torch.tensor([0.3, -0.2]))
    return m


def toy_data(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=DT) * 0.7 + torch.tensor([1.0, 0.5], dtype=DT)


def exact_nll(model, x):
    return model.free_energy(x).mean() + model.log_partition()


def flat_grad(loss, params):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


class Quadratic(torch.nn.Module):
    """E(x) = ½‖x − μ‖² with learnable μ; records μ each time a Gibbs step is taken."""

    def __init__(self, mu):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.as_tensor(mu, dtype=DT).clone())
        self.dim = self.mu.numel()
        self.seen_mu = []

    def energy(self, x):
        return 0.5 * ((x - self.mu) ** 2).sum(1)

    def gibbs_step(self, v, generator=None):  # exact sampling: v ~ N(μ, I)
        self.seen_mu.append(self.mu.detach().clone())
        return self.mu.detach() + torch.randn(v.shape, generator=generator, dtype=v.dtype)


# ----------------------------------------------------------------------------------- CD-k
def test_cd_bias_decreases_with_k_towards_the_exact_gradient():
    # E[CD-k gradient] → exact NLL gradient as k → ∞ (the chain from the data mixes). 20 000
    # chains (each of 40 data points replicated 500×) keep the Monte-Carlo error of the
    # relative bias at ≈ 0.01; the measured biases are ≈ 0.83, 0.52, 0.16.
    model = tiny_grbm()
    x = toy_data()
    params = [model.W, model.b, model.c]
    g_exact = flat_grad(exact_nll(model, x), params)
    bias = {}
    for k in (1, 5, 25):
        surrogate = mcmc.CD(k=k, seed=0)(model, x.repeat(500, 1))
        bias[k] = float((flat_grad(surrogate, params) - g_exact).norm() / g_exact.norm())
    assert bias[1] > bias[5] + 0.1 > bias[25] + 0.2, bias
    assert bias[25] < 0.3, bias


def test_cd_surrogate_sign_and_value():
    # Surrogate = mean E(x⁺) − mean E(x⁻); descending it moves μ of a Gaussian towards the data.
    model = Quadratic([0.0, 0.0])
    x = torch.full((500, 2), 3.0)
    est = mcmc.CD(k=1, seed=0)
    loss = est(model, x)
    x_neg = est.last_negatives
    assert torch.allclose(loss, model.energy(x).mean() - model.energy(x_neg).mean())
    (g,) = torch.autograd.grad(loss, model.mu)
    assert (g < 0).all()  # −g points from μ = 0 towards the data at 3


def test_cd_uses_langevin_without_gibbs_step_and_hmc_on_request():
    energy_model = torch.nn.Module()
    energy_model.mu = torch.nn.Parameter(torch.zeros(2, dtype=DT))
    energy_model.energy = lambda x: 0.5 * ((x - energy_model.mu) ** 2).sum(1)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    est = mcmc.CD(k=3, step_size=0.1, seed=0)
    assert est._which_sampler(energy_model) == "langevin"
    est(energy_model, x).backward()
    assert energy_model.mu.grad is not None
    hmc = mcmc.CD(k=2, sampler="hmc", step_size=0.3, n_leapfrog=3, seed=0)
    hmc(energy_model, x)
    assert 0.0 < hmc.last_accept_rate <= 1.0 and hmc.step_size != 0.3  # Robbins–Monro moved it


# ----------------------------------------------------------------------------------- PCD / FPCD
def _train(estimator, steps=150, lr=0.05, seed=0):
    torch.manual_seed(seed)
    model = GRBM(2, 4, sigma=1.0).double()
    x = toy_data(200, seed=3)
    nll0 = float(exact_nll(model, x).detach())
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.5)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = x[torch.randint(0, 200, (50,), generator=g)]
        opt.zero_grad()
        estimator(model, batch).backward()
        opt.step()
    return nll0, float(exact_nll(model, x).detach()), model


@pytest.mark.parametrize(
    "make",
    [
        lambda: mcmc.PCD(n_chains=100, k=1, seed=0),
        lambda: mcmc.FPCD(n_chains=100, k=1, fast_lr=0.05, fast_decay=0.95, seed=0),
    ],
    ids=["pcd", "fpcd"],
)
def test_pcd_and_fpcd_lower_the_exact_nll(make):
    # The data (std 0.7 around (1, 0.5)) are far from the initial model: the exact NLL starts at
    # ≈ 3.06 nats and 150 steps of the exact gradient reach ≈ 2.288; PCD/FPCD must get within
    # 0.05 nats of that (they reach ≈ 2.288–2.289).
    nll0, nll1, _ = _train(make())
    _, nll_ml, _ = _train(lambda model, x: exact_nll(model, x))
    assert nll1 < nll0 - 0.5, (nll0, nll1)
    assert nll1 < nll_ml + 0.05, (nll1, nll_ml)


def test_pcd_chains_persist_and_have_requested_size():
    model = tiny_grbm()
    est = mcmc.PCD(n_chains=7, k=2, seed=0)
    x = toy_data()
    est(model, x)
    first = est.chains.clone()
    assert first.shape == (7, 2)
    est(model, x)
    assert not torch.equal(first, est.chains)  # advanced, not restarted
    est.reset()
    assert est.chains is None


def test_fpcd_samples_with_fast_weights_and_restores_parameters_exactly():
    model = Quadratic([0.5, -0.5])
    x = torch.full((10, 2), 2.0)
    est = mcmc.FPCD(n_chains=5, k=1, fast_lr=0.3, fast_decay=0.9, seed=0)
    mu0 = model.mu.detach().clone()
    loss = est(model, x)
    assert torch.equal(model.mu.detach(), mu0)  # parameters restored bit-exactly
    assert torch.equal(model.seen_mu[0], mu0)  # fast weights start at 0
    (g,) = torch.autograd.grad(loss, model.mu)  # the graph is still usable by the train loop
    assert torch.allclose(est.fast["mu"], -0.3 * g)  # θ_f ← 0.9·0 − η_f g
    fast1 = est.fast["mu"].clone()
    loss2 = est(model, x)
    assert torch.allclose(model.seen_mu[1], mu0 + fast1)  # chains ran under θ + θ_f
    (g2,) = torch.autograd.grad(loss2, model.mu)
    assert torch.allclose(est.fast["mu"], 0.9 * fast1 - 0.3 * g2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: mcmc.CD(k=1),
        lambda: mcmc.PCD(n_chains=9, k=2),
        lambda: mcmc.FPCD(n_chains=9, k=1, fast_lr=0.1),
        lambda: mcmc.LangevinCD(n_steps=2, step_size=0.01, init_noise=0.1),
    ],
    ids=["cd", "pcd", "fpcd", "langevin_cd"],
)
def test_state_dict_round_trip_continues_identically(make):
    model = tiny_grbm()
    x = toy_data()
    est = make()
    torch.manual_seed(0)
    for _ in range(2):
        est(model, x)
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in est.state_dict().items()}
    a = [est(model, x).detach() for _ in range(3)]
    other = make()
    other.load_state_dict(state)
    b = [other(model, x).detach() for _ in range(3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))


# ----------------------------------------------------------------------------------- Langevin CD
def test_langevin_cd_negatives_are_deen_eq26():
    # x⁻ = x − σ²∇E(x) + √2 σ ν  (Saremi et al. 2018, eq. 26) with step_size = σ².
    sigma = 0.1
    model = Quadratic([1.0, -1.0])
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(5), dtype=DT)
    est = mcmc.LangevinCD(n_steps=1, step_size=sigma**2, seed=11)
    est(model, x)
    nu = torch.randn(x.shape, generator=torch.Generator().manual_seed(11), dtype=DT)
    expected = x - sigma**2 * (x - model.mu.detach()) + 2**0.5 * sigma * nu
    assert torch.allclose(est.last_negatives, expected)


def test_langevin_cd_learns_a_gaussian_mean():
    model = Quadratic([0.0, 0.0])
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=DT) + torch.tensor([2.0, -1.0])
    est = mcmc.LangevinCD(n_steps=5, step_size=0.1, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        est(model, data).backward()
        opt.step()
    assert torch.allclose(model.mu.detach(), data.mean(0), atol=0.15)


def test_bad_options():
    with pytest.raises(ValueError, match="sampler"):
        mcmc.CD(k=1, sampler="metropolis")
    with pytest.raises(ValueError, match="n_chains"):
        mcmc.PCD(n_chains=0)
    with pytest.raises(ValueError, match="fast_decay"):
        mcmc.FPCD(n_chains=3, fast_decay=1.0)
    with pytest.raises(ValueError, match="step_size"):
        mcmc.LangevinCD(step_size=-1.0)
    with pytest.raises(ValueError, match="dimension"):
        mcmc.CD()(tiny_grbm(), torch.zeros(3, 5))


def test_reject_target_rule_drives_hmc_to_its_rejection_rate_and_checkpoints():
    """step_rule='reject_target' (Ranzato's mPoT code): ε moves by ×1.01/×0.99 per transition towards ≈10 %
    rejections, is carried across calls and restored from state_dict; only HMC may use it."""
    from smlib.models import MLPEnergy

    torch.manual_seed(0)
    model = MLPEnergy(3, hidden=(8,)).double()
    x = torch.randn(64, 3, dtype=torch.float64)
    est = mcmc.PCD(n_chains=64, k=1, sampler="hmc", step_size=0.01, n_leapfrog=10, step_rule="reject_target", seed=0)
    for _ in range(60):
        est(model, x)
    # a tiny step is almost never rejected, so the rule grows it: 60 transitions of ×1.01 while below target
    assert est.step_size > 0.01 * 1.01 ** 30 and est.step_size == est.step_control.step_size
    again = mcmc.PCD(n_chains=64, k=1, sampler="hmc", step_size=0.01, n_leapfrog=10, step_rule="reject_target", seed=0)
    again.load_state_dict(est.state_dict())
    assert again.step_control.state_dict() == est.step_control.state_dict()
    assert est.config()["step_rule"] == "reject_target" and est.config()["target_reject"] == 0.1
    with pytest.raises(ValueError, match="adapts HMC only"):
        mcmc.PCD(n_chains=4, sampler="mala", step_rule="reject_target")
    with pytest.raises(ValueError, match="step_rule"):
        mcmc.CD(k=1, sampler="hmc", step_rule="ranzato")
