r"""MCMC (maximum-likelihood) estimators: CD-k, PCD, FPCD and CD with Langevin negatives.

The log-likelihood gradient of p(x) = exp(−E(x)) / Z has two terms,

.. math::
    -\nabla_\theta \tfrac1B\sum_b \log p(x_b)
    = \tfrac1B\sum_b \nabla_\theta E(x_b) - \mathbb{E}_{x\sim p_\theta}[\nabla_\theta E(x)],

a positive phase on the data and a negative phase under the model (Hinton 2002; lecture notes,
seed 003, eqs. for ∂ ln Z/∂θ). Every estimator here replaces the model expectation by an average
over negative samples x⁻ from a short MCMC run and returns the **surrogate**

.. math:: L(\theta) = \operatorname{mean}_b E(x^+_b) - \operatorname{mean}_m E(\operatorname{sg}[x^-_m]),

whose θ-gradient is exactly the estimate above (sg = stop-gradient: the samples are detached).
**Sign:** *descending* L lowers the energy of the data and raises that of the negatives, i.e.
it raises the probability of the data. The value of L is not a loss that must decrease (it
hovers near 0 at equilibrium); only its gradient matters.

Sampler: ``sampler="auto"`` uses block Gibbs (``model.gibbs_step``) when the model has one, else
unadjusted Langevin; ``"langevin"``, ``"mala"``, ``"hmc"`` and ``"gibbs"`` force one. ``k`` is
the number of sampler transitions per call (Gibbs sweeps, Langevin steps, MALA/HMC transitions).
The step size of MALA/HMC is kept tuned across calls (Robbins–Monro on the acceptance rate, or for
HMC Ranzato's running rule on the rejection rate) and is part of the state.

Each estimator owns a ``torch.Generator`` (seeded by ``seed``, or, if ``seed=None``, from the
global torch RNG at first use), so ``state_dict()`` / ``load_state_dict()`` restore chains, fast
weights, step size and generator state exactly (used by ``smlib.train.fit`` checkpoints).

References
----------
Hinton (2002), *Training products of experts by minimizing contrastive divergence* (CD-k).
Tieleman (2008), *Training RBMs using approximations to the likelihood gradient* (PCD).
Tieleman & Hinton (2009), *Using fast weights to improve persistent contrastive divergence* (FPCD).
Hyvärinen (2007); Saremi et al. (2018), eqs. 26–27 (Langevin negatives); Swersky et al. (2011), §4.
"""
from __future__ import annotations

import math

import torch

from smlib import samplers
from smlib._checks import check_choice, check_data, check_int, check_nonnegative, check_positive
from smlib.step_control import STEP_RULES, step_control_for

__all__ = ["MCMCEstimator", "CD", "PCD", "FPCD", "LangevinCD", "SAMPLERS", "STEP_RULES"]  # the one list of each

SAMPLERS = ("auto", "gibbs", "langevin", "mala", "hmc")


class MCMCEstimator:
    """Base class: negatives from ``k`` sampler transitions; see the module docstring.

    Parameters
    ----------
    k : int
        Sampler transitions per call.
    sampler : {"auto", "gibbs", "langevin", "mala", "hmc"}
    step_size : float
        Langevin/MALA step h or HMC leapfrog step ε (see :mod:`smlib.samplers` for the
        convention x' = x − h∇E + √(2h)ξ). Ignored by Gibbs.
    n_leapfrog : int
        HMC leapfrog steps per transition.
    noise_scale : float
        Multiplier of the Langevin noise (1 = correct Langevin).
    target_accept : float
        Robbins–Monro target acceptance for MALA/HMC step-size tuning (set ``adapt=False`` to
        keep ``step_size`` fixed).
    adapt : bool
    step_rule : {"robbins_monro", "reject_target"}; target_reject : float
        With ``adapt``: Robbins–Monro towards ``target_accept`` after each call, or (HMC only)
        Ranzato's rule towards ``target_reject`` rejections (:func:`smlib.step_control.step_control_for`).
    seed : int or None
    """

    persistent = False
    #: the settings :meth:`config` reports (each class adds its own)
    _SETTINGS = ("k", "sampler", "step_size", "n_leapfrog", "noise_scale", "target_accept", "adapt", "step_rule",
                 "target_reject", "seed")

    def __init__(
        self,
        k=1,
        *,
        sampler="auto",
        step_size=0.01,
        n_leapfrog=10,
        noise_scale=1.0,
        target_accept=0.65,
        adapt=True,
        step_rule="robbins_monro",
        target_reject=0.1,
        seed=None,
    ):
        k = check_int("k", k, 0)
        check_choice("sampler", sampler, SAMPLERS)
        check_positive("step_size", step_size)
        n_leapfrog = check_int("n_leapfrog", n_leapfrog)
        check_nonnegative("noise_scale", noise_scale)
        if not 0.0 < target_accept < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
        self.step_control = step_control_for(step_rule, step_size, target_reject, sampler, adapt)  # in checkpoints
        self.step_rule, self.target_reject = step_rule, float(target_reject)
        self.k = k
        self.sampler = sampler
        self.step_size = float(step_size)
        self.initial_step_size = self.step_size  # step_size itself adapts (MALA/HMC)
        self.n_leapfrog = n_leapfrog
        self.noise_scale = float(noise_scale)
        self.target_accept = float(target_accept)
        self.adapt = adapt
        self.seed = seed
        self.generator = None
        self.last_negatives = None
        self.last_accept_rate = None

    # -- randomness ------------------------------------------------------------------------
    def _gen(self, device):
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        old = self.generator
        if old is not None and old.device == device:
            return old
        if old is not None:  # data moved to another device: continue the stream there
            seed = int(torch.randint(0, 2**62, (1,), generator=old).item())
        elif self.seed is not None:
            seed = int(self.seed)
        else:  # derive from the global RNG, so that torch.manual_seed / fit(seed=) fix it
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        return self.generator

    # -- sampling --------------------------------------------------------------------------
    def _which_sampler(self, model):
        if self.sampler == "auto":
            return "gibbs" if hasattr(model, "gibbs_step") else "langevin"
        return self.sampler

    def run_chain(self, model, x0, k=None):
        """Run ``k`` transitions of the chosen sampler from ``x0``; returns detached samples."""
        k = self.k if k is None else k
        g = self._gen(x0.device)
        kind = self._which_sampler(model)
        if kind == "gibbs":
            return samplers.gibbs(model, x0, k, generator=g)
        if kind == "langevin":
            return samplers.langevin(model, x0, k, self.step_size, generator=g, noise_scale=self.noise_scale)
        if kind == "mala":
            x, info = samplers.mala(model, x0, k, self.step_size, generator=g, return_info=True)
        else:
            x, info = samplers.hmc(model, x0, k, self.n_leapfrog, self.step_size, adapt=False, generator=g,
                                   return_info=True, step_control=self.step_control)
        self.last_accept_rate = info["accept_rate"]
        if self.step_control is not None:
            self.step_size = self.step_control.step_size
        elif self.adapt and k > 0 and math.isfinite(info["accept_rate"]):
            self.step_size = samplers.robbins_monro(self.step_size, info["accept_rate"], self.target_accept)
        return x

    def negatives(self, model, x):
        """Negative samples x⁻ (detached) for the data batch ``x``."""
        raise NotImplementedError

    def __call__(self, model, x):
        r"""Surrogate mean E(x⁺) − mean E(sg[x⁻]); its θ-gradient is the estimator's update."""
        check_data(x, "x", getattr(model, "dim", None))
        x_neg = self.negatives(model, x).detach()
        self.last_negatives = x_neg
        energy = model.energy if hasattr(model, "energy") else model
        return energy(x).mean() - energy(x_neg).mean()

    # -- state -----------------------------------------------------------------------------
    def config(self) -> dict:
        """The settings (``step_size`` as first given) that a checkpoint records and compares on resume."""
        out = {name: getattr(self, name) for name in self._SETTINGS}
        out["step_size"] = self.initial_step_size
        return {"class": type(self).__name__, **out}

    def state_dict(self):
        """Plain dict of tensors / numbers (safe for ``torch.load(weights_only=True)``)."""
        return {
            "step_size": self.step_size,
            "seed": self.seed,
            "generator": None if self.generator is None else self.generator.get_state(),
            "generator_device": None if self.generator is None else str(self.generator.device),
            "step_control": None if self.step_control is None else self.step_control.state_dict(),
        }

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned."""
        self.step_size = float(state["step_size"])
        self.seed = state["seed"]
        if self.step_control is not None and state.get("step_control") is not None:
            self.step_control.load_state_dict(state["step_control"])
        if state["generator"] is None:
            self.generator = None
        else:
            g = torch.Generator(device=state["generator_device"])
            g.set_state(state["generator"])
            self.generator = g

    def __repr__(self):
        return f"{type(self).__name__}(k={self.k}, sampler={self.sampler!r})"


class CD(MCMCEstimator):
    r"""Contrastive divergence CD-k (Hinton 2002).

    Negatives: k sampler transitions started at the data batch, x⁻ = T^k(x⁺). Surrogate
    L = mean E(x⁺) − mean E(sg[x⁻]); its gradient is a biased estimate of the NLL gradient
    whose bias vanishes as k → ∞ (tested against the exact GRBM gradient). Takes ``k`` and the
    sampler options of :class:`MCMCEstimator`.
    """

    def negatives(self, model, x):
        return self.run_chain(model, x.detach())


class PCD(MCMCEstimator):
    r"""Persistent contrastive divergence (Younes 1989; Tieleman 2008).

    ``n_chains`` fantasy particles persist across calls; each call advances them by k sampler
    transitions under the current θ and uses them as negatives:
    L = mean_b E(x⁺_b) − mean_m E(sg[x⁻_m]). Chains are initialised on the first call from rows
    of the first data batch drawn at random with replacement (``init="data"``) or from N(0, I)
    (``init="noise"``). Takes ``n_chains``, ``k``, ``init`` and the sampler options of
    :class:`MCMCEstimator`.
    """

    persistent = True
    _SETTINGS = MCMCEstimator._SETTINGS + ("n_chains", "init")

    def __init__(self, n_chains=100, k=1, init="data", **kwargs):
        super().__init__(k, **kwargs)
        n_chains = check_int("n_chains", n_chains)
        check_choice("init", init, ("data", "noise"))
        self.n_chains = n_chains
        self.init = init
        self.chains = None

    def _init_chains(self, x):
        g = self._gen(x.device)
        if self.init == "data":
            idx = torch.randint(0, x.shape[0], (self.n_chains,), generator=g, device=x.device)
            return x.detach()[idx].clone()
        return torch.randn((self.n_chains, x.shape[1]), generator=g, device=x.device, dtype=x.dtype)

    def negatives(self, model, x):
        if self.chains is None or self.chains.shape[1] != x.shape[1]:
            self.chains = self._init_chains(x)
        self.chains = self.chains.to(device=x.device, dtype=x.dtype)
        self.chains = self.run_chain(model, self.chains)
        return self.chains

    def reset(self):
        """Forget the chains (they are re-initialised at the next call)."""
        self.chains = None

    def state_dict(self):
        s = super().state_dict()
        s["chains"] = None if self.chains is None else self.chains.detach().clone()
        return s

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.chains = None if state["chains"] is None else state["chains"].clone()


class FPCD(PCD):
    r"""Fast persistent contrastive divergence (Tieleman & Hinton 2009).

    Every parameter θ gets a *fast weight* θ_f (initially 0). The persistent chains are advanced
    under θ + θ_f, the model with fast weights; the surrogate and hence the regular update use
    θ alone. After each call the fast weights take the same gradient g = ∇_θ L with a larger
    rate and decay:

    .. math:: \theta_f \leftarrow \lambda\,\theta_f - \eta_f\, g,\qquad \lambda = \text{fast\_decay}

    (Tieleman & Hinton use λ = 19/20 and η_f equal to the regular learning rate early on). The
    fast weights push the model away from where the chains sit, so the chains mix faster; they
    decay to 0 when the chains stop being pushed.

    Implementation, generic over any ``nn.Module``: the fast weights are added in place to every
    parameter (under ``no_grad``) around the sampling step and the parameters are then restored
    bit-exactly from a copy; g is computed with ``torch.autograd.grad`` on the surrogate
    (``retain_graph=True``, one extra backward pass), so the training loop is unchanged.
    Weight decay and momentum of the optimiser do not enter g.

    Parameters
    ----------
    n_chains : int
    k : int
    fast_lr : float
        η_f > 0.
    fast_decay : float
        λ in [0, 1).
    **kwargs
        ``init`` and sampler options (see :class:`PCD`).
    """

    _SETTINGS = PCD._SETTINGS + ("fast_lr", "fast_decay")

    def __init__(self, n_chains=100, k=1, fast_lr=1e-2, fast_decay=0.95, **kwargs):
        super().__init__(n_chains, k, **kwargs)
        check_positive("fast_lr", fast_lr)
        if not 0.0 <= fast_decay < 1.0:
            raise ValueError(f"fast_decay must be in [0, 1), got {fast_decay!r}")
        self.fast_lr = float(fast_lr)
        self.fast_decay = float(fast_decay)
        self.fast = None  # dict name -> tensor

    @staticmethod
    def _params(model):
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def negatives(self, model, x):
        params = self._params(model)
        if self.fast is None:
            self.fast = {n: torch.zeros_like(p, memory_format=torch.preserve_format) for n, p in params}
        backup = []
        with torch.no_grad():
            for n, p in params:
                backup.append(p.detach().clone())
                p.add_(self.fast[n].to(p.device))
        try:
            return super().negatives(model, x)
        finally:
            with torch.no_grad():
                for (_, p), b in zip(params, backup):
                    p.copy_(b)

    def __call__(self, model, x):
        loss = super().__call__(model, x)
        params = self._params(model)
        grads = torch.autograd.grad(loss, [p for _, p in params], retain_graph=True, allow_unused=True)
        with torch.no_grad():
            for (n, _), g in zip(params, grads):
                f = self.fast[n]
                f.mul_(self.fast_decay)
                if g is not None:
                    f.add_(g.to(f.device), alpha=-self.fast_lr)
        return loss

    def state_dict(self):
        s = super().state_dict()
        s["fast"] = None if self.fast is None else {n: f.detach().clone() for n, f in self.fast.items()}
        return s

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.fast = None if state["fast"] is None else {n: f.clone() for n, f in state["fast"].items()}


class LangevinCD(MCMCEstimator):
    r"""CD with Langevin negatives (Hyvärinen 2007; Saremi et al. 2018, DEEN eqs. 26–27).

    Negatives from ``n_steps`` unadjusted Langevin steps started at the (optionally noisy) data:

    .. math::
        x_0 = x^+ + \tau\,\varepsilon,\qquad
        x_{t+1} = x_t - h\,\nabla_x E(x_t) + s\sqrt{2h}\,\nu_t,\qquad x^- = x_{n}

    with h = ``step_size``, s = ``noise_scale``, τ = ``init_noise`` (0: start at the data).
    DEEN's eq. 26 is one step with h = σ², s = 1 (σ = 0.1 in their 2-D runs); eq. 27 is SGD on
    the surrogate L = mean E(x⁺) − mean E(sg[x⁻]) (descending L: θ ← θ + ε[∇E(x⁻) − ∇E(x⁺)]).
    For one step and h → 0 its expected gradient is h times the score-matching gradient
    (Hyvärinen 2007) — DEEN report mode collapse at finite h.

    Parameters
    ----------
    n_steps : int
    step_size : float
    noise_scale : float
    init_noise : float
    seed : int, optional
    """

    _SETTINGS = ("n_steps", "step_size", "noise_scale", "init_noise", "seed")

    def __init__(self, n_steps=1, step_size=0.01, noise_scale=1.0, init_noise=0.0, seed=None):
        n_steps = check_int("n_steps", n_steps)
        super().__init__(n_steps, sampler="langevin", step_size=step_size, noise_scale=noise_scale, seed=seed)
        check_nonnegative("init_noise", init_noise)
        self.init_noise = float(init_noise)

    @property
    def n_steps(self):
        return self.k

    def negatives(self, model, x):
        x0 = x.detach()
        if self.init_noise > 0:
            g = self._gen(x.device)
            x0 = x0 + self.init_noise * torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
        return self.run_chain(model, x0)
