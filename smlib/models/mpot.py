"""Mean Product of Student-t (mPoT) model (Ranzato et al. 2010; Swersky et al. 2011, eqs. 13–17)."""
from __future__ import annotations

import math

import torch
from torch import nn

from smlib._checks import check_int, check_positive
from smlib.models.gated import gated_gaussian_mean, sample_gamma, sample_gated_gaussian
from smlib.models.base import (
    LatentGaussianModel,
    _check_input,
    learnable_or_fixed,
    rho_bernoulli,
    softplus,
)

__all__ = ["MPoT"]


class MPoT(LatentGaussianModel):
    r"""mPoT: Gamma covariance latents h^c ∈ (0, ∞)^{n_cov} and Bernoulli mean units h^m.

    Joint energy (Swersky et al. 2011, eq. 13), with u_k = Σᵢ C_{ik} vᵢ (one filter per
    covariance unit, i.e. the mcRBM with P = −I):

        E(v, h^c, h^m) = Σ_k [ h^c_k (1 + ½ u_k²) + (1 − γ) log h^c_k ]
                         + ½‖v‖² − Σᵢ b^v_i vᵢ − Σᵢⱼ vᵢ Wᵢⱼ h^m_j − Σⱼ b^m_j h^m_j,

    a density with respect to Lebesgue measure dh^c on (0, ∞) and counting measure on h^m.
    Given v, h^c_k ~ Gamma(shape γ, rate 1 + ½u_k²) and h^m_j ~ Bernoulli(sigm(φ^m_j));
    given h, v ~ N(Ω⁻¹(b^v + W h^m), Ω⁻¹) with Ω = I + C diag(h^c) Cᵀ.

    Free energy: ∫₀^∞ h^{γ−1} e^{−h(1+½u²)} dh = Γ(γ)(1 + ½u²)^{−γ}, hence **exactly**

        F(v) = γ Σ_k log(1 + ½u_k²) − Σ_j softplus(φ^m_j) − b^v·v + ½‖v‖² − n_cov log Γ(γ),

    with φ^m_j = Σᵢ Wᵢⱼ vᵢ + b^m_j. Swersky's eq. 14 is this without the v-independent constant
    −n_cov log Γ(γ); we keep it so that F = −log ∫Σ e^{−E} dh holds with no offset (it changes
    no score, SM objective or CD gradient).

    Score (eqs. 15–16): ψ = −C(ĥ^c ⊙ u) + W ĥ^m + b^v − v, with ĥ^c = γ/(1 + ½u²) = E[h^c|v]
    and ĥ^m = sigm(φ^m). The one-step reconstruction (eq. 17) is v − ∇F(v) = v + ψ.

    Parameters
    ----------
    n_visible, n_cov, n_mean : int
        Visible units, covariance (Gamma) units = filters (columns of C), mean (Bernoulli) units.
        ``n_factors`` is accepted as an alias of ``n_cov``.
    gamma : float
        Gamma shape γ > 0 (any γ > 0 gives a normalisable model because of the ½‖v‖² term).
    learn_gamma : bool
        Learn γ through ``log_gamma`` (default: fixed buffer, as in Swersky et al.).
    filter_norm : None, float > 0 or "running"
        Constraint on the columns of C that :meth:`project_` enforces (call it after every
        optimizer step). ``None`` (default): unconstrained. A float ν: every column rescaled to
        norm ν. ``"running"``: Ranzato's rule (his public mcRBM code, which the paper's mPoT code
        follows): all columns rescaled to one common norm ν that tracks their mean norm,
        ν ← 0.95 ν + 0.05 · mean_k ‖C_k‖ (ν₀ = 1, kept in the buffer ``filter_norm_running``).
        Without a constraint the SM objective is unbounded below on repeated points: at v with
        Cᵀv = 0 the curvature term −Σᵢ(1 + γ Σ_k C_ik²) falls without limit as ‖C‖ grows. A fixed
        ν bounds it; the running rule only slows the growth (ν moves by 5 % of each step's
        increase of the mean norm), it does not stop it.

    Attributes
    ----------
    C : (n_visible, n_cov);  W : (n_visible, n_mean);  b_mean : (n_mean,);  b_visible : (n_visible,).
    """

    def __init__(
        self,
        n_visible: int,
        n_cov: int | None = None,
        n_mean: int = 0,
        gamma: float = 1.0,
        learn_gamma: bool = False,
        *,
        n_factors: int | None = None,
        filter_norm: float | str | None = None,
    ):
        n_visible = check_int("n_visible", n_visible)
        super().__init__(n_visible)
        if n_cov is None:
            n_cov = n_factors
        elif n_factors is not None and n_factors != n_cov:
            raise ValueError(f"MPoT has one filter per covariance unit: n_factors={n_factors} != n_cov={n_cov}")
        if n_cov is None:
            raise ValueError("MPoT needs n_cov (number of covariance units / filters)")
        n_cov, n_mean = check_int("n_cov" if n_factors is None else "n_factors", n_cov), check_int("n_mean", n_mean, 0)
        gamma = check_positive("gamma", gamma)
        self.n_visible, self.n_cov, self.n_mean = int(n_visible), int(n_cov), int(n_mean)
        self.C = nn.Parameter(torch.randn(n_visible, n_cov) / math.sqrt(n_visible))
        self.W = nn.Parameter(torch.randn(n_visible, n_mean) / math.sqrt(n_visible + n_mean))
        self.b_mean = nn.Parameter(torch.zeros(n_mean))
        self.b_visible = nn.Parameter(torch.zeros(n_visible))
        log_gamma = torch.tensor(math.log(gamma), dtype=torch.get_default_dtype())
        learnable_or_fixed(self, "log_gamma", log_gamma, learn_gamma)
        if filter_norm == "running":
            # registered only here, so the unconstrained model's state_dict keys are unchanged
            self.register_buffer("filter_norm_running", torch.ones(()))
        elif filter_norm is not None and (isinstance(filter_norm, (bool, str)) or not isinstance(filter_norm, (int, float))
                                          or not (math.isfinite(filter_norm) and filter_norm > 0)):
            raise ValueError(f"filter_norm must be None, a finite number > 0 or 'running', got {filter_norm!r}")
        self.filter_norm = filter_norm if filter_norm in (None, "running") else float(filter_norm)

    @torch.no_grad()
    def project_(self) -> "MPoT":
        r"""Enforce ``filter_norm`` on the columns of C in place (no-op when it is ``None``).

        Fixed ν: C_k ← ν C_k / ‖C_k‖. ``"running"`` (Ranzato's mcRBM/mPoT code): first
        ν ← 0.95 ν + 0.05 · mean_k ‖C_k‖ with the norms *after* the optimizer's update, then
        C_k ← ν C_k / ‖C_k‖. The training loop calls it after every optimizer step (a projected
        gradient step); the directions of the columns are unchanged. Only tensor ops, no host
        synchronisation, so it can run inside a captured CUDA graph.
        """
        if self.filter_norm is None:
            return self
        norms = self.C.norm(dim=0)
        if self.filter_norm == "running":
            self.filter_norm_running.mul_(0.95).add_(0.05 * norms.mean())
            target = self.filter_norm_running
        else:
            target = self.filter_norm
        self.C.mul_(target / norms.clamp_min(torch.finfo(norms.dtype).tiny))
        return self

    @property
    def n_factors(self) -> int:
        """Alias of ``n_cov`` (mPoT has one factor per covariance unit)."""
        return self.n_cov

    @property
    def gamma(self) -> torch.Tensor:
        """Gamma shape γ = exp(log_gamma)."""
        return self.log_gamma.exp()

    # ----------------------------------------------------------------- conditionals
    def factor_response(self, v: torch.Tensor) -> torch.Tensor:
        """u = Cᵀv per sample, shape (B, n_cov)."""
        return v @ self.C

    def _parts(self, v):
        _check_input(self, v, "v")
        u = self.factor_response(v)
        rate = 1.0 + 0.5 * u * u
        phi_m = v @ self.W + self.b_mean
        return u, rate, phi_m

    def hidden_means(self, v: torch.Tensor):
        """(E[h^c|v], p(h^m=1|v)) = (γ/(1 + ½u²), sigm(Wᵀv + b^m)) (eqs. 15, 16)."""
        _, rate, phi_m = self._parts(v)
        return self.gamma / rate, torch.sigmoid(phi_m)

    def mean_v_given_h(self, h) -> torch.Tensor:
        """E[v | h] = Ω⁻¹(b^v + W h^m), Ω = I + C diag(h^c) Cᵀ; ``h = (h_cov, h_mean)``."""
        h_cov, h_mean = h
        return gated_gaussian_mean(self.C, h_cov, self.b_visible + h_mean @ self.W.T)

    @torch.no_grad()
    def sample_h(self, v: torch.Tensor, generator: torch.Generator | None = None):
        """Sample (h^c, h^m) ~ p(h|v): h^c_k ~ Gamma(γ, rate 1 + ½u_k²), h^m_j ~ Bernoulli."""
        _, rate, phi_m = self._parts(v)
        h_cov = sample_gamma(float(self.gamma), rate, generator)
        h_mean = torch.bernoulli(torch.sigmoid(phi_m), generator=generator)
        return h_cov, h_mean

    @torch.no_grad()
    def sample_v(self, h, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample v ~ N(Ω⁻¹(b^v + W h^m), Ω⁻¹), Ω = I + C diag(h^c) Cᵀ; ``h = (h_cov, h_mean)``."""
        h_cov, h_mean = h
        return sample_gated_gaussian(self.C, h_cov, self.b_visible + h_mean @ self.W.T, generator)

    @torch.no_grad()
    def gibbs_step(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One block-Gibbs sweep v → (h^c, h^m) ~ p(h|v) → v' ~ p(v|h) (exact conditionals)."""
        return self.sample_v(self.sample_h(v, generator), generator)

    # ----------------------------------------------------------------- energies
    def joint_energy(self, v: torch.Tensor, h_cov: torch.Tensor, h_mean: torch.Tensor) -> torch.Tensor:
        """E(v, h^c, h^m) of eq. 13, shape (B,); h_cov > 0."""
        u = self.factor_response(v)
        cov = (h_cov * (1.0 + 0.5 * u * u) + (1.0 - self.gamma) * torch.log(h_cov)).sum(-1)
        mean = -((v @ self.W) * h_mean).sum(-1) - h_mean @ self.b_mean
        return cov + mean + 0.5 * (v * v).sum(-1) - v @ self.b_visible

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = γ Σ_k log(1 + ½u_k²) − Σ_j softplus(φ^m_j) − b^v·v + ½‖v‖² − n_cov log Γ(γ), shape (B,).

        Swersky et al. (2011), eq. 14, plus the constant −n_cov log Γ(γ) (see the class docstring).
        """
        _, rate, phi_m = self._parts(v)
        return self._free_energy(v, rate, phi_m)

    def score(self, v: torch.Tensor) -> torch.Tensor:
        """ψ = −C(ĥ^c ⊙ u) + W ĥ^m + b^v − v (Swersky et al. 2011, eqs. 15–16), shape (B, n_visible)."""
        return self._score(v, *self._parts(v))

    def energy_and_score(self, v: torch.Tensor):
        """(F(v), ψ(v)) sharing one pass over the filters (what MALA/HMC need at every step)."""
        u, rate, phi_m = self._parts(v)
        return self._free_energy(v, rate, phi_m), self._score(v, u, rate, phi_m)

    def _free_energy(self, v, rate, phi_m):
        return (
            self.gamma * torch.log(rate).sum(-1)
            - softplus(phi_m).sum(-1)
            - v @ self.b_visible
            + 0.5 * (v * v).sum(-1)
            - self.n_cov * torch.lgamma(self.gamma)
        )

    def _score(self, v, u, rate, phi_m):
        return -((self.gamma / rate) * u) @ self.C.T + torch.sigmoid(phi_m) @ self.W.T + self.b_visible - v

    def reconstruct(self, v: torch.Tensor) -> torch.Tensor:
        """One-step reconstruction (eq. 17): v − ∇F(v) = −C(ĥ^c ⊙ u) + W ĥ^m + b^v."""
        return v + self.score(v)

    def _theorem1_moments(self, v):
        # ∂E/∂vᵢ = vᵢ − b^v_i − Σⱼ Wᵢⱼ h^m_j + Σ_k h^c_k C_ik u_k ;  ∂²E/∂vᵢ² = 1 + Σ_k h^c_k C_ik²
        # Var[h^c_k | v] = γ / rate_k² = ĥ^c_k² / γ  (Swersky's ρ(x) = x²/γ)
        u, rate, phi_m = self._parts(v)
        hc, hm = self.gamma / rate, torch.sigmoid(phi_m)
        C2 = self.C**2
        g = v - self.b_visible - hm @ self.W.T + (hc * u) @ self.C.T
        var = (hc * hc / self.gamma * u * u) @ C2.T + rho_bernoulli(hm) @ (self.W**2).T
        curv = 1.0 + hc @ C2.T
        return g, var, curv

    def sm_terms(self, v: torch.Tensor, reduction: str = "mean") -> dict:
        """Closed-form SM objective of the mPoT (Swersky et al. 2011, eqs. 12 and 15–16).

            reconstruction = ½ Σᵢ ψᵢ²
            variance       = Σᵢ [Σ_k (ĥ^c_k²/γ) C_ik² u_k² + Σ_j ρ(ĥ^m_j) Wᵢⱼ²]
            curvature      = −Σᵢ [1 + Σ_k ĥ^c_k C_ik²]
            total          = J_SM;  cost O(B·n_visible·(n_cov + n_mean)), like one forward pass.
        """
        return super().sm_terms(v, reduction)

    def extra_repr(self) -> str:
        extra = "" if self.filter_norm is None else f", filter_norm={self.filter_norm!r}"
        return f"n_visible={self.n_visible}, n_cov={self.n_cov}, n_mean={self.n_mean}, gamma={float(self.gamma):.3g}{extra}"
