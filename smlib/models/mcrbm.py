"""Mean–covariance RBM (Ranzato & Hinton 2010; Swersky et al. 2011, eqs. 10–12)."""
from __future__ import annotations

import math

import torch
from torch import nn

from smlib._checks import check_int
from smlib.models.gated import gated_gaussian_mean, sample_gated_gaussian
from smlib.models.base import (
    LatentGaussianModel,
    _check_input,
    rho_bernoulli,
    softplus,
)

__all__ = ["MCRBM"]


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


class MCRBM(LatentGaussianModel):
    r"""Mean–covariance RBM with binary covariance units h^c and binary mean units h^m.

    Joint energy (Swersky et al. 2011, eq. 10; Ranzato & Hinton 2010 without their input
    normalisation), with factor responses u_f = Σᵢ C_{if} vᵢ:

        E(v, h^c, h^m) = −½ Σ_{f,k} P_{fk} h^c_k u_f² − Σ_k b^c_k h^c_k
                         + ½‖v‖² − Σᵢⱼ vᵢ Wᵢⱼ h^m_j − Σⱼ b^m_j h^m_j − Σᵢ b^v_i vᵢ.

    The pooling matrix P (n_factors × n_cov) must be ≤ 0 so that p(v|h) is a proper Gaussian
    with precision Ω(h) = I − C diag(P h^c) Cᵀ ⪰ I and mean Ω⁻¹(b^v + W h^m). **We enforce it
    by parametrisation**, P = −softplus(P_raw) < 0, so any optimiser keeps it valid (no clamp
    step is needed). Free energy (eq. 11):

        F(v) = −Σ_k softplus(φ^c_k) − Σ_j softplus(φ^m_j) − b^v·v + ½‖v‖²,
        φ^c_k = ½ Σ_f P_{fk} u_f² + b^c_k,   φ^m_j = Σᵢ Wᵢⱼ vᵢ + b^m_j.

    Score: ψᵢ = Σ_k ĥ^c_k D_{ik} + Σ_j ĥ^m_j Wᵢⱼ + b^v_i − vᵢ with D_{ik} = Σ_f C_{if} u_f P_{fk},
    ĥ^c = sigm(φ^c), ĥ^m = sigm(φ^m) (eq. 12). The implied autoencoder reconstruction is the
    unit-step gradient step v − ∇F(v) = v + ψ(v).

    Parameters
    ----------
    n_visible, n_factors, n_cov, n_mean : int
        Visible units, factors (columns of C), covariance hidden units, mean hidden units.

    Attributes
    ----------
    C : (n_visible, n_factors);  P_raw : (n_factors, n_cov) (P = −softplus(P_raw));
    W : (n_visible, n_mean);  b_cov : (n_cov,);  b_mean : (n_mean,);  b_visible : (n_visible,).
    """

    def __init__(self, n_visible: int, n_factors: int, n_cov: int, n_mean: int):
        n_visible, n_factors, n_cov = (check_int(k, v) for k, v in (("n_visible", n_visible), ("n_factors", n_factors),
                                                                      ("n_cov", n_cov)))
        n_mean = check_int("n_mean", n_mean, 0)
        super().__init__(n_visible)
        self.n_visible, self.n_factors = int(n_visible), int(n_factors)
        self.n_cov, self.n_mean = int(n_cov), int(n_mean)
        self.C = nn.Parameter(torch.randn(n_visible, n_factors) / math.sqrt(n_visible))
        # initial pooling: ≈ −I for a square P (each covariance unit pools one factor; entries
        # off the diagonal −2.5e-3 since softplus never reaches 0), else random in −[0.5, 1.5]/F.
        if n_factors == n_cov:
            target = torch.eye(n_factors) + 2.5e-3
        else:
            target = 0.5 + torch.rand(n_factors, n_cov)
            target = target / n_factors
        self.P_raw = nn.Parameter(_inverse_softplus(target))
        self.W = nn.Parameter(torch.randn(n_visible, n_mean) / math.sqrt(n_visible + n_mean))
        self.b_cov = nn.Parameter(torch.zeros(n_cov))
        self.b_mean = nn.Parameter(torch.zeros(n_mean))
        self.b_visible = nn.Parameter(torch.zeros(n_visible))

    @property
    def P(self) -> torch.Tensor:
        """Pooling matrix P = −softplus(P_raw) (strictly negative), shape (n_factors, n_cov)."""
        return -softplus(self.P_raw)

    @P.setter
    def P(self, value: torch.Tensor) -> None:
        """Set P (e.g. a topographic pooling) by writing P_raw = softplus⁻¹(−P); needs P < 0."""
        value = torch.as_tensor(value, dtype=self.P_raw.dtype, device=self.P_raw.device)
        if value.shape != self.P_raw.shape:
            raise ValueError(f"P must have shape {tuple(self.P_raw.shape)}, got {tuple(value.shape)}")
        if not bool((value < 0).all()):
            raise ValueError("P must be strictly negative (P = −softplus(P_raw))")
        with torch.no_grad():
            self.P_raw.copy_(_inverse_softplus(-value))

    # ----------------------------------------------------------------- hidden inputs
    def factor_response(self, v: torch.Tensor) -> torch.Tensor:
        """u = Cᵀv per sample, shape (B, n_factors)."""
        return v @ self.C

    def _phi(self, v):
        _check_input(self, v, "v")
        u = self.factor_response(v)
        phi_c = 0.5 * (u * u) @ self.P + self.b_cov
        phi_m = v @ self.W + self.b_mean
        return u, phi_c, phi_m

    def hidden_means(self, v: torch.Tensor):
        """(p(h^c=1|v), p(h^m=1|v)) = (sigm(φ^c), sigm(φ^m)), shapes (B, n_cov), (B, n_mean)."""
        _, phi_c, phi_m = self._phi(v)
        return torch.sigmoid(phi_c), torch.sigmoid(phi_m)

    p_h_given_v = hidden_means

    def _precision_scale(self, h_cov: torch.Tensor) -> torch.Tensor:
        return -(h_cov @ self.P.T)  # s_f = −Σ_k P_fk h^c_k ≥ 0

    def mean_v_given_h(self, h) -> torch.Tensor:
        """E[v | h^c, h^m] = Ω⁻¹(b^v + W h^m), Ω = I − C diag(P h^c) Cᵀ; ``h = (h_cov, h_mean)``."""
        h_cov, h_mean = h
        return gated_gaussian_mean(self.C, self._precision_scale(h_cov), self.b_visible + h_mean @ self.W.T)

    @torch.no_grad()
    def sample_h(self, v: torch.Tensor, generator: torch.Generator | None = None):
        """Sample (h^c, h^m) ~ p(h|v): independent Bernoulli units."""
        p_c, p_m = self.hidden_means(v)
        return torch.bernoulli(p_c, generator=generator), torch.bernoulli(p_m, generator=generator)

    @torch.no_grad()
    def sample_v(self, h, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample v ~ N(Ω⁻¹(b^v + W h^m), Ω⁻¹), Ω = I − C diag(P h^c) Cᵀ; ``h = (h_cov, h_mean)``."""
        h_cov, h_mean = h
        return sample_gated_gaussian(
            self.C, self._precision_scale(h_cov), self.b_visible + h_mean @ self.W.T, generator
        )

    @torch.no_grad()
    def gibbs_step(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One block-Gibbs sweep v → (h^c, h^m) → v' using the exact conditionals."""
        return self.sample_v(self.sample_h(v, generator), generator)

    # ----------------------------------------------------------------- energies
    def joint_energy(self, v: torch.Tensor, h_cov: torch.Tensor, h_mean: torch.Tensor) -> torch.Tensor:
        """E(v, h^c, h^m) of eq. 10, shape (B,)."""
        u = self.factor_response(v)
        cov = -0.5 * ((u * u) * (h_cov @ self.P.T)).sum(-1) - h_cov @ self.b_cov
        mean = -((v @ self.W) * h_mean).sum(-1) - h_mean @ self.b_mean
        return cov + mean + 0.5 * (v * v).sum(-1) - v @ self.b_visible

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = −Σ_k softplus(φ^c_k) − Σ_j softplus(φ^m_j) − b^v·v + ½‖v‖² (eq. 11), shape (B,)."""
        _, phi_c, phi_m = self._phi(v)
        return (
            -softplus(phi_c).sum(-1)
            - softplus(phi_m).sum(-1)
            - v @ self.b_visible
            + 0.5 * (v * v).sum(-1)
        )

    def score(self, v: torch.Tensor) -> torch.Tensor:
        """ψ = C(u ⊙ P ĥ^c) + W ĥ^m + b^v − v (eq. 12), shape (B, n_visible)."""
        u, phi_c, phi_m = self._phi(v)
        hc, hm = torch.sigmoid(phi_c), torch.sigmoid(phi_m)
        return (u * (hc @ self.P.T)) @ self.C.T + hm @ self.W.T + self.b_visible - v

    def reconstruct(self, v: torch.Tensor) -> torch.Tensor:
        """mcRBM autoencoder reconstruction v − ∇F(v) = Σ_k ĥ^c_k D_{·k} + W ĥ^m + b^v."""
        return v + self.score(v)

    def _theorem1_moments(self, v):
        # ∂E/∂vᵢ = vᵢ − b^v_i − Σⱼ Wᵢⱼ h^m_j − Σ_k h^c_k D_ik,   D_ik = Σ_f C_if u_f P_fk
        # ∂²E/∂vᵢ² = 1 − Σ_k h^c_k K_ik,                         K_ik = Σ_f P_fk C_if²
        u, phi_c, phi_m = self._phi(v)
        hc, hm = torch.sigmoid(phi_c), torch.sigmoid(phi_m)
        P = self.P
        D = (self.C * u[:, None, :]) @ P  # (B, n_visible, n_cov)
        g = v - self.b_visible - hm @ self.W.T - (D @ hc.unsqueeze(-1)).squeeze(-1)
        var = ((D * D) @ rho_bernoulli(hc).unsqueeze(-1)).squeeze(-1) + rho_bernoulli(hm) @ (self.W**2).T
        curv = 1.0 - (hc @ P.T) @ (self.C**2).T
        return g, var, curv

    def sm_terms(self, v: torch.Tensor, reduction: str = "mean") -> dict:
        """Closed-form SM objective of the mcRBM (Swersky et al. 2011, eq. 12) in Theorem-1 terms.

            reconstruction = ½ Σᵢ ψᵢ²
            variance       = Σᵢ [Σ_k ρ(ĥ^c_k) D_ik² + Σ_j ρ(ĥ^m_j) Wᵢⱼ²],   ρ(p) = p(1 − p)
            curvature      = −Σᵢ [1 − Σ_k ĥ^c_k K_ik],   K_ik = Σ_f P_fk C_if²
            total          = J_SM.

        Cost: the factor-by-unit tensor D costs O(B·n_visible·n_factors·n_cov) for a dense P,
        against O(B·n_visible·(n_factors + n_mean)) for the score (about 20× a DSM step at
        n_visible = 105, n_factors = n_cov = 256 on CPU).
        """
        return super().sm_terms(v, reduction)

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_factors={self.n_factors}, n_cov={self.n_cov}, n_mean={self.n_mean}"
