"""The contracted last step of the forward Laplacian (issue 21, item 2): `mlp_derivatives.WeightedSquares`.

References: the same quantity by plain autograd operations (`plain_weighted`), and the whole
exact-SM loss by the route before this change (`test_fused_laplacian.plain_laplacian`: one block,
no custom backward), in float64 to 1e-10 relative, as the issue asks.
"""
import pytest
import torch
from helpers import randomize
from test_fused_laplacian import inputs, plain_laplacian, plain_step
from torch.autograd import gradcheck, gradgradcheck

from smlib import objectives as O
from smlib.models import MLPEnergy
from smlib.models import mlp_derivatives as MD

TOL = {"rtol": 1e-10, "atol": 1e-10}


def weighted_inputs(shared, seed=0, B=3, n1=5):
    d1, Zdot, W = inputs(shared, B=B, n1=n1, seed=seed)
    c = torch.randn(B, n1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 100))
    return [d1, Zdot, W, c.requires_grad_(True)]


def plain_weighted(d1, Zdot, W, c):
    """t = Σᵢ cᵢ Σₘ (W diag(φ') Ż)²_{i m} by autograd alone."""
    return (c * plain_step(d1, Zdot, W)[1]).sum(-1)


@pytest.mark.parametrize("shared", [True, False])
def test_weighted_squares_matches_autograd_values_and_gradients(shared):
    """t and the gradients of an arbitrary weighting of t (per-sample g_t) in all four inputs."""
    args = weighted_inputs(shared)
    t, Y, s = MD.WeightedSquares.apply(*args)
    ref = plain_weighted(*args)
    torch.testing.assert_close(t, ref, **TOL)
    torch.testing.assert_close(s, plain_step(*args[:3])[1], **TOL)
    assert not Y.requires_grad and not s.requires_grad  # kept for the backward only
    w = torch.randn_like(t)  # a different g_t per sample: the scaling moved off the directions
    for a, b in zip(torch.autograd.grad((w * t).sum(), args), torch.autograd.grad((w * ref).sum(), args)):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("shared", [True, False])
def test_weighted_squares_gradcheck_and_second_derivatives(shared):
    def fn(*a):
        return MD.WeightedSquares.apply(*a)[0]

    assert gradcheck(fn, weighted_inputs(shared, seed=1))
    assert gradgradcheck(fn, weighted_inputs(shared, seed=2))


@pytest.mark.parametrize("d,hidden", [(40, (12, 12, 20)), (30, (8, 8, 8, 16, 16)), (6, (9, 7)), (9, (8,))])
@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_sm_loss_and_theta_gradients_equal_the_plain_route(d, hidden, activation):
    """The exact-SM loss (MNIST- and patch-shaped nets, smaller widths) and its gradient in every
    parameter the score depends on, against the plain one-block route without custom backwards."""
    torch.manual_seed(3)
    model = randomize(MLPEnergy(d, hidden, activation).double(), seed=3)
    x = torch.randn(7, d, dtype=torch.float64)
    fast = O.sm(model, x)
    psi = model.score(x)
    ref = (0.5 * (psi * psi).sum(-1) - plain_laplacian(x, *model._parameters_by_layer(), activation)).mean()
    torch.testing.assert_close(fast, ref, **TOL)
    theta = [p for name, p in model.named_parameters() if name != "out.bias"]  # the score ignores b_out
    for a, b in zip(torch.autograd.grad(fast, theta), torch.autograd.grad(ref, theta)):
        torch.testing.assert_close(a, b, **TOL)


def test_laplacian_second_order_in_x_and_vmap_of_the_functional_form():
    """Double backward through the contracted step (∂²ΔE/∂x∂θ) and the vmapped functional divergence."""
    torch.manual_seed(4)
    model = randomize(MLPEnergy(10, (6, 6, 8), "tanh").double(), seed=4)
    x = torch.randn(5, 10, dtype=torch.float64, requires_grad=True)
    params = model._parameters_by_layer()
    out = MD.forward_laplacian(x, *params, "tanh")
    ref = plain_laplacian(x, *params, "tanh")
    gx = torch.autograd.grad(out.sum(), x, create_graph=True)[0]
    gx_ref = torch.autograd.grad(ref.sum(), x, create_graph=True)[0]
    torch.testing.assert_close(gx, gx_ref, **TOL)
    W = params[0][-1]
    torch.testing.assert_close(torch.autograd.grad((gx ** 2).sum(), W)[0],
                               torch.autograd.grad((gx_ref ** 2).sum(), W)[0], **TOL)
    members = [randomize(MLPEnergy(10, (6, 6, 8), "tanh").double(), seed=s) for s in (5, 6)]
    stacked, _ = torch.func.stack_module_state(members)
    got = torch.func.vmap(lambda p: MD.functional_score_divergence(p, x.detach(), "tanh"))(stacked)
    for i, m in enumerate(members):
        torch.testing.assert_close(got[i], m.score_divergence(x.detach()), **TOL)


# ---------------------------------------------------------------- one-pass (ψ, ∇·ψ) of MLPEnergy (objectives.sm)
@pytest.mark.parametrize("hidden", [(9,), (12, 7), (10, 8, 13)])
def test_gradient_and_laplacian_equal_autograd_and_the_recursion(hidden):
    torch.manual_seed(3)
    net = MLPEnergy(6, hidden=hidden, activation="softplus").double()
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    grad, lap = MD.gradient_and_laplacian(x, *net._parameters_by_layer(), net.activation)
    auto = torch.autograd.grad(net.energy(x).sum(), x)[0]
    assert torch.allclose(grad, auto, rtol=1e-12, atol=1e-12)
    assert torch.allclose(lap, MD.forward_laplacian(x, *net._parameters_by_layer(), net.activation), rtol=1e-12, atol=1e-12)


def test_sm_loss_and_gradients_by_the_one_pass_route_equal_autograds_double_backward():
    torch.manual_seed(4)
    net = MLPEnergy(30, hidden=(16, 12, 20), activation="tanh").double()
    x = torch.randn(8, 30, dtype=torch.float64)
    params = [p for n, p in net.named_parameters() if n != "out.bias"]
    fast, ref = O.sm(net, x), O.sm_generic(net, x, method="vjp")
    g_fast, g_ref = torch.autograd.grad(fast, params), torch.autograd.grad(ref, params)
    assert abs(fast.item() - ref.item()) <= 1e-10 * abs(ref.item())
    for a, b in zip(g_fast, g_ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_a_subclass_that_changes_the_energy_is_not_given_the_mlp_route():
    class Shifted(MLPEnergy):  # E + ¼‖x‖²: ψ and ∇·ψ differ from the MLP's own (Δ¼‖x‖² = d/2)
        def energy(self, x):
            return super().energy(x) + 0.25 * (x * x).sum(-1)

        def score_divergence(self, x):
            return super().score_divergence(x) - 0.5 * x.shape[-1]

    torch.manual_seed(5)
    net = Shifted(4, hidden=(7, 5)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    assert torch.allclose(O.sm(net, x), O.sm_generic(net, x, method="vjp"), rtol=1e-10)


@pytest.mark.parametrize("d,hidden", [(2, (8, 6, 5)), (40, (20, 12, 16))])
def test_the_contracted_and_the_plain_last_step_agree(d, hidden):
    """The route contracts the last step only for r ≥ 16 directions (speed); both forms give the same ΔE and θ-gradient."""
    torch.manual_seed(6)
    net = MLPEnergy(d, hidden=hidden, activation="tanh").double()
    x = torch.randn(7, d, dtype=torch.float64)
    params = [p for n, p in net.named_parameters() if n != "out.bias"]
    outs = []
    for contract in (True, False):
        lap = MD._forward_laplacian(x, *net._parameters_by_layer(), net.activation, 4, contract_last=contract)
        outs.append((lap, torch.autograd.grad(lap.sum(), params)))
    assert torch.allclose(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(outs[0][1], outs[1][1]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
