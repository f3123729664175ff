"""Base classes shared by every model: energies, direct score models, latent Gaussian EBMs.

Conventions (the book's conventions table; pinned by ``tests/test_models.py``):

* density ``p(x) = exp(-E(x)) / Z``; for latent models ``energy(x)`` is the free energy
  ``F(x) = -log ∫ exp(-E(x, h)) dh`` (sum over discrete ``h``);
* score ``ψ(x) = ∇ₓ log p(x) = -∇ₓ E(x)``, shape (B, d);
* every batch is a (B, d) floating tensor; energies are returned per sample, shape (B,).

Optional closed-form derivatives that `smlib.objectives` uses when a model provides them:

* ``score_divergence(x)``      -> (B,)  ∇·ψ = Σᵢ ∂ψᵢ/∂xᵢ  (= -ΔE)
* ``score_jacobian_diagonal(x)`` -> (B, d) ∂ψᵢ/∂xᵢ      (= -∂²E/∂xᵢ²)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smlib._checks import check_choice

__all__ = ["EnergyModel", "ScoreModel", "LatentGaussianModel", "rho_bernoulli", "softplus"]

# Above this input, x + log1p(e⁻ˣ) rounds to x in the dtype (e⁻ˣ < ½ ulp(x)): float64 needs
# x > 33.3, float32 x > 14.6, so returning x there is exact. torch's default threshold of 20
# is exact for float32 but off by up to e⁻²⁰ ≈ 2·10⁻⁹ per unit in float64.
_SOFTPLUS_THRESHOLD = {torch.float64: 40.0}


def _check_input(model, x: torch.Tensor, name: str = "x") -> None:
    """Cheap shape/dtype check (no host sync, so it is safe inside samplers and torch.func)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"{name} must be a floating torch.Tensor of shape (batch, {model.dim})")
    if x.ndim != 2 or x.shape[-1] != model.dim:
        raise ValueError(
            f"{name} must have shape (batch, {model.dim}) for {type(model).__name__}, got {tuple(x.shape)}"
        )


def softplus(x: torch.Tensor) -> torch.Tensor:
    r"""softplus(x) = log(1 + eˣ) with no cut-off error in any floating dtype.

    ``torch.nn.functional.softplus`` returns x for x > 20 (its default ``threshold``), an error
    of log(1 + e⁻ˣ) ≈ e⁻ˣ ≤ 2·10⁻⁹ per unit that is far above float64 rounding. Here the
    threshold is chosen per dtype (40 for float64, 20 otherwise) so that the switch to x only
    happens where x + e⁻ˣ already rounds to x (below it, log1p(eˣ) is accurate to a few ulps).
    Its derivative is sigm(x) to rounding, which keeps
    autograd scores equal to the closed-form scores (written with ``torch.sigmoid``) of the free
    energies F(v) = … − Σⱼ softplus(φⱼ(v)) (Swersky et al. 2011, eqs. 7, 11, 14; Vincent 2011).
    """
    return F.softplus(x, beta=1.0, threshold=_SOFTPLUS_THRESHOLD.get(x.dtype, 20.0))


def learnable_or_fixed(module: nn.Module, name: str, value: torch.Tensor, learn: bool) -> None:
    """Attach ``value`` to ``module`` as parameter ``name`` when ``learn``, else as a buffer.

    A buffer moves with ``.to()`` and is saved in ``state_dict`` but gets no gradient, so a fixed
    σ, γ or precision costs nothing in the optimiser.
    """
    if learn:
        setattr(module, name, nn.Parameter(value))
    else:
        module.register_buffer(name, value)


def rho_bernoulli(p: torch.Tensor) -> torch.Tensor:
    """Variance of a Bernoulli(p) unit, ρ(p) = p(1 − p) (Swersky et al. 2011, eq. 12)."""
    return p * (1.0 - p)


class EnergyModel(nn.Module):
    """An energy-based model ``p(x) = exp(-E(x)) / Z`` on ℝ^d.

    Subclasses implement :meth:`energy` (shape (B,)) and set ``self.dim``. ``forward`` is the
    energy. :meth:`score` defaults to automatic differentiation,

        ψ(x) = -∇ₓ E(x),

    computed with ``create_graph=True`` whenever gradients are enabled, so that any loss built
    from the score is differentiable in the parameters θ (the score-matching losses need
    ∂ψ/∂θ). Under ``torch.no_grad()`` (samplers) the score is returned detached and no
    second-order graph is built. Subclasses override it with closed forms where cheap.

    Parameters
    ----------
    dim : int
        Number of visible dimensions d (attribute ``dim``).
    """

    has_energy = True

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)

    def energy(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Energy (free energy for latent models) per sample, shape (B,)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`energy`."""
        return self.energy(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Score ψ(x) = −∇ₓE(x) by autograd, shape (B, d) (differentiable in θ and x).

        An energy that does not depend on x (a constant, e.g. E = θ) has ψ = 0 exactly: zeros
        of x's shape and dtype are returned instead of autograd's "not used in the graph" /
        "does not require grad" errors (``allow_unused=True``).
        """
        _check_input(self, x)
        build_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            x_ = x if x.requires_grad else x.detach().requires_grad_(True)
            energy = self.energy(x_)
            grad = None
            if energy.requires_grad:
                (grad,) = torch.autograd.grad(energy.sum(), x_, create_graph=build_graph, allow_unused=True)
        if grad is None:  # E has no path to x: ∇ₓE = 0
            return torch.zeros_like(x, memory_format=torch.contiguous_format)
        return -grad if build_graph else -grad.detach()


class ScoreModel(nn.Module):
    """A model of the score ψ(x) ≈ ∇ₓ log p(x) with no energy (e.g. `ScoreMLP`).

    ``forward`` is the score. ``energy`` raises ``TypeError``: a generic vector field is not
    the gradient of a scalar (check its curl / Jacobian asymmetry with `smlib.metrics`;
    Saremi et al. 2018, Fig. 1 g–h).

    Parameters
    ----------
    dim : int
        Number of dimensions d (attribute ``dim``).
    """

    has_energy = False

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)

    def score(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Modelled score ψ(x) ≈ ∇ₓ log p(x), shape (B, d)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`score`."""
        return self.score(x)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Raises ``TypeError``: a direct score model has no energy E with ψ = −∇E."""
        raise TypeError(
            f"{type(self).__name__} models the score ψ(x) directly and has no energy function: "
            "a general vector field is not the gradient of a scalar. Use an energy model "
            "(e.g. smlib.models.MLPEnergy) when you need E(x) or free energies."
        )


class LatentGaussianModel(EnergyModel):
    """Latent EBM whose conditional p(v|h) is Gaussian (Swersky et al. 2011, Corollary 1).

    Subclasses implement ``_theorem1_moments(v)`` returning three (B, d) tensors,

        g = E_{h|v}[∂E(v,h)/∂vᵢ],  s² = Var_{h|v}[∂E(v,h)/∂vᵢ],  c = E_{h|v}[∂²E(v,h)/∂vᵢ²],

    from which Theorem 1 of Swersky et al. (2011) gives everything in closed form:

        ψᵢ = −gᵢ,    ∂ψᵢ/∂vᵢ = s²ᵢ − cᵢ,
        J_SM = mean_B Σᵢ [ ½ gᵢ² + s²ᵢ − cᵢ ]  (reconstruction + variance + curvature).

    The identity ∂ψᵢ/∂vᵢ = Var − E[∂²E] is proved in the paper's supplement: differentiate
    ψᵢ = −E_{h|v}[∂E/∂vᵢ] under the integral and use ∂p(h|v)/∂vᵢ = p(h|v)(gᵢ − ∂E/∂vᵢ).
    """

    def energy(self, v: torch.Tensor) -> torch.Tensor:
        """Free energy F(v) = −log Σ_h ∫ exp(−E(v, h)) dh, shape (B,)."""
        return self.free_energy(v)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """F(v) = −log Σ_h ∫ exp(−E(v, h)) dh, shape (B,) (each subclass gives its closed form)."""
        raise NotImplementedError

    def _theorem1_moments(self, v):  # pragma: no cover - abstract
        raise NotImplementedError

    def score_jacobian_diagonal(self, v: torch.Tensor) -> torch.Tensor:
        """∂ψᵢ/∂vᵢ = Var_{h|v}[∂E/∂vᵢ] − E_{h|v}[∂²E/∂vᵢ²] (Theorem 1), shape (B, d)."""
        _, var, curv = self._theorem1_moments(v)
        return var - curv

    def score_divergence(self, v: torch.Tensor) -> torch.Tensor:
        """∇·ψ = Σᵢ ∂ψᵢ/∂vᵢ = −ΔF(v) in closed form, shape (B,)."""
        return self.score_jacobian_diagonal(v).sum(-1)

    def sm_terms(self, v: torch.Tensor, reduction: str = "mean") -> dict:
        """Closed-form score-matching objective split into its Theorem-1 terms.

        Swersky et al. (2011), Theorem 1:

            reconstruction = ½ Σᵢ (E_{h|v}[∂E/∂vᵢ])²
            variance       = Σᵢ Var_{h|v}[∂E/∂vᵢ]
            curvature      = −Σᵢ E_{h|v}[∂²E/∂vᵢ²]          (signed, so that)
            total          = reconstruction + variance + curvature = Σᵢ ½ψᵢ² + ∂ψᵢ/∂vᵢ.

        Parameters
        ----------
        v : torch.Tensor, shape (B, d)
        reduction : {"mean", "none"}
            "mean" (default) averages over the batch (scalars, the canonical J_SM scaling);
            "none" returns per-sample values of shape (B,).

        Returns
        -------
        dict with keys ``reconstruction``, ``variance``, ``curvature``, ``total``.
        """
        check_choice("reduction", reduction, ("mean", "none"))
        g, var, curv = self._theorem1_moments(v)
        terms = {
            "reconstruction": 0.5 * (g * g).sum(-1),
            "variance": var.sum(-1),
            "curvature": -curv.sum(-1),
        }
        terms["total"] = terms["reconstruction"] + terms["variance"] + terms["curvature"]
        if reduction == "mean":
            terms = {k: t.mean() for k, t in terms.items()}
        return terms


_GATED_METHODS = ("auto", "dense", "woodbury")


def _gated_route(C, method: str) -> str:
    """'woodbury' when ``method='auto'`` and there are fewer filters than visible dims, else 'dense'."""
    check_choice("method", method, _GATED_METHODS)
    if method == "auto":
        d, n_filters = C.shape
        return "woodbury" if n_filters < d else "dense"
    return method


def _woodbury_solve(C, s, y):
    """Ω⁻¹y for Ω = I + C diag(s) Cᵀ, one row of s per row of y, through a K×K solve.

    Push-through form of the Woodbury identity, Ω⁻¹ = I − C (I_K + diag(s) CᵀC)⁻¹ diag(s) Cᵀ,
    which follows from Ω C = C (I_K + diag(s) CᵀC). It needs no √s, so its gradient stays
    finite at s = 0. Cost K³ + dK per row instead of d³.
    """
    n_filters = C.shape[1]
    eye = torch.eye(n_filters, dtype=y.dtype, device=y.device)
    M = eye + s[:, :, None] * (C.T @ C)  # (B, K, K) = I + diag(s) CᵀC
    z = torch.linalg.solve(M, (s * (y @ C)).unsqueeze(-1)).squeeze(-1)
    return y - z @ C.T


def _dense_precision(C, s, d, like):
    eye = torch.eye(d, dtype=like.dtype, device=like.device)
    return eye + (C * s[:, None, :]) @ C.T  # (B, d, d)


def _gated_noise_dim(C, method: str) -> int:
    """Length of the standard-normal noise vector the sampler's linear map acts on."""
    d, n_filters = C.shape
    return d + n_filters if _gated_route(C, method) == "woodbury" else d


def _gated_gaussian_affine(C, s, mean_input, noise, method="auto"):
    """The sampler as a deterministic map: Ω⁻¹m + T ε for given standard-normal ε (B, noise_dim).

    Dense route: ε = z ∈ ℝᵈ and T = L⁻ᵀ with Ω = LLᵀ. Woodbury route: ε = (ε₁, ε₂) ∈ ℝᵈ⁺ᴷ and
    T ε = Ω⁻¹(ε₁ + C diag(√s) ε₂). Both give T Tᵀ = Ω⁻¹. Separate from the noise draw so that
    the linear map can be tested exactly.
    """
    d = mean_input.shape[-1]
    if _gated_route(C, method) == "woodbury":
        e1, e2 = noise[:, :d], noise[:, d:]
        return _woodbury_solve(C, s, mean_input + e1 + (s.sqrt() * e2) @ C.T)
    L = torch.linalg.cholesky(_dense_precision(C, s, d, mean_input))
    mu = torch.cholesky_solve(mean_input.unsqueeze(-1), L).squeeze(-1)
    # Ω = L Lᵀ  ⇒  L⁻ᵀ z has covariance L⁻ᵀ L⁻¹ = Ω⁻¹
    return mu + torch.linalg.solve_triangular(L.transpose(-1, -2), noise.unsqueeze(-1), upper=True).squeeze(-1)


def sample_gated_gaussian(C, s, mean_input, generator=None, *, method="auto"):
    r"""Sample v ~ N(Ω⁻¹ m, Ω⁻¹) with precision Ω = I + C diag(s) Cᵀ, batched.

    Used by mcRBM (s = −P h^c ≥ 0) and mPoT (s = h^c ≥ 0): for both, p(v|h) is Gaussian
    with this precision and m = b^v + W h^m (Ranzato & Hinton 2010; Ranzato et al. 2010).

    Two exact routes, chosen by ``method``:

    * ``"dense"``: factorise Ω = LLᵀ (Cholesky, d³ per sample) and return Ω⁻¹m + L⁻ᵀz,
      z ~ N(0, I_d).
    * ``"woodbury"`` (perturb-and-solve): with A = C diag(√s) (so Ω = I + AAᵀ) and independent
      ε₁ ~ N(0, I_d), ε₂ ~ N(0, I_K), return

      .. math:: v = Ω^{-1}(m + ε_1 + Aε_2), \qquad
                Ω^{-1} = I - C\,(I_K + \mathrm{diag}(s)\,C^\top C)^{-1}\mathrm{diag}(s)\,C^\top .

      v is Gaussian with mean Ω⁻¹m and covariance Ω⁻¹ Cov(ε₁ + Aε₂) Ω⁻¹ = Ω⁻¹(I + AAᵀ)Ω⁻¹ = Ω⁻¹.
      The inverse is the Woodbury identity in push-through form (Ω C = C(I + diag(s)CᵀC)); it
      costs K³ + dK per sample, e.g. ~30× less than the dense route at d = 182, K = 64.
      See the perturb-and-solve lemma of the Swersky et al. (2011) chapter.

    ``"auto"`` (default) takes the Woodbury route when K < d and the dense one otherwise. The
    two routes draw from the same distribution but consume the generator differently.

    Parameters
    ----------
    C : (d, K) tensor;  s : (B, K) non-negative tensor;  mean_input : (B, d) tensor m.
    generator : torch.Generator, optional
    method : {"auto", "dense", "woodbury"}

    Returns
    -------
    (B, d) tensor of samples.
    """
    B, d = mean_input.shape
    if (s < 0).any():
        raise ValueError("s must be >= 0 (Ω = I + C diag(s) Cᵀ must be a precision ⪰ I)")
    kw = dict(dtype=mean_input.dtype, device=mean_input.device, generator=generator)
    if _gated_route(C, method) == "woodbury":
        noise = torch.cat([torch.randn(B, d, **kw), torch.randn(B, C.shape[1], **kw)], dim=1)
    else:
        noise = torch.randn(B, d, **kw)
    return _gated_gaussian_affine(C, s, mean_input, noise, method)


def gated_gaussian_mean(C, s, mean_input, *, method="auto"):
    """Mean Ω⁻¹ m of the Gaussian p(v|h) with Ω = I + C diag(s) Cᵀ (see `sample_gated_gaussian`).

    ``method="auto"`` solves with the Woodbury identity
    Ω⁻¹m = m − C (I_K + diag(s) CᵀC)⁻¹ diag(s) Cᵀm when K < d (K³ + dK per sample), and
    with a dense d×d solve otherwise; both are exact and differentiable.
    """
    if _gated_route(C, method) == "woodbury":
        return _woodbury_solve(C, s, mean_input)
    omega = _dense_precision(C, s, mean_input.shape[-1], mean_input)
    return torch.linalg.solve(omega, mean_input.unsqueeze(-1)).squeeze(-1)


def sample_gamma(shape: float, rate: torch.Tensor, generator=None) -> torch.Tensor:
    """Draw Gamma(shape, rate) variates (density ∝ h^{shape−1} e^{−rate·h}) of rate's shape.

    Marsaglia & Tsang (2000) squeeze-rejection, vectorised over all entries (the Python loop
    runs over rejection rounds, typically 1–3, never over entries), so that a
    ``torch.Generator`` can make mPoT Gibbs chains reproducible. For shape < 1 it uses
    Gamma(a) = Gamma(a + 1) · U^{1/a}.
    """
    a = float(shape)
    if not a > 0:
        raise ValueError(f"gamma shape must be > 0, got {a}")
    boost = a < 1.0
    a_eff = a + 1.0 if boost else a
    d_ = a_eff - 1.0 / 3.0
    c_ = 1.0 / (9.0 * d_) ** 0.5
    kw = dict(dtype=rate.dtype, device=rate.device, generator=generator)
    out = torch.empty(rate.numel(), dtype=rate.dtype, device=rate.device)
    todo = torch.arange(rate.numel(), device=rate.device)
    while todo.numel() > 0:
        z = torch.randn(todo.numel(), **kw)
        u = torch.rand(todo.numel(), **kw)
        w = (1.0 + c_ * z) ** 3
        ok = (w > 0) & (torch.log(u) < 0.5 * z * z + d_ - d_ * w + d_ * torch.log(w.clamp_min(1e-300)))
        out[todo[ok]] = d_ * w[ok]
        todo = todo[~ok]
    out = out.view_as(rate)
    if boost:
        u = torch.rand(rate.shape, **kw)
        out = out * u.pow(1.0 / a)
    return out / rate
