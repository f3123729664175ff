"""PCD and FPCD chains persist across calls: a new data batch never re-seeds them.

A PCD whose chains were re-drawn from the data batch at every call would still lower the
likelihood and pass a test that only asks whether the chains *changed*; it is CD-k in disguise
and changes chapter 1's training result. These tests are deterministic and fail for it.
"""
import pytest
import torch

from smlib import mcmc
from smlib.models import GRBM

SHIFT = 100.0  # a second batch far from the first: a re-seeded chain would sit near it


def _model():
    torch.manual_seed(0)
    return GRBM(3, 4, sigma=0.8).double()


def _batches():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    return x, x + SHIFT


@pytest.mark.parametrize(
    "make",
    [lambda: mcmc.PCD(n_chains=25, k=0, seed=0),
     lambda: mcmc.FPCD(n_chains=25, k=0, fast_lr=0.1, fast_decay=0.9, seed=0)],
    ids=["pcd", "fpcd"],
)
def test_k0_chains_ignore_later_batches(make):
    """With k = 0 the chains never move: every call returns the negatives of the first call."""
    model = _model()
    x, x_far = _batches()
    est = make()
    est(model, x)
    first = est.last_negatives.clone()
    # the first call seeds the chains from rows of the first batch
    assert all(((x - row).abs().sum(1) == 0).any() for row in first)
    for batch in (x_far, 3.0 * x, x_far[:7]):
        est(model, batch)
        assert torch.equal(est.last_negatives, first)
    assert first.abs().max() < SHIFT / 2  # nowhere near the shifted batch


def test_two_calls_of_k1_equal_one_call_of_k2():
    """Two PCD-1 calls (the second on a different batch) continue one chain: = one PCD-2 call."""
    model = _model()
    x, x_far = _batches()
    pcd1 = mcmc.PCD(n_chains=25, k=1, seed=3)
    pcd1(model, x)
    pcd1(model, x_far)
    pcd2 = mcmc.PCD(n_chains=25, k=2, seed=3)
    pcd2(model, x)
    assert torch.equal(pcd1.last_negatives, pcd2.last_negatives)


def test_surrogate_uses_the_persistent_negatives():
    """The returned surrogate is mean F(batch) − mean F(chains), with the chains of the first call."""
    model = _model()
    x, x_far = _batches()
    est = mcmc.PCD(n_chains=25, k=0, seed=0)
    est(model, x)
    chains = est.last_negatives.clone()
    loss = est(model, x_far)
    expected = model.energy(x_far).mean() - model.energy(chains).mean()
    assert torch.allclose(loss, expected, rtol=0, atol=1e-12)
