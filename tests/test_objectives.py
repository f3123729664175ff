"""Tests of smlib.objectives: exact values, estimator identities, unbiasedness, signs, errors.

All float64. Ground truths: E = ½‖x‖² (J_SM = −d/2 on a batch with mean‖x‖² = d), autograd
Jacobians, the closed-form Theorem-1 objectives, and Monte-Carlo averages with 5-standard-error
tolerances.
"""
import math

import pytest
import torch

from helpers import randomize

from smlib import _checks, objectives as O
from smlib.models import DAEEnergy, EnergyModel, GaussianEnergy, GRBM, MCRBM, MLPEnergy, MPoT, ScoreMLP

pytestmark = [
    pytest.mark.usefixtures("float64"),
    # torch.func's forward-mode AD (method="jvp") scripts decompositions on first use
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]


class Quadratic(EnergyModel):
    """E(x) = ½ Σᵢ aᵢ (xᵢ − μᵢ)², learnable mean μ and precisions a (autograd score only)."""

    def __init__(self, dim, mu=None, precision=None):
        super().__init__(dim)
        self.mu = torch.nn.Parameter(torch.zeros(dim) if mu is None else torch.as_tensor(mu).clone())
        self.a = torch.nn.Parameter(torch.ones(dim) if precision is None else torch.as_tensor(precision).clone())

    def energy(self, x):
        return 0.5 * (self.a * (x - self.mu) ** 2).sum(-1)




def isotropic_batch(B, d, seed=0):
    """x = √B·Q with QᵀQ = I_d: the batch has mean ‖x‖² = d exactly (and Σ xxᵀ = B·I)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(B, d, generator=g))
    return math.sqrt(B) * Q


def basis_projections(B, d):
    """√d·eᵢ for every i as (d, B, d) slices: the slice average of vvᵀ is exactly I."""
    return math.sqrt(d) * torch.eye(d)[:, None, :].expand(d, B, d).clone()


def exact_sm(model, x):
    """½‖ψ‖² + tr ∂ψ/∂x from a full autograd Jacobian (independent of smlib.objectives)."""
    J = torch.autograd.functional.jacobian(lambda y: O.score_of(model, y).sum(0), x)  # (d, B, d)
    psi = model.score(x).detach()
    return (0.5 * (psi**2).sum(-1) + torch.diagonal(J, dim1=0, dim2=2).sum(-1)).mean()


def models():
    torch.manual_seed(0)
    return {
        "quadratic": randomize(Quadratic(3), 0.3),
        "grbm": randomize(GRBM(3, 4, sigma=0.8)),
        "mcrbm": randomize(MCRBM(3, 4, 2, 2)),
        "mpot": randomize(MPoT(3, n_cov=4, n_mean=2, gamma=1.3)),
        "dae": randomize(DAEEnergy(3, 4, sigma=0.7)),
        "dae_untied": randomize(DAEEnergy(3, 4, sigma=0.7, tied=False)),
        "mlp": randomize(MLPEnergy(3, (6, 5)), 0.3),
        "score_mlp": randomize(ScoreMLP(3, (6,)), 0.3),
    }


MODEL_NAMES = list(models())


# ------------------------------------------------------------------ exact values
def test_sm_of_standard_normal_energy_is_minus_half_d_exactly():
    B, d = 12, 5
    x = isotropic_batch(B, d)
    model = Quadratic(d)  # E = ½‖x‖², ψ = −x, ∇·ψ = −d
    target = torch.tensor(-d / 2)
    torch.testing.assert_close(O.sm(model, x), target)
    for method in ("jvp", "vjp", "loop"):
        torch.testing.assert_close(O.sm_generic(model, x, method=method), target)
    P = basis_projections(B, d)
    torch.testing.assert_close(O.ssm(model, x, projections=P), target)
    torch.testing.assert_close(O.ssm(model, x, projections=P, vr=True), target)
    torch.testing.assert_close(O.kingma_lecun(model, x, lam=0.0), target)
    # any batch: J = mean[½‖x‖²] − d
    y = torch.randn(7, d)
    torch.testing.assert_close(O.sm(model, y), 0.5 * (y**2).sum(-1).mean() - d)


@pytest.mark.parametrize("name", ["grbm", "mcrbm", "mpot"])
def test_closed_form_sm_equals_generic_autograd_sm(name):
    model = models()[name]
    x = torch.randn(9, 3)
    closed = O.sm(model, x)
    torch.testing.assert_close(closed, model.sm_terms(x)["total"])
    torch.testing.assert_close(closed, O.sm_generic(model, x))  # default method: autograd only
    torch.testing.assert_close(closed, exact_sm(model, x))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_hessian_trace_methods_agree_in_value_and_parameter_gradient(name):
    model = models()[name]
    x = torch.randn(4, 3)
    ref = O.hessian_trace(model, x, method="loop")
    J = torch.autograd.functional.jacobian(lambda y: O.score_of(model, y).sum(0), x)
    torch.testing.assert_close(ref, torch.diagonal(J, dim1=0, dim2=2).sum(-1))
    grads = {}
    for method, chunk in [("loop", None), ("auto", None), ("jvp", None), ("jvp", 2), ("vjp", None), ("vjp", 1)]:
        tr = O.hessian_trace(model, x, method=method, chunk_size=chunk)
        assert tr.shape == (4,)
        torch.testing.assert_close(tr, ref, rtol=1e-10, atol=1e-12)
        model.zero_grad()
        O.sm_generic(model, x, method=method, chunk_size=chunk).backward()
        grads[(method, chunk)] = torch.cat(
            [torch.zeros(p.numel()) if p.grad is None else p.grad.flatten() for p in model.parameters()]
        )
        torch.testing.assert_close(grads[(method, chunk)], grads[("loop", None)], rtol=1e-9, atol=1e-12)
    diag = O.score_jacobian_diagonal(model, x)
    torch.testing.assert_close(diag.sum(-1), ref)


def test_analytic_method_requires_a_closed_form():
    with pytest.raises(ValueError, match="no closed-form"):
        O.score_jacobian_diagonal(Quadratic(2), torch.randn(3, 2), method="analytic")


# ------------------------------------------------------------------ sliced score matching
@pytest.mark.parametrize("name", ["mlp", "grbm", "score_mlp"])
def test_ssm_with_basis_projections_equals_exact_sm(name):
    model = models()[name]
    x = torch.randn(6, 3)
    P = basis_projections(6, 3)
    exact = exact_sm(model, x)
    torch.testing.assert_close(O.ssm(model, x, projections=P), exact)
    torch.testing.assert_close(O.ssm(model, x, projections=P, vr=True), exact)


def test_ssm_with_given_projections_matches_the_formula():
    model = models()["mlp"]
    x = torch.randn(5, 3)
    v = torch.randn(2, 5, 3)
    J = torch.autograd.functional.jacobian(lambda y: model.score(y).sum(0), x).permute(1, 0, 2)  # (B, d, d)
    psi = model.score(x).detach()
    vJv = torch.einsum("sbi,bij,sbj->sb", v, J, v)
    manual = (0.5 * torch.einsum("sbi,bi->sb", v, psi) ** 2 + vJv).mean()
    torch.testing.assert_close(O.ssm(model, x, projections=v), manual)
    manual_vr = (0.5 * (psi**2).sum(-1) + vJv).mean()
    torch.testing.assert_close(O.ssm(model, x, projections=v, vr=True), manual_vr)
    # (B, d) projections = one slice
    one_slice = (0.5 * torch.einsum("bi,bi->b", v[0], psi) ** 2 + vJv[0]).mean()
    torch.testing.assert_close(O.ssm(model, x, projections=v[0]), one_slice)


@pytest.mark.parametrize("kind,scale", [("gaussian", 1.0), ("rademacher", 1.0), ("sphere", 1 / 3)])
@pytest.mark.parametrize("vr", [False, True])
def test_ssm_is_unbiased_for_exact_sm(kind, scale, vr):
    """Average of SSM over random projections = J_SM (E[vvᵀ] = I) or J_SM/d (sphere), within 5 SE."""
    model = models()["mlp"]
    x = torch.randn(8, 3)
    target = float(exact_sm(model, x)) * scale
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        chunks = torch.stack([O.ssm(model, x, n_slices=100, vr=vr, kind=kind, generator=gen) for _ in range(40)])
    se = float(chunks.std()) / math.sqrt(len(chunks))
    assert abs(float(chunks.mean()) - target) < 5 * se + 1e-12, (float(chunks.mean()), target, se)


def test_projection_distributions():
    gen = torch.Generator().manual_seed(0)
    r = O.sample_projections((4000, 3), "rademacher", generator=gen)
    assert set(r.unique().tolist()) == {-1.0, 1.0} and r.dtype == torch.float64
    s = O.sample_projections((4000, 3), "sphere", generator=gen)
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(4000))
    g = O.sample_projections((4000, 3), generator=gen)
    for v, target in [(r, torch.eye(3)), (s, torch.eye(3) / 3), (g, torch.eye(3))]:
        torch.testing.assert_close(v.T @ v / 4000, target, atol=0.08, rtol=0)


def test_ssm_variance_reduction_reduces_variance():
    model = models()["mlp"]
    x = torch.randn(8, 3)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        plain = torch.stack([O.ssm(model, x, generator=gen) for _ in range(200)])
        vr = torch.stack([O.ssm(model, x, vr=True, generator=gen) for _ in range(200)])
    assert vr.var() < plain.var()


# ------------------------------------------------------------------ denoising score matching
def test_dsm_matches_its_definition_on_given_noise():
    model = models()["mlp"]
    x, eps, sigma = torch.randn(6, 3), torch.randn(6, 3), 0.3
    xt = x + sigma * eps
    manual = 0.5 * ((model.score(xt) - (x - xt) / sigma**2) ** 2).sum(-1).mean()
    torch.testing.assert_close(O.dsm(model, x, sigma, noise=eps), manual)
    a = O.dsm(model, x, sigma, generator=torch.Generator().manual_seed(3))
    b = O.dsm(model, x, sigma, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("tied", [True, False])
def test_dsm_of_the_dae_energy_is_the_dae_loss_over_sigma4(tied):
    """Vincent (2011): ψ(x̃) = (x^r(x̃) − x̃)/σ² ⇒ J_DSM = (1/σ⁴)·mean ½‖x^r(x̃) − x‖²."""
    sigma = 0.4
    torch.manual_seed(0)
    dae = randomize(DAEEnergy(5, 7, sigma=sigma, tied=tied))
    x, eps = torch.randn(10, 5), torch.randn(10, 5)
    dae_loss = 0.5 * ((dae.reconstruct(x + sigma * eps) - x) ** 2).sum(-1).mean()
    torch.testing.assert_close(O.dsm(dae, x, sigma, noise=eps), dae_loss / sigma**4)
    # the identity needs the DSM noise level to equal the DAE's σ
    assert not torch.isclose(O.dsm(dae, x, 2 * sigma, noise=eps), dae_loss / sigma**4)


def test_dsm_gradient_has_the_right_sign_on_given_noise():
    """E = ½‖x − μ‖²: ∂J_DSM/∂μ = mean(μ − x − σε + ε/σ) exactly on the same ε."""
    model = Quadratic(3, mu=torch.tensor([0.5, -0.2, 0.1]))
    x, eps, sigma = torch.randn(8, 3) + 2.0, torch.randn(8, 3), 0.5
    O.dsm(model, x, sigma, noise=eps).backward()
    torch.testing.assert_close(model.mu.grad, (model.mu.detach() - x - sigma * eps + eps / sigma).mean(0))


@pytest.mark.parametrize(
    "objective",
    [
        lambda m, x, g: O.dsm(m, x, 0.3, generator=g),
        lambda m, x, g: O.sm(m, x),
        lambda m, x, g: O.ssm(m, x, generator=g),
        lambda m, x, g: O.ssm(m, x, vr=True, kind="rademacher", generator=g),
        lambda m, x, g: O.kingma_lecun(m, x, 0.1),
    ],
    ids=["dsm", "sm", "ssm", "ssm_vr", "kingma_lecun"],
)
@pytest.mark.parametrize("kind", ["quadratic", "grbm"])
def test_sgd_moves_the_model_mean_toward_the_data_mean(objective, kind):
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(256, 2, generator=gen) * 0.7 + torch.tensor([2.0, -1.0])
    model = Quadratic(2) if kind == "quadratic" else GRBM(2, 0, sigma=1.0)  # both N(μ, I) at init
    mean = model.mu if kind == "quadratic" else model.c  # the only parameter we train
    opt = torch.optim.SGD([mean], lr=0.1)
    dist = [float((mean.detach() - data.mean(0)).norm())]
    for _ in range(40):
        opt.zero_grad()
        objective(model, data, gen).backward()
        opt.step()
        dist.append(float((mean.detach() - data.mean(0)).norm()))
    assert dist[-1] < 0.1 * dist[0]
    assert all(b < a for a, b in zip(dist[:10], dist[1:10]))  # far from the optimum: every step closer


# ------------------------------------------------------------------ Kingma–LeCun
def test_kingma_lecun_regulariser_is_lambda_sum_of_squared_curvatures():
    a = torch.tensor([0.5, 2.0, 3.0])
    model = Quadratic(3, precision=a)  # ∂²E/∂xᵢ² = aᵢ
    x = torch.randn(5, 3)
    lam = 0.3
    torch.testing.assert_close(O.kingma_lecun(model, x, lam), O.sm(model, x) + lam * (a**2).sum())
    mlp = models()["mlp"]
    H = torch.autograd.functional.jacobian(lambda y: mlp.score(y).sum(0), x)  # (d, B, d)
    diag = torch.diagonal(H, dim1=0, dim2=2)
    for method in ("auto", "jvp", "vjp"):
        torch.testing.assert_close(
            O.kingma_lecun(mlp, x, lam, method=method), exact_sm(mlp, x) + lam * (diag**2).sum(-1).mean()
        )


def test_kingma_lecun_is_expected_sm_on_noisy_data_for_a_diagonal_quadratic():
    """For E = ½Σaᵢ(xᵢ−μᵢ)², E_ε[J_SM(x + ε)] = J_SM(x) + (s²/2)Σaᵢ² exactly (ε ~ N(0, s²I)),

    i.e. kingma_lecun with λ = s²/2 — the *squared* curvature. The unsquared penalty
    λΣ∂²E/∂xᵢ² printed in DEEN's eq. 10 is rejected by the same Monte-Carlo average.
    """
    a = torch.tensor([0.5, 2.0, 3.0])
    model = Quadratic(3, mu=torch.tensor([0.3, -0.4, 1.0]), precision=a)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(4))
    s = 0.3
    gen = torch.Generator().manual_seed(5)
    reps = x.repeat(50, 1)  # each chunk: 50 noisy copies of the batch, J_SM averages over them
    with torch.no_grad():
        noisy = torch.stack([O.sm(model, reps + s * torch.randn(reps.shape, generator=gen)) for _ in range(100)])
        kl = float(O.kingma_lecun(model, x, s**2 / 2))
    mc, se = float(noisy.mean()), float(noisy.std()) / math.sqrt(len(noisy))
    lam = s**2 / 2
    assert abs(kl - mc) < 5 * se
    unsquared = float(O.sm(model, x).detach() + lam * a.sum())
    assert abs(unsquared - mc) > 5 * se


# ------------------------------------------------------------------ AE and ESM
def test_ae_is_half_mean_squared_reconstruction_error_and_grbm_recon_term():
    grbm = models()["grbm"]
    x = torch.randn(6, 3)
    ae = O.ae(grbm, x)
    torch.testing.assert_close(ae, 0.5 * ((grbm.reconstruct(x) - x) ** 2).sum(-1).mean())
    torch.testing.assert_close(ae / grbm.sigma**4, grbm.sm_terms(x)["reconstruction"])
    for name in ("mcrbm", "mpot"):  # unit step: AE = reconstruction term of SM
        m = models()[name]
        torch.testing.assert_close(O.ae(m, x), m.sm_terms(x)["reconstruction"])
    with pytest.raises(TypeError, match="reconstruct"):
        O.ae(models()["mlp"], x)


def test_esm_against_a_known_gaussian_score():
    model = Quadratic(3, mu=torch.tensor([1.0, 0.0, -1.0]))
    m = torch.tensor([0.5, 0.5, 0.5])
    x = torch.randn(7, 3)
    true_score = lambda y: -(y - m)  # noqa: E731  N(m, I)
    expected = 0.5 * ((model.mu.detach() - m) ** 2).sum()
    torch.testing.assert_close(O.esm(model, x, true_score), expected)
    torch.testing.assert_close(O.esm(model, x, true_score(x)), expected)
    with pytest.raises(ValueError, match="true_score must be"):
        O.esm(model, x, torch.zeros(7, 2))


# ------------------------------------------------------------------ every objective, every model
OBJECTIVES = {
    "sm": lambda m, x: O.sm(m, x),
    "sm_generic": lambda m, x: O.sm_generic(m, x),
    "dsm": lambda m, x: O.dsm(m, x, 0.5, generator=torch.Generator().manual_seed(0)),
    "ssm": lambda m, x: O.ssm(m, x, n_slices=2, generator=torch.Generator().manual_seed(0)),
    "ssm_vr": lambda m, x: O.ssm(m, x, vr=True, kind="sphere", generator=torch.Generator().manual_seed(0)),
    "kingma_lecun": lambda m, x: O.kingma_lecun(m, x, 0.1),
    "esm": lambda m, x: O.esm(m, x, lambda y: -y),
}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_objectives_are_scalars_differentiable_and_no_grad_safe(objective, name):
    model = models()[name]
    x = torch.randn(5, 3)
    loss = OBJECTIVES[objective](model, x)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        again = OBJECTIVES[objective](model, x)
    assert not again.requires_grad
    torch.testing.assert_close(again, loss.detach())


# ------------------------------------------------------------------ bad input
_M = Quadratic(3)
_X = torch.randn(4, 3)
BAD = [
    (lambda: O.sm(_M, torch.randn(4)), ValueError, "2-D"),
    (lambda: O.sm(_M, torch.randn(2, 4, 3)), ValueError, "ndim=3"),
    (lambda: O.dsm(_M, torch.ones(4, 3, dtype=torch.int64), 0.1), ValueError, "floating dtype"),
    (lambda: O.ssm(_M, _X.numpy()), ValueError, "torch.Tensor"),
    (lambda: O.sm(_M, torch.tensor([[0.0, float("nan"), 1.0]])), ValueError, "NaN or Inf"),
    (lambda: O.dsm(_M, torch.tensor([[0.0, float("inf"), 1.0]]), 0.1), ValueError, "NaN or Inf"),
    (lambda: O.sm(_M, torch.randn(4, 2)), ValueError, "dimension 2 but the model expects dim=3"),
    (lambda: O.sm(_M, torch.empty(0, 3)), ValueError, "empty"),
    (lambda: O.dsm(_M, _X, 0.0), ValueError, "sigma must be > 0, got 0.0"),
    (lambda: O.dsm(_M, _X, -1.0), ValueError, "sigma must be > 0, got -1.0"),
    (lambda: O.dsm(_M, _X, float("nan")), ValueError, "sigma must be finite"),
    (lambda: O.dsm(_M, _X, 0.1, noise=torch.randn(3, 3)), ValueError, "noise must have the shape"),
    (lambda: O.ssm(_M, _X, kind="uni"), ValueError, "unknown kind 'uni'; choose one of 'gaussian', 'rademacher', 'sphere'"),
    (lambda: O.ssm(_M, _X, n_slices=0), ValueError, "n_slices must be an integer >= 1"),
    (lambda: O.ssm(_M, _X, projections=torch.randn(4, 2)), ValueError, "projections must have shape"),
    (lambda: O.kingma_lecun(_M, _X, -0.1), ValueError, "lam must be >= 0, got -0.1"),
    (lambda: O.hessian_trace(_M, _X, method="fd"), ValueError, "unknown method 'fd'"),
    (lambda: O.esm(_M, _X, torch.zeros(4)), ValueError, "true_score must be"),
    (lambda: O.ae(_M, _X), TypeError, "no reconstruct"),
]


@pytest.mark.parametrize("call,exc,match", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_input_raises_naming_the_problem(call, exc, match):
    import re

    with pytest.raises(exc, match=re.escape(match)):
        call()


def test_check_helpers():
    x = torch.randn(3, 2)
    assert _checks.check_data(x, d=2) is x
    assert _checks.check_positive("sigma", torch.tensor(0.5)) == 0.5
    with pytest.raises(ValueError, match=r"^sigma must be > 0, got -1.0$"):
        _checks.check_positive("sigma", -1)
    with pytest.raises(ValueError, match="must be a real number"):
        _checks.check_positive("sigma", None)
    with pytest.raises(ValueError, match="must be a scalar"):
        _checks.check_positive("sigma", torch.ones(2))
    assert _checks.check_nonnegative("lam", 0) == 0.0
    assert _checks.check_choice("kind", "a", ("a", "b")) == "a"
    bad = torch.tensor([[float("nan"), 0.0]])
    with pytest.raises(ValueError, match="1 non-finite"):
        _checks.check_data(bad, "batch")
    with _checks.disabled():  # a training loop that validated its data once may skip the sync
        assert _checks.check_data(bad) is bad
    with pytest.raises(ValueError, match="NaN"):
        _checks.check_data(bad)


# ------------------------------------------------------------------ scores that do not depend on x
class Linear(EnergyModel):
    """E(x) = θᵀx: ψ = −θ does not depend on x, so ∂ψᵢ/∂xᵢ = 0 (θ a parameter or a buffer)."""

    def __init__(self, theta, learn=True):
        super().__init__(len(theta))
        theta = torch.as_tensor(theta, dtype=torch.get_default_dtype()).clone()
        if learn:
            self.theta = torch.nn.Parameter(theta)
        else:
            self.register_buffer("theta", theta)

    def energy(self, x):
        return x @ self.theta


@pytest.mark.parametrize("learn", [True, False], ids=["parameter", "buffer"])
@pytest.mark.parametrize("method", ["auto", "vjp", "loop", "jvp"])
def test_generic_paths_give_zero_curvature_for_a_linear_energy(method, learn):
    theta = torch.tensor([0.5, -1.0, 2.0])
    model = Linear(theta, learn)
    x = torch.randn(4, 3)
    zeros = torch.zeros(4, 3)
    torch.testing.assert_close(O.score_jacobian_diagonal(model, x, method=method), zeros)
    torch.testing.assert_close(O.hessian_trace(model, x, method=method), zeros.sum(-1))
    loss = O.sm_generic(model, x, method=method)  # = ½‖θ‖², ∇θ = θ
    torch.testing.assert_close(loss, 0.5 * (theta**2).sum())
    loss_kl = O.kingma_lecun(model, x, 0.3, method=method)
    torch.testing.assert_close(loss_kl, 0.5 * (theta**2).sum())
    if learn:
        (g,) = torch.autograd.grad(loss, model.theta)
        torch.testing.assert_close(g, theta)
    with torch.no_grad():
        torch.testing.assert_close(O.hessian_trace(model, x, method=method), zeros.sum(-1))


@pytest.mark.parametrize("learn", [True, False], ids=["parameter", "buffer"])
def test_ssm_of_a_linear_energy_has_no_curvature_term(learn):
    theta = torch.tensor([0.5, -1.0, 2.0])
    model = Linear(theta, learn)
    x = torch.randn(4, 3)
    v = torch.randn(2, 4, 3)
    torch.testing.assert_close(O.ssm(model, x, projections=v), (0.5 * (v @ theta) ** 2).mean())
    torch.testing.assert_close(O.ssm(model, x, projections=v[0], vr=True), 0.5 * (theta**2).sum())


# ------------------------------------------------------------------ Gaussian model: the SM minimiser
def test_sm_minimiser_of_a_gaussian_is_the_sample_mean_and_the_1_over_n_covariance():
    """J = ½ tr(P²[S + (x̄−μ)(x̄−μ)ᵀ]) − tr P is minimised at μ = x̄, P = S⁻¹ (S with 1/n)."""
    g = torch.Generator().manual_seed(3)
    n, d = 50, 3
    x = torch.randn(n, d, generator=g) @ torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.2, 0.5]]) + 1.0
    mean = x.mean(0)
    S = (x - mean).T @ (x - mean) / n  # 1/n, not 1/(n − 1)
    # the closed-form minimiser is a stationary point of smlib's objective
    at_opt = GaussianEnergy(mean, torch.linalg.inv(S))
    grads = torch.autograd.grad(O.sm(at_opt, x), list(at_opt.parameters()))
    assert max(float(gr.abs().max()) for gr in grads) < 1e-10
    # and LBFGS from the standard normal finds it
    model = GaussianEnergy(torch.zeros(d), torch.eye(d))
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=500, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-13, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        loss = O.sm(model, x)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(model.mu.detach(), mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(model.covariance.detach(), S, rtol=0, atol=1e-8)
    # the minimum value: J = ½ tr(S⁻¹) − tr(S⁻¹) = −½ tr S⁻¹
    torch.testing.assert_close(O.sm(model, x).detach(), -0.5 * torch.trace(torch.linalg.inv(S)))
