r"""Saremi et al. (2018), Fig. 2: DEEN on MNIST — σ by the Parzen likelihood, single-step denoising.

The protocol (the chapter's paper / ours / why table); the patch experiment of Fig. 3 is in
:mod:`smlib.experiments.deen_patches` and shares the pieces defined here:

* σ: the width of a Gaussian Parzen estimator on ``n_parzen`` training digits that maximises the
  mean log-likelihood of ``n_valid`` held-out training digits (the paper found 0.14), searched on
  log σ by a bounded scalar minimiser. The same search on nested subsets of n/8, n/4, n/2 and n
  kernels, repeated over ``parzen_replicates`` random held-out/kernel splits, tests the paper's
  remark that σ falls as n grows;
* model: the paper's DEEN 784→128→128→256→1, tanh, linear last layer, trained by DSM at the
  selected σ (L_DEEN = 2σ⁴ J_DSM, eq. 19) with Adam, learning rate 1e-3, on the training digits
  other than the held-out ones; ``gaussian_expert`` adds, beyond the paper, the same network plus
  one Gaussian expert (λ/2)‖x − c‖², which is not subject to the rank bound below;
* Fig. 2a: the running average of L_DEEN, beside its lower bound σ²(d − r), r = rank W₁;
* Fig. 2b–c: ``n_test`` test digits with noise of level σ′ = 0.3, denoised in one step
  ξ + tψ(ξ) with t = σ′², t = σ² and the t that is best on the held-out digits, for
  ``n_noise`` noise draws; references: the noisy input, the linear (Wiener) denoiser, and the rank
  bound ‖P⊥(ξ − x)‖² below which no single step of the paper's network can go.

Claims and their rules: :func:`claims`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from smlib import data, metrics, models
from smlib.experiments.configs import DeenMnistConfig
from smlib.experiments import deen_training as T
from smlib.experiments.deen_mnist_claims import (PAPER_SIGMA, _fmt, claims, decided_by,  # noqa: F401
                                                 first_run, runs)
from smlib.experiments.runner import Experiment, Unit, default_dtype
from smlib.experiments.records import unit_key

__all__ = ["DeenMnist", "MLPPlusGaussian", "row_space_basis", "rank_floor", "claims", "plot_parzen", "plot_fig2",
           "train_units", "deen_train", "runs", "first_run"]

# training (smlib.experiments.deen_training): lr chosen from lr_grid on validation digits, warm-up, best checkpoint
PRESETS = {
    "ci": DeenMnistConfig(lr_grid=(3e-3, 1e-3, 3e-4), warmup=50, n_parzen=2000, n_valid=500, parzen_replicates=2,
                          sigma_kernels=2000, select_steps=100, n_steps=700, val_every=100, seeds=(0,), log_every=10,
                          checkpoint_every=1000, n_test=500, n_noise=2),
    # σ* at n_parzen kernels on 3 disjoint blocks of the training split (no kernel or held-out digit shared)
    "paper": DeenMnistConfig(lr_grid=(3e-3, 1e-3, 3e-4, 1e-4, 3e-5), warmup=1000, n_parzen=18_000, n_valid=2000,
                             parzen_replicates=3, sigma_kernels=50_000, select_steps=10_000, n_steps=120_000,
                             val_every=1000, seeds=(0, 1, 2), log_every=100, checkpoint_every=5000, n_test=5000,
                             n_noise=3),
}


# ====================================================================== shared with deen_patches
class MLPPlusGaussian(models.EnergyModel):
    r"""E(x) = MLP(x) + (λ/2)‖x − c‖²: a DEEN with one extra Gaussian expert (λ = exp(log_lam)).

    Beyond the paper: its score −∇MLP(x) − λ(x − c) has a full-rank term, so it escapes the rank
    bound of an MLP energy whose first layer is narrower than the input.
    """

    def __init__(self, dim, hidden, center, lam, activation="tanh"):
        super().__init__(dim)
        self.mlp = models.MLPEnergy(dim, hidden=hidden, activation=activation)
        self.center = torch.nn.Parameter(torch.as_tensor(center, dtype=torch.get_default_dtype()).clone())
        self.log_lam = torch.nn.Parameter(torch.tensor(math.log(lam), dtype=torch.get_default_dtype()))

    def energy(self, x):
        return self.mlp(x) + 0.5 * self.log_lam.exp() * ((x - self.center) ** 2).sum(-1)


def make_model(kind, cfg, x_train, sigma, seed):
    """The paper's network (``kind="DEEN"``) or it plus a Gaussian expert initialised at the isotropic
    Gaussian fit of the σ-smoothed data (c = mean, 1/λ = mean pixel variance + σ²), in float32; ``seed``
    draws the initialisation."""
    torch.manual_seed(seed)
    with default_dtype(torch.float32):
        if kind == "DEEN":
            return models.MLPEnergy(x_train.shape[1], hidden=tuple(cfg["hidden"]), activation=cfg["activation"])
        lam = 1.0 / (float(x_train.var(0).mean()) + sigma**2)
        return MLPPlusGaussian(x_train.shape[1], tuple(cfg["hidden"]), x_train.mean(0), lam, cfg["activation"])


def train_units(cfg):
    """The selection unit of each network kind, then one unit per kind and training seed."""
    kinds = ["DEEN", "DEEN_expert"] if cfg["gaussian_expert"] else ["DEEN"]
    return [Unit(unit_key("select", k), kind=k) for k in kinds] + [Unit(unit_key(k, seed=s), kind=k, seed=s) for k in kinds
                                                             for s in cfg["seeds"]]


def deen_train(unit, x_train, x_valid, sigma, cfg, *, checkpoint, device, progress):
    """A selection unit (:func:`deen_training.select_lr`) or one training seed at the selected rate, kept at
    its best validation checkpoint: ``(model or None, history or None, result)``."""
    pairs = T.valid_pairs(x_valid, sigma, cfg["split_seed"] + 7)
    make = lambda s: make_model(unit["kind"], cfg, x_train, sigma, s)  # noqa: E731
    if unit.key.startswith("select-"):
        return None, None, T.select_lr(make, x_train, sigma, cfg, pairs, checkpoint=checkpoint, device=device,
                                       progress=progress)
    lr = T.selection_of(checkpoint, unit_key("select", unit["kind"]))["selected_lr"]
    model = make(unit["seed"])
    history, info = T.train_seed(model, x_train, sigma, cfg, lr, unit["seed"], pairs, checkpoint=checkpoint,
                                 device=device, progress=progress)
    return model.cpu().eval(), history, {**info, "seed": unit["seed"]}


def first_layer(model):
    return (model.mlp if isinstance(model, MLPPlusGaussian) else model).layers[0].weight


def row_space_basis(W):
    """Orthonormal basis (d, r) of the row space of W (h, d), by SVD in float64."""
    _, S, Vh = torch.linalg.svd(W.detach().to(torch.float64), full_matrices=False)
    r = int((S > S.max() * max(W.shape) * torch.finfo(torch.float64).eps).sum())
    return Vh[:r].T


def rank_floor(model, x, xi):
    """‖P⊥(ξ − x)‖² per sample for the first layer of ``model`` (the rank bound), and r."""
    Q = row_space_basis(first_layer(model))
    v = (xi - x).to(torch.float64)
    return ((v - (v @ Q) @ Q.T) ** 2).sum(1), Q.shape[1]


def loss_curve(history, sigma, every=1):
    """L_DEEN = 2σ⁴ J_DSM at the logged steps (window means)."""
    return {"step": history.steps[::every], "loss": [2 * sigma**4 * v for v in history["loss"][::every]]}


def img(t, n, digits=3):
    return np.round(t[:n].detach().double().numpy(), digits).tolist()


# ====================================================================== Parzen selection of σ
def sq_dists(a, b, chunk=256):
    """‖a_i − b_j‖², (len(a), len(b)), computed in float64 chunks and stored in float32."""
    a64, b64 = a.double(), b.double()
    bn = (b64 * b64).sum(1)
    out = torch.empty(len(a), len(b), dtype=torch.float32)
    for i in range(0, len(a), chunk):
        c = a64[i:i + chunk]
        out[i:i + chunk] = ((c * c).sum(1)[:, None] + bn[None] - 2 * c @ b64.T).clamp_min(0)
    return out


def parzen_ll(D2, sigma, d, chunk=256):
    r"""Mean held-out log-likelihood of the Parzen estimator p̂_σ(ξ) = (1/n) Σ_k N(ξ; x_k, σ²I)
    (rows of ``D2``: held-out points, columns: kernels)."""
    n = D2.shape[1]
    tot = sum(float(torch.logsumexp(D2[i:i + chunk] * (-0.5 / sigma**2), 1).double().sum())
              for i in range(0, D2.shape[0], chunk))
    return tot / D2.shape[0] - math.log(n) - 0.5 * d * math.log(2 * math.pi * sigma**2)


def best_sigma(D2, d):
    """σ* = argmax of :func:`parzen_ll` over log σ ∈ [log 0.03, 0 ], and the maximum."""
    import scipy.optimize

    res = scipy.optimize.minimize_scalar(lambda ls: -parzen_ll(D2, math.exp(ls), d), method="bounded",
                                         bounds=(math.log(0.03), 0.0), options={"xatol": 1e-4})
    return math.exp(res.x), -float(res.fun)


def parzen_sizes(cfg):
    n = cfg["n_parzen"]
    return [n // 8, n // 4, n // 2, n]


class DeenMnist(Experiment):
    name = "deen_mnist"
    title = "Saremi et al. (2018), Fig. 2: DEEN on MNIST, σ by the Parzen likelihood, single-step denoising"
    presets = PRESETS
    prerequisite_units = ("select-",)  # the learning-rate selection the training units read

    def selections(self, cfg, folder):
        return T.selections(self, cfg, folder)

    def units(self, cfg):
        return [Unit(unit_key("parzen"))] + train_units(cfg)

    def split(self, cfg, r):
        """Replicate r: ``n_valid`` held-out digits and ``n_parzen`` kernels from block r of a random partition
        of the training split into ``parzen_replicates`` disjoint blocks — no two replicates share a digit,
        so their σ* are independent and their spread gives an honest CI. Also returns every training
        digit outside block 0's held-out ones (the training set of the networks)."""
        x = data.load_mnist("train")[0]
        k, nv, n = cfg["parzen_replicates"], cfg["n_valid"], cfg["n_parzen"]
        if k * (n + nv) > len(x):
            raise ValueError(f"{k} disjoint Parzen blocks of {n} kernels + {nv} held-out digits need {k * (n + nv)} "
                             f"training digits; MNIST has {len(x)}")
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg["split_seed"]))
        block = perm[r * (n + nv):(r + 1) * (n + nv)]
        rest = torch.cat([perm[:r * (n + nv)], perm[r * (n + nv) + nv:]])
        return x[block[:nv]], x[block[nv:]], x[rest]

    def setup(self, cfg, device):
        valid, _, pool = self.split(cfg, 0)
        d = pool.shape[1]
        if cfg["sigma"] is None:  # the σ the networks train at: held-out digits of block 0, the other digits as kernels
            sigma, _ = best_sigma(sq_dists(valid, pool[: cfg["sigma_kernels"]]), d)
        else:
            sigma = float(cfg["sigma"])
        x_test = data.load_mnist("test")[0]
        x_test = x_test[torch.randperm(len(x_test), generator=torch.Generator().manual_seed(cfg["split_seed"] + 1))
                        [: cfg["n_test"]]]
        g = torch.Generator().manual_seed(cfg["split_seed"] + 2)
        sp = cfg["sigma_prime"]
        xi_valid = valid + sp * torch.randn((cfg["n_noise"], *valid.shape), generator=g)
        xi_test = x_test + sp * torch.randn((cfg["n_noise"], *x_test.shape), generator=g)
        mu, C = pool.double().mean(0), torch.cov(pool.double().T)
        W = torch.linalg.solve(C + sp**2 * torch.eye(d, dtype=torch.float64), C)
        wiener = [mu + (xi.double() - mu) @ W for xi in xi_test]
        per_image = lambda x, xh: float(metrics.mse(x, xh, per="sample"))  # noqa: E731
        ref = {"noisy": [per_image(x_test, xi) for xi in xi_test],
               "wiener": [per_image(x_test.double(), w) for w in wiener]}
        return {"sigma": sigma, "d": d, "train": pool, "valid": valid, "test": x_test, "xi_valid": xi_valid,
                "xi_test": xi_test, "reference": ref, "wiener_show": img(wiener[0], cfg["n_show"], 2)}

    def run_unit(self, ctx, unit, cfg, *, checkpoint, device, progress):
        """The Parzen sweep, or one network trained by DSM (eq. 19) and tested by single steps ξ + tψ(ξ) (eq. 11)."""
        if unit.key == "parzen":
            return self.parzen(cfg)
        sigma, sp = ctx["sigma"], cfg["sigma_prime"]
        model, history, info = deen_train(unit, ctx["train"], ctx["valid"], sigma, cfg, checkpoint=checkpoint,
                                          device=device, progress=progress)
        if model is None:
            return info
        per_image = lambda x, xh: float(metrics.mse(x, xh, per="sample"))  # noqa: E731
        t_grid = np.linspace(0.0, sp**2, cfg["n_t"])
        psi_v = [metrics.score_on(model, xi) for xi in ctx["xi_valid"]]
        valid_err = [float(np.mean([per_image(ctx["valid"], xi + t * p) for xi, p in zip(ctx["xi_valid"], psi_v)]))
                     for t in t_grid]
        t_best = float(t_grid[int(np.argmin(valid_err))])
        steps = {"t_sigma_prime": sp**2, "t_sigma": sigma**2, "t_best": t_best}
        test = {k: [] for k in (*steps, "rank_floor")}
        show = {}
        for i, xi in enumerate(ctx["xi_test"]):
            psi = metrics.score_on(model, xi)
            for k, t in steps.items():
                test[k].append(per_image(ctx["test"], xi + t * psi))
                if i == 0 and (unit["kind"] == "DEEN" or k == "t_best"):
                    show[k] = img(xi + t * psi, cfg["n_show"], 2)
            floor, r = rank_floor(model, ctx["test"], xi)
            test["rank_floor"].append(float(floor.mean()))
        return {"sigma": sigma, "steps": steps, "t_grid": t_grid.tolist(), "valid_err": valid_err, "test": test,
                "rank": r, "loss_floor": sigma**2 * (ctx["d"] - r), "loss": loss_curve(history, sigma), "show": show, **info,
                "lambda": float(model.log_lam.detach().exp()) if hasattr(model, "log_lam") else None,
                "train_wall_time_s": history.wall_time}

    def parzen(self, cfg):
        """σ* and the held-out log-likelihood at σ* for nested kernel sets, per replicate split."""
        sizes, out = parzen_sizes(cfg), {"sigma_star": [], "ll_star": []}
        grid = np.exp(np.linspace(math.log(0.05), math.log(0.6), 15))
        for r in range(cfg["parzen_replicates"]):
            valid, kernels, _ = self.split(cfg, r)
            D2 = sq_dists(valid, kernels)
            best = [best_sigma(D2[:, :n], valid.shape[1]) for n in sizes]
            out["sigma_star"].append([b[0] for b in best])
            out["ll_star"].append([b[1] for b in best])
            if r == 0:
                out["ll_curves"] = [[parzen_ll(D2[:, :n], s, valid.shape[1]) for s in grid] for n in sizes]
            del D2
        return {"sizes": sizes, "sigma_grid": grid.tolist(), **out, "train_wall_time_s": None}

    def summarise(self, ctx, cfg, results):
        summary = {"sigma": ctx["sigma"], "reference": ctx["reference"],
                   "show": {"clean": img(ctx["test"], cfg["n_show"], 2), "noisy": img(ctx["xi_test"][0], cfg["n_show"], 2),
                            "wiener": ctx["wiener_show"]}}
        summary["claims"] = claims({"config": cfg, "units": results, "summary": summary})
        return summary

    def figures(self, record):
        import matplotlib.pyplot as plt

        return {"parzen": plot_parzen(record, plt.figure(figsize=(9, 3))),
                "loss": plot_loss(record, plt.figure(figsize=(6, 3))),
                "denoise": plot_fig2(record, plt.figure(figsize=(8, 4.6)))}


# ====================================================================== figures (from a record)
def _title(fig, record, title):
    fig.suptitle(title or f"{record['record_name']} ({record['scale']} preset)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_parzen(record, fig, title=None):
    """Held-out Parzen log-likelihood against σ per kernel count (split 0), and σ*(n) for every split."""
    P = record["units"]["parzen"]
    axes = fig.subplots(1, 2)
    for n, curve, s, ll in zip(P["sizes"], P["ll_curves"], P["sigma_star"][0], P["ll_star"][0]):
        (line,) = axes[0].plot(P["sigma_grid"], curve, label=f"n = {n}")
        axes[0].plot([s], [ll], "o", color=line.get_color())
    axes[0].set_ylim(min(P["ll_star"][0]) - 300, max(P["ll_star"][0]) + 50)
    axes[0].set(xscale="log", xlabel="kernel width σ", ylabel="held-out log-likelihood (nats)")
    for r, s in enumerate(P["sigma_star"]):
        axes[1].plot(P["sizes"], s, "o-", label=f"split {r}")
    axes[1].axhline(PAPER_SIGMA, color="0.5", ls=":", label=f"paper: {PAPER_SIGMA}")
    axes[1].set(xscale="log", xlabel="Parzen kernels n", ylabel="σ*")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax, ticks in ((axes[0], [0.05, 0.1, 0.2, 0.4]), (axes[1], P["sizes"])):
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    return _title(fig, record, title)


def plot_loss(record, fig, title=None):
    """Fig. 2a: running L_DEEN (window: a tenth of the logs) of each model, with the rank bound σ²(d − r)."""
    ax = fig.subplots()
    for key, U in record["units"].items():
        if key == "parzen" or key.startswith("select-"):
            continue
        L = np.asarray(U["loss"]["loss"])
        k = max(1, len(L) // 10)
        ax.plot(U["loss"]["step"][k - 1:], np.convolve(L, np.ones(k) / k, mode="valid"), label=key)
    U = first_run(record, "DEEN")
    ax.axhline(U["loss_floor"], color="k", ls="--", lw=0.8, label=f"rank bound σ²(d − r), r = {U['rank']}")
    ax.set(xlabel="Adam step", ylabel="running $\\mathcal{L}_{\\mathrm{DEEN}}$")
    ax.legend(fontsize=7)
    return _title(fig, record, title)


def plot_fig2(record, fig, title=None):
    """Fig. 2b–c: clean, noisy (σ′) and single-step denoised test digits; grey levels clipped to [0, 1]."""
    S, D = record["summary"]["show"], first_run(record, "DEEN")
    rows = [("clean", S["clean"]), ("noisy σ′", S["noisy"]), ("DEEN, t = σ′²", D["show"]["t_sigma_prime"]),
            ("DEEN, t = σ²", D["show"]["t_sigma"]), ("DEEN, best t", D["show"]["t_best"]), ("Wiener", S["wiener"])]
    if runs(record, "DEEN_expert"):
        rows.append(("+ Gauss. expert", first_run(record, "DEEN_expert")["show"]["t_best"]))
    n = len(S["clean"])
    axes = fig.subplots(len(rows), n, squeeze=False)
    for i, (label, imgs) in enumerate(rows):
        for j in range(n):
            axes[i, j].imshow(np.clip(np.asarray(imgs[j]).reshape(28, 28), 0, 1), cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(title or f"{record['record_name']} ({record['scale']} preset)", fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.17)
    return fig
