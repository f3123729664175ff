"""Shared pytest fixtures (kept small on purpose)."""
import pytest
import torch


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.fixture
def gen():
    """A seeded CPU torch.Generator."""
    return torch.Generator().manual_seed(0)
