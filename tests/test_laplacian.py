"""Exact second derivatives in the first layer's pre-activation space (issue 11), in float64.

Reference everywhere: the per-dimension autograd loop of `smlib.objectives` (``method="loop"``),
which knows nothing of the model's structure. Tolerance: 1e-10 absolute and relative (float64;
the routes differ from the loop only by rounding, ~1e-15 here).
"""
import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, stack_module_state, vmap

from helpers import randomize
from smlib import objectives as O
from smlib.models import EnergyModel, MLPEnergy
from smlib.models import first_layer as FL
from smlib.models import mlp_derivatives as MD

TOL = dict(rtol=1e-10, atol=1e-10)
SMOOTH = ["tanh", "softplus", "gelu", "swish", "sigmoid"]  # twice differentiable everywhere
# (d, hidden): one to four hidden layers; first width k < d (QR factor) and k ≥ d (V = W₁ᵀ)
SHAPES = [(7, (5,)), (7, (5, 6, 4)), (3, (5, 6)), (9, (4, 3, 2)), (2, (8, 8)), (12, (4, 6, 3, 5))]


def mlp(d, hidden, activation, seed=0):
    torch.manual_seed(seed)
    return randomize(MLPEnergy(d, hidden, activation=activation).double(), scale=0.5, seed=seed)


def loop_diagonal(model, x):
    """∂ψᵢ/∂xᵢ by one backward pass per dimension, with a graph (differentiable in θ)."""
    with torch.enable_grad():
        return O.score_jacobian_diagonal(model, x, method="loop")


def grads(model, loss):
    """θ-gradient of ``loss`` for every parameter (zeros where a parameter does not enter)."""
    params = list(model.parameters())
    g = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if gi is None else gi for p, gi in zip(params, g)]


# ----------------------------------------------------------------------------- MLPEnergy
@pytest.mark.parametrize("activation", SMOOTH)
@pytest.mark.parametrize("d,hidden", SHAPES)
@pytest.mark.parametrize("batch", [1, 4])
def test_mlp_divergence_and_diagonal_match_the_loop(d, hidden, activation, batch):
    model = mlp(d, hidden, activation)
    x = torch.randn(batch, d, dtype=torch.float64)
    ref = loop_diagonal(model, x)
    torch.testing.assert_close(model.score_divergence(x), ref.sum(-1), **TOL)
    for route in MD.DIAGONAL_ROUTES:
        torch.testing.assert_close(model.score_jacobian_diagonal(x, route=route), ref, **TOL)


@pytest.mark.parametrize("d,hidden", [(7, (5, 6, 4)), (3, (5, 6)), (12, (4, 6, 3, 5)), (6, (4,))])
def test_mlp_theta_gradients_match_the_loop(d, hidden):
    """The losses stay differentiable in θ: the gradients of Σ∇·ψ and Σ(∂ᵢψᵢ)² equal the loop's."""
    model = mlp(d, hidden, "softplus", seed=1)
    x = torch.randn(5, d, dtype=torch.float64)
    ref = loop_diagonal(model, x)
    g_ref = grads(model, ref.sum())
    for g, r in zip(grads(model, model.score_divergence(x).sum()), g_ref):
        torch.testing.assert_close(g, r, **TOL)
    g_ref = grads(model, (ref * ref).sum())
    for route in ("input", "preactivation"):
        diag = model.score_jacobian_diagonal(x, route=route)
        for g, r in zip(grads(model, (diag * diag).sum()), g_ref):
            torch.testing.assert_close(g, r, **TOL)


def test_packed_sandwich_keeps_theta_gradients(monkeypatch):
    monkeypatch.setattr(FL, "_PACKED_MIN_BATCH", 1)  # the large-batch path of sandwich_diagonal
    model = mlp(12, (4, 6, 3, 5), "tanh", seed=3)
    x = torch.randn(3, 12, dtype=torch.float64)
    ref = loop_diagonal(model, x)
    diag = model.score_jacobian_diagonal(x, route="preactivation")
    torch.testing.assert_close(diag, ref, **TOL)
    for g, r in zip(grads(model, (diag * diag).sum()), grads(model, (ref * ref).sum())):
        torch.testing.assert_close(g, r, **TOL)


def test_mlp_objectives_use_the_new_route():
    """objectives.sm / kingma_lecun (method "auto") agree with the loop, values and θ-gradients."""
    model = mlp(10, (4, 5, 3), "tanh", seed=2)
    x = torch.randn(6, 10, dtype=torch.float64)
    for fast, slow in [(O.sm(model, x), O.sm_generic(model, x, method="loop")),
                       (O.kingma_lecun(model, x, 0.3), O.kingma_lecun(model, x, 0.3, method="loop"))]:
        torch.testing.assert_close(fast, slow, **TOL)
        for g, r in zip(grads(model, fast), grads(model, slow)):
            torch.testing.assert_close(g, r, **TOL)


def test_energy_from_preactivation_is_the_energy():
    model = mlp(5, (3, 4), "gelu")
    x = torch.randn(4, 5, dtype=torch.float64)
    assert isinstance(model, FL.FirstLinearEnergy)
    torch.testing.assert_close(model.energy_from_preactivation(model.first_linear(x)), model.energy(x), **TOL)


# ----------------------------------------------------------------------------- the factor and the routes
@pytest.mark.parametrize("k,d", [(5, 3), (3, 5), (4, 4), (128, 784)])
def test_first_layer_factor_has_min_d_k_rows_and_reproduces_the_gram_matrix(k, d):
    W = torch.randn(k, d, dtype=torch.float64)
    V = FL.first_layer_factor(W)
    assert V.shape == (min(d, k), k)
    torch.testing.assert_close(V.T @ V, W @ W.T, **TOL)


def test_sandwich_diagonal_is_diag_of_wt_h_w(monkeypatch):
    k, d, B = 6, 11, 3
    A = torch.randn(B, k, k, dtype=torch.float64)
    H = A + A.transpose(1, 2)
    W = torch.randn(k, d, dtype=torch.float64)
    ref = torch.diagonal(W.T @ H @ W, dim1=1, dim2=2)
    torch.testing.assert_close(FL.sandwich_diagonal(H, W), ref, **TOL)  # small batch: (H W) ⊙ W
    monkeypatch.setattr(FL, "_PACKED_MIN_BATCH", 1)
    torch.testing.assert_close(FL.sandwich_diagonal(H, W), ref, **TOL)  # packed pairs, one chunk
    monkeypatch.setattr(FL, "_SANDWICH_ELEMENTS", 2 * k * (k + 1))
    torch.testing.assert_close(FL.sandwich_diagonal(H, W), ref, **TOL)  # several column chunks


def test_diagonal_route_choice_follows_the_operation_counts():
    """The pre-activation route pays for the MNIST and patch energies, not for 2-D toys or wide first layers."""
    costs = MD.hessian_diagonal_macs(784, (128, 128, 256))
    assert costs["input"] == 2 * 784 * (128 * 128 + 128 * 256)
    assert costs["preactivation"] == 784 * 128 * 129 // 2 + 256 * 128**2 + 128 * 128 * 256
    assert costs["preactivation"] < costs["input"] / 4
    for d, hidden in [(2, (32, 32, 32)), (64, (128, 128, 256)), (50, (20,))]:
        c = MD.hessian_diagonal_macs(d, hidden)
        assert c["input"] < c["preactivation"], (d, hidden, c)
    lap = MD.laplacian_macs(784, (128, 128, 256))
    assert lap["preactivation"] == 128 * (128 * 128 + 128 * 256) + 128 * 784


def test_auto_route_runs_the_cheaper_route(monkeypatch):
    called = []
    for name in ("_diagonal_input", "_diagonal_preactivation"):
        original = getattr(MD, name)
        monkeypatch.setattr(MD, name, lambda *a, _n=name, _f=original: (called.append(_n), _f(*a))[1])
    for d, hidden, expected in [(20, (8, 8, 8), "_diagonal_preactivation"), (2, (8, 8), "_diagonal_input")]:
        costs = MD.hessian_diagonal_macs(d, hidden)
        assert (costs["preactivation"] < costs["input"]) == (expected == "_diagonal_preactivation")
        mlp(d, hidden, "tanh").score_jacobian_diagonal(torch.randn(3, d, dtype=torch.float64))
        assert called[-1] == expected


# ----------------------------------------------------------------------------- any energy with a linear first layer
class CoupledEnergy(FL.FirstLayerLaplacian, EnergyModel):
    """E(x) = f(W₁x + b₁), f(z) = a·softplus(z) + ½ tanh(z)ᵀ M tanh(z): a non-MLP f with a full Hessian."""

    def __init__(self, d, k):
        super().__init__(d)
        self.first_linear = nn.Linear(d, k)
        self.a = nn.Parameter(torch.randn(k))
        self.M = nn.Parameter(torch.randn(k, k) / k**0.5)

    def energy_from_preactivation(self, z):
        t = torch.tanh(z)
        return nn.functional.softplus(z) @ self.a + 0.5 * ((t @ self.M) * t).sum(-1)

    def energy(self, x):
        return self.energy_from_preactivation(self.first_linear(x))


@pytest.mark.parametrize("d,k", [(7, 3), (3, 7), (5, 5)])
@pytest.mark.parametrize("batch", [1, 4])
def test_mixin_matches_the_loop_with_theta_gradients(d, k, batch):
    torch.manual_seed(3)
    model = CoupledEnergy(d, k).double()
    x = torch.randn(batch, d, dtype=torch.float64)
    ref = loop_diagonal(model, x)
    div, diag = model.score_divergence(x), model.score_jacobian_diagonal(x)
    torch.testing.assert_close(div, ref.sum(-1), **TOL)
    torch.testing.assert_close(diag, ref, **TOL)
    for g, r in zip(grads(model, div.sum()), grads(model, ref.sum())):
        torch.testing.assert_close(g, r, **TOL)
    for g, r in zip(grads(model, (diag * diag).sum()), grads(model, (ref * ref).sum())):
        torch.testing.assert_close(g, r, **TOL)


def test_mixin_with_a_frozen_first_layer_and_under_no_grad():
    torch.manual_seed(4)
    model = CoupledEnergy(6, 4).double()
    model.first_linear.requires_grad_(False)
    x = torch.randn(3, 6, dtype=torch.float64)
    ref = loop_diagonal(model, x).detach()
    torch.testing.assert_close(model.score_divergence(x), ref.sum(-1), **TOL)
    with torch.no_grad():
        out = model.score_jacobian_diagonal(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, ref, **TOL)


def test_mixin_with_an_affine_f_has_zero_curvature():
    class Linear(FL.FirstLayerLaplacian, EnergyModel):
        def __init__(self):
            super().__init__(4)
            self.first_linear = nn.Linear(4, 3)

        def energy_from_preactivation(self, z):
            return z.sum(-1)

        def energy(self, x):
            return self.energy_from_preactivation(self.first_linear(x))

    x = torch.randn(2, 4)
    assert (Linear().score_divergence(x) == 0).all() and (Linear().score_jacobian_diagonal(x) == 0).all()


# ----------------------------------------------------------------------------- ensembles (torch.func)
@pytest.mark.parametrize("d,hidden", [(2, (8, 8, 8)), (9, (4, 5))])
def test_functional_divergence_matches_the_ensemble_sm_loss(d, hidden):
    """vmap(grad) of ½‖ψ‖² + functional_score_divergence equals an independent jvp-over-the-basis trace, and
    fit_ensemble's "sm" member loss (which uses the recursion for MLPEnergy) equals both."""
    from smlib import _checks
    from smlib.ensemble import _Member, _member_loss
    from smlib.objectives import SM
    from smlib.objectives.derivatives import _diag_jvp

    torch.manual_seed(5)
    members = [randomize(MLPEnergy(d, hidden, "softplus").double(), seed=m) for m in range(3)]
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")

    def new_loss(params, buffers, x, noise, sigma):
        psi = -grad(lambda y: functional_call(base, (params, buffers), (y,)).sum())(x)
        return (0.5 * (psi * psi).sum(-1) + MD.functional_score_divergence(params, x, base.activation)).mean()

    args = (params, buffers, torch.randn(3, 6, d, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64),
            torch.ones(3, dtype=torch.float64))
    def ref_loss(params, buffers, x, noise, sigma):  # ∂ψᵢ/∂xᵢ by one jvp per basis vector: no recursion
        member = _Member(base, params, buffers)
        psi = member.score(x)
        with _checks.disabled():
            div = _diag_jvp(member, x, None).sum(-1)
        return (0.5 * (psi * psi).sum(-1) + div).mean()

    g_ref, l_ref = vmap(grad_and_value(ref_loss))(*args)
    g_new, l_new = vmap(grad_and_value(new_loss))(*args)
    g_ens, l_ens = vmap(grad_and_value(_member_loss(base, SM())), in_dims=(0, 0, 0, 0, None))(*args[:4], None)
    for g, l in ((g_new, l_new), (g_ens, l_ens)):
        torch.testing.assert_close(l, l_ref, **TOL)
        for name in g_ref:
            torch.testing.assert_close(g[name], g_ref[name], **TOL)
