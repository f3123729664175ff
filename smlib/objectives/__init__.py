r"""Score-matching objectives in one canonical scaling: sum over dimensions, mean over the batch.

With ψ(x) = −∇ₓE(x) (the model score) and a batch x of shape (B, d):

=================  ============================================================================
`sm`               J_SM  = mean[ ½‖ψ‖² + ∇·ψ ]                              (Hyvärinen 2005)
`dsm`              J_DSM = mean[ ½‖ψ(x̃) − (x − x̃)/σ²‖² ],  x̃ = x + σε       (Vincent 2011)
`ssm`              J_SSM = mean[ ½(vᵀψ)² + vᵀ(∇ψ)v ],  E[vvᵀ] = I            (Song et al. 2019)
`kingma_lecun`     J_SM + λ mean[ Σᵢ (∂²E/∂xᵢ²)² ]                          (Kingma & LeCun 2010)
`ae`               mean[ ½‖x^r(x) − x‖² ]                                   (Swersky et al. 2011)
`esm`              mean[ ½‖ψ − ψ_true‖² ]                                   (explicit SM)
=================  ============================================================================

Other papers' scalings: DEEN's loss (Saremi et al. 2018, eq. 19) is 2σ⁴·J_DSM; DEEN's eq. 8/9
SM loss is 2·J_SM; pylearn2-style losses divide by d; SSM with unit-norm projections
(``kind="sphere"``) estimates J_SM/d.

Training objectives by name (:mod:`smlib.objectives.registry`, the one list of names): the six
losses above except `esm` (which needs the true score), and the MCMC estimators of
:mod:`smlib.mcmc` — ``"cd"`` (CD-k), ``"pcd"``, ``"fpcd"`` and ``"langevin_cd"`` — whose
surrogate mean E(x⁺) − mean E(sg[x⁻]) has the maximum-likelihood gradient estimate as its
θ-gradient. Each is a frozen dataclass that checks its options (``DSM(sigma=0.1)``, ``PCD(n_chains=100)``);
``make(name, **options)`` builds one by name; ``smlib.train.fit(model, x, DSM(sigma=0.1), ...)`` and
``fit(model, x, "dsm", options={"sigma": 0.1})`` do the same.

Every objective returns a scalar whose θ-gradient is the estimator's update; all accept
externally supplied noise / projections so that two implementations can be compared on identical
inputs. Second derivatives in x are computed without a Python loop over dimensions: a model's
closed form where it has one (`score_divergence` / `score_jacobian_diagonal`: GRBM, MCRBM,
MPoT, DAEEnergy, GaussianEnergy, MLPEnergy, ScoreMLP), else a batched double-backward over the
identity basis (``method="vjp"``, the default) or a vmapped forward-over-reverse product
(``method="jvp"``). A score that does not depend on x (a linear energy) has a zero Jacobian on
every path.
"""
from __future__ import annotations

from smlib.objectives.losses import PROJECTIONS, ae, dsm, esm, kingma_lecun, sample_projections, sm, sm_generic, ssm
from smlib.objectives.registry import (
    AE, CD, DSM, FPCD, PCD, REGISTRY, SM, SSM, SSMVR, KingmaLeCun, LangevinCD, Objective, ObjectiveConfig, Option, make,
    names, resolve,
)
from smlib.objectives.derivatives import METHODS, hessian_trace, score_jacobian_diagonal, score_of

__all__ = [
    "score_of", "hessian_trace", "score_jacobian_diagonal", "sm", "sm_generic", "dsm", "ssm", "kingma_lecun",
    "ae", "esm", "sample_projections", "METHODS", "PROJECTIONS",
    "REGISTRY", "ObjectiveConfig", "Option", "Objective", "make", "names", "resolve",
    "SM", "DSM", "SSM", "SSMVR", "KingmaLeCun", "AE", "CD", "PCD", "FPCD", "LangevinCD",
]
