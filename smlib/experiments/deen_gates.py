"""Health gates shared by the DEEN experiments (`deen_2d`, `deen_mnist`, `deen_patches`).

A network trained by denoising score matching whose score is zero everywhere has
L_DEEN = 2σ⁴ J_DSM = 2σ⁴ · ½ E‖ε/σ‖² = σ²d — the zero-score level (Saremi et al. 2018, eq. 19 with
ψ ≡ 0). A run whose final loss stays within 2 % of it learnt nothing a rule can read
(`smlib.experiments.verdicts.ended_at_trivial`).
"""
from __future__ import annotations

import numpy as np

from smlib.experiments import verdicts as V

__all__ = ["final_loss", "zero_score_gate"]


def final_loss(logs) -> float:
    """The final loss of a run: the mean of the last tenth of its logged values (one log's noise averaged)."""
    logs = list(logs)
    if not logs:
        raise ValueError("no logged loss")
    return float(np.mean(logs[-max(1, len(logs) // 10):]))


def zero_score_gate(l_deen_logs, sigma: float, d: int, what: str = "L_DEEN") -> V.Gate:
    """Fails when the final L_DEEN is ≥ 0.98 σ²d, the loss of ψ ≡ 0."""
    return V.ended_at_trivial(final_loss(l_deen_logs), sigma**2 * d, f"{what} (zero-score level σ²d = {sigma**2 * d:.4g})")
