r"""Score-matching objectives in one canonical scaling: sum over dimensions, mean over the batch.

With ψ(x) = −∇ₓE(x) (the model score) and a batch x of shape (B, d):

=================  ============================================================================
`sm`               J_SM  = mean[ ½‖ψ‖² + ∇·ψ ]                              (Hyvärinen 2005)
`dsm`              J_DSM = mean[ ½‖ψ(x̃) − (x − x̃)/σ²‖² ],  x̃ = x + σε       (Vincent 2011)
`ssm`              J_SSM = mean[ ½(vᵀψ)² + vᵀ(∇ψ)v ],  E[vvᵀ] = I            (Song et al. 2019)
`kingma_lecun`     J_SM + λ mean[ Σᵢ (∂²E/∂xᵢ²)² ]                          (Kingma & LeCun 2010)
`ae`               mean[ ½‖x^r(x) − x‖² ]                                   (Swersky et al. 2011)
`esm`              mean[ ½‖ψ − ψ_true‖² ]                                   (explicit SM)
=================  ============================================================================

Other papers' scalings: DEEN's loss (Saremi et al. 2018, eq. 19) is 2σ⁴·J_DSM; DEEN's eq. 8/9
SM loss is 2·J_SM; pylearn2-style losses divide by d; SSM with unit-norm projections
(``kind="sphere"``) estimates J_SM/d.

Every objective returns a scalar whose θ-gradient is the estimator's update; all accept
externally supplied noise / projections so that two implementations can be compared on identical
inputs. Second derivatives in x are computed without a Python loop over dimensions: a model's
closed form where it has one (`score_divergence` / `score_jacobian_diagonal`: GRBM, MCRBM,
MPoT, DAEEnergy, GaussianEnergy, MLPEnergy, ScoreMLP), else a batched double-backward over the
identity basis (``method="vjp"``, the default) or a vmapped forward-over-reverse product
(``method="jvp"``). A score that does not depend on x (a linear energy) has a zero Jacobian on
every path.
"""
from __future__ import annotations

import torch

from smlib._checks import check_choice, check_data, check_int, check_nonnegative, check_positive
from smlib.models.base import EnergyModel

__all__ = [
    "score_of",
    "hessian_trace",
    "score_jacobian_diagonal",
    "sm",
    "sm_generic",
    "dsm",
    "ssm",
    "kingma_lecun",
    "ae",
    "esm",
    "sample_projections",
    "METHODS",
    "PROJECTIONS",
]

#: ways of computing ∂ψᵢ/∂xᵢ (see `score_jacobian_diagonal`)
METHODS = ("auto", "analytic", "jvp", "vjp", "loop")
#: projection distributions for `ssm`
PROJECTIONS = ("gaussian", "rademacher", "sphere")
_GENERIC_DEFAULT = "vjp"
_CHUNK_ELEMENTS = 1 << 21  # basis chunk so that chunk·B·d stays below ~2·10⁶ numbers


def _check(model, x, name="x"):
    dim = getattr(model, "dim", None)
    return check_data(x, name, dim)


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


# --------------------------------------------------------------------------- derivatives
def _functional_score(model):
    """A score function usable inside torch.func transforms (no torch.autograd.grad inside)."""
    if getattr(model, "has_energy", False) and type(model).score is EnergyModel.score:
        def score(y):
            return -torch.func.grad(lambda z: model.energy(z).sum())(y)

        return score
    return model.score


def _chunk(B, d, chunk_size):
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(1, B * d))
    return int(min(max(1, chunk_size), d))


def _diag_jvp(model, x, chunk_size):
    """∂ψᵢ/∂xᵢ by forward-over-reverse: eᵢᵀ J eᵢ with J eᵢ = jvp(ψ, x, eᵢ), vmapped over i."""
    B, d = x.shape
    score = _functional_score(model)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)

    def column(e):  # e: (d,) basis vector, same for the whole batch
        _, Je = torch.func.jvp(score, (x,), (e.expand(B, d),))
        return Je @ e  # (B,)

    diag = torch.func.vmap(column, chunk_size=_chunk(B, d, chunk_size))(eye)  # (d, B)
    return diag.T


def _grad_x(outputs, x_, grad_outputs, create_graph, batched=False):
    """∂(grad_outputs · outputs)/∂x (one vector-Jacobian product, or a batch of them).

    A score that does not depend on x (a linear energy E = θᵀx, ψ = −θ) has no path to x in the
    graph, or no graph at all when θ is a buffer; its Jacobian is then exactly zero, which is
    returned instead of autograd's "not used in the graph" error (``allow_unused=True``; the
    zeros are built here because ``materialize_grads`` drops the batch dimension of
    ``is_grads_batched``).
    """
    g = None
    if outputs.requires_grad:
        (g,) = torch.autograd.grad(
            outputs, x_, grad_outputs, is_grads_batched=batched, retain_graph=True,
            create_graph=create_graph, allow_unused=True,
        )
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
        rows = _grad_x(psi, x_, basis, create_graph, batched=True)  # rows[k, b, j] = ∂ψ_{start+k}/∂x_j
        parts.append(rows[:, :, start : start + step].diagonal(dim1=0, dim2=2))  # (B, chunk)
    return torch.cat(parts, dim=-1)


def _diag_loop(model, x, create_graph):
    """Reference: one backward pass per dimension (slow; for tests and benchmarks)."""
    x_ = x if x.requires_grad else x.detach().requires_grad_(True)
    psi = model.score(x_)
    cols = []
    for i in range(x.shape[1]):
        g = _grad_x(psi[:, i], x_, torch.ones_like(psi[:, i]), create_graph)
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
        method = _GENERIC_DEFAULT
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

    Measured on one CPU core, float32, d = 784, batch 128 (evaluation / evaluation + θ-backward),
    against a per-dimension autograd loop: MLPEnergy(32, 32, 32) closed form 6 ms / 14 ms,
    ≈200× faster; MLPEnergy(128, 128, 256) 65 ms / 210 ms, ≈35× / ≈23×; ScoreMLP(128, 128)
    ≈9× / ≈3×. The generic basis methods ("vjp", "jvp") do the same O(d) work as the loop and
    on a CPU run at about its speed (their batching pays off on a GPU).

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


# --------------------------------------------------------------------------- objectives
def sm(model, x: torch.Tensor) -> torch.Tensor:
    r"""Exact (implicit) score matching, J_SM = mean_B Σᵢ [½ψᵢ² + ∂ψᵢ/∂xᵢ] (Hyvärinen 2005, Thm 1).

    Uses the model's closed form ``model.sm_terms(x)["total"]`` when it has one (GRBM, MCRBM,
    MPoT: Swersky et al. 2011, eqs. 8, 12), else `sm_generic` with ``method="auto"``.

    Parameters
    ----------
    model : EnergyModel or ScoreModel
    x : torch.Tensor, shape (B, d)

    Returns
    -------
    0-d tensor, differentiable in θ. For E = ½‖x‖² it is ½ mean‖x‖² − d (→ −d/2 on N(0, I)).
    """
    _check(model, x)
    if hasattr(model, "sm_terms"):
        return model.sm_terms(x)["total"]
    return sm_generic(model, x, method="auto")


def sm_generic(model, x: torch.Tensor, method: str = _GENERIC_DEFAULT, chunk_size: int | None = None):
    r"""J_SM = mean_B[½‖ψ‖² + ∇·ψ] through the Hessian-trace path (no closed-form ``sm_terms``).

    The default ``method="vjp"`` uses automatic differentiation only (batched double-backward),
    so it is an independent check of every closed form; pass ``method="auto"`` to use a model's
    closed-form divergence (what `sm` does for models without ``sm_terms``). Hyvärinen (2005), Thm 1.

    Parameters
    ----------
    model : EnergyModel or ScoreModel
    x : torch.Tensor, shape (B, d)
    method : {"auto", "analytic", "jvp", "vjp", "loop"}
        How to compute ∇·ψ, see `score_jacobian_diagonal`.
    chunk_size : int, optional
        Basis vectors per vectorised pass.

    Returns
    -------
    0-d tensor, differentiable in θ.
    """
    _check(model, x)
    check_choice("method", method, METHODS)
    psi = model.score(x)
    return (0.5 * (psi * psi).sum(-1) + hessian_trace(model, x, method, chunk_size)).mean()


def dsm(model, x: torch.Tensor, sigma, noise: torch.Tensor | None = None, generator=None):
    r"""Denoising score matching (Vincent 2011): J_DSM = mean_B ½‖ψ(x̃) − (x − x̃)/σ²‖².

    x̃ = x + σε with ε ~ N(0, I) (or ``noise`` if given), so the target is −ε/σ and the loss is
    mean ½‖ψ(x̃) + ε/σ‖². DEEN (Saremi et al. 2018, eq. 19) minimises 2σ⁴·J_DSM.

    Parameters
    ----------
    model : EnergyModel or ScoreModel
    x : torch.Tensor, shape (B, d)
    sigma : float
        Noise standard deviation σ > 0.
    noise : torch.Tensor, optional
        Standard-normal ε of shape (B, d) (not multiplied by σ).
    generator : torch.Generator, optional
        Used to draw ε when ``noise`` is None.

    Returns
    -------
    0-d tensor, differentiable in θ; its θ-minimiser is the score of the noisy density
    p_σ = p ∗ N(0, σ²I), not of p (Vincent 2011).
    """
    _check(model, x)
    sigma = check_positive("sigma", sigma)
    if noise is None:
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    else:
        check_data(noise, "noise", x.shape[1])
        if noise.shape != x.shape:
            raise ValueError(f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}")
    psi = model.score(x + sigma * noise)
    return 0.5 * ((psi + noise / sigma) ** 2).sum(-1).mean()


def sample_projections(shape, kind: str = "gaussian", dtype=None, device=None, generator=None):
    r"""Random projection vectors v for `ssm` (Song et al. 2019), shape ``(..., d)``.

    "gaussian": v ~ N(0, I);  "rademacher": vᵢ = ±1;  both have E[vvᵀ] = I.
    "sphere": v uniform on the unit sphere, E[vvᵀ] = I/d.

    Parameters
    ----------
    shape : tuple of int
        Output shape, last entry d (e.g. ``(n_slices, B, d)``).
    kind : {"gaussian", "rademacher", "sphere"}
    dtype, device : optional
        Of the output (default dtype / CPU).
    generator : torch.Generator, optional

    Returns
    -------
    torch.Tensor of the given shape.
    """
    check_choice("kind", kind, PROJECTIONS)
    kw = dict(dtype=dtype, device=device, generator=generator)
    if kind == "rademacher":
        return torch.randint(0, 2, tuple(shape), device=device, generator=generator).to(
            dtype or torch.get_default_dtype()
        ) * 2 - 1
    v = torch.randn(tuple(shape), **kw)
    if kind == "sphere":
        v = v / v.norm(dim=-1, keepdim=True)
    return v


def ssm(
    model,
    x: torch.Tensor,
    n_slices: int = 1,
    vr: bool = False,
    projections: torch.Tensor | None = None,
    kind: str = "gaussian",
    generator=None,
):
    r"""Sliced score matching (Song et al. 2019): J_SSM = mean_{B,slices}[½(vᵀψ)² + vᵀ(∇ψ)v].

    vᵀ(∇ψ)v is one extra backward pass: ∇ₓ(vᵀψ(x)) = (∇ψ)ᵀv, dotted with v. For v with
    E[vvᵀ] = I ("gaussian", "rademacher") the expectation over v is J_SM; for unit-norm
    v ("sphere", E[vvᵀ] = I/d) it is J_SM/d. The variance-reduced variant (``vr=True``)
    replaces ½(vᵀψ)² by its expectation over v: ½‖ψ‖² (and ½‖ψ‖²/d for "sphere").

    Parameters
    ----------
    model : EnergyModel or ScoreModel
    x : torch.Tensor, shape (B, d)
    n_slices : int
        Projections per data point (ignored when ``projections`` is given).
    vr : bool
        Variance-reduced SSM-VR.
    projections : torch.Tensor, optional
        Fixed projections, shape (B, d) or (n_slices, B, d): makes the loss deterministic.
    kind : {"gaussian", "rademacher", "sphere"}
        Distribution of the random projections (and, for given projections, whether the VR
        term is divided by d: only for "sphere").
    generator : torch.Generator, optional

    Returns
    -------
    0-d tensor, differentiable in θ; an unbiased estimate of J_SM (J_SM/d for "sphere").
    """
    _check(model, x)
    check_choice("kind", kind, PROJECTIONS)
    B, d = x.shape
    if projections is None:
        n_slices = check_int("n_slices", n_slices)
        v = sample_projections((n_slices, B, d), kind, x.dtype, x.device, generator)
    else:
        v = projections
        if not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise ValueError("projections must be a floating torch.Tensor of shape (B, d) or (n_slices, B, d)")
        if v.ndim == 2:
            v = v.unsqueeze(0)
        if v.ndim != 3 or v.shape[1:] != x.shape:
            raise ValueError(
                f"projections must have shape (B, d) = {tuple(x.shape)} or (n_slices, B, d), "
                f"got {tuple(projections.shape)}"
            )
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        x_ = x if x.requires_grad else x.detach().requires_grad_(True)
        psi = model.score(x_)  # (B, d)
        if v.shape[0] == 1:
            g = _grad_x(psi, x_, v[0], create_graph).unsqueeze(0)
        else:
            g = _grad_x(psi, x_, v, create_graph, batched=True)
        vJv = (g * v).sum(-1)  # (S, B): vᵀ(∇ψ)ᵀv = vᵀ(∇ψ)v
        if vr:
            first = 0.5 * (psi * psi).sum(-1) / (d if kind == "sphere" else 1)
        else:
            first = 0.5 * (v * psi).sum(-1) ** 2
        loss = (first + vJv).mean()
    return loss if create_graph else loss.detach()


def kingma_lecun(model, x: torch.Tensor, lam, method: str = "auto"):
    r"""Regularised score matching (Kingma & LeCun 2010): J_SM + λ mean_B Σᵢ (∂²E/∂xᵢ²)².

    Derivation: J_SM evaluated on noisy data x + ε, ε ~ N(0, s²I), expands as
    E_ε[J(x + ε)] = J(x) + (s²/2) ΔJ(x) + O(s⁴), and Δ(½ψᵢ²) = Σⱼ(∂ⱼψᵢ)² + ψᵢ∂ⱼ²ψᵢ.
    Keeping only the diagonal Hessian entries and dropping third derivatives leaves
    (s²/2) Σᵢ (∂ᵢψᵢ)² = λ Σᵢ (∂²E/∂xᵢ²)² with λ = s²/2: the penalty is **squared**. (DEEN's
    eq. 10 prints λ Σ ∂²E/∂xᵢ² without the square; that term would only re-weight the
    Laplacian already in J_SM and is unbounded below, so it cannot be a regulariser.)

    Parameters
    ----------
    model : EnergyModel or ScoreModel
    x : torch.Tensor, shape (B, d)
    lam : float
        λ ≥ 0 (λ = 0 gives J_SM).
    method : str
        How to get ∂ψᵢ/∂xᵢ, see `score_jacobian_diagonal`.

    Returns
    -------
    0-d tensor, differentiable in θ.
    """
    _check(model, x)
    lam = check_nonnegative("lam", lam)
    check_choice("method", method, METHODS)
    psi = model.score(x)
    diag = _jacobian_diagonal(model, x, method)
    return (0.5 * (psi * psi).sum(-1) + diag.sum(-1) + lam * (diag * diag).sum(-1)).mean()


def ae(model, x: torch.Tensor) -> torch.Tensor:
    r"""Autoencoder loss mean_B ½‖x^r(x) − x‖² with the model's own reconstruction.

    For GRBM/MCRBM/MPoT, x^r is one gradient step on the free energy (Swersky et al. 2011,
    eq. 17), so this is the reconstruction term of SM without the variance and curvature
    terms ("AE" in their Fig. 1c and Table 1) up to the factor 1/σ⁴ of the GRBM.

    Parameters
    ----------
    model : model with ``reconstruct(x)`` (GRBM, MCRBM, MPoT, DAEEnergy)
    x : torch.Tensor, shape (B, d)

    Returns
    -------
    0-d tensor, differentiable in θ.
    """
    _check(model, x)
    if not hasattr(model, "reconstruct"):
        raise TypeError(f"{type(model).__name__} has no reconstruct(x); ae() needs an autoencoder-type model")
    r = model.reconstruct(x)
    return 0.5 * ((r - x) ** 2).sum(-1).mean()


def esm(model, x: torch.Tensor, true_score) -> torch.Tensor:
    r"""Explicit score matching / Fisher divergence estimate, mean_B ½‖ψ_model(x) − ψ_true(x)‖².

    The objective J_ESM of Hyvärinen (2005, Sec. 2) when ψ_true = ∇ log p is known (toy data);
    J_ESM = J_SM + C with C independent of θ (Hyvärinen 2005, Thm 1; Vincent 2011).

    Parameters
    ----------
    model : EnergyModel or ScoreModel
    x : torch.Tensor, shape (B, d)
    true_score : callable or torch.Tensor
        Either ψ_true(x) as a (B, d) tensor or a function x ↦ ψ_true(x) (e.g.
        ``smlib.data.gaussian_mixture(...).score``).

    Returns
    -------
    0-d tensor, differentiable in θ.
    """
    _check(model, x)
    target = true_score(x) if callable(true_score) else true_score
    if not isinstance(target, torch.Tensor) or target.shape != x.shape:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"true_score must be (or return) a tensor of shape {tuple(x.shape)}, got {shape}")
    psi = model.score(x)
    return 0.5 * ((psi - target) ** 2).sum(-1).mean()
