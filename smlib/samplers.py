"""MCMC samplers for energy-based models, batched over chains.

Every sampler draws from p(x) = exp(−E(x)) / Z (for latent models E is the free energy F),
runs many independent chains at once (one per row of ``x0``), returns *detached* samples (no
gradient flows into the parameters θ), and takes an optional ``torch.Generator`` so that a run
is reproducible. The model may be an ``EnergyModel`` (anything with ``energy(x) -> (B,)``) or a
plain callable ``x -> (B,)`` energy; ``langevin`` also accepts a score-only model
(``score(x) -> (B, d)``, e.g. ``ScoreMLP``).

Step-size convention (one for all three gradient samplers): with step size ``h``,

    x' = x − h ∇ₓE(x) + √(2h) ξ,   ξ ~ N(0, I),

which is the Euler–Maruyama discretisation of the Langevin diffusion dx = −∇E dt + √2 dW whose
stationary law is p. DEEN's eq. 26 (Saremi et al. 2018) is this update with h = σ². Papers
that write x' = x − (ε²/2)∇E + εξ use h = ε²/2.

References
----------
Roberts & Tweedie (1996), *Exponential convergence of Langevin distributions and their discrete
approximations* (ULA/MALA). Neal (2011), *MCMC using Hamiltonian dynamics* (HMC, leapfrog).
Hoffman & Gelman (2014), *The No-U-Turn Sampler*, §3.2 (dual-averaging step-size adaptation).
Hinton (2002) / Tieleman (2008): block Gibbs sampling in RBMs. Song & Ermon (2019), Alg. 1
(annealed Langevin dynamics); Efron (2011) / Miyasawa (1961): Tweedie's denoising step.
"""
from __future__ import annotations

import math

import torch

from smlib._checks import check_data, check_int, check_nonnegative, check_positive
from smlib.scores import energy_and_grad, has_closed_form_score, score
from smlib._progress import progress_bar

__all__ = ["energy_and_grad", "langevin", "mala", "hmc", "gibbs", "robbins_monro", "annealed_langevin"]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _grad_energy(model, x):
    """∇ₓE(x), detached: the closed-form score where the model has one (no energy evaluated)."""
    if has_closed_form_score(model):
        return -score(model, x, detach=True)
    return energy_and_grad(model, x)[1]


def _randn_like(x, generator):
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _rand(n, like, generator):
    return torch.rand((n,), generator=generator, device=like.device, dtype=like.dtype)


def robbins_monro(step_size, accept_rate, target_accept=0.65, gain=0.05):
    r"""One Robbins–Monro update of a step size towards a target acceptance rate.

    log h ← log h + γ (α − α*):  a larger step when the chains accept more than α*, smaller
    otherwise (Robbins & Monro 1951; Andrieu & Thoms 2008, §4). Used by the estimators to keep
    an HMC/MALA step size tuned while the model changes during training.
    """
    return float(step_size * math.exp(gain * (float(accept_rate) - target_accept)))


# ---------------------------------------------------------------------------------------------
# Langevin (unadjusted) and MALA
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def langevin(model, x0, n_steps, step_size, generator=None, noise_scale=1.0):
    r"""Unadjusted Langevin algorithm (ULA), batched over chains.

    .. math:: x_{t+1} = x_t - h\,\nabla_x E(x_t) + s\,\sqrt{2h}\,\xi_t,\qquad \xi_t\sim N(0,I)

    With noise scale s = 1 this is the Euler–Maruyama discretisation of the Langevin diffusion
    with stationary law p ∝ exp(−E); the chain is biased by O(h) (no Metropolis correction —
    see :func:`mala`). DEEN's CD negatives (Saremi et al. 2018, eq. 26) are one step with h = σ².
    s < 1 gives the "cold" Langevin often used in EBM practice (it samples exp(−E/s²)).

    Parameters
    ----------
    model : EnergyModel, callable energy, or score-only model (``score(x)``)
    x0 : torch.Tensor, shape (n_chains, d)
        Initial states (one chain per row).
    n_steps : int
        Number of Langevin steps (0 returns a detached copy of ``x0``).
    step_size : float
        h > 0.
    generator : torch.Generator, optional
        Source of the noise ξ (on ``x0.device``); ``None`` uses the global RNG.
    noise_scale : float
        s ≥ 0 (1 = correct Langevin).

    Returns
    -------
    torch.Tensor, shape (n_chains, d), detached.
    """
    check_data(x0, "x0")
    n_steps = check_int("n_steps", n_steps, 0)
    check_positive("step_size", step_size)
    check_nonnegative("noise_scale", noise_scale)
    x = x0.detach().clone()
    std = noise_scale * math.sqrt(2.0 * step_size)
    drift = (lambda y: score(model, y, detach=True)) if hasattr(model, "score") else (
        lambda y: -energy_and_grad(model, y)[1])  # a plain callable is an energy here
    for _ in range(n_steps):
        x = x + step_size * drift(x) + std * _randn_like(x, generator)
    return x


def _log_q(x_to, x_from, grad_from, h):
    """log q(x_to | x_from) (up to a constant) for the Langevin proposal N(x − h∇E, 2h I)."""
    return -((x_to - x_from + h * grad_from) ** 2).sum(1) / (4.0 * h)


@torch.no_grad()
def mala(model, x0, n_steps, step_size, generator=None, return_info=False):
    r"""Metropolis-adjusted Langevin algorithm (MALA), batched over chains.

    Proposal y = x − h∇E(x) + √(2h) ξ, i.e. q(y|x) = N(y; x − h∇E(x), 2h I); accept with
    probability

    .. math:: \alpha = \min\Big(1,\ \exp\big(E(x) - E(y) + \log q(x\mid y) - \log q(y\mid x)\big)\Big),

    so p ∝ exp(−E) is the exact stationary law (Roberts & Tweedie 1996). Each chain accepts or
    rejects independently.

    Parameters
    ----------
    model : EnergyModel or callable energy
    x0 : torch.Tensor, shape (n_chains, d)
    n_steps : int
    step_size : float
        h > 0.
    generator : torch.Generator, optional
    return_info : bool
        Also return ``{"accept_rate": float}`` (mean over chains and steps).

    Returns
    -------
    torch.Tensor (n_chains, d), detached; with ``return_info`` a tuple ``(x, info)``.
    """
    check_data(x0, "x0")
    n_steps = check_int("n_steps", n_steps, 0)
    check_positive("step_size", step_size)
    h = float(step_size)
    x = x0.detach().clone()
    e_x, g_x = energy_and_grad(model, x)
    accepted = 0.0
    for _ in range(n_steps):
        y = x - h * g_x + math.sqrt(2.0 * h) * _randn_like(x, generator)
        e_y, g_y = energy_and_grad(model, y)
        log_alpha = e_x - e_y + _log_q(x, y, g_y, h) - _log_q(y, x, g_x, h)
        log_u = torch.log(_rand(x.shape[0], x, generator))
        acc = (log_u < log_alpha) & torch.isfinite(e_y)
        x = torch.where(acc[:, None], y, x)
        e_x = torch.where(acc, e_y, e_x)
        g_x = torch.where(acc[:, None], g_y, g_x)
        accepted += float(acc.to(x.dtype).mean())
    if return_info:
        return x, {"accept_rate": accepted / max(n_steps, 1)}
    return x


# ---------------------------------------------------------------------------------------------
# HMC with dual-averaging step-size adaptation
# ---------------------------------------------------------------------------------------------
class _DualAveraging:
    """Nesterov dual averaging of log step size (Hoffman & Gelman 2014, Alg. 5, eqs. 5–6)."""

    def __init__(self, step_size, target, gamma=0.05, t0=10.0, kappa=0.75):
        self.mu = math.log(10.0 * step_size)
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.h_bar, self.log_eps_bar, self.t = 0.0, 0.0, 0

    def update(self, accept_prob):
        self.t += 1
        t = self.t
        eta = 1.0 / (t + self.t0)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept_prob)
        log_eps = self.mu - math.sqrt(t) / self.gamma * self.h_bar
        w = t ** (-self.kappa)
        self.log_eps_bar = w * log_eps + (1 - w) * self.log_eps_bar
        return math.exp(log_eps)

    @property
    def final(self):
        return math.exp(self.log_eps_bar)


@torch.no_grad()
def hmc(
    model,
    x0,
    n_steps,
    n_leapfrog=10,
    step_size=0.1,
    adapt=True,
    target_accept=0.65,
    n_adapt=None,
    jitter=0.1,
    generator=None,
    return_info=False,
    step_control=None,
):
    r"""Hamiltonian Monte Carlo with leapfrog integration, batched over chains.

    Hamiltonian H(x, r) = E(x) + ½‖r‖² (identity mass), r ~ N(0, I) redrawn each transition.
    Leapfrog with step ε for L steps (Neal 2011, eqs. 5.18–5.20):

    .. math::
        r_{1/2} = r - \tfrac{\varepsilon}{2}\nabla E(x),\quad
        x' = x + \varepsilon\, r_{1/2},\quad
        r' = r_{1/2} - \tfrac{\varepsilon}{2}\nabla E(x'),

    then accept with probability min(1, exp(H(x, r) − H(x', r'))), per chain. Each chain draws its
    own step ε·(1 + j·u), u ~ U(−1, 1), every transition (``jitter`` j; Neal 2011, §5.4.2.2): this
    breaks leapfrog periodicities that make acceptance non-monotone in ε on near-Gaussian targets.

    Step-size adaptation (``adapt=True``): during the first ``n_adapt`` transitions (default
    ``n_steps // 2``) dual averaging tunes ε on the mean acceptance probability towards
    ``target_accept`` (Hoffman & Gelman 2014, §3.2); then ε is frozen at the averaged iterate, so
    only the later transitions leave p invariant (discard the first ``n_adapt``). Running control
    (``step_control``, e.g. :class:`smlib.step_control.RejectionTargetStep`, Ranzato's rule to ≈ 10 %
    rejection): ε = ``step_control.step_size`` each transition, then ``step_control.update(rejected
    fraction)``; its state persists across calls (training).

    Parameters
    ----------
    model : EnergyModel or callable energy
    x0 : torch.Tensor, shape (n_chains, d)
    n_steps, n_leapfrog : int
        Number of HMC transitions; L, leapfrog steps per transition.
    step_size : float
        ε (initial value when adapting; ignored with ``step_control``).
    adapt, target_accept, n_adapt
        Dual averaging (off with ``step_control``; an explicit n_adapt > 0 with it is an error).
    jitter : float in [0, 1)
        Relative per-chain, per-transition randomisation of ε (0 = fixed ε).
    generator : torch.Generator, optional
    step_control : object with ``step_size`` and ``update(reject_rate)``, optional
    return_info : bool
        Also return ``{"accept_rate": mean acceptance probability after adaptation, "reject_rate":
        fraction of rejected proposals (same transitions), "step_size": final ε}`` — pass
        ``step_size=info["step_size"], adapt=False`` to continue.

    Returns
    -------
    torch.Tensor (n_chains, d), detached; with ``return_info`` a tuple ``(x, info)``.
    """
    check_data(x0, "x0")
    n_steps = check_int("n_steps", n_steps, 0)
    n_leapfrog = check_int("n_leapfrog", n_leapfrog, 0)
    check_positive("step_size", step_size)
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    if step_control is not None and adapt and n_adapt:
        raise ValueError("hmc: step_control and a dual-averaging warm-up (n_adapt > 0) are two step-size rules")
    n_adapt = 0 if not adapt or step_control is not None else (n_steps // 2 if n_adapt is None else n_adapt)
    n_adapt = check_int("n_adapt", n_adapt, 0)
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    da = _DualAveraging(step_size, target_accept) if n_adapt > 0 else None

    x = x0.detach().clone()
    e_x, g_x = energy_and_grad(model, x)
    eps = float(step_size)
    acc_sum, acc_n, rej_sum = 0.0, 0, 0.0
    for t in range(n_steps):
        r = _randn_like(x, generator)
        eps = eps if step_control is None else float(step_control.step_size)
        step = eps
        if jitter > 0:
            step = eps * (1.0 + jitter * (2.0 * _rand(x.shape[0], x, generator) - 1.0))[:, None]
        h0 = e_x + 0.5 * (r**2).sum(1)
        y, g_y = x, g_x
        p = r - 0.5 * step * g_y
        for i in range(n_leapfrog):
            y = y + step * p
            if i < n_leapfrog - 1:  # the energy is needed only at the end of the trajectory
                g_y = _grad_energy(model, y)
                p = p - step * g_y
            else:
                e_y, g_y = energy_and_grad(model, y)
                p = p - 0.5 * step * g_y
        if n_leapfrog == 0:
            e_y, p = e_x, r
        h1 = e_y + 0.5 * (p**2).sum(1)
        log_alpha = (h0 - h1).nan_to_num(nan=-math.inf)
        accept_prob = torch.exp(log_alpha.clamp(max=0.0))
        log_u = torch.log(_rand(x.shape[0], x, generator))
        acc = log_u < log_alpha
        x = torch.where(acc[:, None], y, x)
        e_x = torch.where(acc, e_y, e_x)
        g_x = torch.where(acc[:, None], g_y, g_x)
        mean_prob, rejected = float(accept_prob.mean()), 1.0 - float(acc.to(x.dtype).mean())
        if step_control is not None:
            step_control.update(rejected)
        if t < n_adapt:
            eps = da.update(mean_prob)
            if t == n_adapt - 1:
                eps = da.final
        else:
            acc_sum, rej_sum, acc_n = acc_sum + mean_prob, rej_sum + rejected, acc_n + 1
    if return_info:
        eps = eps if step_control is None else float(step_control.step_size)
        return x, {"accept_rate": acc_sum / acc_n if acc_n else float("nan"),
                   "reject_rate": rej_sum / acc_n if acc_n else float("nan"), "step_size": eps}
    return x


# ---------------------------------------------------------------------------------------------
# block Gibbs
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def gibbs(model, v0, k, generator=None):
    r"""k sweeps of block Gibbs sampling v → h → v through ``model.gibbs_step``.

    For an RBM-like model the conditionals factorise, so one sweep samples
    h ~ p(h | v) and then v ~ p(v | h) for all units of a layer at once (Hinton 2002); the chain
    v₀ → v₁ → … leaves the marginal p(v) = exp(−F(v)) / Z invariant. CD-k starts it at the data
    (Hinton 2002), PCD continues it across parameter updates (Tieleman 2008).

    Parameters
    ----------
    model : module with ``gibbs_step(v, generator=None) -> v'``
        (a tuple return is accepted; its first element is taken as v').
    v0 : torch.Tensor, shape (n_chains, n_visible)
    k : int
        Number of sweeps.
    generator : torch.Generator, optional

    Returns
    -------
    torch.Tensor (n_chains, n_visible), detached.
    """
    if not hasattr(model, "gibbs_step"):
        raise TypeError(f"{type(model).__name__} has no gibbs_step(v, generator=None); use langevin/mala/hmc")
    check_data(v0, "v0")
    k = check_int("k", k, 0)
    v = v0.detach().clone()
    for _ in range(k):
        out = model.gibbs_step(v, generator=generator)
        v = (out[0] if isinstance(out, (tuple, list)) else out).detach()
    return v


# ---------------------------------------------------------------------------------------------
# annealed Langevin dynamics over a noise ladder
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def annealed_langevin(model, x0, sigmas, n_steps_each, step_lr, generator=None, denoise=True, progress=False):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) with a final Tweedie step.

    For each level σ₁ > … > σ_L in turn, T = ``n_steps_each`` ULA steps on q_{σᵢ} with step
    αᵢ = ε σᵢ²/σ_L² (ε = ``step_lr``), in this module's convention h = αᵢ/2:

    .. math:: x \leftarrow x + \tfrac{\alpha_i}{2}\, s(x, \sigma_i) + \sqrt{\alpha_i}\,\xi,

    then (``denoise``) the posterior mean by Tweedie's formula, x ← x + σ_L² s(x, σ_L). αᵢ ∝ σᵢ²
    keeps the signal-to-noise ratio ‖αᵢ s‖/‖√αᵢ ξ‖ ≈ √αᵢ/σᵢ the same at every level.

    Parameters
    ----------
    model : noise-conditional model with ``score(x, sigma)`` (sigma a float)
    x0 : torch.Tensor, shape (n_chains, d)
    sigmas : sequence of float, strictly decreasing, > 0
    n_steps_each : int
        T ≥ 0 steps per level.
    step_lr : float
        ε > 0 (the step at the last level).
    generator : torch.Generator, optional
        Source of the noise ξ (on ``x0.device``); ``None`` uses the global RNG.
    denoise : bool
    progress : bool
        A ``tqdm`` bar over the levels.

    Returns
    -------
    torch.Tensor, shape (n_chains, d), detached.
    """
    check_data(x0, "x0")
    sig = [check_positive("sigmas", s) for s in sigmas]
    if not sig or any(a <= b for a, b in zip(sig[:-1], sig[1:])):
        raise ValueError(f"sigmas must be a non-empty, strictly decreasing sequence, got {list(sigmas)}")
    n_steps_each = check_int("n_steps_each", n_steps_each, 0)
    eps = check_positive("step_lr", step_lr)

    x = x0.detach().clone()
    for s in progress_bar(progress, sig, desc="annealed Langevin"):
        alpha = eps * (s / sig[-1]) ** 2
        for _ in range(n_steps_each):
            x = x + 0.5 * alpha * model.score(x, s) + math.sqrt(alpha) * _randn_like(x, generator)
    if denoise:
        x = x + sig[-1] ** 2 * model.score(x, sig[-1])
    return x.detach()
