"""Straightforward reference implementations that the benchmarks compare smlib against.

They are deliberately plain — what a reader would write first — and live here, not in smlib:
the per-dimension autograd loop for the Hessian trace, DSM written out by hand, the plain eager
training loop, members trained one after the other, and the CUDA-graph floor.
"""
from __future__ import annotations

import torch


def sm_loop(model, x: torch.Tensor) -> torch.Tensor:
    """Exact SM with one backward pass per dimension for the Hessian diagonal (d backward passes)."""
    x = x.detach().requires_grad_(True)
    energy = model.energy(x).sum()
    grad = torch.autograd.grad(energy, x, create_graph=True)[0]          # ∇E, (B, d)
    laplacian = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(x.shape[1]):
        laplacian = laplacian + torch.autograd.grad(grad[:, i].sum(), x, create_graph=True)[0][:, i]
    return (0.5 * (grad * grad).sum(-1) - laplacian).mean()


def eager_step(model, optimizer, loss_fn, x):
    """One plain eager training step: zero the gradients, loss, backward, update."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x)
    loss.backward()
    optimizer.step()
    return loss


def eager_loop(model, data, loss_fn, n_steps, batch_size, lr=1e-3):
    """The plain eager training loop: Adam, reshuffled minibatches, no guards, no logging."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = data.shape[0]
    step = 0
    while step < n_steps:
        perm = torch.randperm(n, device=data.device)
        for b in range(n // batch_size):
            eager_step(model, opt, loss_fn, data[perm[b * batch_size:(b + 1) * batch_size]])
            step += 1
            if step == n_steps:
                break
    return model


def sequential_members(make_model, seeds, data, loss_fn, n_steps, batch_size, lr=1e-3):
    """Train one model per seed, one after the other, with :func:`eager_loop`."""
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(eager_loop(make_model().to(data.device), data, loss_fn, n_steps, batch_size, lr))
    return out


class GraphedStep:
    """The CUDA-graph floor: one whole training step (loss, backward, Adam) captured once and replayed.

    Static input buffer ``self.x``; the noise is drawn inside the graph (CUDA graphs replay the RNG
    with fresh offsets). No guard, no logging: the least a step can cost. CUDA only.
    """

    def __init__(self, model, optimizer, loss_fn, x_example, warmup: int = 3):
        self.x = x_example.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # allocate optimizer state and autograd buffers outside the graph
                eager_step(model, optimizer, loss_fn, self.x)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.loss = loss_fn(model, self.x)
            self.loss.backward()
            optimizer.step()

    def __call__(self, x):
        self.x.copy_(x)
        self.graph.replay()
        return self.loss
