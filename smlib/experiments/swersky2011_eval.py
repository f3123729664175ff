r"""The per-epoch evaluation of `smlib.experiments.swersky2011` at the cost it needs.

Profiled at the paper preset (d = 183 whitened dimensions, K = 256 covariance filters, 1,000
denoising patches, two noise draws, one core): a full evaluation point took ≈ 6.9 s, 5.2 s of it
in the mean-field denoiser. That denoiser is x̂ = Ω⁻¹ m with, per patch,

.. math:: Ω = I + C\,\mathrm{diag}(ĥ^c(x̃))\,C^\top, \qquad m = b^v + W ĥ^m(x̃)

(Swersky et al. 2011, §4.2; `smlib.models.MPoT.mean_v_given_h`). With K ≥ d the library forms
all 1,000 d×d precisions at once (a 190 MB temporary) and solves them by LU; here they are
formed in chunks that stay in cache and solved by Cholesky (Ω is symmetric positive definite,
Ω ⪰ I), the same numbers to float rounding (`tests/test_swersky2011_eval.py`) at about half the
time. With K < d the library's Woodbury route is already cheaper and is used as it is.
"""
from __future__ import annotations

import torch

from smlib import metrics

__all__ = ["conditional_mean_denoise", "evaluate"]


def conditional_mean_denoise(model, x_noisy: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    r"""x̂ = E[v | ĥ(x̃)] = Ω(ĥᶜ)⁻¹(bᵛ + W ĥᵐ) of an mPoT, batched in chunks of ``chunk`` patches.

    Equal to `smlib.metrics.denoise_conditional_mean` (see the module docstring for why it is
    faster when K ≥ d). Returns a detached (B, d) tensor.
    """
    if not all(hasattr(model, a) for a in ("C", "W", "b_visible", "hidden_means")):
        raise TypeError(f"conditional_mean_denoise needs an mPoT (C, W, b_visible, hidden_means), got {type(model).__name__}")
    if x_noisy.ndim != 2 or x_noisy.shape[1] != model.C.shape[0]:
        raise ValueError(f"x_noisy must be (B, {model.C.shape[0]}), got {tuple(x_noisy.shape)}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    C = model.C.detach()
    d, K = C.shape
    if K < d:  # the library's Woodbury route: K³ + dK per patch
        return metrics.denoise_conditional_mean(model, x_noisy)
    out = []
    with torch.no_grad():
        h_cov, h_mean = model.hidden_means(x_noisy)
        m = model.b_visible + h_mean @ model.W.T
        eye = torch.eye(d, dtype=C.dtype, device=C.device)
        for i in range(0, len(x_noisy), int(chunk)):
            A = C * h_cov[i:i + chunk, None, :].sqrt()  # Ω = I + A Aᵀ, A = C diag(√ĥᶜ) (ĥᶜ > 0 for the mPoT)
            L = torch.linalg.cholesky(torch.baddbmm(eye.expand(len(A), d, d), A, A.transpose(1, 2)))
            out.append(torch.cholesky_solve(m[i:i + chunk, :, None], L)[..., 0])
    return torch.cat(out).detach()


def evaluate(ctx: dict, cfg: dict, model, full: bool = True) -> dict:
    """The per-epoch numbers of Fig. 1 (full=False: the Theorem-1 terms and the gaps only).

    Every tensor it reads is made once in the protocol's set-up (whitened, on the device, the noisy
    copies included), so an evaluation point is the model's arithmetic only. Two test sets
    (`swersky2011_data.COLUMNS`): the region test set (keys ``gap_r``, ``mf_mse_r``, ...) and the
    held-out photographs (prefix ``img_``, first noise draw only: a second column, not a second
    experiment). Denoisers: the paper's mean-field E[v | ĥ(ṽ)] (``mf_mse``), the eq.-17 one-step
    reconstruction ṽ − ∇F(ṽ) (``step_mse``; Tweedie's denoiser for SMD at σ = 1) and MAP with λ
    chosen on the validation patches (``map_mse``, ``map_lambda``, and ``val_map_mse``, the
    validation error at that λ — the learning-rate selection and the best epoch read it).
    """
    model.eval()
    s = cfg["noise_std"]
    cols = [c for c in ("", "img_") if c + "X_test" in ctx]
    out = {}
    with torch.no_grad():
        out.update({k: float(v) for k, v in model.sm_terms(ctx["X_eval"]).items()})
        for c in cols:
            eps = ctx[c + "eps_test"] if c == "" else ctx[c + "eps_test"][:1]
            out.update({f"{c}gap_{r}": float(metrics.free_energy_gap(model, ctx[c + "X_test"], s, noise=e))
                        for r, e in enumerate(eps)})
        if not full:
            return out
        for c in cols:
            clean = ctx[c + "X_test"][: cfg["n_denoise"]]
            for r, noisy in enumerate(_draws(ctx, c)):
                out[f"{c}mf_mse_{r}"] = float(metrics.mse(clean, conditional_mean_denoise(model, noisy)))
                if hasattr(model, "reconstruct"):
                    out[f"{c}step_mse_{r}"] = float(metrics.mse(clean, metrics.denoise_mean_field(model, noisy)))
    lam, errors = metrics.select_map_lambda(model, ctx["X_val"], ctx["N_val"], cfg["map_lambdas"],
                                            n_steps=cfg["map_steps"], lr=1.0)
    out["map_lambda"], out["val_map_mse"] = lam, min(errors)
    for c in cols:
        clean = ctx[c + "X_test"][: cfg["n_denoise"]]
        for r, noisy in enumerate(_draws(ctx, c)):
            x_hat = metrics.denoise_map(model, noisy, lam, n_steps=cfg["map_steps"], lr=1.0)
            out[f"{c}map_mse_{r}"] = float(metrics.mse(clean, x_hat))
    return out


def _draws(ctx, col):
    return ctx[col + "noisy_test"] if col == "" else ctx[col + "noisy_test"][:1]
