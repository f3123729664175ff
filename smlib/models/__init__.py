"""Energy-based models and score models (see each class for its exact energy).

================  ========================================================================  =====================
class             energy / score                                                            source
================  ========================================================================  =====================
`GRBM`            F(v) = ‖v−c‖²/2σ² − Σⱼ softplus(vᵀWⱼ/σ² + bⱼ)                             Swersky et al. 2011
`MCRBM`           F(v) = −Σ softplus(φ^c) − Σ softplus(φ^m) − b^v·v + ½‖v‖²                 Ranzato & Hinton 2010
`MPoT`            F(v) = γ Σ log(1+½(Cᵀv)²) − Σ softplus(φ^m) − b^v·v + ½‖v‖² − n log Γ(γ)  Ranzato et al. 2010
`DAEEnergy`       E(x) = −(⟨c,x⟩ − ½‖x‖² + Σ softplus(Wx+b))/σ²                             Vincent 2011
`GaussianEnergy`  E(x) = ½(x−μ)ᵀP(x−μ), P = LLᵀ ≻ 0                                         Hyvärinen 2005
`MLPEnergy`       E(x) = MLP(x) with a linear last layer                                    Saremi et al. 2018
`ScoreMLP`        ψ(x) = MLP(x) ∈ ℝ^d, no energy                                            Saremi et al. 2018
================  ========================================================================  =====================

All energy models: ``model(x) == model.energy(x)`` (shape (B,)), ``model.score(x) = −∇ₓE``
(shape (B, d)), attribute ``dim``. An energy E(x) = f(W₁x + b₁) with a linear first layer gets
exact second derivatives in the first layer's pre-activation space from the mixin
`FirstLayerLaplacian` (protocol `FirstLinearEnergy`; see `smlib.models.first_layer`).
"""
from smlib.models.base import EnergyModel, LatentGaussianModel, ScoreModel
from smlib.models.dae import DAEEnergy
from smlib.models.first_layer import FirstLayerLaplacian, FirstLinearEnergy
from smlib.models.gaussian import GaussianEnergy
from smlib.models.grbm import GRBM
from smlib.models.mcrbm import MCRBM
from smlib.models.mlp import ACTIVATIONS, MLPEnergy, ScoreMLP
from smlib.models.mpot import MPoT
from smlib.models.noise_conditional import NoiseConditionalEnergy, NoiseConditionalScore

__all__ = [
    "EnergyModel",
    "ScoreModel",
    "LatentGaussianModel",
    "GRBM",
    "MCRBM",
    "MPoT",
    "DAEEnergy",
    "GaussianEnergy",
    "MLPEnergy",
    "ScoreMLP",
    "ACTIVATIONS",
    "FirstLayerLaplacian",
    "FirstLinearEnergy",
    "NoiseConditionalEnergy",
    "NoiseConditionalScore",
]
