r"""Swersky et al. (2011), §4.1–4.2 and Fig. 2: six estimators train one mPoT on natural-image patches.

The protocol, as faithful as the offline data allow (the chapter's paper / ours / why table), with
the second pass of issue 22:

* data (`smlib.experiments.swersky2011_data`): 16×16 **colour** patches from the RGB photographs
  bundled with scikit-image and scikit-learn (the paper: Berkeley segmentation set); training,
  validation and test patches from spatially disjoint regions of every photograph but two, the
  two held-out photographs as a second (image-disjoint) test column on the same models; near-flat
  patches removed and counted; per-patch mean removed, PCA-whitened keeping 99 % of the variance
  (fitted on the training patches); 128,000 training patches; each replicate (seed) its own split;
* model: mPoT (`smlib.models.MPoT`) with γ = 1, in float32, the columns of C renormalised after
  every update (Ranzato's running common norm, ``filter_norm="running"``); ablations for SM and
  SMD (one replicate): C unconstrained, and 97.3 % of the variance kept;
* training: minibatch 128, 100 epochs of SGD (no momentum), for SM (closed form), SMD (denoising
  SM at σ = 1, with a σ sweep beside it), CD-1, PCD, FPCD (one HMC transition of 10 leapfrog steps,
  step adapted to a mean acceptance of 0.9, i.e. ≈ 10 % rejection as in Ranzato's code, which used
  20 steps) and AE (the reconstruction term only);
* after every epoch (and at the initialisation): the three Theorem-1 terms on clean training
  patches (Fig. 1a–c), the free-energy gap between test patches and the same patches plus noise
  σ_n = 1 (Fig. 1d), and the test MSE of three denoisers — the mean-field E[v | ĥ(ṽ)] (Fig. 1e),
  the eq.-17 one-step reconstruction, and MAP with λ chosen on validation patches from a log grid
  (Fig. 1f) — for several noise draws, with the trivial and Wiener baselines on the same patches
  (`smlib.experiments.swersky2011_eval`);
* covariance and mean filters at each run's best epoch (validation MAP error), dead ones
  excluded, dewhitened to pixels, measured for Gabor-likeness (`smlib.metrics.gabor_stats`).

Claims and their rules: :func:`claims`.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from smlib import metrics, models
from smlib._io import atomic_write
from smlib.experiments.configs import Swersky2011Config
from smlib.experiments import swersky2011_data, swersky2011_eval
from smlib.experiments import verdicts as V
from smlib.experiments.records import unit_key
from smlib.experiments.runner import Experiment, Unit, default_dtype, fit_by_epoch, timing
from smlib.experiments.swersky2011_claims import (claims, rule_curvature, rule_gabor, rule_mean_structure,  # noqa: F401
                                                  rule_overfits, rules_table_rows)
from smlib.experiments.swersky2011_plots import (COLORS, ESTIMATORS, curves_of, denoising_table, gabor_table, lr_key,
                                                 plot_filters, plot_fig1, plot_smd_sigma, selection_table, timing_note,
                                                 variants_table)

__all__ = ["Swersky2011", "ESTIMATORS", "COLORS", "claims", "objective_for", "curves_of", "plot_fig1", "plot_filters",
           "plot_smd_sigma", "gabor_table", "denoising_table", "variants_table", "selection_table", "timing_note",
           "rules_table_rows"]


PRESETS = {
    "ci": Swersky2011Config(n_train=2000, n_epochs=3, n_cov=32, n_mean=16, lr=0.01, seeds=(0,), smd_sweep=(0.3,),
                            n_test=500, n_val=100, n_denoise=200, n_eval=500, map_steps=15, n_gabor=8,
                            denoise_dense_until=3, denoise_every=1, ablations=(), lr_grid=()),
    "paper": Swersky2011Config(n_train=128_000, n_epochs=100, n_cov=256, n_mean=100, lr=0.001, seeds=(0, 1, 2),
                               smd_sweep=(0.3, 3.0), n_test=10_000, n_val=300, n_denoise=1000, n_eval=10_000,
                               map_steps=40, n_gabor=64, denoise_dense_until=10, denoise_every=5,
                               ablations=("free", "keep"),
                               # 10⁻³·{⅓, 1, 3} put all six choices at an edge (b27d837: CD, PCD, FPCD, SM at
                               # 3·10⁻³, SMD and AE at ⅓·10⁻³), and 10⁻³·{1/30 … 30} CD and PCD (805c960: at
                               # 3·10⁻², still falling steeply), so the grid spans 10⁻⁵ … 1 in half-decades
                               lr_grid=(1e-5, 0.001 / 30, 0.001 / 10, 0.001 / 3, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)),
}
ABLATIONS = {"free": "C unconstrained (no column normalisation)", "keep": "PCA keeping ablation_keep of the variance"}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def objective_for(name: str, cfg: dict, sigma: float | None = None):
    """The `fit` objective and options of an estimator name (the chapter's estimator table)."""
    # HMC: Ranzato's code held the rejection rate near 10 % with his running rule (ε ×1.01 / ×0.99 per
    # transition, 20 leapfrog steps); step_rule="reject_target" is that rule, with 10 leapfrog steps here
    mcmc = dict(sampler=cfg["sampler"], n_leapfrog=cfg["n_leapfrog"], step_size=cfg["hmc_step"], adapt=True,
                target_accept=cfg["target_accept"], step_rule=cfg["step_rule"], target_reject=cfg["target_reject"])
    return {
        "SM": ("sm", {}),
        "SMD": ("dsm", {"sigma": cfg["smd_sigma"] if sigma is None else sigma}),
        "CD": ("cd", dict(k=1, **mcmc)),
        "PCD": ("pcd", dict(n_chains=cfg["batch_size"], k=1, **mcmc)),
        "FPCD": ("fpcd", dict(n_chains=cfg["batch_size"], k=1, fast_lr=cfg["fast_lr"], fast_decay=cfg["fast_decay"],
                              **mcmc)),
        "AE": ("ae", {}),
    }[name]


class Swersky2011(Experiment):
    name = "swersky2011"
    title = "Swersky et al. (2011), Fig. 1 and Fig. 2: six estimators of the mPoT on natural-image patches"
    presets = PRESETS
    prerequisite_units = ("lr-",)  # the learning-rate selection the training units read

    def selections(self, cfg, folder):  # chosen by validation MAP-denoising error
        return lr_selections(self, cfg, folder, "val_map_mse", lower_is_better=True)

    def units(self, cfg):
        s0 = cfg["seeds"][0]
        # the learning rate of each estimator, chosen first (empty grid: every estimator at cfg["lr"])
        out = [Unit(lr_key(e, lr), estimator=e, seed=s0, lr=lr, select=True) for e in ESTIMATORS for lr in cfg["lr_grid"]]
        out += [Unit(unit_key(e, seed=s), estimator=e, seed=s) for s in cfg["seeds"] for e in ESTIMATORS]
        out += [Unit(unit_key(f"SMD{sig:g}", seed=s0), estimator="SMD", seed=s0, sigma=sig, sweep=True)
                for sig in cfg["smd_sweep"]]
        for a in cfg["ablations"]:  # one replicate each, SM and SMD only
            if a not in ABLATIONS:
                raise ValueError(f"unknown ablation {a!r}; choose from {sorted(ABLATIONS)}")
            out += [Unit(unit_key(e, a, seed=s0), estimator=e, seed=s0, ablation=a) for e in ("SM", "SMD")]
        return out

    # ------------------------------------------------------------------ data
    def setup(self, cfg, device):
        """Nothing is drawn here: each replicate's split is made on first use (:meth:`split`)."""
        return {"device": device, "dtype": _DTYPES[cfg["dtype"]], "splits": {}}

    def split(self, ctx, cfg, seed, keep=None):
        """The data of replicate ``seed`` (`smlib.experiments.swersky2011_data.make_split`), made once."""
        keep = cfg["keep"] if keep is None else keep
        if (seed, keep) not in ctx["splits"]:
            ctx["splits"][seed, keep] = swersky2011_data.make_split(cfg, seed, keep, ctx["device"], ctx["dtype"])
        return ctx["splits"][seed, keep]

    # ------------------------------------------------------------------ one estimator
    def evaluate(self, ctx, cfg, model, full=True):
        """The per-epoch numbers of Fig. 1 (`smlib.experiments.swersky2011_eval.evaluate`)."""
        return swersky2011_eval.evaluate(ctx, cfg, model, full)

    def new_model(self, ctx, cfg, seed, filter_norm="config"):
        """The mPoT of replicate ``seed`` (``ctx``: its split); C column-normalised as ``cfg["filter_norm"]``."""
        torch.manual_seed(seed)  # the same initialisation for every estimator of one seed
        with default_dtype(_DTYPES[cfg["dtype"]]):  # the same draws whatever the caller's default dtype
            return models.MPoT(ctx["d"], n_cov=cfg["n_cov"], n_mean=cfg["n_mean"], gamma=cfg["gamma"],
                               filter_norm=cfg["filter_norm"] if filter_norm == "config" else filter_norm)

    def run_unit(self, ctx, unit, cfg, *, checkpoint, device, progress):
        if unit.get("select"):
            return self.lr_unit(ctx, unit, cfg, checkpoint=checkpoint, device=device, progress=progress)
        cfg = dict(cfg, lr=selected_lr(cfg, unit["estimator"], checkpoint.parent))
        full = True  # every unit denoises, the SMD σ sweep included (issue 22: the sweep carried to denoising)
        ablation = unit.get("ablation")
        data_ = self.split(ctx, cfg, unit["seed"], cfg["ablation_keep"] if ablation == "keep" else None)
        model = self.new_model(data_, cfg, unit["seed"], None if ablation == "free" else "config").to(device)
        norms0 = {k: getattr(model, k).detach().norm(dim=0).cpu() for k in ("C", "W")}  # for the dead-filter gate
        with timing("eval"):  # the initialisation's point of every curve
            curves = {k: [v] for k, v in self.evaluate(data_, cfg, model, full).items()}
        best = checkpoint.with_suffix(".best.pt")  # the model at its best validation MAP error (epochs >= 1)

        def callback(m, step, epoch, history):  # the denoisers (costly) at the epochs of denoise_epochs()
            out = self.evaluate(data_, cfg, m, full and (epoch + 1) in denoise_epochs(cfg))
            seen = [v for v in history.per_epoch.get("val_map_mse", []) if np.isfinite(v)]
            if "val_map_mse" in out and (not seen or out["val_map_mse"] < min(seen)):
                buf = io.BytesIO()
                torch.save({"epoch": epoch + 1, "model": m.state_dict()}, buf)
                atomic_write(best, buf.getvalue(), what="best-epoch snapshot")
            return out

        objective, options = objective_for(unit["estimator"], cfg, unit.get("sigma"))
        history = fit_by_epoch(model, data_["X_train"], objective, options, cfg, seed=unit["seed"], device=device,
                               progress=progress, checkpoint=checkpoint, callback=callback, stop_on_divergence=True)
        for k in curves:  # NaN where an epoch was not denoised, and after a divergence (the claims gate it)
            curves[k] += [float(v) for v in history.per_epoch[k]]
            curves[k] += [float("nan")] * (cfg["n_epochs"] + 1 - len(curves[k]))
        result = {"curves": curves, "loss": list(history["loss"]), "train_wall_time_s": history.wall_time, "lr": cfg["lr"],
                  "diverged": history.diverged,
                  "reference": {k: v for k, v in data_["reference"].items() if k != "held_out_images"}}
        if full:
            final = {k: getattr(model, k).detach().norm(dim=0).cpu() for k in ("C", "W")}
            best_epoch = None
            if best.exists():  # filters at the best epoch (the final ones when no evaluation improved)
                snap = torch.load(best, map_location="cpu", weights_only=True)
                model.load_state_dict(snap["model"])
                best_epoch = snap["epoch"]
            with timing("eval"):
                result["filters"] = self.filters(data_, cfg, model.cpu(), unit["seed"], norms0["C"], norms0["W"])
            result["filters"]["best_epoch"] = best_epoch
            for k in ("C", "W"):  # every filter's norm (whitened domain), at the start and the end
                result["filters"][f"{k}_norms0"] = np.round(norms0[k].double().numpy(), 6).tolist()
                result["filters"][f"{k}_norms"] = np.round(final[k].double().numpy(), 6).tolist()
        return result

    def lr_unit(self, ctx, unit, cfg, *, checkpoint, device, progress):
        """One point of the learning-rate selection: ``lr_epochs`` epochs on the first replicate, then the
        validation MAP-denoising error (λ chosen on the same validation patches, as in every evaluation)."""
        data_ = self.split(ctx, cfg, unit["seed"])
        model = self.new_model(data_, cfg, unit["seed"]).to(device)
        objective, options = objective_for(unit["estimator"], cfg)
        diverged = train_for_selection(unit["lr"], "val_map_mse", lambda: fit_by_epoch(
            model, data_["X_train"], objective, options, dict(cfg, lr=unit["lr"], n_epochs=cfg["lr_epochs"]),
            seed=unit["seed"], device=device, progress=progress, checkpoint=checkpoint, callback=None))
        if diverged:
            return diverged
        with timing("eval"):
            lam, errors = metrics.select_map_lambda(model.eval(), data_["X_val"], data_["N_val"], cfg["map_lambdas"],
                                                    n_steps=cfg["map_steps"], lr=1.0)
        return {"lr": unit["lr"], "val_map_mse": min(errors), "map_lambda": lam}

    def filters(self, ctx, cfg, model, seed, C_norms0=None, W_norms0=None):
        """Gabor statistics of a sample of the live covariance and mean filters, and 16 of each for display.

        A filter whose norm fell below ``verdicts.DEAD_NORM`` of its initial norm is dead and left out
        of the sample (a dead blob scores high on the R² of a fit normalised to its own maximum); the
        Gabor fraction carries a 95 % Wilson interval (:func:`wilson_interval`).
        """
        side, ch = cfg["patch_size"], 1 if cfg["gray"] else 3
        rng = np.random.default_rng(seed + 2)
        out = {}
        for name, n0 in (("C", C_norms0), ("W", W_norms0)):
            M = getattr(model, name).detach().double()
            live = np.arange(M.shape[1]) if n0 is None else np.flatnonzero(
                (M.norm(dim=0) >= V.DEAD_NORM * n0.double()).numpy())
            pick = np.sort(rng.choice(live, size=min(cfg["n_gabor"], len(live)), replace=False))
            out[f"{name}_n_dead"] = int(M.shape[1] - len(live))
            if len(pick) == 0:  # every filter died: nothing to measure
                out[f"{name}_gabor"] = {"n": 0, "frac_gabor": float("nan"), "median_r2": float("nan")}
                out[f"{name}_show"] = []
                continue
            px = ctx["whitener"].dewhiten_filters(M[:, pick]).T.numpy()  # one filter per row, pixels
            stats = metrics.gabor_stats(px, side, ch)
            f, n = stats["frac_gabor"], stats["n"]
            stats["frac_gabor_ci"] = wilson_interval(f, n)
            out[f"{name}_gabor"] = stats
            out[f"{name}_show"] = np.round(px[:16], 5).tolist()
        return out

    # ------------------------------------------------------------------ the record
    def summarise(self, ctx, cfg, results):
        s0 = cfg["seeds"][0]
        first = self.split(ctx, cfg, s0)
        ref = {k: v for k, v in first["reference"].items()}
        per_seed = {s: results[unit_key("SM", seed=s)]["reference"] for s in cfg["seeds"]}
        # the shift gate reads, for each test set, the replicate whose ratio is farthest from 1 (in log)
        ref["variance_ratio"] = {k: max((r["variance_ratio"][k] for r in per_seed.values()), key=lambda v: abs(np.log(v)))
                                 for k in ref["variance_ratio"]}
        ref["per_seed"] = {str(s): {"variance_ratio": r["variance_ratio"], "n_flat": r["n_flat"], "d": r["d"]}
                           for s, r in per_seed.items()}
        ref["mse_noisy"], ref["mse_shrink"] = ref["baselines"]["noisy"], ref["baselines"]["shrink"]
        ref["untrained"] = self.filters(first, cfg, self.new_model(first, cfg, s0), s0)
        ref["planted"] = _planted_gabor_check(cfg)
        summary = {"d": first["d"], "held_out_images": first["reference"]["held_out_images"], "reference": ref,
                   "lr": {e: results[unit_key(e, seed=s0)]["lr"] for e in ESTIMATORS},
                   "lr_selection": {k: v for k, v in results.items() if k.startswith("lr-")}}
        summary["claims"] = claims({"config": cfg, "units": results, "summary": summary})
        return summary

    def figures(self, record):
        import matplotlib.pyplot as plt

        figs = {"fig1": plot_fig1(record, plt.figure(figsize=(10, 4.2)))}
        figs["filters"] = plot_filters(record, plt.figure(figsize=(10, 3.8)))
        return figs


def wilson_interval(f: float, n: int, z: float = 1.96) -> list[float]:
    r"""Wilson's score interval of a fraction f of n: (f + z²/2n ± z√(f(1 − f)/n + z²/4n²)) / (1 + z²/n).
    Unlike f ± z√(f(1 − f)/n) it does not collapse to a point at f = 0 or 1 (Wilson 1927)."""
    den = 1 + z * z / n
    mid, half = (f + z * z / (2 * n)) / den, z * np.sqrt(f * (1 - f) / n + z * z / (4 * n * n)) / den
    return [float(max(0.0, mid - half)), float(min(1.0, mid + half))]


def train_for_selection(lr: float, score: str, train) -> dict | None:
    """Run ``train()`` for one point of a learning-rate selection. A rate at which training diverges
    (``FloatingPointError``: the divergence guard, or a non-finite loss, gradient or parameter) is a
    result of the selection, not a failed run: it returns ``{"lr", score: None, "diverged": reason}``,
    which `selected_lr` never chooses; ``None`` when training finished."""
    try:
        train()
    except FloatingPointError as err:
        return {"lr": lr, score: None, "diverged": str(err)}
    return None


def selected_lr(cfg: dict, estimator: str, folder, score: str = "val_map_mse", lower_is_better: bool = True) -> float:
    """The learning rate of ``estimator``: the grid point with the best validation ``score`` among its
    selection units (their results in the work folder ``folder``), or ``cfg["lr"]`` when the grid is empty.
    A non-finite score (training diverged) never wins; a unit whose result names a ``censored`` reason
    (its own early stopping at the edge of what it tried: :func:`smlib.experiments.stopping.censored`)
    wins only when every finite one is censored. The choice at a grid edge is gated in the claims."""
    if not cfg["lr_grid"]:
        return cfg["lr"]
    ranks = {}
    for lr in cfg["lr_grid"]:
        path = Path(folder) / f"{lr_key(estimator, lr)}.json"
        if not path.exists():
            raise RuntimeError(f"{estimator}: the learning-rate selection unit {lr_key(estimator, lr)} has not run; "
                               "run the selection first (--only 'lr-*'), then the other units")
        res = json.loads(path.read_text())["result"]
        v = res[score]
        ok = v is not None and np.isfinite(v)
        ranks[lr] = (bool(res.get("censored")), v if lower_is_better else -v) if ok else (True, np.inf)
    if not np.isfinite(min(ranks.values())[1]):
        raise RuntimeError(f"{estimator}: every learning rate of the grid {cfg['lr_grid']} diverged; extend the grid down")
    return min(ranks, key=ranks.get)


def lr_selections(experiment, cfg: dict, folder, score: str, lower_is_better: bool) -> list[tuple[str, float, list]]:
    """``(what, chosen rate, grid)`` per estimator whose learning rate the selection units chose (see `selected_lr`)."""
    if not cfg["lr_grid"]:
        return []
    ests = sorted({u["estimator"] for u in experiment.units(cfg) if u.key.startswith("lr-")})
    return [(f"learning rate of {e}", selected_lr(cfg, e, folder, score, lower_is_better), list(cfg["lr_grid"]))
            for e in ests]


def _planted_gabor_check(cfg) -> dict:
    """The Gabor rule on planted Gabors + 5 % noise (must pass) — a check that the measure can succeed."""
    side = cfg["patch_size"]
    rng = np.random.default_rng(0)
    planted = []
    for _ in range(max(8, cfg["n_gabor"] // 2)):
        p = [rng.uniform(5, side - 5), rng.uniform(5, side - 5), rng.uniform(1.5, 3.0), rng.uniform(1.5, 3.0),
             rng.uniform(0, np.pi), rng.uniform(0.1, 0.3), rng.uniform(0, 2 * np.pi), 1.0]
        planted.append((metrics.gabor(p, side) + 0.05 * rng.standard_normal((side, side))).ravel())
    return metrics.gabor_stats(np.array(planted), side, 1)


def denoise_epochs(cfg) -> set:
    """Epochs (0 = initialisation) at which the denoisers are evaluated: every one up to
    ``denoise_dense_until``, then every ``denoise_every``-th, and the last."""
    n, until, every = cfg["n_epochs"], cfg["denoise_dense_until"], cfg["denoise_every"]
    return {e for e in range(n + 1) if e <= until or e % every == 0 or e == n}
