"""smlib.scores: the one score function, its detached form and the functional score."""
import pytest
import torch
from torch.func import vmap

from helpers import randomize
from smlib import scores
from smlib.models import GRBM, MCRBM, MLPEnergy, MPoT, ScoreMLP

MODELS = {
    "mpot": lambda: MPoT(5, n_cov=7, n_mean=3, gamma=1.3),
    "mcrbm": lambda: MCRBM(5, n_factors=6, n_cov=4, n_mean=3),
    "grbm": lambda: GRBM(5, 4),
    "mlp": lambda: MLPEnergy(5, hidden=(6, 6)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_closed_form_and_autograd_agree(name):
    torch.manual_seed(0)
    model = randomize(MODELS[name]().double(), 0.5)
    x = torch.randn(9, 5, dtype=torch.float64)
    e_ref = model.energy(x)
    xr = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(model.energy(xr).sum(), xr)
    e, g = scores.energy_and_grad(model, x)
    assert not e.requires_grad and not g.requires_grad
    assert torch.allclose(e, e_ref.detach(), rtol=0, atol=1e-12) and torch.allclose(g, g_ref, rtol=0, atol=1e-12)
    psi = scores.score(model, x, detach=True)
    assert torch.allclose(psi, -g_ref, rtol=0, atol=1e-12) and not psi.requires_grad
    live = scores.score(model, x)  # differentiable in θ
    assert live.requires_grad and torch.allclose(live, -g_ref, rtol=0, atol=1e-12)
    f = scores.functional_score(model)
    assert torch.allclose(vmap(lambda z: f(z[None])[0])(x), -g_ref, rtol=0, atol=1e-12)


def test_has_closed_form_score():
    assert scores.has_closed_form_score(MPoT(3, n_cov=2)) and scores.has_closed_form_score(ScoreMLP(3))
    assert not scores.has_closed_form_score(MLPEnergy(3))


def test_plain_callables():
    x = torch.randn(4, 3, dtype=torch.float64)
    e, g = scores.energy_and_grad(lambda z: 0.5 * (z * z).sum(1), x)  # an energy function
    assert torch.equal(g, x) and torch.allclose(e, 0.5 * (x * x).sum(1))
    assert torch.equal(scores.score(lambda z: -z, x, detach=True), -x)  # a score function
    with pytest.raises(TypeError, match="energy"):
        scores.energy_fn(3)
