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


def graphed(fn, warmup: int = 2):
    """``fn()`` captured in a CUDA graph; returns ``replay()`` (CUDA only).

    The usual recipe: ``warmup`` eager calls on a side stream (they create the library handles and
    workspaces), then one capture. ``fn`` must read its inputs from tensors it closes over, which
    the caller overwrites in place between replays; ``replay()`` returns what the capture returned.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay():
        graph.replay()
        return out

    replay.graph = graph
    return replay


def cholesky_factor(weight: torch.Tensor) -> torch.Tensor:
    r"""A factor V (k × k) with VᵀV = W₁W₁ᵀ by a float64 Cholesky of the Gram matrix: V = Lᵀ, G = LLᵀ.

    The candidate replacement for the QR of W₁ᵀ (d > k) in `smlib.models.first_layer.first_layer_factor`:
    one k × k factorisation instead of a d × k one, in float64 so that squaring W₁ (cond G = cond(W₁)²)
    loses nothing that float32 would keep. ``cholesky_ex`` does not check the result on the host (no
    synchronisation), so it can be captured in a CUDA graph; G is positive definite when W₁ has full
    rank k.
    """
    w = weight.double()
    L = torch.linalg.cholesky_ex(w @ w.T).L
    return L.T.to(weight.dtype)


def gram_laplacian(model, x: torch.Tensor) -> torch.Tensor:
    """ΔE of an `MLPEnergy` by the Gram-factor closed form that `MLPEnergy` used before issue 11.

    Kept verbatim as the "before" of the benchmark: J̃₁ = Rᵀ (W₁ᵀ = QR) when d > n₁, else W₁,
    propagated as J̃_{l+1} = W_{l+1} diag(φ'_l) J̃_l with row norms from ``vector_norm``.
    """
    from smlib.models.activations import ACTIVATIONS

    act = ACTIVATIONS[model.activation]
    B, d = x.shape
    W1 = model.layers[0].weight
    n1 = W1.shape[0]
    J = torch.linalg.qr(W1.T, mode="reduced").R.T if d > n1 else W1
    r = J.shape[-1]
    norms = (W1 * W1).sum(-1)
    h = model.layers[0](x)
    lap_h = None
    n = len(model.layers)
    for l in range(n):
        a, d1, d2 = act(h)
        lap_a = d2 * norms if lap_h is None else d2 * norms + d1 * lap_h
        if l == n - 1:
            break
        nxt = model.layers[l + 1]
        h = nxt(a)
        lap_h = lap_a @ nxt.weight.T
        scale = d1.T.contiguous().unsqueeze(-1)
        X = scale * (J.unsqueeze(1) if J.ndim == 2 else J)
        J = (nxt.weight @ X.view(X.shape[0], B * r)).view(-1, B, r)
        norms = torch.linalg.vector_norm(J, dim=-1).square().T
    return lap_a @ model.out.weight.squeeze(0)


def sm_gram(model, x: torch.Tensor) -> torch.Tensor:
    """J_SM = mean[½‖ψ‖² − ΔE] with ΔE from :func:`gram_laplacian` (the closed form before issue 11)."""
    psi = model.score(x)
    return (0.5 * (psi * psi).sum(-1) - gram_laplacian(model, x)).mean()


def ensemble_score(base, params, buffers):
    """x ↦ ψ(x) = −∇ₓE(x) of one member given as parameters, by ``torch.func.grad`` (transformable)."""
    from torch.func import functional_call, grad

    return lambda z: -grad(lambda y: functional_call(base, (params, buffers), (y,)).sum())(z)


def ensemble_sm_member_loss(base):
    """loss(params, buffers, x) of one member, J_SM with the trace by jvp over the d basis vectors.

    The plain torch.func formulation (as `fit_ensemble`'s "sm" objective writes it): ψ = −∇ₓE by
    ``torch.func.grad``, ∂ψᵢ/∂xᵢ = eᵢᵀ jvp(ψ, x, eᵢ), vmapped over i.
    """
    from torch.func import jvp, vmap

    def loss(params, buffers, x):
        score = ensemble_score(base, params, buffers)
        psi = score(x)
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        div = vmap(lambda e: (jvp(score, (x,), (e.expand_as(x),))[1] * e).sum(-1))(eye).sum(0)
        return (0.5 * (psi * psi).sum(-1) + div).mean()

    return loss
