"""The score-matching losses: `sm`, `sm_generic`, `dsm`, `ssm`, `kingma_lecun`, `ae`, `esm`.

Canonical scaling: sum over dimensions, mean over the batch (see :mod:`smlib.objectives`).
"""
from __future__ import annotations

import torch

from smlib._checks import check_choice, check_data, check_int, check_nonnegative, check_positive
from smlib.objectives.derivatives import GENERIC_DEFAULT, METHODS, _check, _grad_x, _jacobian_diagonal, hessian_trace

__all__ = ["sm", "sm_generic", "dsm", "ssm", "kingma_lecun", "ae", "esm", "sample_projections", "PROJECTIONS"]

#: projection distributions for `ssm`
PROJECTIONS = ("gaussian", "rademacher", "sphere")


def sm(model, x: torch.Tensor) -> torch.Tensor:
    r"""Exact (implicit) score matching, J_SM = mean_B Σᵢ [½ψᵢ² + ∂ψᵢ/∂xᵢ] (Hyvärinen 2005, Thm 1).

    Uses the model's closed form ``model.sm_terms(x)["total"]`` when it has one (GRBM, MCRBM,
    MPoT: Swersky et al. 2011, eqs. 8, 12), else ψ and ∇·ψ from one pass when the model gives both
    (``model.score_and_divergence``: `MLPEnergy`), else `sm_generic` with ``method="auto"``.

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
    if hasattr(model, "score_and_divergence"):
        psi, div = model.score_and_divergence(x)
        return (0.5 * (psi * psi).sum(-1) + div).mean()
    return sm_generic(model, x, method="auto")


def sm_generic(model, x: torch.Tensor, method: str = GENERIC_DEFAULT, chunk_size: int | None = None):
    r"""J_SM = mean_B[½‖ψ‖² + ∇·ψ] through the Hessian-trace path (no closed-form ``sm_terms``).

    The default ``method="vjp"`` differentiates ``model.score`` by a batched double-backward. For
    a model whose score is autograd's (`MLPEnergy`) that is automatic differentiation throughout;
    for a model with a closed-form score (GRBM, MCRBM, MPoT, DAEEnergy, GaussianEnergy) it checks the
    closed-form divergence against autograd of the closed-form score. To differentiate the free
    energy alone, wrap the model (``smlib.book.helpers.FreeEnergyOnly``). Pass ``method="auto"``
    to use a model's closed-form divergence (what `sm` does for models without ``sm_terms``).
    Hyvärinen (2005), Thm 1.

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
    mean ½‖ψ(x̃) + ε/σ‖². DEEN (Saremi et al. 2018, eq. 19) minimises 2σ⁴·J_DSM; Swersky et al.'s
    SMD (2011, eq. 5, printed without the ½) is 2·J_DSM.

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
    if getattr(model, "functional", False):  # inside torch.func transforms (smlib.ensemble): no autograd.grad
        psi = model.score(x)
        Jv = torch.func.vmap(lambda u: torch.func.jvp(model.score, (x,), (u,))[1])(v)  # (∇ψ)v, forward mode
        return _ssm_terms(psi, v, Jv, vr, kind, d)
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        x_ = x if x.requires_grad else x.detach().requires_grad_(True)
        psi = model.score(x_)  # (B, d)
        if v.shape[0] == 1:
            g = _grad_x(psi, x_, v[0], create_graph, model=model).unsqueeze(0)
        else:
            g = _grad_x(psi, x_, v, create_graph, batched=True, model=model)
        loss = _ssm_terms(psi, v, g, vr, kind, d)  # g = (∇ψ)ᵀv: vᵀ(∇ψ)ᵀv = vᵀ(∇ψ)v
    return loss if create_graph else loss.detach()


def _ssm_terms(psi, v, Jv, vr, kind, d):
    """mean over slices and batch of ½(vᵀψ)² (VR: ½‖ψ‖², /d for the sphere) + vᵀ(∇ψ)v."""
    vJv = (Jv * v).sum(-1)  # (S, B)
    if vr:
        first = 0.5 * (psi * psi).sum(-1) / (d if kind == "sphere" else 1)
    else:
        first = 0.5 * (v * psi).sum(-1) ** 2
    return (first + vJv).mean()


def kingma_lecun(model, x: torch.Tensor, lam, method: str = "auto"):
    r"""Regularised score matching (Kingma & LeCun 2010): J_SM + λ mean_B Σᵢ (∂²E/∂xᵢ²)².

    Derivation: J_SM evaluated on noisy data x + ε, ε ~ N(0, s²I), expands as
    E_ε[J(x + ε)] = J(x) + (s²/2) ΔJ(x) + O(s⁴), and Δ(½ψᵢ²) = Σⱼ(∂ⱼψᵢ)² + ψᵢ∂ⱼ²ψᵢ.
    Keeping only the diagonal Hessian entries and dropping third derivatives leaves
    (s²/2) Σᵢ (∂ᵢψᵢ)² = λ Σᵢ (∂²E/∂xᵢ²)² with λ = s²/2: the penalty is **squared**. The expansion
    holds to O(s²), at p = p_θ, for the Hessian diagonal only (chapter 6). DEEN's eq. 10 prints
    λ Σ ∂²E/∂xᵢ² without the square; added to DEEN's SM loss 2·J_SM that term only re-weights the
    Laplacian: the result is, up to a factor, J_SM of a tempered energy, minimised by p^{1−λ/2}
    for λ < 2 and improper for λ ≥ 2 — it tempers, it does not regularise.

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
        ``smlib.data.gaussian_mixture_2d(...).score``).

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
