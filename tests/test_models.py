"""Tests of smlib.models against ground truths that do not share code with the models.

Ground truths: enumeration over hidden states, numerical quadrature (scipy) over visible units
and over the Gamma latent of the mPoT, and autograd derivatives of the energies.
All in float64.
"""
import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from helpers import assert_sample_moments, randomize
from smlib.models import DAEEnergy, GaussianEnergy, GRBM, MCRBM, MLPEnergy, MPoT, ScoreMLP, ACTIVATIONS
from smlib.models.base import EnergyModel
from smlib.models.gated import (
    _gated_gaussian_affine,
    _gated_noise_dim,
    gated_gaussian_mean,
    sample_gamma,
    sample_gated_gaussian,
)

pytestmark = pytest.mark.usefixtures("float64")




MODELS = {
    "grbm": lambda: GRBM(4, 3, sigma=0.7),
    "grbm_learn_sigma": lambda: GRBM(3, 2, sigma=1.3, learn_sigma=True),
    "mcrbm": lambda: MCRBM(4, 5, 3, 2),
    "mcrbm_square": lambda: MCRBM(3, 3, 3, 2),
    "mpot": lambda: MPoT(4, 3, 2, gamma=1.7),
    "mpot_learn_gamma": lambda: MPoT(3, n_cov=2, n_mean=1, gamma=0.8, learn_gamma=True),
    "dae": lambda: DAEEnergy(4, 3, sigma=0.6),
    "mlp_jacobian_path": lambda: MLPEnergy(3, (5, 4, 6)),
    "mlp_gram_path": lambda: MLPEnergy(7, (3, 4, 5), activation="softplus"),
    "mlp_single_layer": lambda: MLPEnergy(5, (3,), activation="elu"),
    "gaussian": lambda: GaussianEnergy(torch.randn(3), random_spd(3)),
}
LATENT = ["grbm", "grbm_learn_sigma", "mcrbm", "mcrbm_square", "mpot", "mpot_learn_gamma"]


def random_spd(d, seed=None):
    """A random symmetric positive-definite d×d matrix, A Aᵀ/d + 0.5 I."""
    g = None if seed is None else torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g)
    return A @ A.T / d + 0.5 * torch.eye(d)


def build(name, seed=0):
    torch.manual_seed(seed)
    return randomize(MODELS[name](), seed=seed)


def autograd_score(model, x):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.energy(x).sum(), x)
    return -g


def autograd_jacobian(score_fn, x):
    """Full per-sample Jacobian ∂ψᵢ/∂xⱼ, shape (B, d, d)."""
    J = torch.autograd.functional.jacobian(lambda y: score_fn(y).sum(0), x)  # (d, B, d)
    return J.permute(1, 0, 2)


# ------------------------------------------------------------------ generic properties
@pytest.mark.parametrize("name", list(MODELS))
def test_shapes_forward_and_analytic_score_equal_autograd(name):
    model = build(name)
    x = torch.randn(6, model.dim)
    e = model.energy(x)
    assert e.shape == (6,) and torch.equal(model(x), e)
    psi = model.score(x)
    assert psi.shape == (6, model.dim)
    torch.testing.assert_close(psi, autograd_score(model, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(MODELS) + ["dae_untied", "score_mlp"])
def test_closed_form_jacobian_diagonal_equals_autograd(name):
    if name == "dae_untied":
        torch.manual_seed(0)
        model = randomize(DAEEnergy(4, 3, sigma=0.6, tied=False))
    elif name == "score_mlp":
        torch.manual_seed(0)
        model = randomize(ScoreMLP(4, (5, 6), activation="swish"))
    else:
        model = build(name)
    x = torch.randn(5, model.dim)
    diag = torch.diagonal(autograd_jacobian(model.score, x), dim1=1, dim2=2)
    torch.testing.assert_close(model.score_jacobian_diagonal(x), diag, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(model.score_divergence(x), diag.sum(-1), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dim,hidden", [(3, (6, 5)), (9, (4, 3, 2))])
def test_mlp_exact_laplacian_all_activations_and_both_paths(activation, dim, hidden):
    torch.manual_seed(1)
    model = randomize(MLPEnergy(dim, hidden, activation=activation), scale=0.3)
    x = torch.randn(4, dim)
    J = autograd_jacobian(lambda y: autograd_score_graph(model, y), x)
    diag = torch.diagonal(J, dim1=1, dim2=2)
    torch.testing.assert_close(model.score_divergence(x), diag.sum(-1), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(model.score_jacobian_diagonal(x), diag, rtol=1e-8, atol=1e-10)
    if activation == "relu":  # piecewise linear: zero Laplacian almost everywhere
        assert model.score_divergence(x).abs().max() == 0


def autograd_score_graph(model, x):
    """−∇E with a graph (differentiable in x), independent of the model's score method."""
    with torch.enable_grad():
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model.energy(x).sum(), x, create_graph=True)
    return -g


def test_mlp_laplacian_is_differentiable_in_parameters():
    torch.manual_seed(2)
    model = randomize(MLPEnergy(8, (3, 4), activation="tanh"), scale=0.3)  # Gram/QR path (d > n1)
    x = torch.randn(5, 8)

    def grads():  # the output bias does not enter ΔE: its grad stays None
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    model.score_divergence(x).sum().backward()
    g_closed = grads()
    model.zero_grad()
    J = autograd_jacobian(lambda y: autograd_score_graph(model, y), x)
    # jacobian() does not keep the graph; rebuild the trace with create_graph
    xg = x.clone().requires_grad_(True)
    psi = autograd_score_graph(model, xg)
    tr = sum(torch.autograd.grad(psi[:, i].sum(), xg, create_graph=True)[0][:, i] for i in range(8))
    torch.testing.assert_close(tr, torch.diagonal(J, dim1=1, dim2=2).sum(-1))
    tr.sum().backward()
    for a, b in zip(g_closed, grads()):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_wrong_input_dimension_raises():
    model = GRBM(3, 2)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        model.energy(torch.randn(4, 2))
    with pytest.raises(ValueError, match="floating"):
        model.energy(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="activation"):
        MLPEnergy(2, (3,), activation="cosine")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        GRBM(2, 2, sigma=0.0)


def test_score_models_without_energy_raise_type_error():
    with pytest.raises(TypeError, match="no energy"):
        ScoreMLP(2, (4,)).energy(torch.randn(3, 2))
    untied = DAEEnergy(3, 2, sigma=0.5, tied=False)
    with pytest.raises(TypeError, match="untied DAE"):
        untied.energy(torch.randn(3, 3))
    assert untied.score(torch.randn(3, 3)).shape == (3, 3)
    assert not untied.has_energy and DAEEnergy(3, 2).has_energy


def test_untied_dae_is_not_a_gradient_field_but_tied_is():
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    tied = randomize(DAEEnergy(4, 3, sigma=0.5))
    untied = randomize(DAEEnergy(4, 3, sigma=0.5, tied=False))
    Jt = autograd_jacobian(tied.score, x)
    Ju = autograd_jacobian(untied.score, x)
    torch.testing.assert_close(Jt, Jt.transpose(1, 2))
    assert (Ju - Ju.transpose(1, 2)).abs().max() > 1e-2


def test_no_grad_score_is_detached_and_grad_score_is_differentiable_in_theta():
    model = build("mlp_jacobian_path")
    x = torch.randn(4, 3)
    with torch.no_grad():
        s = model.score(x)
    assert not s.requires_grad
    s = model.score(x)
    assert s.requires_grad
    s.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n != "out.bias")


class _ConstantEnergy(EnergyModel):
    """E(x) = k, the same at every x (k a parameter or a buffer): ψ = −∇ₓE = 0."""

    def __init__(self, dim, learn):
        super().__init__(dim)
        if learn:
            self.k = torch.nn.Parameter(torch.tensor(0.5))
        else:
            self.register_buffer("k", torch.tensor(0.5))

    def energy(self, x):
        return self.k.expand(x.shape[0])


@pytest.mark.parametrize("learn", [True, False], ids=["parameter", "buffer"])
@pytest.mark.parametrize("x_requires_grad", [False, True])
def test_autograd_score_of_an_x_independent_energy_is_zero(learn, x_requires_grad):
    # regression: EnergyModel.score raised "One of the differentiated Tensors appears to not have been
    # used in the graph" (k a parameter) or "does not require grad" (k a buffer) instead of ψ = 0
    model = _ConstantEnergy(3, learn)
    x = torch.randn(5, 3).requires_grad_(x_requires_grad)
    s = model.score(x)
    assert s.shape == (5, 3) and s.dtype == x.dtype and torch.equal(s, torch.zeros(5, 3))
    with torch.no_grad():
        s0 = model.score(x)
    assert torch.equal(s0, torch.zeros(5, 3)) and not s0.requires_grad


# ------------------------------------------------------------------ reconstructions
@pytest.mark.parametrize("name", LATENT + ["dae"])
def test_reconstruction_is_one_gradient_step_on_the_free_energy(name):
    model = build(name)
    v = torch.randn(5, model.dim)
    step = model.sigma**2 if isinstance(model, (GRBM, DAEEnergy)) else 1.0  # Ω's identity scale
    torch.testing.assert_close(model.reconstruct(v), v + step * autograd_score(model, v))


# ------------------------------------------------------------------ GRBM ground truths
def all_binary(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n))).reshape(-1, n)


@pytest.mark.parametrize("name", ["grbm", "grbm_learn_sigma"])
def test_grbm_free_energy_is_minus_logsumexp_over_hidden_states(name):
    model = build(name)
    v = torch.randn(5, model.dim)
    H = all_binary(model.n_hidden)  # (S, n_h)
    E = torch.stack([model.joint_energy(v, h.expand(5, -1)) for h in H], dim=1)  # (B, S)
    torch.testing.assert_close(model.free_energy(v), -torch.logsumexp(-E, dim=1))


def test_grbm_joint_energy_formula():
    model = build("grbm")
    v, h = torch.randn(3, 4), torch.bernoulli(torch.full((3, 3), 0.5))
    s2 = model.sigma**2
    manual = (
        ((v - model.c) ** 2).sum(-1) / (2 * s2)
        - torch.einsum("bi,ij,bj->b", v, model.W, h) / s2
        - h @ model.b
    )
    torch.testing.assert_close(model.joint_energy(v, h), manual)


@pytest.mark.parametrize("n_visible,sigma", [(1, 0.8), (2, 1.3)])
def test_grbm_log_partition_matches_quadrature(n_visible, sigma):
    torch.manual_seed(3)
    model = randomize(GRBM(n_visible, 3, sigma=sigma), scale=0.7)

    def density(*v):
        with torch.no_grad():
            return math.exp(-float(model.free_energy(torch.tensor([v]))))

    lim = 12.0
    if n_visible == 1:
        Z, _ = integrate.quad(density, -lim, lim, epsabs=1e-12, epsrel=1e-10)
    else:
        Z, _ = integrate.dblquad(lambda y, x: density(x, y), -lim, lim, -lim, lim, epsabs=1e-10, epsrel=1e-8)
    assert float(model.log_partition().detach()) == pytest.approx(math.log(Z), abs=1e-6)


def test_grbm_log_partition_is_chunked_and_limited():
    torch.manual_seed(0)
    model = randomize(GRBM(2, 15), scale=0.1)  # 2^15 states: two chunks of 2^14
    H = all_binary(15)
    s2 = model.sigma**2
    m = model.c + H @ model.W.T
    direct = torch.logsumexp(H @ model.b + ((m**2).sum(-1) - (model.c**2).sum()) / (2 * s2), 0)
    torch.testing.assert_close(model.log_partition(), direct + math.log(2 * math.pi * s2))
    with pytest.raises(ValueError, match="n_hidden=21 exceeds"):
        GRBM(2, 21).log_partition()


def theorem1_by_enumeration(joint_energy, v, states):
    """Theorem-1 terms from the joint energy by brute force over a list of hidden states.

    states: tuple of tensors, each (S, n_unit). Returns per-sample (recon, var, curv) (B,).
    Derivatives ∂E/∂vᵢ and ∂²E/∂vᵢ² come from autograd of joint_energy.
    """
    out = []
    S = states[0].shape[0]
    for vb in v:
        vv = vb.expand(S, -1).clone().requires_grad_(True)
        E = joint_energy(vv, *states)
        (g,) = torch.autograd.grad(E.sum(), vv, create_graph=True)
        H = torch.stack(
            [torch.autograd.grad(g[:, i].sum(), vv, retain_graph=True)[0][:, i] for i in range(v.shape[1])], 1
        )
        w = torch.softmax(-E.detach(), 0)[:, None]
        g = g.detach()
        mean = (w * g).sum(0)
        var = (w * g * g).sum(0) - mean**2
        curv = (w * H).sum(0)
        out.append(torch.stack([0.5 * (mean**2).sum(), var.sum(), -curv.sum()]))
    return torch.stack(out, 1)


@pytest.mark.parametrize("name", ["grbm", "grbm_learn_sigma", "mcrbm", "mcrbm_square"])
def test_sm_terms_each_term_matches_enumeration_over_hidden_states(name):
    model = build(name)
    v = torch.randn(4, model.dim)
    if isinstance(model, GRBM):
        states = (all_binary(model.n_hidden),)
    else:
        both = all_binary(model.n_cov + model.n_mean)
        states = (both[:, : model.n_cov], both[:, model.n_cov :])
    recon, var, curv = theorem1_by_enumeration(model.joint_energy, v, states)
    terms = model.sm_terms(v, reduction="none")
    torch.testing.assert_close(terms["reconstruction"], recon)
    torch.testing.assert_close(terms["variance"], var)
    torch.testing.assert_close(terms["curvature"], curv)


def test_grbm_sm_terms_have_the_closed_forms_of_eq_8():
    model = build("grbm")
    v = torch.randn(6, 4)
    s2 = model.sigma**2
    h = torch.sigmoid(v @ model.W / s2 + model.b)
    t = model.sm_terms(v)
    torch.testing.assert_close(t["reconstruction"], 0.5 * ((v - model.reconstruct(v)) ** 2).sum(-1).mean() / s2**2)
    torch.testing.assert_close(t["variance"], ((h * (1 - h)) @ (model.W**2).T).sum(-1).mean() / s2**2)
    torch.testing.assert_close(t["curvature"], -4 / s2)


@pytest.mark.parametrize("name", LATENT)
def test_sm_terms_add_up_and_equal_autograd_score_matching(name):
    model = build(name)
    v = torch.randn(7, model.dim)
    t = model.sm_terms(v)
    assert set(t) == {"reconstruction", "variance", "curvature", "total"}
    assert all(x.ndim == 0 for x in t.values())
    torch.testing.assert_close(t["total"], t["reconstruction"] + t["variance"] + t["curvature"])
    # independent: ½‖ψ‖² + tr(∂ψ/∂v) with both from autograd of the free energy
    psi = autograd_score(model, v)
    J = autograd_jacobian(lambda y: autograd_score_graph(model, y), v)
    exact = (0.5 * (psi**2).sum(-1) + torch.diagonal(J, dim1=1, dim2=2).sum(-1)).mean()
    torch.testing.assert_close(t["total"], exact, rtol=1e-10, atol=1e-10)
    per = model.sm_terms(v, reduction="none")
    assert per["total"].shape == (7,)
    with pytest.raises(ValueError, match="reduction"):
        model.sm_terms(v, reduction="sum")


@pytest.mark.parametrize("name", LATENT)
def test_sm_terms_are_differentiable_in_parameters(name):
    model = build(name)
    v = torch.randn(5, model.dim)
    model.sm_terms(v)["total"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), grads.keys()


# ------------------------------------------------------------------ mcRBM
def test_mcrbm_free_energy_is_minus_logsumexp_and_pooling_stays_negative():
    model = build("mcrbm")
    v = torch.randn(4, 4)
    both = all_binary(model.n_cov + model.n_mean)
    hc, hm = both[:, : model.n_cov], both[:, model.n_cov :]
    E = torch.stack([model.joint_energy(v, a.expand(4, -1), b.expand(4, -1)) for a, b in zip(hc, hm)], 1)
    torch.testing.assert_close(model.free_energy(v), -torch.logsumexp(-E, 1))
    # P ≤ 0 by parametrisation, even after a huge gradient step
    opt = torch.optim.SGD(model.parameters(), lr=100.0)
    (-model.P.sum()).backward()
    opt.step()
    assert (model.P < 0).all()


def test_mcrbm_square_initial_pooling_is_minus_identity_and_P_can_be_set():
    model = MCRBM(3, 4, 4, 1)
    torch.testing.assert_close(model.P.detach(), -torch.eye(4) - 2.5e-3, atol=1e-9, rtol=0)
    target = -torch.rand(4, 4) - 0.1
    model.P = target
    torch.testing.assert_close(model.P.detach(), target)
    with pytest.raises(ValueError, match="strictly negative"):
        model.P = -target


# ------------------------------------------------------------------ mPoT
def mpot_quad_free_energy(model, v, n=401):
    """−log Σ_{h^m} ∫∫ exp(−E(v, h^c, h^m)) dh^c over (0, ∞)² for n_cov = 2 and one sample v.

    Trapezoid rule after h = eᵗ (t ∈ [−60, 6]): the integrand e^{−E} eᵗ is analytic and decays
    like e^{γt} and e^{−e^t}, so the rule converges geometrically (checked against dblquad).
    """
    t = torch.linspace(-60.0, 6.0, n)
    dt = float(t[1] - t[0])
    t1, t2 = torch.meshgrid(t, t, indexing="ij")
    h = torch.stack([t1.exp().flatten(), t2.exp().flatten()], 1)  # (n², 2)
    log_terms = []
    for hm in all_binary(model.n_mean):
        with torch.no_grad():
            E = model.joint_energy(v.expand(h.shape[0], -1), h, hm.expand(h.shape[0], -1))
        log_terms.append(torch.logsumexp(-E + t1.flatten() + t2.flatten(), 0) + 2 * math.log(dt))
    return -float(torch.logsumexp(torch.stack(log_terms), 0))


def test_mpot_free_energy_equals_minus_log_integral_of_joint_energy():
    torch.manual_seed(4)
    model = randomize(MPoT(2, n_cov=2, n_mean=2, gamma=1.6), scale=0.6)
    v = torch.randn(2, 2)
    F = model.free_energy(v).detach()
    for b in range(2):
        assert float(F[b]) == pytest.approx(mpot_quad_free_energy(model, v[b]), abs=1e-6)


@pytest.mark.parametrize("gamma", [0.6, 2.5])
def test_mpot_free_energy_one_cov_unit_and_posterior_moments_by_quadrature(gamma):
    """F, E[h^c|v], Var[h^c|v] and all three Theorem-1 terms from 1-D quadrature over h^c."""
    torch.manual_seed(5)
    model = randomize(MPoT(2, n_cov=1, n_mean=1, gamma=gamma), scale=0.6)
    v = torch.randn(3, 2)
    terms = {k: t.detach() for k, t in model.sm_terms(v, reduction="none").items()}
    for b in range(3):
        vb = v[b : b + 1]
        moments = np.zeros(6)  # Z, E[hc], E[hc²], E[hm], E[hc·hm], E[hm²] (unnormalised)
        for hm in (0.0, 1.0):

            def w(h, k, vb=vb, hm=hm):
                with torch.no_grad():
                    e = model.joint_energy(vb, torch.tensor([[h]]), torch.tensor([[hm]]))
                return h**k * math.exp(-float(e))

            z0, z1, z2 = (integrate.quad(w, 0, np.inf, args=(k,), epsabs=1e-13, epsrel=1e-11)[0] for k in range(3))
            moments += np.array([z0, z1, z2, hm * z0, hm * z1, hm * hm * z0])
        Z = moments[0]
        m = moments[1:] / Z
        assert float(model.free_energy(vb).detach()) == pytest.approx(-math.log(Z), abs=1e-7)
        mean_hc, var_hc = m[0], m[1] - m[0] ** 2
        mean_hm, var_hm, cov = m[2], m[4] - m[2] ** 2, m[3] - m[0] * m[2]
        hc_model, hm_model = (t.detach() for t in model.hidden_means(vb))
        assert float(hc_model) == pytest.approx(mean_hc, rel=1e-7)
        assert float(hm_model) == pytest.approx(mean_hm, rel=1e-7)
        # ∂E/∂v is affine in (h^c, h^m): read its coefficients off autograd of the joint energy
        def grad_at(hc, hm, order, vb=vb):
            vv = vb.clone().requires_grad_(True)
            E = model.joint_energy(vv, torch.tensor([[hc]]), torch.tensor([[hm]]))
            (g,) = torch.autograd.grad(E.sum(), vv, create_graph=True)
            if order == 1:
                return g.detach()[0]
            return torch.stack([torch.autograd.grad(g[0, i], vv, retain_graph=True)[0][0, i] for i in range(2)])

        a = grad_at(0.0, 0.0, 1)
        Bc = grad_at(1.0, 0.0, 1) - a
        Dm = grad_at(0.0, 1.0, 1) - a
        mean_g = a + Bc * mean_hc + Dm * mean_hm
        var_g = Bc**2 * var_hc + Dm**2 * var_hm + 2 * Bc * Dm * cov
        c0, c1 = grad_at(0.0, 0.0, 2), grad_at(1.0, 0.0, 2)
        curv = c0 + (c1 - c0) * mean_hc  # ∂²E/∂vᵢ² is affine in h^c
        assert float(terms["reconstruction"][b]) == pytest.approx(float(0.5 * (mean_g**2).sum()), rel=1e-7)
        assert float(terms["variance"][b]) == pytest.approx(float(var_g.sum()), rel=1e-7)
        assert float(terms["curvature"][b]) == pytest.approx(float(-curv.sum()), rel=1e-7)


def test_mpot_accepts_n_factors_alias():
    assert MPoT(3, n_factors=4, n_mean=2).n_cov == 4
    with pytest.raises(ValueError, match="n_factors"):
        MPoT(3, n_cov=4, n_mean=1, n_factors=5)


# ------------------------------------------------------------------ samplers of the conditionals
@pytest.mark.parametrize("shape", [0.4, 2.3])
def test_gamma_sampler_moments(shape, gen):
    rate = torch.tensor([[0.5, 3.0]]).expand(20000, 2)
    h = sample_gamma(shape, rate, gen)
    assert (h > 0).all()
    mean, var = shape / rate[0], shape / rate[0] ** 2
    se_mean = (var / 20000) ** 0.5
    torch.testing.assert_close(h.mean(0), mean, atol=float(5 * se_mean.max()), rtol=0)
    # Var estimate: SE ≈ sqrt((μ4 − σ⁴)/n) with μ4 = 3σ⁴(1 + 2/shape) for the Gamma
    se_var = (var**2 * (2 + 6 / shape) / 20000) ** 0.5
    torch.testing.assert_close(h.var(0), var, atol=float(5 * se_var.max()), rtol=0)


def test_gibbs_is_reproducible_with_a_generator():
    for model in (build("grbm"), build("mcrbm"), build("mpot")):
        v = torch.randn(5, model.dim)
        a = model.gibbs_step(v, generator=torch.Generator().manual_seed(7))
        b = model.gibbs_step(v, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b) and a.shape == v.shape and not a.requires_grad


@pytest.mark.parametrize("name", ["mcrbm", "mpot"])
def test_gaussian_conditional_mean_and_covariance(name, gen):
    model = build(name)
    hc = torch.rand(1, model.n_cov) + 0.2
    hm = torch.bernoulli(torch.full((1, model.n_mean), 0.5))
    n = 20000
    samples = model.sample_v((hc.expand(n, -1), hm.expand(n, -1)), generator=gen)
    s = -(hc @ model.P.T) if name == "mcrbm" else hc
    omega = torch.eye(model.dim) + model.C @ torch.diag(s[0]) @ model.C.T
    cov = torch.linalg.inv(omega).detach()
    mean = (cov @ (model.b_visible + model.W @ hm[0])).detach()
    torch.testing.assert_close(model.mean_v_given_h((hc, hm))[0].detach(), mean)
    se = (torch.diagonal(cov) / n).sqrt()
    assert ((samples.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(samples.T), cov, atol=0.05 * float(cov.abs().max()), rtol=0)


def quad_moments_1d(model, lim=15.0):
    """Mean, variance and 4th central moment of p(v) ∝ exp(−F(v)) in 1-D (scipy.quad)."""

    def dens(v, k):
        with torch.no_grad():
            return v**k * math.exp(-float(model.free_energy(torch.tensor([[v]]))))

    z, *m = (integrate.quad(dens, -lim, lim, args=(k,), epsabs=1e-12, epsrel=1e-10)[0] for k in range(5))
    m1, m2, m3, m4 = (x / z for x in m)
    var = m2 - m1**2
    mu4 = m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4
    return m1, var, mu4


@pytest.mark.parametrize(
    "factory",
    [
        lambda: GRBM(1, 3, sigma=0.8),
        lambda: MCRBM(1, 2, 2, 2),
        lambda: MPoT(1, n_cov=2, n_mean=2, gamma=0.7),
        lambda: MPoT(1, n_cov=1, n_mean=1, gamma=2.5),
    ],
)
def test_gibbs_chain_has_the_free_energy_as_stationary_distribution(factory, gen):
    """Block Gibbs with the exact conditionals must sample p(v) ∝ exp(−F(v)) (1-D quadrature)."""
    torch.manual_seed(6)
    model = randomize(factory(), scale=0.7, seed=6)
    mean, var, mu4 = quad_moments_1d(model)
    n = 4000
    v = torch.randn(n, 1, generator=gen)
    for _ in range(60):
        v = model.gibbs_step(v, generator=gen)
    # n independent chains: standard errors of the sample mean and variance
    assert abs(float(v.mean()) - mean) < 5 * (var / n) ** 0.5
    assert abs(float(v.var()) - var) < 5 * ((mu4 - var**2) / n) ** 0.5


def test_grbm_conditionals(gen):
    model = build("grbm")
    v = torch.randn(3, 4)
    p = model.p_h_given_v(v)
    torch.testing.assert_close(p, torch.sigmoid(v @ model.W / model.sigma**2 + model.b))
    torch.testing.assert_close(model.hidden_means(v), p)
    h = model.sample_h(v.repeat(5000, 1), generator=gen)
    assert set(h.unique().tolist()) <= {0.0, 1.0}
    assert (h.view(5000, 3, 3).mean(0) - p).abs().max() < 5 * 0.5 / 5000**0.5
    hv = torch.bernoulli(torch.full((20000, 3), 0.5), generator=gen)
    vs = model.sample_v(hv, generator=gen)
    resid = vs - model.mean_v_given_h(hv).detach()
    assert abs(float(resid.std()) - float(model.sigma)) < 0.02


# ------------------------------------------------------------------ softplus precision
def exact_softplus(z):
    """log(1 + eˣ) = max(z, 0) + log1p(e^{−|z|}), exact in float64 for every z (no threshold)."""
    return z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))


def large_input_grbm():
    """GRBM(3, 3) whose hidden inputs φ(v) = vᵀW/σ² + b lie in (20, 35) for |v| ≤ 1."""
    torch.manual_seed(4)
    model = randomize(GRBM(3, 3, sigma=1.0), scale=0.3)
    with torch.no_grad():
        model.b.copy_(torch.tensor([22.0, 27.0, 31.0]))
    v = torch.rand(6, 3) * 2 - 1
    phi = model.hidden_input(v)
    assert bool((phi > 20).all() and (phi < 35).all())
    return model, v


def test_grbm_free_energy_is_exact_for_hidden_inputs_above_20():
    """F(v) = −logsumexp_h(−E(v, h)) to 1e-12 where F.softplus(x) would return x (x > 20)."""
    model, v = large_input_grbm()
    H = all_binary(model.n_hidden)
    E = torch.stack([model.joint_energy(v, h.expand(len(v), -1)) for h in H], dim=1)
    torch.testing.assert_close(model.free_energy(v), -torch.logsumexp(-E, dim=1), rtol=0, atol=1e-12)
    # the autograd derivative of F is the closed-form score, sigm(φ) < 1 included
    torch.testing.assert_close(autograd_score(model, v), model.score(v), rtol=0, atol=1e-13)


def test_all_softplus_energies_are_exact_for_large_inputs():
    """MCRBM, MPoT, DAEEnergy, MLPEnergy(softplus) against a threshold-free softplus."""
    torch.manual_seed(5)
    x = torch.rand(5, 3) * 2 - 1
    # mcRBM: φ^c = ½ u²P + b^c and φ^m = Wᵀv + b^m pushed above 20
    mc = randomize(MCRBM(3, 2, 2, 2), scale=0.3)
    with torch.no_grad():
        mc.b_cov.fill_(26.0)
        mc.b_mean.fill_(24.0)
    u = x @ mc.C
    ref = (-exact_softplus(0.5 * (u * u) @ mc.P + mc.b_cov).sum(-1) - exact_softplus(x @ mc.W + mc.b_mean).sum(-1)
           - x @ mc.b_visible + 0.5 * (x * x).sum(-1))
    torch.testing.assert_close(mc.free_energy(x), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(autograd_score(mc, x), mc.score(x), rtol=0, atol=1e-12)
    # P = −softplus(P_raw) is exact too (the setter inverts it exactly)
    with torch.no_grad():
        mc.P_raw.fill_(25.0)
    torch.testing.assert_close(mc.P, -exact_softplus(mc.P_raw), rtol=0, atol=1e-13)
    # mPoT: only the mean units
    mp = randomize(MPoT(3, 2, 2, gamma=1.5), scale=0.3)
    with torch.no_grad():
        mp.b_mean.fill_(24.0)
    u = x @ mp.C
    ref = (mp.gamma * torch.log1p(0.5 * u * u).sum(-1) - exact_softplus(x @ mp.W + mp.b_mean).sum(-1)
           - x @ mp.b_visible + 0.5 * (x * x).sum(-1) - 2 * torch.lgamma(mp.gamma))
    torch.testing.assert_close(mp.free_energy(x), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(autograd_score(mp, x), mp.score(x), rtol=0, atol=1e-12)
    # DAE energy
    dae = randomize(DAEEnergy(3, 2, sigma=1.0), scale=0.3)
    with torch.no_grad():
        dae.b.fill_(23.0)
    ref = -(x @ dae.c - 0.5 * (x * x).sum(-1) + exact_softplus(x @ dae.W.T + dae.b).sum(-1))
    torch.testing.assert_close(dae.energy(x), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(autograd_score(dae, x), dae.score(x), rtol=0, atol=1e-12)
    # MLPEnergy with softplus units: forward pass by hand
    mlp = randomize(MLPEnergy(3, (2, 2), activation="softplus"), scale=0.3)
    with torch.no_grad():
        for layer in mlp.layers:
            layer.bias.fill_(25.0)
    a = x
    for layer in mlp.layers:
        a = exact_softplus(a @ layer.weight.T + layer.bias)
    ref = (a @ mlp.out.weight.T + mlp.out.bias).squeeze(-1)
    torch.testing.assert_close(mlp.energy(x), ref, rtol=0, atol=1e-12)
    phi, dphi, d2phi = ACTIVATIONS["softplus"](torch.tensor([25.0, 30.0]))
    torch.testing.assert_close(phi, exact_softplus(torch.tensor([25.0, 30.0])), rtol=0, atol=1e-14)


# ------------------------------------------------------------------ Gaussian energy
def test_gaussian_energy_closed_forms_against_scipy_and_autograd():
    from scipy import stats

    mu, P = torch.tensor([0.3, -1.0, 2.0]), random_spd(3, seed=1)
    model = GaussianEnergy(mu, P)
    torch.testing.assert_close(model.precision, P, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.P, P, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.covariance, torch.linalg.inv(P), rtol=0, atol=1e-12)
    torch.testing.assert_close(model.mu.detach(), mu)
    x = torch.randn(7, 3)
    z = x - mu
    torch.testing.assert_close(model.energy(x), 0.5 * ((z @ P) * z).sum(-1))
    torch.testing.assert_close(model.score(x), -z @ P)
    torch.testing.assert_close(model.score(x), autograd_score(model, x))
    torch.testing.assert_close(model.score_divergence(x), -torch.trace(P).expand(7))
    torch.testing.assert_close(model.score_jacobian_diagonal(x), -torch.diagonal(P).expand(7, 3))
    ref = stats.multivariate_normal(mu.numpy(), torch.linalg.inv(P).numpy()).logpdf(x.numpy())
    torch.testing.assert_close(model.log_prob(x).detach(), torch.from_numpy(ref), rtol=0, atol=1e-12)
    torch.testing.assert_close(model.log_partition().detach(), -(model.energy(x) + model.log_prob(x))[0].detach())


def test_gaussian_energy_log_partition_is_differentiable_and_precision_stays_spd():
    model = GaussianEnergy(torch.zeros(2), random_spd(2, seed=2))
    # log Z = (d/2) log 2π − ½ log det P, and P = LLᵀ with Lᵢᵢ = exp(L_raw,ᵢᵢ): ∂ log Z/∂L_raw = −I
    P = model.precision.detach()
    torch.testing.assert_close(model.log_partition().detach(), math.log(2 * math.pi) - 0.5 * torch.logdet(P))
    (g,) = torch.autograd.grad(model.log_partition(), model.L_raw)
    torch.testing.assert_close(g, -torch.eye(2))
    # a step that would make P itself indefinite (P − η ∂NLL/∂P = P − η(S − P⁻¹)/2, S ≈ 9I) leaves LLᵀ SPD
    x = 3 * torch.randn(200, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    nll = model.energy(x).mean() + model.log_partition()
    S = x.T @ x / len(x)
    assert torch.linalg.eigvalsh(P - 1.0 * 0.5 * (S - torch.linalg.inv(P))).min() < 0
    opt.zero_grad()
    nll.backward()
    opt.step()
    P = model.precision.detach()
    torch.testing.assert_close(P, P.T, rtol=0, atol=0)
    assert torch.linalg.eigvalsh(P).min() > 0


def test_gaussian_energy_fixed_precision_and_bad_input():
    P = random_spd(3, seed=3)
    fixed = GaussianEnergy(torch.zeros(3), P, fixed_precision=True)
    assert [n for n, _ in fixed.named_parameters()] == ["mu"]
    torch.testing.assert_close(fixed.precision, P, rtol=0, atol=1e-12)
    std = GaussianEnergy(torch.zeros(2))  # precision defaults to the identity
    torch.testing.assert_close(std.precision, torch.eye(2))
    with pytest.raises(ValueError, match="symmetric positive definite"):
        GaussianEnergy(torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianEnergy(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        GaussianEnergy(torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match="shape"):
        GaussianEnergy(torch.zeros(2, 2))


def test_gaussian_energy_samples_have_its_mean_and_covariance(gen):
    mu, P = torch.tensor([1.0, -2.0]), random_spd(2, seed=4)
    model = GaussianEnergy(mu, P)
    n = 40000
    x = model.sample(n, generator=gen)
    assert x.shape == (n, 2) and not x.requires_grad
    assert_sample_moments(x, mu, torch.linalg.inv(P))
    again = model.sample(5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, model.sample(5, generator=torch.Generator().manual_seed(0)))


# ------------------------------------------------------------------ exact GRBM samples
def grbm_hidden_marginal_by_bayes(model):
    """p(h) ∝ p(h|v₀)/p(v₀|h) for any fixed v₀ (Bayes' rule), from the two conditionals only."""
    H = all_binary(model.n_hidden)
    v0 = torch.zeros(1, model.n_visible)
    with torch.no_grad():
        p1 = model.p_h_given_v(v0)  # (1, n_h)
        log_h_given_v = (H * torch.log(p1) + (1 - H) * torch.log1p(-p1)).sum(-1)
        mean = model.mean_v_given_h(H)
        log_v_given_h = -((v0 - mean) ** 2).sum(-1) / (2 * model.sigma**2)  # constants cancel
    return H, torch.softmax(log_h_given_v - log_v_given_h, 0)


def test_grbm_sample_exact_has_the_exact_moments(gen):
    torch.manual_seed(6)
    model = randomize(GRBM(3, 4, sigma=0.8), scale=1.0)
    H, p_h = grbm_hidden_marginal_by_bayes(model)
    with torch.no_grad():
        mean_h = p_h @ H
        cov_h = (p_h[:, None] * (H - mean_h)).T @ (H - mean_h)
        W = model.W
        mean = model.c + W @ mean_h  # E[v] = c + W E[h]
        cov = model.sigma**2 * torch.eye(3) + W @ cov_h @ W.T  # σ²I + W Cov[h] Wᵀ
    n = 60000
    v = model.sample_exact(n, generator=gen)
    assert v.shape == (n, 3) and not v.requires_grad
    # covariance: 5 Gaussian standard errors, ×2 for the mixture's kurtosis
    assert_sample_moments(v, mean, cov, k_cov=10.0)
    a = model.sample_exact(4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, model.sample_exact(4, generator=torch.Generator().manual_seed(1)))


def test_grbm_sample_exact_picks_the_right_mode_and_is_limited(gen):
    # W = aI, c = 0, b = −a²/2: p(v) is an equal mixture of unit Gaussians at the corners {0, a}².
    a = 8.0
    model = GRBM(2, 2, sigma=1.0)
    with torch.no_grad():
        model.W.copy_(a * torch.eye(2))
        model.b.fill_(-a * a / 2)
        model.c.zero_()
    v = model.sample_exact(8000, generator=gen)
    corner = (v / a).round().clamp(0, 1)  # nearest corner
    counts = torch.stack([((corner == torch.tensor(c)).all(-1)).sum() for c in ([0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0])])
    assert counts.sum() == 8000
    assert ((counts - 2000).abs() < 5 * (8000 * 0.25 * 0.75) ** 0.5).all()
    gaussian = GRBM(2, 0, sigma=0.5)  # no hidden units: N(c, σ²I)
    x = gaussian.sample_exact(20000, generator=gen)
    assert abs(float(x.std()) - 0.5) < 0.01
    with pytest.raises(ValueError, match="n_hidden=21 exceeds"):
        GRBM(2, 21).sample_exact(3)


# ------------------------------------------------------------------ gated Gaussian v | h: Woodbury vs dense
def gated_problem(d, n_filters, batch=4, seed=0):
    """Random C (d, K), s ≥ 0 with some exact zeros, m (B, d); float64."""
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(d, n_filters, generator=g) * 0.8
    s = torch.rand(batch, n_filters, generator=g) * 3
    s[0, 0] = 0.0  # a switched-off filter (mcRBM h^c = 0)
    m = torch.randn(batch, d, generator=g)
    omega = torch.eye(d) + (C * s[:, None, :]) @ C.T
    return C, s, m, omega


@pytest.mark.parametrize("d, n_filters", [(7, 3), (6, 1), (4, 4), (3, 5)])
def test_gated_gaussian_mean_routes_agree(d, n_filters):
    C, s, m, omega = gated_problem(d, n_filters)
    truth = torch.linalg.solve(omega, m.unsqueeze(-1)).squeeze(-1)
    means = {meth: gated_gaussian_mean(C, s, m, method=meth) for meth in ("dense", "woodbury", "auto")}
    for mu in means.values():
        torch.testing.assert_close(mu, truth, atol=1e-10, rtol=0)
    auto_route = "woodbury" if n_filters < d else "dense"
    assert torch.equal(means["auto"], means[auto_route])


def test_gated_gaussian_mean_gradients_agree_at_zero_scale():
    """The Woodbury solve needs no √s, so its gradient is finite at s = 0 and equals the dense one."""
    C, s, m, _ = gated_problem(7, 3)
    grads = {}
    for meth in ("dense", "woodbury"):
        Cg, sg, mg = (t.clone().requires_grad_() for t in (C, s, m))
        gated_gaussian_mean(Cg, sg, mg, method=meth).pow(2).sum().backward()
        grads[meth] = (Cg.grad, sg.grad, mg.grad)
    for a, b in zip(grads["dense"], grads["woodbury"]):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", ["dense", "woodbury"])
def test_gated_gaussian_sampler_linear_map_is_exact(method):
    """v = Ω⁻¹m + Tε is affine in the noise ε ~ N(0, I): read T off basis vectors and check TTᵀ = Ω⁻¹.

    This pins the sampler's distribution exactly (mean and covariance analytically from the map),
    with no Monte Carlo error.
    """
    d, n_filters = 7, 3
    C, s, m, omega = gated_problem(d, n_filters, batch=1)
    k = _gated_noise_dim(C, method)
    assert k == (d + n_filters if method == "woodbury" else d)
    s_k, m_k = s.expand(k, -1), m.expand(k, -1)
    offset = _gated_gaussian_affine(C, s_k, m_k, torch.zeros(k, k), method)
    T = (_gated_gaussian_affine(C, s_k, m_k, torch.eye(k), method) - offset).T  # (d, k): column j = T e_j
    torch.testing.assert_close(offset, torch.linalg.solve(omega[0], m[0]).expand(k, -1), atol=1e-10, rtol=0)
    torch.testing.assert_close(T @ T.T, torch.linalg.inv(omega[0]), atol=1e-10, rtol=0)
    # the public sampler is this map applied to its generator's standard normals
    B = 5
    s_b, m_b = s.expand(B, -1), m.expand(B, -1)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(B, d, generator=g)
    if method == "woodbury":
        noise = torch.cat([noise, torch.randn(B, n_filters, generator=g)], dim=1)
    v = sample_gated_gaussian(C, s_b, m_b, torch.Generator().manual_seed(3), method=method)
    torch.testing.assert_close(v, _gated_gaussian_affine(C, s_b, m_b, noise, method), atol=1e-12, rtol=0)


def test_gated_gaussian_rejects_bad_input():
    C, s, m, _ = gated_problem(5, 2)
    with pytest.raises(ValueError, match="method"):
        gated_gaussian_mean(C, s, m, method="lu")
    with pytest.raises(ValueError, match="s must be >= 0"):
        sample_gated_gaussian(C, -s, m)


@pytest.mark.parametrize("factory", [lambda: MCRBM(6, 3, 2, 2), lambda: MPoT(6, n_cov=2, n_mean=3, gamma=1.3)])
def test_models_with_few_filters_use_the_exact_conditional(factory, gen):
    """mcRBM/mPoT with K < d (Woodbury route): E[v|h] equals the dense Ω⁻¹m, samples are exact draws."""
    torch.manual_seed(2)
    model = randomize(factory(), seed=2)
    with torch.no_grad():
        h = model.sample_h(torch.randn(4, model.dim), generator=gen)
        s = -(h[0] @ model.P.T) if isinstance(model, MCRBM) else h[0]
        m = model.b_visible + h[1] @ model.W.T
        torch.testing.assert_close(model.mean_v_given_h(h), gated_gaussian_mean(model.C, s, m, method="dense"),
                                   atol=1e-10, rtol=0)
        v = model.sample_v(h, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(v, sample_gated_gaussian(model.C, s, m, torch.Generator().manual_seed(1),
                                                            method="woodbury"), atol=1e-12, rtol=0)
