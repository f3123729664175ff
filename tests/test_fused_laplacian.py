"""The fused step of the forward Laplacian (issue 21): `mlp_derivatives.DirectionProduct`, the
triangular blocks of the first factor, and the opt-in allocator settings (`smlib._alloc`).

Reference: the same recursion written with plain autograd operations (the route before the fused
backward), in float64; tolerance 1e-10 as in `test_laplacian.py`.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize
from torch.autograd import gradcheck, gradgradcheck

from smlib import _alloc
from smlib import objectives as O
from smlib.models import MLPEnergy
from smlib.models import mlp_derivatives as MD
from smlib.models.activations import ACTIVATIONS
from smlib.models.first_layer import first_layer_factor

TOL = {"rtol": 1e-10, "atol": 1e-10}


def plain_step(d1, Zdot, W):
    """Ż_{l+1} = W diag(φ') Ż_l and its row sums of squares, differentiated by autograd alone."""
    X = d1.T.unsqueeze(-1) * (Zdot.unsqueeze(1) if Zdot.ndim == 2 else Zdot)
    Z = torch.einsum("ji,ibm->jbm", W, X)
    return Z, torch.linalg.vecdot(Z, Z).T


def plain_laplacian(x, weights, biases, w_out, activation):
    """Recursion (F) of `mlp_derivatives` with :func:`plain_step`: one block, no custom backward."""
    act = ACTIVATIONS[activation]
    Zdot, s = first_layer_factor(weights[0]).T, (weights[0] ** 2).sum(-1)
    z, lap_z = F.linear(x, weights[0], biases[0]), None
    for l in range(len(weights)):
        a, d1, d2 = act(z)
        lap_a = d2 * s if lap_z is None else d2 * s + d1 * lap_z
        if l == len(weights) - 1:
            return lap_a @ w_out
        z = F.linear(a, weights[l + 1], biases[l + 1])
        lap_z = lap_a @ weights[l + 1].T
        Zdot, s = plain_step(d1, Zdot, weights[l + 1])


def inputs(shared, B=3, n0=4, n1=5, r=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    d1 = torch.randn(B, n0, dtype=torch.float64, generator=g)
    Zdot = torch.randn(*((n0, r) if shared else (n0, B, r)), dtype=torch.float64, generator=g)
    W = torch.randn(n1, n0, dtype=torch.float64, generator=g)
    return [t.requires_grad_(True) for t in (d1, Zdot, W)]


@pytest.mark.parametrize("shared", [True, False])
def test_direction_product_matches_autograd_values_and_gradients(shared):
    """Both outputs and the gradients of an arbitrary functional of (Ż, s) equal plain autograd's."""
    args = inputs(shared)
    Z, s, _ = MD.DirectionProduct.apply(*args)
    Zr, sr = plain_step(*args)
    torch.testing.assert_close(Z, Zr, **TOL)
    torch.testing.assert_close(s, sr, **TOL)
    cz, cs = torch.randn_like(Z), torch.randn_like(s)
    for only_s in (False, True):  # the last layer: only s is used, the Ż gradient arrives as None
        loss = (cs * s).sum() + (0 if only_s else (cz * Z.sin()).sum())
        ref = (cs * sr).sum() + (0 if only_s else (cz * Zr.sin()).sum())
        for g, r in zip(torch.autograd.grad(loss, args, retain_graph=True), torch.autograd.grad(ref, args, retain_graph=True)):
            torch.testing.assert_close(g, r, **TOL)


@pytest.mark.parametrize("shared", [True, False])
def test_direction_product_gradcheck_and_second_derivatives(shared):
    """Finite differences agree with the fused backward, and with its own derivative (higher order)."""
    def fn(*a):
        return MD.DirectionProduct.apply(*a)[:2]

    assert gradcheck(fn, inputs(shared, seed=1))
    assert gradgradcheck(fn, inputs(shared, seed=2))


@pytest.mark.parametrize("d,hidden", [(7, (5, 6, 4)), (12, (4, 6, 3, 5)), (3, (5, 6)), (9, (8,))])
@pytest.mark.parametrize("n_blocks", [1, 2, 3, 4, 8])
def test_forward_laplacian_equals_the_plain_route_with_theta_gradients(d, hidden, n_blocks):
    """Any number of triangular blocks (d > k), and the dense factor (d ≤ k): values and θ-gradients."""
    torch.manual_seed(0)
    model = randomize(MLPEnergy(d, hidden, "tanh").double(), seed=1)
    x = torch.randn(4, d, dtype=torch.float64)
    params = model._parameters_by_layer()
    out = MD._forward_laplacian(x, *params, "tanh", n_blocks)
    ref = plain_laplacian(x, *params, "tanh")
    torch.testing.assert_close(out, ref, **TOL)
    c = torch.randn(4, dtype=torch.float64)
    theta = list(model.parameters())
    g = torch.autograd.grad((c * out).sum(), theta, allow_unused=True)
    g_ref = torch.autograd.grad((c * ref).sum(), theta, allow_unused=True)
    for a, b in zip(g, g_ref):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            torch.testing.assert_close(a, b, **TOL)


def test_triangular_blocks_skip_only_zero_rows():
    """The blocks of Ż₁ = Rᵀ cover every nonzero entry of Rᵀ once, and drop only zeros."""
    W1 = torch.randn(6, 11, dtype=torch.float64)
    dense = first_layer_factor(W1).T
    for n_blocks in (1, 2, 4, 6):
        blocks = MD._direction_blocks(W1, n_blocks)
        rebuilt = torch.zeros_like(dense)
        col = 0
        for i0, Zb in blocks:
            rebuilt[i0:, col:col + Zb.shape[1]] = Zb
            col += Zb.shape[1]
        assert col == dense.shape[1]
        torch.testing.assert_close(rebuilt, dense, rtol=0, atol=0)
    assert len(MD._direction_blocks(torch.randn(6, 4), 4)) == 1  # d ≤ k: V = W₁ᵀ is dense, one block


def test_sm_training_gradient_equals_the_plain_route():
    """The whole exact-SM loss of the MNIST-shaped energy (smaller widths), θ-gradient vs the plain route."""
    torch.manual_seed(2)
    model = randomize(MLPEnergy(40, (12, 12, 20), "tanh").double(), seed=2)
    x = torch.randn(6, 40, dtype=torch.float64)
    fast = O.sm(model, x)
    psi = model.score(x)
    ref = (0.5 * (psi * psi).sum(-1) - plain_laplacian(x, *model._parameters_by_layer(), "tanh")).mean()
    torch.testing.assert_close(fast, ref, **TOL)
    theta = [p for name, p in model.named_parameters() if name != "out.bias"]  # the score ignores b_out
    for a, b in zip(torch.autograd.grad(fast, theta), torch.autograd.grad(ref, theta)):
        torch.testing.assert_close(a, b, **TOL)


def test_laplacian_macs_count_the_triangular_blocks():
    lap = MD.laplacian_macs(784, (128, 128, 256))
    edges = [0, 32, 64, 96, 128]
    first = sum((128 - a) * (b - a) * 128 for a, b in itertools.pairwise(edges))
    assert lap["preactivation_triangular"] == first + 128 * 128 * 256 + 128 * 784
    assert MD.laplacian_macs(16, (32, 32))["preactivation_triangular"] == MD.laplacian_macs(16, (32, 32))["preactivation"]


# ----------------------------------------------------------------------------- allocator opt-in
def test_allocator_opt_in_validates_and_is_not_applied_on_import(monkeypatch):
    with pytest.raises(ValueError, match="trim_threshold"):
        _alloc.keep_large_blocks(-1)
    with pytest.raises(ValueError, match="trim_threshold"):
        _alloc.keep_large_blocks(2**31)
    monkeypatch.setenv(_alloc.ENV_VAR, "yes")
    with pytest.raises(ValueError, match=_alloc.ENV_VAR):
        _alloc.from_environment()
    calls = []
    monkeypatch.setattr(_alloc, "keep_large_blocks", lambda: calls.append(1) or True)
    monkeypatch.setenv(_alloc.ENV_VAR, "0")
    assert _alloc.from_environment() is False and not calls
    monkeypatch.setenv(_alloc.ENV_VAR, "1")
    assert _alloc.from_environment() is True and calls == [1]
