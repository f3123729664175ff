r"""Evaluation metrics for energy and score models.

Scalar metrics return 0-d tensors (detached; they format like floats: ``f"{m:.3f}"``),
per-sample metrics return (B,) tensors, and nothing here builds a graph into θ.

=============================  ===============================================================
`free_energy_gap`              mean F(x̃) − mean F(x), x̃ = x + σ_n ε  (Swersky et al. 2011, §5)
`denoise_mean_field`           one reconstruction step x^r(x̃) (Swersky et al. 2011, eq. 17)
`denoise_conditional_mean`     E[v | ĥ(x̃)], the mean-field step of Swersky et al. (2011, §4.2)
`denoise_map`                  argmin_v F(v) + λ/2 ‖v − x̃‖²
`select_map_lambda`            λ of the MAP denoiser with the lowest validation error
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
`gabor_stats`                  fraction of Gabor-like filters by a least-squares Gabor fit (Fig. 2)
=============================  ===============================================================
"""
from __future__ import annotations

from smlib.metrics._common import score_on
from smlib.metrics.denoising import (denoise_conditional_mean, denoise_map, denoise_mean_field, denoise_tweedie,
                                     free_energy_gap, mse, select_map_lambda)
from smlib.metrics.filters import fit_gabor, gabor, gabor_stats
from smlib.metrics.fields import curl_2d, fisher_divergence, grid_2d, jacobian, jacobian_asymmetry
from smlib.metrics.likelihood import (grbm_exact_gradient, grbm_exact_log_likelihood, grbm_exact_phases,
                                      kl_grid_2d, log_likelihood_grid_2d)
from smlib.metrics.probes import linear_probe_accuracy

__all__ = [
    "free_energy_gap", "denoise_mean_field", "denoise_conditional_mean", "denoise_map", "denoise_tweedie", "mse", "select_map_lambda", "grid_2d", "score_on",
    "curl_2d", "jacobian", "jacobian_asymmetry", "fisher_divergence", "log_likelihood_grid_2d", "kl_grid_2d",
    "grbm_exact_log_likelihood", "grbm_exact_phases", "grbm_exact_gradient", "linear_probe_accuracy",
    "gabor", "fit_gabor", "gabor_stats",
]
