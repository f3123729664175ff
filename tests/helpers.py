"""Small helpers shared by the unit tests (importable because pyproject puts tests/ on the path)."""
import torch


def randomize(model, scale=0.5, seed=0):
    """Move every parameter away from its (often symmetric / zero) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model
