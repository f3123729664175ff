"""smlib.models._gemm: the oneDNN product of the exact-SM recursion equals `@`, and is used where it may be."""
import pytest
import torch

from smlib import models, objectives
from smlib.models import _gemm

pytestmark = pytest.mark.skipif(not _gemm.onednn_available(), reason="oneDNN's linear is not available here")


@pytest.mark.parametrize("shape", [((256, 128), (128, 4096)), ((128, 4096), (4096, 96)), ((7, 5), (5, 3))])
def test_product_equals_matmul_with_strided_operands(shape):
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(*shape[0], generator=g), torch.randn(*shape[1], generator=g)
    for a, b in ((A, B), (A.T.contiguous().T, B), (A, B.T.contiguous().T)):
        with torch.no_grad():  # as in the recursion's forward and backward
            got, ref = _gemm.mm(a, b), a @ b
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def _sm_grads(monkeypatch, use_onednn):
    calls = []
    op = _gemm._STATE["op"]
    monkeypatch.setitem(_gemm._STATE, "ok", use_onednn)
    monkeypatch.setitem(_gemm._STATE, "op", lambda *a: calls.append(1) or op(*a))
    torch.manual_seed(0)
    m = models.MLPEnergy(100, (64, 48, 80), activation="tanh")
    x = torch.randn(32, 100)
    loss = objectives.sm(m, x)
    params = [p for n, p in m.named_parameters() if n != "out.bias"]  # the constant does not enter SM
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), grads, len(calls)


def test_exact_sm_float32_gradients_equal_with_and_without_onednn(monkeypatch):
    loss1, g1, n1 = _sm_grads(monkeypatch, True)
    loss0, g0, n0 = _sm_grads(monkeypatch, False)
    assert n1 > 0 and n0 == 0  # the oneDNN route really ran, and the fallback really did not
    assert torch.allclose(loss1, loss0, rtol=1e-5)
    for a, b in zip(g1, g0):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def test_not_used_for_float64_autograd_or_vmap(monkeypatch):
    calls = []
    monkeypatch.setitem(_gemm._STATE, "op", lambda *a: calls.append(1))
    a64 = torch.randn(4, 3, dtype=torch.float64)
    _gemm.mm(a64, a64.T)
    w = torch.randn(4, 3, requires_grad=True)
    with torch.enable_grad():
        _gemm.mm(w, w.T)
    b = torch.randn(3, 2)
    torch.func.vmap(lambda r: _gemm.mm(r, b))(torch.randn(5, 4, 3))
    assert calls == []


def test_environment_variable_turns_it_off(monkeypatch):
    monkeypatch.setenv(_gemm.ENV_VAR, "default")
    monkeypatch.setattr(_gemm, "_STATE", {})
    assert _gemm.onednn_available() is False
