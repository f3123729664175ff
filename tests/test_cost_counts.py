"""Operation counts (issue 19 item 6, issue 21): `smlib.book.timing.FlopCounter` is PyTorch's
FlopCounterMode and reproduces the hand counts of `mlp_derivatives.laplacian_macs`."""
import itertools

import pytest
import torch

from smlib import models, objectives
from smlib.book.timing import FlopCounter, count_flops
from smlib.models import mlp_derivatives as MD


def test_counter_survives_the_gradient_of_a_leaf_input():
    """FlopCounterMode's module tracker fails on autograd.grad w.r.t. a leaf (pytorch#131753); ours counts."""
    net = models.MLPEnergy(5, (4, 3))
    x = torch.randn(2, 5)
    with FlopCounter() as c:
        objectives.dsm(net, x, 0.1).backward()
    assert c.get_total_flops() > 0
    assert count_flops(lambda: torch.ones(3, 4) @ torch.ones(4, 5)) == 2 * 3 * 4 * 5


@pytest.mark.parametrize("d,hidden,n_blocks", [(784, (128, 128, 256), 4), (40, (12, 10, 6), 3), (10, (16, 8), 4)])
def test_laplacian_products_equal_the_hand_count(d, hidden, n_blocks):
    """Forward Laplacian (no gradient): 2·B·(x W₁ᵀ, the direction products, z and Δz through each later layer)."""
    torch.manual_seed(0)
    net = models.MLPEnergy(d, hidden)
    B = 3
    x = torch.randn(B, d)
    with torch.no_grad():
        flops = count_flops(lambda: MD._forward_laplacian(x, *net._parameters_by_layer(), "tanh", n_blocks))
    pairs = sum(a * b for a, b in itertools.pairwise(hidden))
    hand = MD.laplacian_macs(d, hidden, n_blocks)["preactivation_triangular"] + 2 * pairs
    assert flops == 2 * B * hand
