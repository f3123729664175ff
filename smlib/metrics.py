r"""Evaluation metrics for energy and score models.

Scalar metrics return 0-d tensors (detached; they format like floats: ``f"{m:.3f}"``),
per-sample metrics return (B,) tensors, and nothing here builds a graph into θ.

=============================  ===============================================================
`free_energy_gap`              mean F(x̃) − mean F(x), x̃ = x + σ_n ε  (Swersky et al. 2011, §5)
`denoise_mean_field`           one reconstruction step x^r(x̃) (Swersky et al. 2011, eq. 17)
`denoise_map`                  argmin_v F(v) + λ/2 ‖v − x̃‖²
`denoise_tweedie`              x̂ = x̃ + σ² ψ(x̃) (Miyasawa 1961; DEEN single-step denoising)
`mse`                          per-pixel (DEEN "err/pixel") or per-sample squared error
`curl_2d`                      ∂ψ₂/∂x₁ − ∂ψ₁/∂x₂ (DEEN Fig. 1 g–h)
`jacobian_asymmetry`           ‖J − Jᵀ‖_F / ‖J‖_F of J = ∂ψ/∂x, per sample
`fisher_divergence`            ½ mean ‖ψ_model − ψ_true‖²
`log_likelihood_grid_2d`       log p by quadrature of exp(−E) on a 2-D grid
`kl_grid_2d`                   KL(p‖q) between two densities on the same grid
`grbm_exact_log_likelihood`    −F(v) − log Z, log Z by enumerating 2^{n_h} hidden states
`grbm_exact_phases`            positive / negative phase E[∇θE] of the likelihood gradient, exact
`grbm_exact_gradient`          ∇θ mean log p(v) = negative − positive phase, exact
`linear_probe_accuracy`        multinomial logistic regression on features (Swersky Table 1)
=============================  ===============================================================
"""
from __future__ import annotations

import math

import torch

from smlib._checks import check_choice, check_data, check_positive
from smlib.scores import energy_fn, score

__all__ = [
    "free_energy_gap",
    "denoise_mean_field",
    "denoise_map",
    "denoise_tweedie",
    "mse",
    "grid_2d",
    "score_on",
    "curl_2d",
    "jacobian",
    "jacobian_asymmetry",
    "fisher_divergence",
    "log_likelihood_grid_2d",
    "kl_grid_2d",
    "grbm_exact_log_likelihood",
    "grbm_exact_phases",
    "grbm_exact_gradient",
    "linear_probe_accuracy",
]


def _dim(model):
    return getattr(model, "dim", None)


def score_on(model, x):
    r"""Score ψ(x) = −∇ₓE(x) of a model (or a score function), detached, shape (B, d).

    The same as ``smlib.scores.score(model, x, detach=True)``.
    """
    return score(model, x, detach=True)


# =============================================================================================
# free energies and denoising
# =============================================================================================
def free_energy_gap(model, x, noise_std, noise=None, generator=None):
    r"""Free-energy gap between noisy and clean data, mean F(x̃) − mean F(x).

    .. math:: \Delta F = \tfrac1B\sum_b F(x_b + \sigma_n\varepsilon_b) - \tfrac1B\sum_b F(x_b),
              \qquad \varepsilon_b \sim N(0, I)

    **Sign:** ΔF > 0 means the model gives the corrupted points *higher* free energy, i.e.
    lower density, than the data — what a good density model does (it equals
    mean log p(x) − mean log p(x̃), a log-likelihood ratio, since Z cancels). Swersky et al.
    (2011, §5, Fig. 1) use this gap to compare SM, CD, PCD, FPCD and AE training.

    Parameters
    ----------
    model : energy model (``energy`` = free energy F)
    x : torch.Tensor (B, d)
    noise_std : float
        σ_n > 0.
    noise : torch.Tensor (B, d), optional
        Standard-normal ε (not scaled); drawn with ``generator`` if None.
    generator : torch.Generator, optional

    Returns
    -------
    0-d tensor
    """
    check_data(x, "x", _dim(model))
    noise_std = check_positive("noise_std", noise_std)
    if noise is None:
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    elif noise.shape != x.shape:
        raise ValueError(f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}")
    energy = energy_fn(model)
    with torch.no_grad():
        return (energy(x + noise_std * noise).mean() - energy(x).mean()).detach()


def denoise_mean_field(model, x_noisy):
    r"""One mean-field reconstruction step, x̂ = x^r(x̃) = ``model.reconstruct(x̃)``.

    For the GRBM, x^r = c + W sigm(Wᵀx̃/σ² + b) = x̃ − σ²∇F(x̃): one gradient step on the free
    energy (Swersky et al. 2011, eq. 17, the same for mcRBM/mPoT with their own x^r).

    Returns
    -------
    torch.Tensor (B, d), detached.
    """
    check_data(x_noisy, "x_noisy", _dim(model))
    if not hasattr(model, "reconstruct"):
        raise TypeError(f"{type(model).__name__} has no reconstruct(); use denoise_tweedie or denoise_map")
    with torch.no_grad():
        return model.reconstruct(x_noisy).detach()


def denoise_map(model, x_noisy, lam, n_steps=100, lr=0.1, method="lbfgs"):
    r"""MAP-style denoising: x̂ = argmin_v F(v) + (λ/2)‖v − x̃‖², per sample, batched.

    The objective is separable over the batch, so the sum over samples is minimised at once,
    starting from v = x̃. This is MAP estimation under the model prior p(v) ∝ exp(−F(v)) and
    the Gaussian likelihood N(x̃; v, λ⁻¹I) (λ = 1/σ² for noise of standard deviation σ).

    Parameters
    ----------
    model : energy model
    x_noisy : torch.Tensor (B, d)
    lam : float
        λ > 0.
    n_steps : int
        Iterations (L-BFGS ``max_iter`` or gradient-descent steps).
    lr : float
        Step size (L-BFGS: initial step, with a strong-Wolfe line search).
    method : {"lbfgs", "gd"}

    Returns
    -------
    torch.Tensor (B, d), detached.
    """
    check_data(x_noisy, "x_noisy", _dim(model))
    lam = check_positive("lam", lam)
    check_positive("lr", lr)
    check_choice("method", method, ("lbfgs", "gd"))
    energy = energy_fn(model)
    target = x_noisy.detach()
    v = target.clone().requires_grad_(True)

    def objective():
        return energy(v).sum() + 0.5 * lam * ((v - target) ** 2).sum()

    with torch.enable_grad():
        if method == "lbfgs":
            opt = torch.optim.LBFGS([v], lr=lr, max_iter=n_steps, line_search_fn="strong_wolfe",
                                    tolerance_grad=1e-10, tolerance_change=1e-14)

            def closure():
                opt.zero_grad()
                f = objective()
                f.backward()
                return f

            opt.step(closure)
        else:
            for _ in range(n_steps):
                (g,) = torch.autograd.grad(objective(), v)
                with torch.no_grad():
                    v -= lr * g
    return v.detach()


def denoise_tweedie(model, x_noisy, sigma):
    r"""Single-step (Tweedie / Miyasawa) denoising, x̂ = x̃ + σ² ψ(x̃).

    If ψ is the score of the *noisy* density p_σ = p ∗ N(0, σ²I) (what DSM at noise σ learns),
    x̂ is exactly the posterior mean E[x | x̃] (Miyasawa 1961; Saremi et al. 2018, DEEN eq. 11,
    "single-step denoising").

    Parameters
    ----------
    model : energy or score model, or a score function x ↦ ψ(x)
    x_noisy : torch.Tensor (B, d)
    sigma : float
        Noise standard deviation σ > 0.

    Returns
    -------
    torch.Tensor (B, d), detached.
    """
    check_data(x_noisy, "x_noisy", _dim(model))
    sigma = check_positive("sigma", sigma)
    return (x_noisy + sigma**2 * score_on(model, x_noisy)).detach()


def mse(x, x_hat, per="pixel"):
    r"""Squared reconstruction error.

    ``per="pixel"``: mean over all entries, (1/(Bd)) Σ_b ‖x_b − x̂_b‖² — DEEN's "err/pixel"
    (Saremi et al. 2018, Fig. 3). ``per="sample"``: the book's objective convention, mean over
    the batch of the sum over dimensions, (1/B) Σ_b ‖x_b − x̂_b‖².

    Returns
    -------
    0-d tensor
    """
    check_choice("per", per, ("pixel", "sample"))
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
    sq = (x.detach() - x_hat.detach()) ** 2
    return sq.mean() if per == "pixel" else sq.reshape(sq.shape[0], -1).sum(1).mean()


# =============================================================================================
# vector-field diagnostics
# =============================================================================================
def grid_2d(bounds, n_grid, dtype=None, device=None):
    r"""Regular grid on a rectangle.

    Parameters
    ----------
    bounds : (x_min, x_max, y_min, y_max) or ((x_min, x_max), (y_min, y_max)) or a float L
        (meaning [−L, L]²).
    n_grid : int or (n_x, n_y)

    Returns
    -------
    X, Y : torch.Tensor (n_y, n_x)
        ``meshgrid(..., indexing="xy")``: row i is y_i, column j is x_j (``imshow``/``contourf``).
    points : torch.Tensor (n_y·n_x, 2)
        The grid points in row-major order, so ``f(points).reshape(X.shape)`` lines up with X, Y.
    """
    if isinstance(bounds, (int, float)):
        bounds = (-bounds, bounds, -bounds, bounds)
    bounds = tuple(float(b) for b in torch.as_tensor(bounds, dtype=torch.float64).flatten().tolist())
    if len(bounds) != 4 or not (bounds[0] < bounds[1] and bounds[2] < bounds[3]):
        raise ValueError(f"bounds must be (x_min, x_max, y_min, y_max) with min < max, got {bounds}")
    nx, ny = (n_grid, n_grid) if isinstance(n_grid, int) else n_grid
    if nx < 2 or ny < 2:
        raise ValueError(f"n_grid must be >= 2, got {n_grid}")
    dtype = dtype or torch.get_default_dtype()
    xs = torch.linspace(bounds[0], bounds[1], nx, dtype=dtype, device=device)
    ys = torch.linspace(bounds[2], bounds[3], ny, dtype=dtype, device=device)
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    return X, Y, torch.stack([X.reshape(-1), Y.reshape(-1)], 1)


def _as_points(grid, model=None):
    """Accept a (M, 2) tensor or a (bounds, n_grid) pair; return points and an output shape."""
    if isinstance(grid, torch.Tensor):
        return grid, None
    if isinstance(grid, (tuple, list)) and len(grid) == 2:
        dtype = next((p.dtype for p in model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        X, _, pts = grid_2d(grid[0], grid[1], dtype=dtype)
        return pts, X.shape
    raise TypeError("grid must be a (M, 2) tensor of points or a (bounds, n_grid) pair")


def jacobian(score_fn, x):
    r"""Per-sample Jacobian J_b = ∂ψ(x_b)/∂x_b, shape (B, d, d), J[b, i, j] = ∂ψᵢ/∂xⱼ.

    Vectorised: one batched backward pass over the d basis vectors (``is_grads_batched``),
    falling back to d backward passes if an op does not support it. Rows are independent
    across the batch because ψ acts on each sample separately.

    A score that does not depend on x (a linear energy E = θᵀx, ψ = −θ, or a constant field)
    has J = 0 exactly; zeros are returned instead of autograd's "not used in the graph" error
    (``allow_unused=True``; the zeros are built here, with the batch dimension, because
    ``materialize_grads`` drops it under ``is_grads_batched``).
    """
    f = score_fn.score if hasattr(score_fn, "score") else score_fn
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        psi = f(x)
        B, d = psi.shape
        rows = None
        if psi.requires_grad:
            eye = torch.eye(d, dtype=psi.dtype, device=psi.device)
            basis = eye[:, None, :].expand(d, B, d)
            try:
                (rows,) = torch.autograd.grad(
                    psi, x, grad_outputs=basis, is_grads_batched=True, retain_graph=True, allow_unused=True
                )
            except RuntimeError:
                cols = [torch.autograd.grad(psi[:, i].sum(), x, retain_graph=True, allow_unused=True)[0]
                        for i in range(d)]
                rows = torch.stack([torch.zeros_like(x) if g is None else g for g in cols])
        if rows is None:  # ψ has no path to x: its Jacobian is zero
            rows = torch.zeros(d, *x.shape, dtype=x.dtype, device=x.device)
    return rows.permute(1, 0, 2).detach()


def curl_2d(score, grid):
    r"""Curl of a planar vector field, (∇×ψ) = ∂ψ₂/∂x₁ − ∂ψ₁/∂x₂.

    A score that is the gradient of an energy (ψ = −∇E) is curl-free; a directly parametrised
    score (``ScoreMLP``, an untied DAE) need not be — DEEN diagnoses DSM-trained score networks
    this way (Saremi et al. 2018, Fig. 1 g–h).

    Parameters
    ----------
    score : model with ``score`` or a callable x ↦ ψ(x) (B, 2)
    grid : torch.Tensor (M, 2) of points, or ``(bounds, n_grid)`` (see :func:`grid_2d`)

    Returns
    -------
    torch.Tensor (M,), or (n_y, n_x) for a ``(bounds, n_grid)`` grid.
    """
    pts, shape = _as_points(grid, score)
    if pts.dim() != 2 or pts.shape[1] != 2:
        raise ValueError(f"curl_2d needs 2-D points of shape (M, 2), got {tuple(pts.shape)}")
    J = jacobian(score, pts)
    curl = J[:, 1, 0] - J[:, 0, 1]
    return curl.reshape(shape) if shape is not None else curl


def jacobian_asymmetry(model, x):
    r"""Relative asymmetry of the score Jacobian, ‖J − Jᵀ‖_F / ‖J‖_F per sample.

    Zero for a conservative field (J = −∇²E is symmetric); generalises the 2-D curl to any d
    (Vincent 2011: tied DAE weights make the reconstruction field a gradient; Saremi et al. 2018).

    Parameters
    ----------
    model : model with ``score`` or a callable score
    x : torch.Tensor (B, d)

    Returns
    -------
    torch.Tensor (B,)
    """
    check_data(x, "x", _dim(model))
    J = jacobian(model, x)
    num = torch.linalg.matrix_norm(J - J.transpose(1, 2))
    return num / torch.linalg.matrix_norm(J).clamp_min(torch.finfo(J.dtype).tiny)


def fisher_divergence(model, x, true_score):
    r"""Fisher divergence estimate ½ mean_b ‖ψ_model(x_b) − ψ_true(x_b)‖² (sum over dims).

    With x ~ p this estimates the explicit score-matching objective J_ESM (Hyvärinen 2005);
    it is 0 exactly when the scores agree on the samples.

    Parameters
    ----------
    model : energy/score model or score function
    x : torch.Tensor (B, d)
    true_score : callable x ↦ (B, d) or a (B, d) tensor

    Returns
    -------
    0-d tensor
    """
    check_data(x, "x", _dim(model))
    target = true_score(x) if callable(true_score) else true_score
    if not isinstance(target, torch.Tensor) or target.shape != x.shape:
        raise ValueError(f"true_score must be (or return) a tensor of shape {tuple(x.shape)}")
    return 0.5 * ((score_on(model, x) - target.detach()) ** 2).sum(-1).mean()


# =============================================================================================
# likelihoods
# =============================================================================================
def _energy_on(energy, pts, chunk=65536):
    with torch.no_grad():
        return torch.cat([energy(pts[i : i + chunk]) for i in range(0, pts.shape[0], chunk)])


def log_likelihood_grid_2d(model, x, bounds, n_grid=200):
    r"""Exact-up-to-quadrature log-likelihood of a 2-D energy model.

    .. math:: \log Z \approx \log \sum_{g} e^{-E(x_g)}\,\Delta x\,\Delta y,\qquad
              \log p(x) = -E(x) - \log Z

    (a Riemann sum on a uniform grid: spectrally accurate when exp(−E) is smooth and
    negligible at the border of ``bounds``).

    Parameters
    ----------
    model : energy model or callable energy (B, 2) -> (B,)
    x : torch.Tensor (B, 2)
        Points at which to evaluate log p (e.g. test data).
    bounds : see :func:`grid_2d`
    n_grid : int

    Returns
    -------
    dict with
        ``mean_log_likelihood`` (0-d), ``log_prob`` (B,), ``log_z`` (0-d), ``X``, ``Y``
        (n, n), ``log_density`` and ``density`` (n, n) normalised on the grid
        (Σ density·ΔxΔy = 1), ``cell_area``.
    """
    check_data(x, "x", 2)
    energy = energy_fn(model)
    X, Y, pts = grid_2d(bounds, n_grid, dtype=x.dtype, device=x.device)
    cell = float((X[0, 1] - X[0, 0]) * (Y[1, 0] - Y[0, 0]))
    neg_e = -_energy_on(energy, pts)
    log_z = torch.logsumexp(neg_e, 0) + math.log(cell)
    log_density = (neg_e - log_z).reshape(X.shape)
    log_prob = -_energy_on(energy, x) - log_z
    return {
        "mean_log_likelihood": log_prob.mean(),
        "log_prob": log_prob,
        "log_z": log_z,
        "X": X,
        "Y": Y,
        "log_density": log_density,
        "density": log_density.exp(),
        "cell_area": cell,
    }


def kl_grid_2d(log_p, log_q):
    r"""KL(p ‖ q) = Σ_g P_g (log P_g − log Q_g) for two densities on the same grid.

    Both inputs are log-densities (possibly unnormalised) on the same uniform grid; each is
    normalised on the grid (P = softmax(log p)), so the cell area cancels. Use with the
    ``log_density`` of :func:`log_likelihood_grid_2d` and a true log-density (e.g.
    ``smlib.data`` mixtures' ``log_prob``) evaluated on the same grid points.

    Returns
    -------
    0-d tensor ≥ 0
    """
    log_p, log_q = torch.as_tensor(log_p), torch.as_tensor(log_q)
    if log_p.shape != log_q.shape:
        raise ValueError(f"log_p and log_q must be on the same grid, got shapes {tuple(log_p.shape)} and {tuple(log_q.shape)}")
    lp = torch.log_softmax(log_p.detach().reshape(-1), 0)
    lq = torch.log_softmax(log_q.detach().reshape(-1), 0)
    return (lp.exp() * (lp - lq)).sum().clamp_min(0.0)


def grbm_exact_log_likelihood(model, v):
    r"""Exact log p(v) = −F(v) − log Z of a small GRBM (n_hidden ≤ 20).

    log Z comes from ``model.log_partition()``, which enumerates the 2^{n_h} hidden states and
    integrates v analytically (a Gaussian for each h). Per sample, shape (B,).
    """
    if not hasattr(model, "log_partition"):
        raise TypeError(f"{type(model).__name__} has no log_partition(); an exact likelihood needs a small GRBM")
    check_data(v, "v", _dim(model))
    with torch.no_grad():
        return (-model.energy(v) - model.log_partition()).detach()


def grbm_exact_phases(model, v):
    r"""Exact positive and negative phases of the log-likelihood gradient of a small GRBM.

    With the book's eq-ch1-mle-grad (Hinton 2002; Swersky et al. 2011, §2), for data v₁…v_n,

    .. math:: \nabla_\theta \tfrac1n\textstyle\sum_k \log p(v_k)
              = \underbrace{\mathbb E_{p_\theta}[\nabla_\theta E]}_{\text{negative}}
              - \underbrace{\tfrac1n\textstyle\sum_k \mathbb E_{h|v_k}[\nabla_\theta E(v_k, h)]}_{\text{positive}},

    positive = mean_k ∇θF(v_k) (autograd of the free energy) and negative = −∇θ log Z (autograd
    through ``model.log_partition()``, the enumeration over 2^{n_h} hidden states, n_h ≤ 20).
    Works for any model with an exact, differentiable ``log_partition`` (e.g. `GaussianEnergy`).

    Parameters
    ----------
    model : GRBM (or another model with ``log_partition()``)
    v : torch.Tensor (B, n_visible)

    Returns
    -------
    dict ``{"positive": {name: tensor}, "negative": {name: tensor}}`` over the model's
    trainable parameters (``model.named_parameters()``, e.g. ``W``, ``b``, ``c``, ``log_sigma``),
    each tensor detached and of the parameter's shape.
    """
    if not hasattr(model, "log_partition"):
        raise TypeError(f"{type(model).__name__} has no log_partition(); exact phases need a small GRBM")
    check_data(v, "v", _dim(model))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def grads(scalar):
        gs = torch.autograd.grad(scalar, list(params.values()), allow_unused=True)
        return {n: (torch.zeros_like(p) if g is None else g).detach() for (n, p), g in zip(params.items(), gs)}

    with torch.enable_grad():
        positive = grads(model.energy(v.detach()).mean())
        negative = grads(-model.log_partition())
    return {"positive": positive, "negative": negative}


def grbm_exact_gradient(model, v):
    r"""Exact gradient of the mean log-likelihood, ∇θ (1/n) Σₖ log p(vₖ), of a small GRBM.

    .. math:: \nabla_\theta \tfrac1n\textstyle\sum_k \log p(v_k)
              = -\tfrac1n\textstyle\sum_k \nabla_\theta F(v_k) - \nabla_\theta \log Z
              = \text{negative} - \text{positive}

    (see :func:`grbm_exact_phases`; log Z by enumeration, Swersky et al. 2011). It is the ascent
    direction of maximum likelihood, against which CD-k, PCD and FPCD updates are measured.

    Returns
    -------
    dict {parameter name: detached tensor of the parameter's shape}
    """
    phases = grbm_exact_phases(model, v)
    return {n: phases["negative"][n] - phases["positive"][n] for n in phases["positive"]}


# =============================================================================================
# representations
# =============================================================================================
def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, C=1.0, max_iter=2000):
    r"""Test accuracy of a multinomial logistic-regression probe on frozen features.

    Features are standardised (mean/std of the training set), then
    ``sklearn.linear_model.LogisticRegression(C=C)`` (L2, lbfgs, softmax over classes) is fit
    on the training features — the protocol of Swersky et al. (2011), Table 1 (features of
    trained models → linear classifier accuracy).

    Returns
    -------
    float in [0, 1]
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def arr(a):
        return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a

    check_positive("C", C)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(arr(train_features), arr(train_labels))
    return float(clf.score(arr(test_features), arr(test_labels)))



