"""Scores and their first derivatives in x: ψ = −∇ₓE, ∂ψᵢ/∂xᵢ and ∇·ψ, without a loop over dimensions.

A model's closed form (``score_divergence`` / ``score_jacobian_diagonal``) is used where it has
one; otherwise a batched double-backward over the identity basis (``method="vjp"``, the default)
or a vmapped forward-over-reverse product (``method="jvp"``). ``"loop"`` (one backward per
dimension) is the reference the tests compare against. A score that does not depend on x (a
linear energy) has a zero Jacobian on every path.
"""
from __future__ import annotations

import torch

from smlib._checks import check_choice, check_data
from smlib.scores import functional_score, has_closed_form_score

__all__ = ["score_of", "hessian_trace", "score_jacobian_diagonal", "METHODS"]

#: ways of computing ∂ψᵢ/∂xᵢ (see `score_jacobian_diagonal`)
METHODS = ("auto", "analytic", "jvp", "vjp", "loop")
GENERIC_DEFAULT = "vjp"
_CHUNK_ELEMENTS = 1 << 21  # basis chunk so that chunk·B·d stays below ~2·10⁶ numbers


def _check(model, x, name="x"):
    """x is a (B, d) floating batch of the model's dimension and of the model's floating dtype."""
    check_data(x, name, getattr(model, "dim", None))
    if isinstance(model, torch.nn.Module):
        dtype = next((t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
        if dtype is not None and dtype != x.dtype:
            raise ValueError(f"{name} has dtype {x.dtype} but {type(model).__name__}'s parameters are {dtype}: convert "
                             f"one of them ({name}.to({dtype}) or model.to({x.dtype}))")
    return x


def score_of(model, x: torch.Tensor) -> torch.Tensor:
    """Model score ψ(x) = ∇ₓ log p(x) = −∇ₓE(x), shape (B, d); works for `ScoreMLP` too.

    The score does not depend on the normalising constant Z, which is what makes score matching
    possible for unnormalised models (Hyvärinen 2005).

    Parameters
    ----------
    model : EnergyModel or ScoreModel
    x : torch.Tensor, shape (B, d)

    Returns
    -------
    torch.Tensor, shape (B, d), differentiable in θ when gradients are enabled.
    """
    _check(model, x)
    return model.score(x)


def _chunk(B, d, chunk_size):
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(1, B * d))
    return int(min(max(1, chunk_size), d))


def _diag_jvp(model, x, chunk_size):
    """∂ψᵢ/∂xᵢ by forward-over-reverse: eᵢᵀ J eᵢ with J eᵢ = jvp(ψ, x, eᵢ), vmapped over i."""
    B, d = x.shape
    score = functional_score(model)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)

    def column(e):  # e: (d,) basis vector, same for the whole batch
        _, Je = torch.func.jvp(score, (x,), (e.expand(B, d),))
        return Je @ e  # (B,)

    diag = torch.func.vmap(column, chunk_size=_chunk(B, d, chunk_size))(eye)  # (d, B)
    return diag.T


def _grad_x(outputs, x_, grad_outputs, create_graph, batched=False, model=None):
    """∂(grad_outputs · outputs)/∂x (one vector-Jacobian product, or a batch of them).

    A score that does not depend on x (a linear energy E = θᵀx, ψ = −θ) has no path to x in the
    graph, or no graph at all when θ is a buffer; its Jacobian is then exactly zero, which is
    returned instead of autograd's "not used in the graph" error (``allow_unused=True``; the
    zeros are built here because ``materialize_grads`` drops the batch dimension of
    ``is_grads_batched``). That is certain only when smlib itself differentiated the energy; a
    model's own ``score`` with no path to x but a path to θ is far more often a score that
    detached its input, so it is an error unless the model sets ``score_depends_on_x = False``.
    """
    g = None
    if outputs.requires_grad:
        (g,) = torch.autograd.grad(
            outputs, x_, grad_outputs, is_grads_batched=batched, retain_graph=True,
            create_graph=create_graph, allow_unused=True,
        )
        if g is None and model is not None and has_closed_form_score(model) and getattr(model, "score_depends_on_x", True):
            raise ValueError(
                f"{type(model).__name__}.score(x) depends on the parameters but has no path to x in autograd's graph, "
                "so its Jacobian would silently be zero. A score that detaches its input (x = x.detach()"
                ".requires_grad_()) does this: compute the score from the x it is given, or set "
                "score_depends_on_x = False on the model if its score truly does not depend on x")
    if g is None:
        shape = (grad_outputs.shape[0], *x_.shape) if batched else x_.shape
        g = torch.zeros(shape, dtype=x_.dtype, device=x_.device)
    return g


def _diag_vjp(model, x, chunk_size, create_graph):
    """∂ψᵢ/∂xᵢ by batched double-backward: rows eᵢᵀJ of the score Jacobian (is_grads_batched)."""
    B, d = x.shape
    x_ = x if x.requires_grad else x.detach().requires_grad_(True)
    psi = model.score(x_)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    step = _chunk(B, d, chunk_size)
    parts = []
    for start in range(0, d, step):  # loop over chunks of the basis, not over dimensions
        basis = eye[start : start + step].unsqueeze(1).expand(-1, B, d)
        rows = _grad_x(psi, x_, basis, create_graph, batched=True, model=model)  # rows[k, b, j] = ∂ψ_{start+k}/∂x_j
        parts.append(rows[:, :, start : start + step].diagonal(dim1=0, dim2=2))  # (B, chunk)
    return torch.cat(parts, dim=-1)


def _diag_loop(model, x, create_graph):
    """Reference: one backward pass per dimension (slow; for tests and benchmarks)."""
    x_ = x if x.requires_grad else x.detach().requires_grad_(True)
    psi = model.score(x_)
    cols = []
    for i in range(x.shape[1]):
        g = _grad_x(psi[:, i], x_, torch.ones_like(psi[:, i]), create_graph, model=model)
        cols.append(g[:, i])
    return torch.stack(cols, dim=-1)


def score_jacobian_diagonal(model, x: torch.Tensor, method: str = "auto", chunk_size: int | None = None):
    r"""Diagonal of the score Jacobian, ∂ψᵢ/∂xᵢ = −∂²E/∂xᵢ², shape (B, d).

    Its sum is the second term of J_SM (Hyvärinen 2005, Thm 1); its squares are the curvature
    penalty of Kingma & LeCun (2010).

    Parameters
    ----------
    model : EnergyModel or ScoreModel
    x : torch.Tensor, shape (B, d)
    method : {"auto", "analytic", "jvp", "vjp", "loop"}
        "auto": the model's closed form (``model.score_jacobian_diagonal``) if it has one, else
        "vjp". "analytic": require the closed form. "jvp": forward-over-reverse, J eᵢ for all
        basis vectors eᵢ at once with ``torch.func.vmap(torch.func.jvp)``. "vjp": rows eᵢᵀJ by one
        batched double-backward (``is_grads_batched=True``). "loop": one backward per dimension
        (reference only).
    chunk_size : int, optional
        Basis vectors per vectorised pass (memory ∝ chunk·B·width); default keeps
        chunk·B·d ≤ 2²¹ (≈ 20 at B = 128, d = 784).

    Returns
    -------
    torch.Tensor, shape (B, d); differentiable in θ when gradients are enabled.
    """
    _check(model, x)
    check_choice("method", method, METHODS)
    return _jacobian_diagonal(model, x, method, chunk_size)


def _jacobian_diagonal(model, x, method, chunk_size=None):
    closed = getattr(model, "score_jacobian_diagonal", None)
    if method in ("auto", "analytic") and closed is not None:
        return closed(x)
    if method == "analytic":
        raise ValueError(f"{type(model).__name__} has no closed-form score_jacobian_diagonal; use method='vjp'")
    if method == "auto":
        method = GENERIC_DEFAULT
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if method == "jvp":
            out = _diag_jvp(model, x, chunk_size)
        elif method == "vjp":
            out = _diag_vjp(model, x, chunk_size, create_graph)
        else:
            out = _diag_loop(model, x, create_graph)
    return out if create_graph else out.detach()


def hessian_trace(model, x: torch.Tensor, method: str = "auto", chunk_size: int | None = None):
    r"""Divergence of the score, ∇·ψ = Σᵢ ∂ψᵢ/∂xᵢ = tr ∇²ₓ log p(x) = −ΔE(x), shape (B,).

    Vectorised (no Python loop over dimensions). With ``method="auto"`` a model's closed form
    ``score_divergence`` is used: Theorem 1 of Swersky et al. (2011) for GRBM/MCRBM/MPoT, the
    DAE Jacobian for `DAEEnergy`, forward Jacobian propagation for `ScoreMLP`, and for
    `MLPEnergy` an exact forward-Laplacian recursion whose cost after the first layer does not
    depend on d (see `smlib.models.MLPEnergy`). Otherwise ``"vjp"``: one batched double-backward
    over the identity basis (``is_grads_batched=True``, chunked); it works with any score
    implementation and avoids the several-second one-off start-up of forward-mode AD
    (``"jvp"``). See `score_jacobian_diagonal` for the options.

    How much faster than a per-dimension autograd loop is measured, not written here: `make bench`
    records it (``results/bench_cpu.json``, rows "exact SM (pre-activation route) vs per-dimension
    loop") and chapter 10 shows it; the MLPEnergy route is tens of times faster at d = 784, a
    ScoreMLP's Jacobian trace a few times. The generic basis methods ("vjp", "jvp") do the same
    O(d) work as the loop and on a CPU run at about its speed (their batching pays off on a GPU).

    Differentiable in θ, so it can sit inside a training loss.

    Parameters
    ----------
    model : EnergyModel or ScoreModel
    x : torch.Tensor, shape (B, d)
    method : {"auto", "analytic", "jvp", "vjp", "loop"}
        See `score_jacobian_diagonal`.
    chunk_size : int, optional
        Basis vectors per vectorised pass of the generic methods.

    Returns
    -------
    torch.Tensor, shape (B,): ∇·ψ per sample (the second term of J_SM, Hyvärinen 2005, Thm 1).
    """
    _check(model, x)
    check_choice("method", method, METHODS)
    closed = getattr(model, "score_divergence", None)
    if method in ("auto", "analytic") and closed is not None:
        return closed(x)
    return _jacobian_diagonal(model, x, method, chunk_size).sum(-1)


