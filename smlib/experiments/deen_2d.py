r"""Saremi et al. (2018), Fig. 1: DEEN, a direct score network and Langevin CD on two 2-D densities.

The protocol (the chapter's paper / ours / why table):

* data: a spiral (`smlib.data.spiral_density`, an exact mixture of small Gaussians along the
  curve) and a Gaussian mixture (`smlib.data.gaussian_mixture_2d("deen")`, our stand-in: the
  paper does not publish its mixture); ``n_train`` points drawn once from each. Both densities
  and their σ-smoothings q_σ = p ∗ N(0, σ²I) are known in closed form;
* models: the paper's network 2→32→32→32→1, tanh, linear last layer (`MLPEnergy`) for DEEN and
  CD; the same body with a 2-d output (`ScoreMLP`) for the direct score network (the paper's
  "DSM" network of Fig. 1 g–h);
* DEEN and the score network: denoising score matching at σ = 0.1 (the paper's eq. 19 is
  L_DEEN = 2σ⁴ J_DSM), Adam, learning rate 1e-3;
* CD (eqs. 26–27): one Langevin step x⁻ = x − σ²∇E(x) + √2 σ ν from each data point, then updates
  along ∇_θE(x⁻) − ∇_θE(x) with Adam at ε = 1e-3 — the paper's optimiser for every other run and
  its ε (the paper's reading, unit ``CD``). ``cd_variants`` trains labelled variants beside it
  (:data:`CD_VARIANTS`): ``"sgd"``, eq. 27 read as a plain SGD step of the batch *mean*, and
  ``"sgdsum"``, the same with the batch *sum* (lr ε·B). Under Adam the two readings coincide: its
  step m̂/(√v̂ + 1e-8) is unchanged when every gradient is multiplied by B;
* every ``eval_every`` steps (and at the initialisation): KL(q_σ‖q_θ) and KL(p‖q_θ), with
  q_θ = e^{−E}/Z normalised on an ``n_grid``² grid; at the end: Fisher divergences to p and q_σ,
  the curl of the learned score on points from q_σ, and the mass the model puts on each part of
  the truth (mixture components; four arcs of the spiral) — the mode-collapse measure;
* ``seeds``: independent initialisations, minibatch orders and noise draws on the same data.

Claims, their rules and health gates: :func:`smlib.experiments.deen_2d_claims.claims`.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from smlib import data, metrics, models
from smlib.experiments.configs import Deen2dConfig
from smlib.experiments import verdicts as V
from smlib.experiments.deen_2d_claims import DATASETS, claims, mode_weights
from smlib.experiments import runner
from smlib.experiments.runner import Experiment, Unit, default_dtype
from smlib.experiments.records import unit_key

__all__ = ["Deen2D", "DATASETS", "CD_VARIANTS", "cd_optimizer", "claims", "mode_weights", "plot_fig1", "plot_curl", "plot_cd"]

# CD readings of eq. 27: optimiser and how the per-point updates of a batch of B are combined
CD_VARIANTS = {"adam": dict(optimizer="adam", reduction="mean"), "sgd": dict(optimizer="sgd", reduction="mean"),
               "sgdsum": dict(optimizer="sgd", reduction="sum")}
PRESETS = {
    "ci": Deen2dConfig(n_steps=1000, batch_size=128, n_train=10_000, seeds=(0, 1), n_grid=120, n_eval=4000,
                       eval_every=250, cd_variants=()),
    "paper": Deen2dConfig(n_steps=30_000, batch_size=256, n_train=100_000, seeds=(0, 1, 2), n_grid=300,
                          n_eval=50_000, eval_every=1000, cd_variants=("sgd", "sgdsum")),
}


def smoothed(p, sigma):
    """q_σ = p ∗ N(0, σ²I) of a Gaussian mixture: every covariance widened by σ²I."""
    return data.GaussianMixture(p.means, covs=p.covs + sigma**2 * torch.eye(p.dim, dtype=torch.float64),
                                weights=p.weights)


def cd_optimizer(cfg, kind, batch_size):
    """The optimiser settings of CD unit ``kind`` ("CD": ``cd_optimizer``; "CD_<v>": variant v of
    :data:`CD_VARIANTS`), lr ε for the batch mean or ε·B for the batch sum (eq. 27 summed over the batch)."""
    name = cfg["cd_optimizer"] if kind == "CD" else kind[3:]
    if name not in CD_VARIANTS:
        raise ValueError(f"unknown CD reading {name!r}; known: {sorted(CD_VARIANTS)}")
    v = CD_VARIANTS[name]
    lr = cfg["cd_lr"] * (batch_size if v["reduction"] == "sum" else 1)
    return dict(optimizer=v["optimizer"], lr=lr, momentum=0.0), v["reduction"]


def _f64(model):
    return copy.deepcopy(model).double().cpu().eval()


class Deen2D(Experiment):
    name = "deen_2d"
    title = "Saremi et al. (2018), Fig. 1: DEEN, a direct score network and Langevin CD in 2-D"
    presets = PRESETS

    def units(self, cfg):
        kinds = ["DEEN", "scorenet", "CD"] + [f"CD_{o}" for o in cfg["cd_variants"]]
        return [Unit(unit_key(k, ds, seed=s), kind=k, dataset=ds, seed=s) for ds in DATASETS for s in cfg["seeds"]
                for k in kinds]

    # ------------------------------------------------------------------ data and references
    def setup(self, cfg, device):
        truth = {"spiral": data.spiral_density(noise=cfg["spiral_noise"]),
                 "mixture": data.gaussian_mixture_2d(cfg["mixture"])}
        ctx = {"truth": truth, "smooth": {k: smoothed(p, cfg["sigma"]) for k, p in truth.items()},
               "bounds": {"spiral": cfg["spiral_bound"], "mixture": cfg["mixture_bound"]}, "grid": {},
               "resp": {}, "train": {}, "eval_p": {}, "eval_q": {}, "reference": {}}
        for i, (ds, p) in enumerate(truth.items()):
            q, b = ctx["smooth"][ds], ctx["bounds"][ds]
            X, _, pts = metrics.grid_2d(b, cfg["n_grid"], dtype=torch.float64)
            lp, lq = p.log_prob(pts).reshape(X.shape), q.log_prob(pts).reshape(X.shape)
            ctx["grid"][ds] = (lp, lq, pts)
            r = p.responsibilities(pts)
            if ds == "spiral":  # components in curve order: group them into n_arcs arcs
                arc = torch.arange(r.shape[1]) * cfg["n_arcs"] // r.shape[1]
                r = torch.zeros(r.shape[0], cfg["n_arcs"], dtype=r.dtype).index_add_(1, arc, r)
            ctx["resp"][ds] = r
            ctx["train"][ds] = p.sample(cfg["n_train"], seed=cfg["data_seed"] + 10 * i, dtype=torch.float32)
            ctx["eval_p"][ds] = p.sample(cfg["n_eval"], seed=cfg["data_seed"] + 10 * i + 1, dtype=torch.float64)
            ctx["eval_q"][ds] = q.sample(cfg["n_eval"], seed=cfg["data_seed"] + 10 * i + 2, dtype=torch.float64)
            gauss = data.GaussianMixture(q.mean()[None], covs=q.covariance()[None])  # moment-matched to q_σ
            masses, _ = self.mode_stats(ctx, ds, lp)
            ctx["reference"][ds] = {
                "kl_p_q": float(metrics.kl_grid_2d(lp, lq)),
                "kl_q_gauss": float(metrics.kl_grid_2d(lq, gauss.log_prob(pts).reshape(X.shape))),
                "fisher_p_q": float(metrics.fisher_divergence(q.score, ctx["eval_p"][ds], p.score)),
                "true_masses": masses}
        return ctx

    # ------------------------------------------------------------------ evaluations
    def log_density(self, ctx, cfg, model, ds, n_grid=None):
        """log q_θ on the grid of ``ds``, normalised there (float64 copy of the model)."""
        pts = ctx["grid"][ds][2][:1]
        return metrics.log_likelihood_grid_2d(_f64(model), pts, ctx["bounds"][ds], n_grid or cfg["n_grid"])["log_density"]

    def kl(self, ctx, cfg, model, ds):
        lp, lq, _ = ctx["grid"][ds]
        lm = self.log_density(ctx, cfg, model, ds)
        return {"kl_q": float(metrics.kl_grid_2d(lq, lm)), "kl_p": float(metrics.kl_grid_2d(lp, lm))}

    def mode_stats(self, ctx, ds, log_density):
        """Mass of a density (normalised on the grid) on each part of the truth, and the mass of q_σ
        lying where the density is below 1/100 of q_σ's (the "missed" mass)."""
        w = torch.softmax(log_density.reshape(-1), 0)
        w_q = torch.softmax(ctx["grid"][ds][1].reshape(-1), 0)
        return (w[:, None] * ctx["resp"][ds]).sum(0).tolist(), float(w_q[w < 0.01 * w_q].sum())

    def modes(self, ctx, cfg, model, ds):
        """Mode statistics of a model: masses per part, missed mass, total variation and the smallest
        ratio of a part's mass to its true mass."""
        masses, missed = self.mode_stats(ctx, ds, self.log_density(ctx, cfg, model, ds))
        true = ctx["reference"][ds]["true_masses"]
        return {"masses": masses, "missed": missed, "tv": 0.5 * sum(abs(a - b) for a, b in zip(masses, true)),
                "min_ratio": min(a / b for a, b in zip(masses, true))}

    def curl(self, ctx, model, ds, dtype):
        """RMS curl ∂₁ψ₂ − ∂₂ψ₁ on points from q_σ, and relative to the RMS Frobenius norm of ∂ψ/∂x
        (``rel_curl`` None when ∂ψ/∂x vanishes there: a network that died, e.g. saturated in training)."""
        J = metrics.jacobian(copy.deepcopy(model).cpu().to(dtype), ctx["eval_q"][ds].to(dtype))
        c = J[:, 1, 0] - J[:, 0, 1]
        rms, jac = float(c.pow(2).mean().sqrt()), float(J.pow(2).sum((1, 2)).mean().sqrt())
        return {"rms_curl": rms, "jacobian_rms": jac, "rel_curl": rms / jac if jac > 0 else None}

    def final(self, ctx, cfg, model, unit):
        """End-of-training numbers: Fisher divergences to p and q_σ, the curl, and for energies KL and modes."""
        ds, kind = unit["dataset"], unit["kind"]
        m64 = _f64(model)
        out = {f"fisher_{w}": float(metrics.fisher_divergence(m64, ctx[f"eval_{w}"][ds], r.score))
               for w, r in (("p", ctx["truth"][ds]), ("q", ctx["smooth"][ds]))}
        out["curl_float32"] = self.curl(ctx, model, ds, torch.float32)
        if kind != "scorenet":
            out["curl_float64"] = self.curl(ctx, model, ds, torch.float64)
            out.update(self.kl(ctx, cfg, model, ds))
            out.update(self.modes(ctx, cfg, model, ds))
        if unit["seed"] == cfg["seeds"][0]:
            out["plot"] = self.plot_data(ctx, cfg, model, ds, kind)
        return out

    def plot_data(self, ctx, cfg, model, ds, kind):
        """Grids for the figures (first seed only): log q_θ, the score field, the curl map."""
        b, m64 = ctx["bounds"][ds], _f64(model)
        out = {}
        if kind != "scorenet":
            out["log_density"] = np.round(self.log_density(ctx, cfg, model, ds, cfg["n_plot"]).numpy(), 3).tolist()
        if kind in ("DEEN", "scorenet"):
            _, _, pts = metrics.grid_2d(b, 15, dtype=torch.float64)
            out["field"] = np.round(metrics.score_on(m64, pts).numpy(), 4).tolist()
            net = m64 if kind == "DEEN" else copy.deepcopy(model).cpu().float()  # score net: its float32 curl
            _, _, pts = metrics.grid_2d(b, cfg["n_curl_plot"], dtype=next(net.parameters()).dtype)
            c = metrics.curl_2d(net, pts).reshape(cfg["n_curl_plot"], -1).double()
            out["curl"] = [[float(f"{v:.3e}") for v in row] for row in c.tolist()]
        return out

    # ------------------------------------------------------------------ one training run
    def run_unit(self, ctx, unit, cfg, *, checkpoint, device, progress):
        """Train one model on one data set with one seed — DSM (eq. 19) or Langevin CD (eqs. 26–27) — and evaluate it."""
        kind, ds, seed = unit["kind"], unit["dataset"], unit["seed"]
        torch.manual_seed(seed)  # the same initialisation for DEEN and CD of one seed
        with default_dtype(torch.float32):
            if kind == "scorenet":
                model = models.ScoreMLP(2, hidden=tuple(cfg["hidden"]), activation=cfg["activation"])
            else:
                model = models.MLPEnergy(2, hidden=tuple(cfg["hidden"]), activation=cfg["activation"])
        opt, reduction = dict(optimizer="adam", lr=cfg["lr"], momentum=0.0), "mean"
        objective, options = "dsm", {"sigma": cfg["sigma"]}
        if kind.startswith("CD"):
            opt, reduction = cd_optimizer(cfg, kind, cfg["batch_size"])
            objective = "langevin_cd"  # eq. 26: h = σ², noise √(2h) ν; eq. 27: descend E(x) − E(sg[x⁻])
            options = dict(n_steps=1, step_size=cfg["sigma"] ** 2, noise_scale=1.0, init_noise=0.0, seed=seed)
        callback, start = None, {}
        if kind != "scorenet":
            start = {"step": 0, **self.kl(ctx, cfg, model, ds), "modes": self.modes(ctx, cfg, model, ds)}
            callback = lambda m, step, epoch, history: self.kl(ctx, cfg, m, ds)  # noqa: E731
        theta0 = [p.detach().cpu().clone() for p in model.parameters()]  # for the θ-moved gate
        history = runner.fit(model, ctx["train"][ds], objective, options=options, n_steps=cfg["n_steps"],
                            batch_size=cfg["batch_size"], device=device, seed=seed, progress=progress,
                            log_every=max(1, cfg["n_steps"] // 200), checkpoint=checkpoint,
                            checkpoint_every=cfg["eval_every"], resume=True, callback=callback,
                            callback_every=cfg["eval_every"], **opt)
        out = self.final(ctx, cfg, model.cpu(), unit)
        if start:
            out["start_modes"] = start["modes"]
            out["curve"] = {k: [start[k]] + [(int if k == "step" else float)(v) for v in history.per_epoch[k]]
                            for k in ("step", "kl_q", "kl_p")}
        out["loss"] = {"step": list(history.steps), "loss": list(history["loss"])}
        out["optimizer"] = {**opt, "reduction": reduction}
        out["theta_rel_change"] = V.relative_change([p.detach().cpu() for p in model.parameters()], theta0)
        out["train_wall_time_s"] = history.wall_time
        return out

    # ------------------------------------------------------------------ the record
    def summarise(self, ctx, cfg, results):
        summary = {"reference": ctx["reference"], "truth_plot": {}}
        for ds in DATASETS:
            X, _, pts = metrics.grid_2d(ctx["bounds"][ds], cfg["n_plot"], dtype=torch.float64)
            summary["truth_plot"][ds] = np.round(ctx["smooth"][ds].log_prob(pts).reshape(X.shape).numpy(), 3).tolist()
        summary["claims"] = claims({"config": cfg, "units": results, "summary": summary})
        return summary

    def figures(self, record):
        import matplotlib.pyplot as plt

        return {"fig1": plot_fig1(record, plt.figure(figsize=(10, 2.7))),
                "curl": plot_curl(record, plt.figure(figsize=(10, 2.6))),
                "cd": plot_cd(record, plt.figure(figsize=(10, 2.8)))}


# ====================================================================== figures (from a record)
def _extent(record, ds):
    return tuple(record["config"][f"{ds}_bound"] * np.array([-1, 1, -1, 1]))


def _density(ax, record, ds, log_density, title):
    ext = _extent(record, ds)
    q = np.exp(np.asarray(log_density))
    ax.imshow(q, origin="lower", extent=ext, cmap="viridis", aspect="auto")
    t = np.exp(np.asarray(record["summary"]["truth_plot"][ds]))
    n = t.shape[0]
    g = np.linspace(ext[0], ext[1], n)
    ax.contour(g, g, t, levels=[0.1 * t.max(), 0.5 * t.max()], colors="w", linewidths=0.6)
    ax.set_title(title, fontsize=8)


def _tidy(fig, axes, record, title):
    for ax in np.ravel(axes):
        ax.tick_params(labelsize=6)
        ax.title.set_fontsize(8)
        ax.xaxis.label.set_fontsize(7)
    fig.suptitle(title or f"{record['record_name']} ({record['scale']} preset, seed {record['config']['seeds'][0]})",
                 fontsize=8)
    fig.tight_layout()
    return fig


def plot_fig1(record, fig, title=None):
    """Fig. 1 a–d from a record: DEEN's density e^{−E}/Z (white: q_σ at 10 % and 50 % of its peak) and its score field."""
    s = record["config"]["seeds"][0]
    axes = fig.subplots(1, 4)
    for j, ds in enumerate(DATASETS):
        p = record["units"][unit_key("DEEN", ds, seed=s)]["plot"]
        _density(axes[2 * j], record, ds, p["log_density"], f"({'ac'[j]}) DEEN $q_\\theta$: {ds}")
        ext = _extent(record, ds)
        g = np.linspace(ext[0], ext[1], 15)
        X, Y = np.meshgrid(g, g)
        f = np.asarray(p["field"])
        norm = np.linalg.norm(f, axis=1) + 1e-12
        axes[2 * j + 1].quiver(X.ravel(), Y.ravel(), f[:, 0] / norm, f[:, 1] / norm, norm, cmap="magma", scale=25)
        axes[2 * j + 1].set(title=f"({'bd'[j]}) DEEN $\\psi=-\\nabla E$: {ds}", aspect="equal")
    return _tidy(fig, axes, record, title)


def plot_curl(record, fig, title=None):
    """Fig. 1 g–h from a record: curl ∂₁ψ₂ − ∂₂ψ₁ of the score network (float32) and of DEEN (float64),
    both on the score network's colour range for that data set."""
    s = record["config"]["seeds"][0]
    axes = fig.subplots(1, 4)
    for j, (kind, ds) in enumerate([(k, ds) for k in ("scorenet", "DEEN") for ds in DATASETS]):
        c = np.asarray(record["units"][unit_key(kind, ds, seed=s)]["plot"]["curl"])
        lim = max(np.abs(record["units"][unit_key("scorenet", ds, seed=s)]["plot"]["curl"]).max(), 1e-12)
        im = axes[j].imshow(c, origin="lower", extent=_extent(record, ds), cmap="RdBu_r", vmin=-lim, vmax=lim,
                            aspect="auto")
        fig.colorbar(im, ax=axes[j], fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
        axes[j].set_title(f"curl, {'score net' if kind == 'scorenet' else 'DEEN (float64)'}: {ds}", fontsize=8)
    return _tidy(fig, axes, record, title)


def plot_cd(record, fig, title=None):
    """Fig. 1 i–j from a record: CD's density per data set (and a variant's, on a second row, if run),
    KL(q_σ‖q_θ) during training, mass per part of the truth."""
    cfg = record["config"]
    s, kinds = cfg["seeds"][0], ["CD"] + [f"CD_{o}" for o in cfg["cd_variants"]]
    if len(kinds) == 1:
        axes = list(fig.subplots(1, 4))
        dens, ax_kl, ax_m = [("CD", ds, axes[j]) for j, ds in enumerate(DATASETS)], axes[2], axes[3]
    else:
        fig.set_size_inches(fig.get_size_inches()[0], 2 * fig.get_size_inches()[1])
        gs = fig.add_gridspec(2, 4)
        dens = [(k, ds, fig.add_subplot(gs[0, 2 * i + j])) for i, k in enumerate(kinds[:2]) for j, ds in enumerate(DATASETS)]
        ax_kl, ax_m = fig.add_subplot(gs[1, :2]), fig.add_subplot(gs[1, 2:])
        axes = [a for _, _, a in dens] + [ax_kl, ax_m]
    for kind, ds, ax in dens:
        u = record["units"][unit_key(kind, ds, seed=s)]
        _density(ax, record, ds, u["plot"]["log_density"], f"{kind} ({u['optimizer']['optimizer']}) $q_\\theta$: {ds}")
    for j, ds in enumerate(DATASETS):
        for k, ls in zip(["DEEN"] + kinds, ("--", "-", ":", "-.")):
            c = record["units"][unit_key(k, ds, seed=s)]["curve"]
            ax_kl.plot(c["step"], c["kl_q"], ls=ls, color=f"C{j}", label=f"{k}, {ds}")
    ax_kl.set(yscale="log", xlabel="step", title="KL($q_\\sigma$‖$q_\\theta$)")
    ax_kl.legend(fontsize=5)
    pos, ticks, where = 0, [], []
    for ds in DATASETS:
        true = record["summary"]["reference"][ds]["true_masses"]
        k = np.arange(len(true)) + pos
        rows = [("truth", true, "0.6")] + [(m, record["units"][unit_key(m, ds, seed=s)]["masses"], c)
                                           for m, c in zip(["DEEN"] + kinds, ("C0", "C3", "C1", "C2"))]
        w = 0.8 / len(rows)
        for i, (lab, m, color) in enumerate(rows):
            ax_m.bar(k + (i - (len(rows) - 1) / 2) * w, m, width=w, color=color, label=lab if ds == DATASETS[0] else None)
        ticks += [f"{ds[0]}{i}" for i in range(len(k))]
        where += list(k)
        pos += len(k) + 1
    ax_m.set_xticks(where, ticks, fontsize=6)
    ax_m.set_title("mass per part of the truth")
    ax_m.legend(fontsize=5)
    return _tidy(fig, axes, record, title)
