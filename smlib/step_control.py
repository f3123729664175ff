"""Ranzato's running HMC step-size rule: hold the rejection rate near a target (≈ 10 %) during training."""
from __future__ import annotations

import math

__all__ = ["RejectionTargetStep", "STEP_RULES", "step_control_for"]

#: how an MCMC estimator's MALA/HMC step size adapts during training (`smlib.mcmc`)
STEP_RULES = ("robbins_monro", "reject_target")


def step_control_for(step_rule: str, step_size: float, target_reject: float, sampler: str, adapt: bool):
    """The running controller an estimator carries across calls: a :class:`RejectionTargetStep` for
    ``step_rule="reject_target"`` (HMC only; Ranzato's rule), None for Robbins–Monro (applied per call
    by the estimator) or when ``adapt`` is off. ValueError naming the option otherwise."""
    if step_rule not in STEP_RULES:
        raise ValueError(f"step_rule must be one of {', '.join(map(repr, STEP_RULES))}; got {step_rule!r}")
    if step_rule == "reject_target" and sampler != "hmc":
        raise ValueError(f"step_rule='reject_target' (Ranzato's rule) adapts HMC only; got sampler={sampler!r}")
    if step_rule != "reject_target" or not adapt:
        return None
    return RejectionTargetStep(step_size, target_reject=target_reject)


class RejectionTargetStep:
    r"""Multiplicative step-size control towards a target rejection rate (Ranzato's mcRBM/mPoT code).

    After each HMC transition in which a fraction ρ of the chains was rejected,

    .. math::
        \bar\rho \leftarrow d\,\bar\rho + (1-d)\,\rho,\qquad
        \varepsilon \leftarrow \begin{cases} \min(u\,\varepsilon,\ \varepsilon_{\max}) & \bar\rho < \rho^* \\
                                             \max(w\,\varepsilon,\ \varepsilon_{\min}) & \text{otherwise,}\end{cases}

    with ρ̄₀ = ρ*. Ranzato's values: ρ* = 0.1, d = 0.9, u = 1.01, w = 0.99, ε ∈ [0.001, 0.25],
    ε₀ = 0.01 (his code used 20 leapfrog steps; this project keeps 10). A larger step raises the
    leapfrog energy error and so the rejection rate, so the rule settles where ρ̄ ≈ ρ*, dithering
    by a factor ≈ 1.01. It is a running adaptation across parameter updates: the chain it drives
    is not time-homogeneous, which is accepted for the negative phase of training (the target
    moves anyway); for sampling a fixed model freeze ε afterwards.

    Pass it as ``smlib.samplers.hmc(..., step_control=rule)`` (updated after every transition),
    or call :meth:`update` yourself with a transition's rejected fraction.

    Parameters
    ----------
    step_size : float
        ε₀.
    target_reject : float in (0, 1)
        ρ*.
    decay : float in [0, 1)
        d, the running average's memory (0.9: about ten transitions).
    up, down : float
        u > 1 and w ∈ (0, 1).
    min_step, max_step : float
        Bounds 0 < ε_min ≤ ε₀ ≤ ε_max.
    """

    def __init__(self, step_size=0.01, target_reject=0.1, decay=0.9, up=1.01, down=0.99, min_step=1e-3,
                 max_step=0.25):
        vals = dict(step_size=step_size, target_reject=target_reject, decay=decay, up=up, down=down,
                    min_step=min_step, max_step=max_step)
        for name, v in vals.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if not 0 < target_reject < 1:
            raise ValueError(f"target_reject must be in (0, 1), got {target_reject!r}")
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        if not (up > 1 and 0 < down < 1):
            raise ValueError(f"need up > 1 and 0 < down < 1, got up={up!r}, down={down!r}")
        if not 0 < min_step <= step_size <= max_step:
            raise ValueError(f"need 0 < min_step <= step_size <= max_step, got {min_step!r}, {step_size!r}, {max_step!r}")
        self.step_size, self.target_reject, self.decay = float(step_size), float(target_reject), float(decay)
        self.up, self.down, self.min_step, self.max_step = float(up), float(down), float(min_step), float(max_step)
        self.initial_step_size = self.step_size
        self.ave_reject = self.target_reject

    def update(self, reject_rate: float) -> float:
        """Fold one transition's rejected fraction ρ ∈ [0, 1] into ρ̄ and return the new ε."""
        rho = float(reject_rate)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"reject_rate must be in [0, 1], got {reject_rate!r}")
        self.ave_reject = self.decay * self.ave_reject + (1.0 - self.decay) * rho
        if self.ave_reject < self.target_reject:
            self.step_size = min(self.step_size * self.up, self.max_step)
        else:
            self.step_size = max(self.step_size * self.down, self.min_step)
        return self.step_size

    def config(self) -> dict:
        """The settings (ε as first given), for a checkpoint to compare on resume."""
        return {"class": type(self).__name__, "step_size": self.initial_step_size, "target_reject": self.target_reject,
                "decay": self.decay, "up": self.up, "down": self.down, "min_step": self.min_step,
                "max_step": self.max_step}

    def state_dict(self) -> dict:
        return {"step_size": self.step_size, "ave_reject": self.ave_reject}

    def load_state_dict(self, state: dict) -> None:
        self.step_size, self.ave_reject = float(state["step_size"]), float(state["ave_reject"])

    def __repr__(self):
        return (f"RejectionTargetStep(step_size={self.step_size:.4g}, target_reject={self.target_reject:g}, "
                f"ave_reject={self.ave_reject:.3f})")
