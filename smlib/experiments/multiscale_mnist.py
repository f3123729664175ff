r"""From one noise level to many, on MNIST: annealed Langevin samples of a multi-σ score network, measured.

The protocol (chapter "From one noise level to many", its MNIST section):

* data: ``n_train`` MNIST training digits (pixels in [0, 1], a seeded random subset; all 60 000 at
  ``paper``), ``n_test`` test digits as the held-out reference;
* units, per seed: ``multi`` — a :class:`PreconditionedScore` trained by `MultiScaleDSM` (λ = σ²) on
  the geometric ladder σ_max → σ_min, L levels, sampled by annealed Langevin (T steps per level,
  α_i = ε σ_i²/σ_L², a final Tweedie step); ``single`` — the same network trained by DSM at one
  σ (DEEN's single-σ setting, Saremi et al. 2018; with λ = σ² as for the ladder), sampled by Langevin
  with as many steps (L·T) and the same step-to-σ² ratio as the last annealed level, then its Tweedie
  step. Both are sampled with an exponential moving average of their weights (``ema``; Song & Ermon 2020),
  kept in the model's buffers so that checkpoints carry it. (A DEEN energy `MLPEnergy` was the first choice; in timed CPU runs it stayed near the
  zero-score loss, so the comparison would have read a health gate, not annealing.) Every chain starts uniform on [0, 1]^784 (Song & Ermon
  2019); each model is also sampled the same way *before* training (the untrained control);
* the instrument: an MLP classifier trained here on the training digits (its test accuracy is
  recorded, and gates the claims); for a set of images, its class histogram, the TV of that histogram
  to the test labels', the mean confidence maxₖ p(k | x); and each image's Euclidean distance to
  its nearest training digit, against the same distance for held-out test digits. A sample nearer
  the training set than 95 % of test digits (the 5 % quantile of theirs) counts as a near-copy;
* planted references: ``n_samples`` test digits (what real digits score), and the same number of
  training digits plus N(0, σ_min²) noise (copies: the near-copy measure must flag them).

Training runs on ``device``; sampling and the measures run on the CPU in float32.
Claims and their rules: :func:`claims`.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from smlib import data, models, samplers
from smlib.ema import add_ema, ema_copy, ema_update
from smlib.experiments import verdicts as V
from smlib.experiments.configs import MultiscaleMnistConfig
from smlib.experiments.multiscale import fit_with_loss
from smlib.experiments.records import unit_key
from smlib.experiments.runner import Experiment, Unit, default_dtype
from smlib.metrics import classifier as C
from smlib.models.noise_conditional import sigma_column
from smlib.objectives.multiscale import MultiScaleDSM, geometric_sigmas
from smlib.scores import score as score_of

__all__ = ["MultiscaleMnist", "KINDS", "PRESETS", "sample_metrics", "claims", "plot_samples", "plot_distances"]

KINDS = ("multi", "single")
PRESETS = {
    # the chapter's live run: seconds of CPU; its samples are not expected to look like digits
    "ci": MultiscaleMnistConfig(n_train=10_000, n_test=500, hidden=(256, 256), n_steps=600, batch_size=64, seeds=(0,),
                                n_samples=100, n_steps_each=10, clf_steps=300,
                                ema=0.99),  # 0.999 would still weigh the initial weights 0.999^600 ≈ 55 % after 600 steps
    # the recorded run: 30–36 CPU-minutes on one core (41–49 ms per batch-256 step with the EMA, timed over
    # 3000 and 7000 steps at these sizes; 6 units × 7000 steps, sampling ≈ 1 min). Batch 256, T = 20 and the EMA: the
    # timed diagnostic runs the chapter reports (without the EMA, T = 100 blew the chains up)
    "paper": MultiscaleMnistConfig(n_train=60_000, n_test=2000, hidden=(512, 1024), n_steps=7000, batch_size=256,
                                   seeds=(0, 1, 2), n_samples=500, n_steps_each=20, clf_steps=3000),
    # for a GPU: wider, longer, more samples (not run on this CPU)
    "gpu": MultiscaleMnistConfig(n_train=60_000, n_test=5000, hidden=(1024, 1024, 1024), n_steps=100_000, batch_size=256,
                                 seeds=(0, 1, 2), n_samples=2000, n_steps_each=100, clf_steps=5000),
}


class PreconditionedScore(models.NoiseConditionalScore):
    r"""s(x̃, σ) = (D(x̃, σ) − x̃)/σ² with D = c_skip x̃ + c_out F_θ(c_in x̃, log σ) (Karras et al. 2022's preconditioning):

    c_skip = σ_d²/(σ² + σ_d²),  c_out = σ σ_d/√(σ² + σ_d²),  c_in = 1/√(σ² + σ_d²),   σ_d = ``sigma_data``,

    so s = (σ_d F/σ − x̃/√(σ² + σ_d²))/√(σ² + σ_d²). D is Tweedie's posterior mean (chapter 6); with F = 0, s is
    the exact score −x̃/(σ² + σ_d²) of q_σ for data N(0, σ_d² I). Why on MNIST: `NoiseConditionalScore` sees
    x̃ unscaled (its norm goes from ≈ 9 at σ = 0.03 to ≈ 29 at σ = 1) and must learn the identity to
    predict ε at large σ; in timed CPU runs it stayed near the zero-score loss where this form did not.
    F is the MLP of `NoiseConditionalScore` (its head's division by σ undone).
    """

    def __init__(self, dim, hidden=(64, 64, 64), activation="softplus", sigma_data: float = 0.3):
        super().__init__(dim, hidden, activation)
        if not (isinstance(sigma_data, (int, float)) and 0 < sigma_data < float("inf")):
            raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
        self.sigma_data = float(sigma_data)

    def score(self, x, sigma):
        s = sigma_column(x, sigma)
        r = (s**2 + self.sigma_data**2).sqrt()
        F = self._head(x / r, sigma) * s  # _head = out(h)/σ
        return (self.sigma_data * F / s - x / r) / r


def ladder(cfg):
    return geometric_sigmas(cfg["sigma_max"], cfg["sigma_min"], cfg["n_levels"])


def sample_metrics(ctx, x) -> dict:
    """The instrument on images x (n, 784): classifier histogram/confidence/TV and nearest-training distances.

    Non-finite rows are counted and left out of the other numbers.
    """
    x = x.detach().float().cpu()
    ok = torch.isfinite(x).all(1)
    out = {"non_finite": int((~ok).sum()), "n": len(x)}
    if not bool(ok.any()):
        return {**out, "confidence": 0.0, "tv": 1.0, "histogram": None, "nn_median": None, "copy_share": 0.0,
                "on_data": 0.0, "nn": []}
    x = x[ok]
    rep = C.class_report(ctx["clf"], x, ctx["label_hist"])
    nn = C.nearest_distance(x, ctx["train"])
    return {**out, "confidence": rep["confidence"], "tv": rep["tv"], "histogram": rep["histogram"],
            "nn_median": float(nn.median()), "copy_share": float((nn < ctx["copy_threshold"]).double().mean()),
            "on_data": float((nn <= ctx["data_threshold"]).double().mean()),
            "nn": np.round(nn.numpy(), 3).tolist()}


def _img(x, n):
    return np.round(x[:n].detach().float().clamp(0, 1).numpy(), 2).tolist()


class MultiscaleMnist(Experiment):
    name = "multiscale_mnist"
    title = "From one noise level to many on MNIST: annealed Langevin from a multi-σ score network against single-σ DEEN Langevin"
    presets = PRESETS

    def units(self, cfg):
        return [Unit(unit_key(k, seed=s), kind=k, seed=s) for s in cfg["seeds"] for k in KINDS]

    def setup(self, cfg, device):
        """Data subsets, the classifier and the references (test digits, planted copies); deterministic in cfg."""
        x, y = data.load_mnist("train")
        xt, yt = data.load_mnist("test")
        g = torch.Generator().manual_seed(cfg["data_seed"])
        tr = torch.randperm(len(x), generator=g)[: cfg["n_train"]]
        te = torch.randperm(len(xt), generator=g)[: cfg["n_test"]]
        ctx = {"train": x[tr], "train_labels": y[tr], "test": xt[te]}
        ctx["clf"] = C.train_classifier(ctx["train"], ctx["train_labels"], hidden=tuple(cfg["clf_hidden"]),
                                        n_steps=cfg["clf_steps"], batch_size=cfg["clf_batch_size"], lr=cfg["clf_lr"],
                                        seed=cfg["data_seed"])
        ctx["label_hist"] = (torch.bincount(yt, minlength=10).double() / len(yt)).tolist()
        test_nn = C.nearest_distance(ctx["test"], ctx["train"])
        ctx["copy_threshold"] = float(torch.quantile(test_nn.double(), cfg["copy_quantile"]))
        ctx["data_threshold"] = float(torch.quantile(test_nn.double(), cfg["data_quantile"]))
        n = cfg["n_samples"]
        copies = x[tr[:n]] + cfg["sigma_min"] * torch.randn(min(n, len(tr)), x.shape[1], generator=g)
        ctx["reference"] = {"clf_test_accuracy": C.accuracy(ctx["clf"], xt, yt), "copy_threshold": ctx["copy_threshold"],
                            "data_threshold": ctx["data_threshold"],
                            "test_nn_median": float(test_nn.median()), "label_hist": ctx["label_hist"],
                            "test_digits": sample_metrics(ctx, ctx["test"][:n]), "copies": sample_metrics(ctx, copies)}
        ctx["show"] = {"test_digits": _img(ctx["test"], cfg["n_show"]), "copies": _img(copies, cfg["n_show"])}
        return ctx

    def draw(self, cfg, model, kind, seed, untrained=False, progress=False):
        """Samples of one model from uniform starts on [0, 1]^d: annealed Langevin (multi) or Langevin + Tweedie (single)."""
        g = torch.Generator().manual_seed(7919 * seed + 13 * KINDS.index(kind) + (1 if untrained else 0))
        x0 = torch.rand(cfg["n_samples"], model.dim, generator=g)
        T, eps, L = cfg["n_steps_each"], cfg["step_lr"], cfg["n_levels"]
        if kind == "multi":
            return samplers.annealed_langevin(model, x0, ladder(cfg), T, eps, generator=g, progress=progress)
        m = model.at(cfg["sigma_single"])
        h = 0.5 * eps * (cfg["sigma_single"] / cfg["sigma_min"]) ** 2  # α/2 at σ_single, as annealing's last level
        x = samplers.langevin(m, x0, L * T, h, generator=g)
        return (x + cfg["sigma_single"] ** 2 * score_of(m, x, detach=True)).detach()

    def run_unit(self, ctx, unit, cfg, *, checkpoint, device, progress):
        """Train one model, sample it before and after training, and measure both sample sets."""
        kind, seed = unit["kind"], unit["seed"]
        d = ctx["train"].shape[1]
        torch.manual_seed(seed)
        with default_dtype(torch.float32):  # the same network for both kinds: only the noise levels differ
            model = PreconditionedScore(d, hidden=tuple(cfg["hidden"]), activation=cfg["activation"],
                                        sigma_data=cfg["sigma_data"])
        if cfg["ema"]:  # θ̄ = θ, so this first update changes nothing; it checks the decay before training
            ema_update(add_ema(model), cfg["ema"])
        cpu = lambda: copy.deepcopy(model).float().cpu().eval()  # noqa: E731
        out = {"untrained": sample_metrics(ctx, self.draw(cfg, cpu(), kind, seed, untrained=True))}
        sigmas = ladder(cfg) if kind == "multi" else (cfg["sigma_single"],)
        zero = d / 2  # λ = σ²: ½E‖ε‖², the loss of s = 0 at every level
        ema = (lambda m, *_: ema_update(m, cfg["ema"])) if cfg["ema"] else None  # noqa: E731
        out.update(fit_with_loss(model, ctx["train"], MultiScaleDSM(sigmas=sigmas), None, zero, cfg, device=device,
                                 seed=seed, progress=progress, checkpoint=checkpoint, callback=ema))
        x = self.draw(cfg, ema_copy(cpu()) if cfg["ema"] else cpu(), kind, seed, progress=progress)
        out["samples"] = sample_metrics(ctx, x)
        if seed == cfg["seeds"][0]:
            k = cfg["n_pairs"]
            _, idx = C.nearest_distance(x[:k].nan_to_num(), ctx["train"], return_index=True)
            out["show"] = {"samples": _img(x.nan_to_num(), cfg["n_show"]), "nearest": _img(ctx["train"][idx], k)}
        else:  # the per-sample distances are plotted for the first seed only
            out["samples"].pop("nn")
            out["untrained"].pop("nn")
        return out

    def summarise(self, ctx, cfg, results):
        summary = {"reference": ctx["reference"], "show": ctx["show"]}
        summary["claims"] = claims({"config": cfg, "units": results, "summary": summary})
        return summary

    def figures(self, record):
        import matplotlib.pyplot as plt

        return {"samples": plot_samples(record, plt.figure(figsize=(11, 3.4))),
                "distances": plot_distances(record, plt.figure(figsize=(5, 3)))}


# ====================================================================== claims
def _fmt(ms, key, f=".3f"):
    return ", ".join(format(m[key], f) for m in ms)


def _digits(m, ref, cfg):
    """Digit-like: the classifier is about as sure of them as of test digits (mean confidence ≥ ratio × theirs),
    and at least min_on_data of them are as near the training set as 95 % of test digits (classifiers are
    confident on noise too, so confidence alone cannot say it)."""
    return (m["confidence"] >= cfg["min_confidence_ratio"] * ref["test_digits"]["confidence"]
            and m["on_data"] >= cfg["min_on_data"])


def _classes(m, ref, cfg):
    """Every class is drawn about as often as in the test labels: TV of the class histogram < max_class_tv."""
    return m["tv"] < cfg["max_class_tv"]


def _not_copies(m, ref, cfg):
    """Digits (:func:`_digits`) of which at most max_copy_share are nearer the training set than 95 % of test digits."""
    return _digits(m, ref, cfg) and m["copy_share"] <= cfg["max_copy_share"]


def _gates(record, kinds):
    """Health gates of the runs a claim reads (each failure is a reason the verdict is 'not testable')."""
    cfg, ref, fails = record["config"], record["summary"]["reference"], []
    if not ref["clf_test_accuracy"] >= cfg["min_clf_accuracy"]:
        fails.append(f"the classifier's test accuracy {ref['clf_test_accuracy']:.3f} < {cfg['min_clf_accuracy']}")
    for k in kinds:
        for s in cfg["seeds"]:
            u = record["units"][f"{k}-s{s}"]
            L = u["loss"]
            if not L["final"] < 0.5 * L["zero_score_level"]:
                fails.append(f"{k} s{s} ended at the zero-score level (loss {L['final']:.4g}, not below ½ × {L['zero_score_level']:.4g})")
            if u["samples"]["non_finite"]:
                fails.append(f"{k} s{s} has {u['samples']['non_finite']} non-finite samples")
    return fails


def _rule_claim(record, id, text, rule_text, kind, rule, planted_negative=None):
    """A claim whose rule ``rule(metrics, ref, cfg)`` must hold for ``kind``'s samples in every seed.

    Gates beyond :func:`_gates`: the rule holds for the planted positive (test digits), fails for the
    model's untrained samples in every seed, and fails for ``planted_negative`` (a reference set) if given.
    """
    cfg, ref, U = record["config"], record["summary"]["reference"], record["units"]
    seeds = cfg["seeds"]
    fails = _gates(record, [kind])
    ms = [U[f"{kind}-s{s}"]["samples"] for s in seeds]
    un = [U[f"{kind}-s{s}"]["untrained"] for s in seeds]
    if not rule(ref["test_digits"], ref, cfg):
        fails.append("the planted positive (test digits) fails the rule")
    if any(rule(u, ref, cfg) for u in un):
        fails.append("the untrained model already passes the rule")
    if planted_negative and rule(ref[planted_negative], ref, cfg):
        fails.append(f"the planted {planted_negative} pass the rule")
    f = lambda ms_: ", ".join(f"conf {m['confidence']:.3f} / near data {m['on_data']:.2f} / TV {m['tv']:.3f} / "  # noqa: E731
                              f"copies {m['copy_share']:.3f}" for m in ms_)
    nums = [f"samples (per seed): {f(ms)}", f"untrained: {f(un)}", f"test digits: {f([ref['test_digits']])}"]
    if planted_negative:
        nums.append(f"planted {planted_negative}: copies {ref[planted_negative]['copy_share']:.3f}")
    alone = V.verdict([all(rule(m, ref, cfg) for m in ms)])
    return V.claim(id, text, rule_text, nums, alone, gates=[V.Gate("health", False, "; ".join(fails))] if fails else [])


def claims(record) -> list[dict]:
    """The MNIST claims, each with a rule fixed before the runs, its numbers and its verdict.

    Every rule must hold in every seed; each is also applied to the untrained model's samples (which
    must fail it) and to a planted positive (which must pass it), and the health gates of
    :func:`_gates` are checked first — any failure makes the verdict "not testable: <reasons>".
    """
    cfg, ref, U = record["config"], record["summary"]["reference"], record["units"]
    r = cfg["min_confidence_ratio"]
    out = [
        _rule_claim(record, "mnist-annealed-digits", "Annealed Langevin from the multi-σ score network draws images a classifier reads as digits",
                    f"mean classifier confidence ≥ {r:g} × the test digits', and ≥ {cfg['min_on_data']:.0%} of the samples "
                    f"as near the training set as {cfg['data_quantile']:.0%} of test digits, every seed", "multi", _digits),
        _rule_claim(record, "mnist-annealed-classes", "…of every class, in about the test set's proportions",
                    f"TV of the class histogram to the test labels' < {cfg['max_class_tv']:g}, every seed", "multi", _classes),
        _rule_claim(record, "mnist-annealed-not-copies", "…and not copies of training digits",
                    f"the digit rule holds and at most {cfg['max_copy_share']:.0%} of the samples are nearer the "
                    f"training set than {1 - cfg['copy_quantile']:.0%} of test digits, every seed", "multi", _not_copies,
                    planted_negative="copies"),
    ]
    lead = cfg["on_data_lead"]
    seeds = cfg["seeds"]
    fails = _gates(record, KINDS)
    ok = lambda a, b: a["on_data"] < b["on_data"] - lead  # noqa: E731
    single = [U[f"single-s{s}"]["samples"] for s in seeds]
    multi = [U[f"multi-s{s}"]["samples"] for s in seeds]
    if any(ok(U[f"single-s{s}"]["untrained"], U[f"multi-s{s}"]["untrained"]) for s in seeds):
        fails.append("the rule already holds between the untrained models")
    if not all(ok(U[f"single-s{s}"]["untrained"], ref["test_digits"]) for s in seeds):
        fails.append("the planted positive (untrained single-σ samples against test digits) fails the rule")
    alone = V.verdict([all(ok(a, b) for a, b in zip(single, multi))])
    out.append(V.claim(
        "mnist-single-fewer-near-data", "Langevin from the single-σ model (DEEN's setting), with as many steps, draws fewer images near the data",
        f"share of samples as near the training set as {cfg['data_quantile']:.0%} of test digits < the annealed multi-σ "
        f"share − {lead:g}, every seed",
        [f"near data: single {_fmt(single, 'on_data', '.2f')} vs multi {_fmt(multi, 'on_data', '.2f')}; confidence "
         f"single {_fmt(single, 'confidence')} vs multi {_fmt(multi, 'confidence')}; median distance to the nearest "
         f"training digit single {_fmt(single, 'nn_median', '.2f')}, multi {_fmt(multi, 'nn_median', '.2f')}, "
         f"test digits {ref['test_nn_median']:.2f}"], alone,
        gates=[V.Gate("health", False, "; ".join(fails))] if fails else []))
    return out


# ====================================================================== figures (from a record)
def _mosaic(imgs, cols):
    a = np.asarray(imgs).reshape(-1, 28, 28)
    rows = -(-len(a) // cols)
    pad = np.ones((rows * cols - len(a), 28, 28))
    a = np.concatenate([a, pad]) if len(pad) else a
    return np.pad(a, ((0, 0), (1, 1), (1, 1)), constant_values=1).reshape(rows, cols, 30, 30).transpose(0, 2, 1, 3).reshape(rows * 30, cols * 30)


def plot_samples(record, fig, title=None):
    """Test digits, annealed multi-σ samples, single-σ Langevin samples (first seed), and samples beside
    their nearest training digits; grey levels clipped to [0, 1]."""
    s, S, U = record["config"]["seeds"][0], record["summary"], record["units"]
    ref = S["reference"]
    panels = [("test digits", S["show"]["test_digits"], ref["test_digits"]),
              ("multi-σ, annealed Langevin", U[f"multi-s{s}"]["show"]["samples"], U[f"multi-s{s}"]["samples"]),
              ("single σ, Langevin", U[f"single-s{s}"]["show"]["samples"], U[f"single-s{s}"]["samples"])]
    axes = fig.subplots(1, 4)
    for ax, (label, imgs, m) in zip(axes, panels):
        ax.imshow(_mosaic(imgs, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(label, fontsize=7)
        ax.set_xlabel(f"confidence {m['confidence']:.2f}, near data {m['on_data']:.2f}, TV {m['tv']:.2f}, "
                      f"near-copies {m['copy_share']:.2f}", fontsize=6)
    sh = U[f"multi-s{s}"]["show"]
    k = len(sh["nearest"])
    pairs = [im for pair in zip(sh["samples"][:k], sh["nearest"]) for im in pair]
    axes[3].imshow(_mosaic(pairs, 4), cmap="gray_r", vmin=0, vmax=1)
    axes[3].set_title("multi-σ sample | nearest training digit", fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"{record['record_name']} ({record['scale']} preset, seed {s})", fontsize=8)
    fig.tight_layout()
    return fig


def plot_distances(record, fig, title=None):
    """Histograms of the distance to the nearest training digit: samples (first seed), test digits, copies."""
    s, ref, U = record["config"]["seeds"][0], record["summary"]["reference"], record["units"]
    ax = fig.subplots()
    sets = [("test digits", ref["test_digits"]["nn"]), ("noisy training copies", ref["copies"]["nn"]),
            ("multi-σ annealed", U[f"multi-s{s}"]["samples"]["nn"]), ("single-σ Langevin", U[f"single-s{s}"]["samples"]["nn"])]
    hi = max(max(v) for _, v in sets if v)
    for label, v in sets:
        ax.hist(v, bins=np.linspace(0, hi, 40), histtype="step", density=True, label=label)
    ax.axvline(ref["copy_threshold"], color="k", ls=":", lw=0.8, label=f"test digits' {record['config']['copy_quantile']:.0%} / {record['config']['data_quantile']:.0%} quantiles")
    ax.axvline(ref["data_threshold"], color="k", ls=":", lw=0.8)
    ax.set(xlabel="distance to the nearest training digit", ylabel="density")
    ax.legend(fontsize=6)
    ax.set_title(title or f"{record['record_name']} ({record['scale']} preset, seed {s})", fontsize=8)
    fig.tight_layout()
    return fig
