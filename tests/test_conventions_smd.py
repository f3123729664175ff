"""Pins the scaling of Swersky et al. (2011) against the book's convention (book/conventions.md).

Their eq. 4 (implicit SM) has the ½ and equals J_SM; their eq. 3 (explicit SM) and eq. 5 (SMD,
"denoising score matching") are printed without it, so eq. 3 = 2·J_ESM and, with the Gaussian
kernel q_β(v|v') = N(v; v', β²I), SMD = 2·J_DSM at σ = β. Each objective is written out here
literally, from its printed form, and compared with smlib's on identical inputs.
"""
import pytest
import torch

from smlib import objectives
from smlib.book.helpers import FreeEnergyOnly, randomise
from smlib.models import GRBM, MPoT, MLPEnergy

DTYPE = torch.float64
BETA = 0.3  # kernel width β of eq. 5 (our σ)


def _models():
    g = torch.Generator().manual_seed(0)
    made = {
        "grbm": GRBM(4, 3, sigma=0.9),
        "mpot": MPoT(4, 3, 2, gamma=1.5),
        "mlp": MLPEnergy(4, hidden=(8, 8)),
    }
    return {k: randomise(m.to(DTYPE), 0.5, generator=g) for k, m in made.items()}


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 4, generator=g, dtype=DTYPE), torch.randn(64, 4, generator=g, dtype=DTYPE)


def smd_eq5(model, v_clean, beta, eps):
    """Eq. 5 as printed: mean over (v, v') of Σᵢ (ψᵢ(q_β(v|v')) − ψᵢ(p_θ(v)))², no ½."""
    v_noisy = v_clean + beta * eps                      # v ~ q_β(v | v') = N(v', β² I)
    kernel_score = (v_clean - v_noisy) / beta**2        # ∂/∂v log q_β(v | v')
    psi = -torch.autograd.grad(model.energy(v_noisy.requires_grad_(True)).sum(), v_noisy)[0]
    return ((kernel_score - psi) ** 2).sum(-1).mean()


@pytest.mark.parametrize("name", ["grbm", "mpot", "mlp"])
def test_smd_as_printed_is_twice_our_dsm(name):
    model = _models()[name]
    x, eps = _data()
    ratio = smd_eq5(model, x, BETA, eps) / objectives.dsm(model, x, BETA, noise=eps)
    assert abs(ratio.item() - 2.0) < 1e-12, ratio.item()


@pytest.mark.parametrize("name", ["grbm", "mpot", "mlp"])
def test_eq3_as_printed_is_twice_esm_and_eq4_is_our_sm(name):
    model = _models()[name]
    x, target = _data()                                 # any vector field stands in for the data score
    xg = x.clone().requires_grad_(True)
    psi = -torch.autograd.grad(model.energy(xg).sum(), xg, create_graph=True)[0]
    eq3 = ((target - psi) ** 2).sum(-1).mean()          # Σᵢ (ψᵢ(p) − ψᵢ(p_θ))², no ½
    assert abs((eq3 / objectives.esm(model, x, target)).item() - 2.0) < 1e-12
    div = sum(torch.autograd.grad(psi[:, i].sum(), xg, retain_graph=True)[0][:, i] for i in range(x.shape[1]))
    eq4 = (0.5 * (psi**2).sum(-1) + div).mean()         # Σᵢ [½ψᵢ² + ∂ψᵢ/∂vᵢ]
    assert abs((eq4 - objectives.sm(model, x)).item()) < 1e-10 * max(1.0, abs(eq4.item()))
    assert abs((eq4 - objectives.sm_generic(FreeEnergyOnly(model), x)).item()) < 1e-10 * max(1.0, abs(eq4.item()))
