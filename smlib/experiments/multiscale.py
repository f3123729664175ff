r"""From one noise level to many: sampling 2-D densities from single-σ and multi-σ models.

The protocol (chapter "From one noise level to many"):

* data: a spiral (`smlib.data.spiral_density`) and a two-mode mixture with weights 0.8 / 0.2 far
  apart (Song & Ermon 2019's Fig. 2 geometry, scaled), ``n_train`` points drawn once; both
  densities and all their smoothings q_σ are exact mixtures;
* units, per data set and seed:
  ``single`` — a DEEN energy (`MLPEnergy`) trained by DSM at one σ, sampled by Langevin and by
  MALA; ``energy`` — a `NoiseConditionalEnergy` and ``score`` — a `NoiseConditionalScore`,
  trained by `MultiScaleDSM` on a geometric ladder, sampled by annealed Langevin;
  ``oracle`` — no training: the exact scores of q_σ, sampled by the same three samplers (the
  planted positive, and Langevin's slow mixing from the *true* score);
* every sampler starts ``n_samples`` chains uniformly on the plotting box and ends with the
  Tweedie step x + σ²s(x, σ) at its last σ; the single-σ chains run as many steps (L·T) with
  the same step-to-σ² ratio as the last annealed level;
* measured against the exact density p: KL(P‖Ĥ) of the samples' histogram Ĥ (``n_hist``² cells of
  the box plus one "outside" cell, Jeffreys-smoothed) to the truth's cell masses P; the mass per
  part of the truth (mixture components; four arcs of the spiral) and its total variation to the
  true masses; the share of samples "off the data" (log p below its ``off_quantile`` quantile
  under p); the same numbers for ``n_samples`` exact draws from p (the estimator's floor) and
  for each model before training (the untrained control); the relative score error against the
  exact noisy score as a function of the distance to the nearest training point.

Training runs on ``device``; sampling and every measure run on the CPU in float64 (a copy of the
trained model), so a GPU run is measured exactly as a CPU run.

Claims and their rules: :func:`claims`.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from smlib import data, models, samplers
from smlib.experiments.configs import MultiscaleConfig
from smlib.experiments import verdicts as V
from smlib.experiments import runner
from smlib.experiments.runner import Experiment, Unit, default_dtype
from smlib.experiments.records import unit_key
from smlib.objectives.multiscale import MultiScaleDSM, geometric_sigmas
from smlib.scores import score as score_of

__all__ = ["Multiscale", "DATASETS", "KINDS", "claims", "plot_samples", "smoothed"]

DATASETS = ("spiral", "mixture")
KINDS = ("single", "energy", "score", "oracle")
PRESETS = {
    "ci": MultiscaleConfig(hidden=(32, 32, 32), n_steps=600, batch_size=128, n_train=5000, seeds=(0,), n_samples=600,
                           n_steps_each=25),
    "paper": MultiscaleConfig(hidden=(64, 64, 64), n_steps=20_000, batch_size=256, n_train=50_000, seeds=(0, 1, 2),
                              n_samples=10_000, n_steps_each=100),
}


def smoothed(p, sigma):
    """q_σ = p ∗ N(0, σ²I) of a Gaussian mixture: every covariance widened by σ²I (exact); diagonal
    covariances stay diagonal (the fast path of `GaussianMixture`)."""
    C = p.covs
    if bool((C == torch.diag_embed(torch.diagonal(C, dim1=-2, dim2=-1))).all()):
        return data.GaussianMixture(p.means, stds=(torch.diagonal(C, dim1=-2, dim2=-1) + sigma**2).sqrt(), weights=p.weights)
    return data.GaussianMixture(p.means, covs=C + sigma**2 * torch.eye(p.dim, dtype=torch.float64), weights=p.weights)


class _Exact:
    """The exact noise-conditional score ∇log q_σ (and energy −log q_σ) of a mixture: the oracle."""

    def __init__(self, p):
        self.p, self.dim, self._q = p, p.dim, {}

    def q(self, sigma):
        if float(sigma) not in self._q:
            self._q[float(sigma)] = smoothed(self.p, float(sigma))
        return self._q[float(sigma)]

    def score(self, x, sigma):
        """∇log q_σ(x); σ a number or a (B,) tensor (one per row, as `MultiScaleDSM` passes it)."""
        if not torch.is_tensor(sigma) or sigma.ndim == 0:
            return self.q(sigma).score(x)
        out = torch.empty_like(x)
        for s in sigma.unique().tolist():
            m = sigma == s
            out[m] = self.q(s).score(x[m])
        return out

    def at(self, sigma):
        return self.q(sigma)  # a GaussianMixture has energy(x) and score(x)


def fit_with_loss(model, x, objective, options, zero, cfg, *, device, seed, progress, checkpoint,
                  callback=None) -> dict:
    """Train one unit's model (checkpointed, resumable; ``callback(model, ...)`` after every step, e.g. an
    EMA update, timed as training) and summarise its loss: the mean of the last tenth of the logged losses beside ``zero``, the
    loss of the zero score (what the gates compare it with)."""
    hist = runner.fit(model, x, objective, options=options, n_steps=cfg["n_steps"], batch_size=cfg["batch_size"],
                     lr=cfg["lr"], device=device, seed=seed, progress=progress, log_every=max(1, cfg["n_steps"] // 100),
                     checkpoint=checkpoint, checkpoint_every=max(1, cfg["n_steps"] // 10), resume=True,
                     callback=callback, callback_every=1 if callback else None, callback_is_training=True)
    tail = hist["loss"][-max(1, len(hist["loss"]) // 10):]
    return {"loss": {"final": float(np.mean(tail)), "zero_score_level": zero, "step": list(hist.steps),
                     "loss": list(hist["loss"])},
            "train_wall_time_s": hist.wall_time}


def ladder(cfg, ds):
    return geometric_sigmas(cfg[f"{ds}_sigma_max"], cfg["sigma_min"], cfg["n_levels"])


class Multiscale(Experiment):
    name = "multiscale"
    title = "From one noise level to many: single-σ Langevin / MALA against annealed Langevin in 2-D"
    presets = PRESETS

    def units(self, cfg):
        return [Unit(unit_key(k, ds, seed=s), kind=k, dataset=ds, seed=s) for ds in DATASETS for s in cfg["seeds"] for k in KINDS]

    # ------------------------------------------------------------------ data and references
    def setup(self, cfg, device):
        a = cfg["mixture_sep"]
        truth = {"spiral": data.spiral_density(noise=cfg["spiral_noise"], n_components=cfg["spiral_components"]),
                 "mixture": data.GaussianMixture([[-a, -a], [a, a]], stds=cfg["mixture_std"], weights=cfg["mixture_weights"])}
        ctx = {"truth": truth, "train": {}, "cells": {}, "parts": {}, "threshold": {}, "reference": {}}
        for i, (ds, p) in enumerate(truth.items()):
            ctx["train"][ds] = p.sample(cfg["n_train"], seed=cfg["data_seed"] + 10 * i, dtype=torch.float32)
            b, n = cfg[f"{ds}_bound"], cfg["n_hist"]
            sub = 8  # quadrature points per cell and axis for the truth's cell masses
            g = torch.linspace(-b, b, n * sub + 1, dtype=torch.float64)
            c = 0.5 * (g[1:] + g[:-1])
            pts = torch.cartesian_prod(c, c)  # x varies slowest: cell index = ix * n + iy
            dens = p.log_prob(pts).exp().reshape(n, sub, n, sub).sum((1, 3)).reshape(-1) * float(g[1] - g[0]) ** 2
            ctx["cells"][ds] = torch.cat([dens, (1 - dens.sum()).clamp_min(1e-12)[None]])
            parts = torch.arange(p.n_components)
            if ds == "spiral":  # components in curve order: group them into n_arcs arcs
                parts = parts * cfg["n_arcs"] // p.n_components
            ctx["parts"][ds] = parts
            exact = p.sample(max(cfg["n_samples"], 20_000), seed=cfg["data_seed"] + 10 * i + 1)
            ctx["threshold"][ds] = float(torch.quantile(p.log_prob(exact), cfg["off_quantile"]))
            true_masses = torch.zeros(int(parts.max()) + 1, dtype=torch.float64).index_add_(0, parts, p.weights)
            ctx["reference"][ds] = {"true_masses": true_masses.tolist()}
            ctx["reference"][ds]["exact_samples"] = self.sample_metrics(ctx, cfg, ds, exact[: cfg["n_samples"]])
            ctx["reference"][ds]["loss_min"] = {"single": self.loss_min(p, [cfg["sigma_single"]], False),
                                                "multi": self.loss_min(p, ladder(cfg, ds), True)}
        return ctx

    @staticmethod
    def loss_min(p, sigmas, weighted, n=4000):
        """The smallest (D)SM loss any model can reach, mean over σ of λ(σ)·½(d/σ² − E_{q_σ}‖∇log q_σ‖²) (Tweedie)."""
        g, out = torch.Generator().manual_seed(0), []
        for s in sigmas:
            q = smoothed(p, s)
            m = 0.5 * (p.dim / s**2 - float((q.score(q.sample(n, generator=g)) ** 2).sum(1).mean()))
            out.append(m * (s**2 if weighted else 1.0))
        return float(np.mean(out))

    # ------------------------------------------------------------------ evaluations
    def sample_metrics(self, ctx, cfg, ds, x):
        """KL(P‖Ĥ) of the histogram, mass per part and its TV to the truth, share off the data."""
        p, b, n = ctx["truth"][ds], cfg[f"{ds}_bound"], cfg["n_hist"]
        x = x.detach().double().cpu()
        ok = torch.isfinite(x).all(1)
        x = torch.where(ok[:, None], x, torch.full_like(x, 1e6))  # non-finite chains count as far off
        ij = ((x + b) / (2 * b) * n).floor().long()
        inside = ((ij >= 0) & (ij < n)).all(1)
        idx = torch.where(inside, ij[:, 0] * n + ij[:, 1], torch.full_like(ij[:, 0], n * n))
        counts = torch.bincount(idx, minlength=n * n + 1).double()
        H = (counts + 0.5) / (counts.sum() + 0.5 * counts.numel())
        P = ctx["cells"][ds]
        kl = float((P * (P.log() - H.log())).sum())
        part = ctx["parts"][ds][p.responsibilities(x).argmax(1)]
        masses = torch.bincount(part, minlength=len(ctx["reference"][ds]["true_masses"])).double() / len(x)
        true = torch.tensor(ctx["reference"][ds]["true_masses"])
        off = float((p.log_prob(x) < ctx["threshold"][ds]).double().mean())
        return {"kl_hist": kl, "masses": masses.tolist(), "tv": 0.5 * float((masses - true).abs().sum()),
                "off_data": off, "non_finite": int((~ok).sum())}

    def score_error_by_distance(self, ctx, cfg, ds, score_fn, sigma):
        """mean ‖s − ∇log q_σ‖² / mean ‖∇log q_σ‖² over the points of a grid in each bin of distance to the data."""
        b = cfg[f"{ds}_bound"]
        g = torch.linspace(-b, b, 61, dtype=torch.float64)
        pts = torch.cartesian_prod(g, g)
        dist = torch.cdist(pts, ctx["train"][ds].double()).min(1).values
        true = smoothed(ctx["truth"][ds], sigma).score(pts)
        err, size = ((score_fn(pts) - true) ** 2).sum(1), (true**2).sum(1)
        edges = cfg["distance_bins"]
        out = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            m = (dist >= lo) & (dist < hi)
            out.append(float(err[m].mean() / size[m].mean()) if m.any() else None)
        return out

    def draw(self, ctx, cfg, ds, model, kind, seed, untrained=False, progress=False):
        """The samples of every sampler of a unit (dict name -> (n, 2) tensor), from uniform starts."""
        b, n, L = cfg[f"{ds}_bound"], cfg["n_samples"], cfg["n_levels"]
        g = torch.Generator().manual_seed(7919 * seed + 13 * KINDS.index(kind) + (1 if untrained else 0))
        x0 = (torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1) * b
        sig = ladder(cfg, ds)
        T, eps = cfg["n_steps_each"], cfg["step_lr"]
        h = 0.5 * eps * (cfg["sigma_single"] / cfg["sigma_min"]) ** 2  # α/2 at σ_single, as annealing's last level
        out = {}
        if kind in ("single", "oracle"):
            m = model.at(cfg["sigma_single"]) if kind == "oracle" else model
            s2 = cfg["sigma_single"] ** 2
            tweedie = lambda x: (x + s2 * score_of(m, x, detach=True)).detach()  # noqa: E731
            out["langevin"] = tweedie(samplers.langevin(m, x0, L * T, h, generator=g))
            out["mala"], info = samplers.mala(m, x0, L * T, h, generator=g, return_info=True)
            out["mala"] = tweedie(out["mala"])
            out["mala_accept"] = info["accept_rate"]
        if kind in ("energy", "score", "oracle"):
            out["annealed"] = samplers.annealed_langevin(model, x0, sig, T, eps, generator=g, progress=progress)
        return out

    # ------------------------------------------------------------------ one unit
    def run_unit(self, ctx, unit, cfg, *, checkpoint, device, progress):
        """Train one model (or none, for the oracle), sample it with its samplers and measure the samples."""
        kind, ds, seed = unit["kind"], unit["dataset"], unit["seed"]
        out, p = {}, ctx["truth"][ds]
        if kind == "oracle":
            model = _Exact(p)
        else:
            torch.manual_seed(seed)
            with default_dtype(torch.float32):
                if kind == "single":
                    model = models.MLPEnergy(2, hidden=tuple(cfg["single_hidden"]), activation=cfg["activation"])
                else:
                    cls = models.NoiseConditionalEnergy if kind == "energy" else models.NoiseConditionalScore
                    model = cls(2, hidden=tuple(cfg["hidden"]), activation=cfg["activation"])
            m64 = lambda: copy.deepcopy(model).double().cpu().eval()  # noqa: E731
            out["untrained"] = {k: self.sample_metrics(ctx, cfg, ds, v) for k, v in
                                self.draw(ctx, cfg, ds, m64(), kind, seed, untrained=True).items() if k != "mala_accept"}
            if kind == "single":
                objective, options = "dsm", {"sigma": cfg["sigma_single"]}
                zero = p.dim / (2 * cfg["sigma_single"] ** 2)  # J_DSM of ψ = 0: ½E‖ε/σ‖²
            else:
                objective, options = MultiScaleDSM(sigmas=ladder(cfg, ds)), None
                zero = p.dim / 2  # λ = σ²: ½E‖ε‖² for s = 0
            out.update(fit_with_loss(model, ctx["train"][ds], objective, options, zero, cfg, device=device, seed=seed,
                                     progress=progress, checkpoint=checkpoint))
            model = m64()
        samples = self.draw(ctx, cfg, ds, model, kind, seed, progress=progress)
        if "mala_accept" in samples:
            out["mala_accept"] = samples.pop("mala_accept")
        out["samplers"] = {k: self.sample_metrics(ctx, cfg, ds, v) for k, v in samples.items()}
        if seed == cfg["seeds"][0]:
            k = cfg["n_plot_points"]
            out["plot"] = {name: np.round(v[:k].double().numpy(), 3).tolist() for name, v in samples.items()}
        if kind in ("single", "energy"):
            s = cfg["sigma_single"] if kind == "single" else cfg["sigma_min"]
            f = (lambda x: score_of(model, x, detach=True)) if kind == "single" else (lambda x: model.score(x, s).detach())
            out["score_error_by_distance"] = {"sigma": s, "rel_error": self.score_error_by_distance(ctx, cfg, ds, f, s)}
            if kind == "energy":
                S = ladder(cfg, ds)[0]
                out["score_error_by_distance_sigma_max"] = {"sigma": S, "rel_error": self.score_error_by_distance(
                    ctx, cfg, ds, lambda x: model.score(x, S).detach(), S)}
        return out

    # ------------------------------------------------------------------ the record
    def summarise(self, ctx, cfg, results):
        summary = {"reference": ctx["reference"], "truth_plot": {}}
        for ds in DATASETS:
            summary["truth_plot"][ds] = np.round(ctx["truth"][ds].sample(cfg["n_plot_points"], seed=99).numpy(), 3).tolist()
        summary["claims"] = claims({"config": cfg, "units": results, "summary": summary})
        return summary

    def figures(self, record):
        import matplotlib.pyplot as plt

        return {"samples": plot_samples(record, plt.figure(figsize=(11, 4.2)))}


# ====================================================================== claims
METHODS = (("single", "langevin"), ("single", "mala"), ("energy", "annealed"), ("score", "annealed"),
           ("oracle", "langevin"), ("oracle", "annealed"))


def _m(record, kind, sampler, ds, s, key):
    return record["units"][unit_key(kind, ds, seed=s)]["samplers"][sampler][key]


def _fmt(vals):
    return ", ".join(f"{v:.3f}" for v in vals)


def _gates(record, ds, kinds):
    """Health gates of the runs a claim reads: trained below the zero-score loss, no non-finite sample,
    the histogram KL separates exact samples from an untrained model's, the oracle's annealing recovers p."""
    cfg, ref = record["config"], record["summary"]["reference"][ds]
    fails = []
    for k in kinds:
        for s in cfg["seeds"]:
            u = record["units"][unit_key(k, ds, seed=s)]
            lo = ref["loss_min"]["single" if k == "single" else "multi"]
            if "loss" in u and not u["loss"]["final"] < 0.5 * (u["loss"]["zero_score_level"] + lo):
                fails.append(f"{k} s{s} ended nearer the zero-score loss than the least loss ({u['loss']['final']:.3g} vs "
                             f"{u['loss']['zero_score_level']:.3g} / {lo:.3g})")
            if any(v["non_finite"] for v in u["samplers"].values()):
                fails.append(f"{k} s{s} has non-finite samples")
            for name, v in u.get("untrained", {}).items():
                if not v["kl_hist"] > 2 * ref["exact_samples"]["kl_hist"]:
                    fails.append(f"KL cannot tell {k} untrained ({name}) from exact samples")
    if not all(_m(record, "oracle", "annealed", ds, s, "tv") < 0.1 for s in cfg["seeds"]):
        fails.append("annealing the exact scores does not pass the recovery rule TV < 0.1 (planted positive)")
    return fails


def _claim(record, id, text, rule, kinds, cond, numbers, datasets=DATASETS):
    """One claim: per data set, the gates, then ``cond(ds, seed)`` in every seed; ``numbers(ds)`` its numbers.

    A data set whose gates fail is left out of the verdict (and said so); when every data set fails,
    the claim is "not testable: <reasons>" (the rule's own verdict on all of them kept beside it).
    """
    conds, nums, gates = [], [], []
    for ds in datasets:
        fails = _gates(record, ds, kinds)
        nums.append(f"{ds}: {numbers(ds)}")
        if fails:
            gates.append(f"{ds}: {'; '.join(fails)}")
        else:
            conds.append(all(cond(ds, s) for s in record["config"]["seeds"]))
    alone = V.verdict([all(cond(ds, s) for s in record["config"]["seeds"]) for ds in datasets])
    if conds and gates:
        nums.append("gate failed (data set left out) — " + " / ".join(gates))
    health = [] if conds else [V.Gate("health", False, " / ".join(gates))]
    return V.claim(id, text, rule, nums, V.verdict(conds) if conds else alone, gates=health)


def claims(record) -> list[dict]:
    """The chapter's claims, each with a rule fixed before the runs, its numbers and its verdict.

    Per data set, every seed; "holds" needs every data set the claim reads, "partly" some. The
    first three are about modes that are far apart, so they read the mixture only (the spiral is
    connected: there is no barrier to cross). A data set whose health gates fail (:func:`_gates`)
    is left out of the verdict and said so.
    """
    cfg = record["config"]
    seeds = cfg["seeds"]
    get = lambda k, sm, ds, key: [_m(record, k, sm, ds, s, key) for s in seeds]  # noqa: E731
    out = [
        _claim(record, "exact-langevin-weights", "Langevin from the exact score of a single small σ mixes slowly between modes: the mode weights come out wrong",
               "TV of the mass per part to the truth > 0.1 (oracle, Langevin at σ_single, L·T steps), every seed",
               ["oracle"], lambda ds, s: _m(record, "oracle", "langevin", ds, s, "tv") > 0.1,
               lambda ds: f"TV oracle Langevin {_fmt(get('oracle', 'langevin', ds, 'tv'))}, annealed "
                          f"{_fmt(get('oracle', 'annealed', ds, 'tv'))}", ("mixture",)),
        _claim(record, "single-langevin-weights", "A learned single-σ energy sampled by Langevin gets the mode weights wrong",
               "TV > 0.1, every seed", ["single", "oracle"],
               lambda ds, s: _m(record, "single", "langevin", ds, s, "tv") > 0.1,
               lambda ds: f"TV {_fmt(get('single', 'langevin', ds, 'tv'))}", ("mixture",)),
        _claim(record, "single-mala-weights", "MALA from the same energy, with as many steps, does not fix it",
               "TV > 0.1, every seed", ["single", "oracle"],
               lambda ds, s: _m(record, "single", "mala", ds, s, "tv") > 0.1,
               lambda ds: f"TV {_fmt(get('single', 'mala', ds, 'tv'))}", ("mixture",)),
    ]
    for k, name in (("energy", "multi-σ energy"), ("score", "multi-σ score network")):
        out.append(_claim(
            record, f"annealed-{k}-recovers", f"Annealed Langevin from the {name} recovers the mode weights and the density",
            "TV < 0.1 and < ½ the single-σ Langevin TV, and histogram KL below the single-σ Langevin's, every seed",
            [k, "single", "oracle"],
            lambda ds, s, k=k: (_m(record, k, "annealed", ds, s, "tv") < min(0.1, 0.5 * _m(record, "single", "langevin", ds, s, "tv"))
                                and _m(record, k, "annealed", ds, s, "kl_hist") < _m(record, "single", "langevin", ds, s, "kl_hist")),
            lambda ds, k=k: f"TV {_fmt(get(k, 'annealed', ds, 'tv'))} vs single {_fmt(get('single', 'langevin', ds, 'tv'))}; "
                            f"KL {_fmt(get(k, 'annealed', ds, 'kl_hist'))} vs single {_fmt(get('single', 'langevin', ds, 'kl_hist'))} "
                            f"(exact samples {record['summary']['reference'][ds]['exact_samples']['kl_hist']:.3f})"))
    return out


# ====================================================================== figure
def plot_samples(record, fig, title=None):
    """Samples of every method (first seed) beside exact samples of p, one row per data set."""
    s = record["config"]["seeds"][0]
    cols = [("truth", None)] + list(METHODS)
    axes = fig.subplots(len(DATASETS), len(cols), squeeze=False)
    for i, ds in enumerate(DATASETS):
        b = record["config"][f"{ds}_bound"]
        for j, (k, sm) in enumerate(cols):
            ax = axes[i, j]
            pts = np.asarray(record["summary"]["truth_plot"][ds] if k == "truth" else record["units"][unit_key(k, ds, seed=s)]["plot"][sm])
            ax.scatter(pts[:, 0], pts[:, 1], s=1.5, color="k" if k == "truth" else f"C{j}")
            ax.set(xlim=(-b, b), ylim=(-b, b), aspect="equal", xticks=[], yticks=[])
            if k != "truth":
                ax.set_xlabel(f"TV {_m(record, k, sm, ds, s, 'tv'):.2f}, KL {_m(record, k, sm, ds, s, 'kl_hist'):.2f}", fontsize=6)
            if i == 0:
                ax.set_title("exact p" if k == "truth" else f"{k} + {sm}", fontsize=7)
    fig.suptitle(title or f"{record['record_name']} ({record['scale']} preset, seed {s})", fontsize=8)
    fig.tight_layout()
    return fig
