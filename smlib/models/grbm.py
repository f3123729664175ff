"""Gaussian–binary restricted Boltzmann machine (Swersky et al. 2011, eqs. 6–9)."""
from __future__ import annotations

import math

import torch
from torch import nn

from smlib._checks import check_int, check_positive
from smlib.models.base import LatentGaussianModel, _check_input, learnable_or_fixed, rho_bernoulli, softplus

__all__ = ["GRBM"]

_MAX_ENUM_HIDDEN = 20


class GRBM(LatentGaussianModel):
    r"""Gaussian–binary RBM: Gaussian visible units v ∈ ℝ^{n_v}, binary hidden h ∈ {0,1}^{n_h}.

    Joint energy (Swersky et al. 2011, eq. 6, with one shared σ):

        E(v, h) = ‖v − c‖² / (2σ²) − vᵀ W h / σ² − bᵀ h,

    so that p(v|h) = N(c + W h, σ² I) and p(h_j = 1 | v) = sigm(vᵀW_j / σ² + b_j).
    Summing out h gives the free energy (eq. 7)

        F(v) = ‖v − c‖² / (2σ²) − Σ_j softplus(vᵀW_j / σ² + b_j),

    and the score ψ(v) = (c + W ĥ − v) / σ² with ĥ = p(h=1|v). The tied-weight autoencoder
    reconstruction x^r = c + W ĥ is one gradient step on F of size σ²: x^r = v − σ² ∇F(v).

    Parameters
    ----------
    n_visible, n_hidden : int
        Numbers of visible and hidden units (``n_hidden = 0`` gives the Gaussian N(c, σ²I)).
    sigma : float
        Visible standard deviation σ.
    learn_sigma : bool
        If True, σ is learned through the parameter ``log_sigma``; otherwise it is a buffer.

    Attributes
    ----------
    W : (n_visible, n_hidden) parameter;  b : (n_hidden,) hidden biases;  c : (n_visible,) visible biases.
    """

    def __init__(self, n_visible: int, n_hidden: int, sigma: float = 1.0, learn_sigma: bool = False):
        n_visible, n_hidden = check_int("n_visible", n_visible), check_int("n_hidden", n_hidden, 0)
        super().__init__(n_visible)
        sigma = check_positive("sigma", sigma)
        self.n_visible, self.n_hidden = int(n_visible), int(n_hidden)
        std = 1.0 / math.sqrt(n_visible + n_hidden)
        self.W = nn.Parameter(std * torch.randn(n_visible, n_hidden))
        self.b = nn.Parameter(torch.zeros(n_hidden))
        self.c = nn.Parameter(torch.zeros(n_visible))
        log_sigma = torch.tensor(math.log(sigma), dtype=torch.get_default_dtype())
        learnable_or_fixed(self, "log_sigma", log_sigma, learn_sigma)

    @property
    def sigma(self) -> torch.Tensor:
        """Visible standard deviation σ = exp(log_sigma)."""
        return self.log_sigma.exp()

    # ----------------------------------------------------------------- conditionals
    def hidden_input(self, v: torch.Tensor) -> torch.Tensor:
        """Hidden pre-activations φ_j(v) = vᵀW_j / σ² + b_j, shape (B, n_hidden)."""
        return v @ self.W / self.sigma**2 + self.b

    def p_h_given_v(self, v: torch.Tensor) -> torch.Tensor:
        """p(h_j = 1 | v) = sigm(vᵀW_j / σ² + b_j), shape (B, n_hidden)."""
        _check_input(self, v, "v")
        return torch.sigmoid(self.hidden_input(v))

    def hidden_means(self, v: torch.Tensor) -> torch.Tensor:
        """E[h | v] = p(h = 1 | v) (same as :meth:`p_h_given_v`)."""
        return self.p_h_given_v(v)

    def mean_v_given_h(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h] = c + W h, shape (B, n_visible)."""
        return self.c + h @ self.W.T

    @torch.no_grad()
    def sample_h(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample h ~ p(h|v) (independent Bernoulli units), shape (B, n_hidden)."""
        return torch.bernoulli(self.p_h_given_v(v), generator=generator)

    @torch.no_grad()
    def sample_v(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample v ~ p(v|h) = N(c + W h, σ² I), shape (B, n_visible)."""
        mean = self.mean_v_given_h(h)
        noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
        return mean + self.sigma * noise

    @torch.no_grad()
    def gibbs_step(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One block-Gibbs sweep v → h ~ p(h|v) → v' ~ p(v|h); returns v'."""
        return self.sample_v(self.sample_h(v, generator), generator)

    # ----------------------------------------------------------------- energies
    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) = ‖v − c‖²/(2σ²) − vᵀWh/σ² − bᵀh, shape (B,) (eq. 6)."""
        s2 = self.sigma**2
        return ((v - self.c) ** 2).sum(-1) / (2 * s2) - ((v @ self.W) * h).sum(-1) / s2 - h @ self.b

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = ‖v − c‖²/(2σ²) − Σ_j softplus(vᵀW_j/σ² + b_j), shape (B,) (eq. 7)."""
        _check_input(self, v, "v")
        quad = ((v - self.c) ** 2).sum(-1) / (2 * self.sigma**2)
        return quad - softplus(self.hidden_input(v)).sum(-1)

    def score(self, v: torch.Tensor) -> torch.Tensor:
        """ψ(v) = −∇F(v) = (c + W ĥ − v)/σ² = (reconstruct(v) − v)/σ², shape (B, n_visible)."""
        return (self.reconstruct(v) - v) / self.sigma**2

    def reconstruct(self, v: torch.Tensor) -> torch.Tensor:
        """Tied-weight autoencoder reconstruction x^r = c + W sigm(Wᵀv/σ² + b) = v − σ²∇F(v)."""
        return self.mean_v_given_h(self.p_h_given_v(v))

    def _theorem1_moments(self, v):
        # ∂E/∂vᵢ = (vᵢ − cᵢ)/σ² − Σⱼ Wᵢⱼ hⱼ/σ²;  ∂²E/∂vᵢ² = 1/σ²;  h independent Bernoulli(ĥ)
        s2 = self.sigma**2
        h_mean = self.p_h_given_v(v)
        g = (v - self.mean_v_given_h(h_mean)) / s2
        var = rho_bernoulli(h_mean) @ (self.W**2).T / s2**2
        curv = (1.0 / s2) * torch.ones_like(v)
        return g, var, curv

    def sm_terms(self, v: torch.Tensor, reduction: str = "mean") -> dict:
        """Closed-form SM objective of the GRBM (Swersky et al. 2011, eq. 8) in Theorem-1 terms.

            reconstruction = ½ ‖v − c − W ĥ‖² / σ⁴            (tied-weight autoencoder error)
            variance       = Σᵢⱼ Wᵢⱼ² ĥⱼ(1 − ĥⱼ) / σ⁴
            curvature      = −n_visible / σ²
            total          = J_SM = mean_B[½‖ψ‖² + ∇·ψ],  ĥ = sigm(Wᵀv/σ² + b).

        See `LatentGaussianModel.sm_terms` for ``reduction``.
        """
        return super().sm_terms(v, reduction)

    # ----------------------------------------------------------------- enumeration (n_hidden ≤ 20)
    def _check_enumerable(self, what: str) -> None:
        if self.n_hidden > _MAX_ENUM_HIDDEN:
            raise ValueError(
                f"{what} enumerates 2^n_hidden states; n_hidden={self.n_hidden} exceeds the limit "
                f"{_MAX_ENUM_HIDDEN} (use an estimator such as AIS or an MCMC sampler instead)"
            )

    def _hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Binary hidden states h whose bits are the integers ``idx``, shape (len(idx), n_hidden)."""
        bits = torch.arange(self.n_hidden, device=idx.device)
        return ((idx[:, None] >> bits) & 1).to(self.W.dtype)

    def _hidden_log_weights(self):
        """Yield log w(h) in chunks over all 2^{n_h} states h (in the order of `_hidden_states`).

        ∫ exp(−E(v, h)) dv = (2πσ²)^{n_v/2} w(h),  log w(h) = bᵀh + (‖c + Wh‖² − ‖c‖²)/(2σ²)
        (complete the square in v), so p(h) = w(h) / Σ_h' w(h').
        """
        s2 = self.sigma**2
        c2 = (self.c**2).sum()
        n_states = 1 << self.n_hidden
        chunk = 1 << min(self.n_hidden, 14)
        for start in range(0, n_states, chunk):
            idx = torch.arange(start, min(start + chunk, n_states), device=self.W.device)
            h = self._hidden_states(idx)
            m = self.c + h @ self.W.T
            yield h @ self.b + ((m**2).sum(-1) - c2) / (2 * s2)

    def log_partition(self) -> torch.Tensor:
        """Exact log Z by enumerating all 2^{n_hidden} hidden states (n_hidden ≤ 20).

        For fixed h the v-integral is Gaussian (complete the square in E(v, h)):

            ∫ exp(−E(v,h)) dv = (2πσ²)^{n_v/2} exp(bᵀh + (‖c + Wh‖² − ‖c‖²) / (2σ²)),

        so log Z = (n_v/2) log(2πσ²) + logsumexp_h [bᵀh + (‖c + Wh‖² − ‖c‖²)/(2σ²)].
        Differentiable in θ (the exact maximum-likelihood gradient for small models).
        """
        self._check_enumerable("log_partition")
        parts = [torch.logsumexp(log_w, dim=0) for log_w in self._hidden_log_weights()]
        log_gauss = 0.5 * self.n_visible * torch.log(2 * math.pi * self.sigma**2)
        return log_gauss + torch.logsumexp(torch.stack(parts), dim=0)

    @torch.no_grad()
    def sample_exact(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact (independent) samples of p(v) = exp(−F(v))/Z by ancestral sampling, shape (n, n_visible).

        The hidden marginal is p(h) ∝ exp(bᵀh + (‖c + Wh‖² − ‖c‖²)/(2σ²)) (see
        :meth:`log_partition`); it is enumerated over all 2^{n_hidden} states (n_hidden ≤ 20),
        h ~ p(h) is drawn from it, then v ~ p(v|h) = N(c + Wh, σ²I). No Markov chain, so no
        burn-in or mixing error: the reference against which Gibbs, CD and PCD chains are judged
        (the exact negative phase of Hinton 2002 / Swersky et al. 2011 on a small model).

        Parameters
        ----------
        n : int
            Number of samples.
        generator : torch.Generator, optional
            Makes the draws reproducible.

        Returns
        -------
        torch.Tensor (n, n_visible), detached.
        """
        self._check_enumerable("sample_exact")
        n = check_int("n", n)
        log_w = torch.cat(list(self._hidden_log_weights()))
        probs = torch.softmax(log_w, dim=0)
        idx = torch.multinomial(probs, int(n), replacement=True, generator=generator)
        return self.sample_v(self._hidden_states(idx), generator)

    def extra_repr(self) -> str:
        learn = isinstance(self.log_sigma, nn.Parameter)
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, learn_sigma={learn}"
