"""Reading and drawing a record of `smlib.experiments.swersky2011` (live or recorded): the paper's Fig. 1
and Fig. 2, the SMD noise sweep, the Gabor table."""
from __future__ import annotations

import numpy as np
import torch

from smlib import plotting
from smlib.experiments import verdicts as V
from smlib.experiments.records import unit_key
from smlib.experiments.runner import unit_times

__all__ = ["ESTIMATORS", "COLORS", "lr_key", "curves_of", "plot_fig1", "plot_filters", "plot_smd_sigma", "gabor_table",
           "denoising_table", "variants_table", "selection_table", "timing_note"]

ESTIMATORS = ("SM", "SMD", "CD", "PCD", "FPCD", "AE")
COLORS = dict(SM="C0", SMD="C1", CD="C2", PCD="C3", FPCD="C4", AE="C5")


def lr_key(estimator: str, lr: float) -> str:
    """The unit key of one point of the learning-rate selection, e.g. ``lr-SM-0.001``."""
    return unit_key("lr", estimator, f"{lr:.3g}")

def curves_of(record, estimator, seed=None, key="gap"):
    """Per-epoch values of ``key`` for one estimator, one list per replicate (seed × noise draw)."""
    seeds = record["config"]["seeds"] if seed is None else [seed]
    out = []
    for s in seeds:
        c = record["units"][unit_key(estimator, seed=s)]["curves"]
        reps = sorted(k for k in c if k.startswith(key + "_"))
        out += [c[k] for k in reps] if reps else [c[key]]
    return out


def plot_fig1(record, fig, title=None):
    """Fig. 1 of the paper from a record: (a)–(c) Theorem-1 terms of SM, SMD, AE; (d) gap; (e) MF; (f) MAP."""
    seed = record["config"]["seeds"][0]
    axes = fig.subplots(2, 3)
    for ax, name, letter in zip(axes[0], ["SM", "SMD", "AE"], "abc"):
        c = record["units"][unit_key(name, seed=seed)]["curves"]
        for key, style in [("reconstruction", "-"), ("variance", "--"), ("curvature", ":"), ("total", "-")]:
            ax.plot(c[key], style, lw=2.2 if key == "total" else 1.2, color="k" if key == "total" else None, label=key)
        ax.set_title(f"({letter}) {name}: Theorem-1 terms", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    ref = record["summary"]["reference"]
    for ax, key, letter, label in [(axes[1, 0], "gap", "d", "F(noisy) − F(clean)"), (axes[1, 1], "mf_mse", "e", "MSE, mean-field"),
                                   (axes[1, 2], "map_mse", "f", "MSE, MAP")]:
        for name in ESTIMATORS:
            mean = np.array(curves_of(record, name, key=key)).mean(0)
            at = np.flatnonzero(np.isfinite(mean))  # the denoisers are not evaluated at every epoch
            ax.plot(at, mean[at], color=COLORS[name], label=name, marker="o", ms=2)
        ax.set_title(f"({letter}) {label}", fontsize=9)
        if key != "gap":  # the baselines: ṽ/(1+σ²) (= Wiener on training statistics), and where recorded zero and noisy
            ax.axhline(np.mean(ref["mse_shrink"]), color="grey", lw=0.8, ls="--")
            for name, ls in (("zero", ":"), ("noisy", "-.")):
                if "baselines" in ref:
                    ax.axhline(np.mean(ref["baselines"][name]), color="grey", lw=0.8, ls=ls)
    axes[1, 0].legend(fontsize=7, ncol=2)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
    for ax in axes[1]:
        ax.set_xlabel("epoch", fontsize=8)
    fig.suptitle(title or f"{record['record_name']} ({record['scale']} preset)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_filters(record, fig):
    """Fig. 2 from a record: 16 mean (W) and 16 covariance (C) filters per estimator, in pixels."""
    cfg = record["config"]
    side, seed = cfg["patch_size"], cfg["seeds"][0]
    tile = (side, side) if cfg["gray"] else (side, side, 3)
    axes = fig.subplots(2, len(ESTIMATORS))
    for j, name in enumerate(ESTIMATORS):
        f = record["units"][unit_key(name, seed=seed)]["filters"]
        for i, key in enumerate(("W", "C")):
            px = torch.tensor(f[f"{key}_show"])
            if not cfg["gray"]:  # channel-first rows -> image layout
                px = px.reshape(len(px), 3, side, side).permute(0, 2, 3, 1).reshape(len(px), -1)
            plotting.filter_grid(px, tile, ax=axes[i, j], n_cols=4, title=f"{name}: {key}")
            axes[i, j].title.set_fontsize(8)
    fig.tight_layout()
    return fig


def plot_smd_sigma(record, ax):
    """The free-energy gap during SMD training at the swept noise levels, beside SM and the main SMD run."""
    cfg = record["config"]
    seed = cfg["seeds"][0]
    for name, lw in (("SM", 2), ("SMD", 2)):
        ax.plot(np.mean(curves_of(record, name, seed, "gap"), 0), color=COLORS[name], lw=lw,
                label=name if name == "SM" else f"SMD σ={cfg['smd_sigma']:g} (main run)")
    sweep = cfg["smd_sweep"]
    for i, sig in enumerate(sweep):
        c = record["units"][unit_key(f"SMD{sig:g}", seed=seed)]["curves"]
        gaps = [c[k] for k in sorted(c) if k.startswith("gap_")]
        ax.plot(np.mean(gaps, 0), ls="--", color=_viridis(0.85 * i / max(1, len(sweep) - 1)), label=f"SMD σ={sig:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("F(noisy) − F(clean)")
    ax.legend(fontsize=7)
    return ax


def _viridis(t):
    import matplotlib.pyplot as plt

    return plt.cm.viridis(t)


def gabor_table(record) -> str:
    """Markdown: median R² and fraction Gabor-like of the C and W filters (the C fraction with the widest span of
    its replicates' 95 % intervals, where recorded), with the two checks of the measure."""
    ref = record["summary"]["reference"]
    seeds = record["config"]["seeds"]
    rows = ["| filters of | C: median R² | C: Gabor-like | W: median R² | W: Gabor-like |", "|---|---|---|---|---|"]
    p = ref["planted"]
    rows.append(f"| planted Gabors + 5% noise (must pass) | {p['median_r2']:.2f} | {p['frac_gabor']:.2f} | — | — |")
    u = ref["untrained"]
    rows.append(f"| untrained initialisation (control) | {u['C_gabor']['median_r2']:.2f} | {u['C_gabor']['frac_gabor']:.2f}"
                f" | {u['W_gabor']['median_r2']:.2f} | {u['W_gabor']['frac_gabor']:.2f} |")
    for e in ESTIMATORS:
        f = [record["units"][unit_key(e, seed=s)]["filters"] for s in seeds]
        m = lambda k, q, f=f: np.mean([x[k][q] for x in f])  # noqa: E731
        ci = [x["C_gabor"].get("frac_gabor_ci") for x in f]  # 95 % binomial interval of each replicate
        ci = f" ({min(c[0] for c in ci):.2f}–{max(c[1] for c in ci):.2f})" if all(ci) else ""
        rows.append(f"| {e} | {m('C_gabor', 'median_r2'):.2f} | {m('C_gabor', 'frac_gabor'):.2f}{ci} | "
                    f"{m('W_gabor', 'median_r2'):.2f} | {m('W_gabor', 'frac_gabor'):.2f} |")
    return "\n".join(rows)


def denoising_table(record) -> str:
    """Markdown: each estimator's minimum over epochs ≥ 1 (mean over replicates) with each denoiser, on the
    region test set and the held-out photographs, its untrained model (epoch 0) in brackets, and the baselines."""
    ref = record["summary"]["reference"]
    cols = [(c, k) for c in ("", "img_") for k in ("mf_mse", "step_mse", "map_mse")
            if f"{c}{k}_0" in record["units"][unit_key("SM", seed=record["config"]["seeds"][0])]["curves"]]
    name = {"mf_mse": "MF", "step_mse": "one-step", "map_mse": "MAP", "": "region", "img_": "photos"}
    rows = ["| | " + " | ".join(f"{name[k]} ({name[c]})" for c, k in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for e in ESTIMATORS:
        cells = []
        for c, k in cols:
            reps = curves_of(record, e, key=c + k)
            cells.append(f"{np.mean([np.nanmin(r[1:]) for r in reps]):.3f} ({np.mean([r[0] for r in reps]):.3f})")
        rows.append(f"| {e} | " + " | ".join(cells) + " |")
    for b in ("zero", "noisy", "shrink", "wiener"):
        if "baselines" in ref:
            rows.append(f"| baseline: {b} | " + " | ".join(f"{np.mean(ref[c + 'baselines'][b]):.3f}" for c, _ in cols) + " |")
    return "\n".join(rows)


def variants_table(record) -> str:
    """Markdown: the variants of the first replicate beside its main runs — the ablations (SM and SMD with C
    unconstrained, and with fewer whitened dimensions) and SMD's noise sweep; "" when the record has none.

    Per run: the whitened dimension, the change of the curvature term, the median growth of C's column
    norms, the Gabor-like fraction of C, each denoiser's minimum over epochs ≥ 1 (region test set; per noise draw,
    then averaged, as `denoising_table` and the claims read them) and how far the last MAP error lies above
    that minimum (overfitting from the best epoch)."""
    cfg, units = record["config"], record["units"]
    s0 = cfg["seeds"][0]
    label = {"free": "C unconstrained", "keep": f"keeps {100 * cfg.get('ablation_keep', 0):.1f} % of the variance"}
    variants = [(f"{e}, {label[a]}" if a else f"{e} (main run)", unit_key(e, *[a] * bool(a)))  # (row, unit prefix)
                for e in ("SM", "SMD") for a in ("", *cfg.get("ablations", ()))]
    variants += [(f"SMD σ={sig:g}", f"SMD{sig:g}") for sig in cfg.get("smd_sweep", ())]
    if len(variants) == 2 or not all(unit_key(p, seed=s0) in units for _, p in variants):
        return ""
    rows = ["| run (seed " + str(s0) + ") | d | Δ curvature | C norms, end/start | C Gabor-like | MF min | MAP min "
            "| MAP last/min − 1 |", "|---|---|---|---|---|---|---|---|"]
    for name, prefix in variants:
        u = units[unit_key(prefix, seed=s0)]
        c, f = u["curves"], u.get("filters") or {}
        growth = np.median(np.divide(f["C_norms"], f["C_norms0"])) if "C_norms0" in f else np.nan
        # as the claims read them: per noise draw, the minimum over epochs >= 1 and the last error over it
        mf, mp = (curves_of(record, prefix, s0, k) for k in ("mf_mse", "map_mse"))
        over = np.mean([r[-1] / np.nanmin(r[1:]) - 1 for r in mp])
        rows.append(f"| {name} | {u['reference']['d']} | {c['curvature'][-1] - c['curvature'][0]:+.0f} | {growth:.2f} | "
                    f"{f.get('C_gabor', {}).get('frac_gabor', np.nan):.2f} | {np.mean([np.nanmin(r[1:]) for r in mf]):.3f} | "
                    f"{np.mean([np.nanmin(r[1:]) for r in mp]):.3f} | {100 * over:+.1f} % |")
    return "\n".join(rows)


def selection_table(record, score: str, lower_is_better: bool, what: str, fmt: str = "{:.3f}") -> str:
    """Markdown: the learning-rate selection of a record (units ``lr-<estimator>-<rate>``) — each estimator's
    validation ``score`` at every rate of ``lr_grid``, the chosen one in bold (the rate its training units
    used), "diverged" where the selection's training diverged, † where its early stopping was censored
    (such a rate is chosen only if every rate is); "" when the record has no selection."""
    grid, units = record["config"].get("lr_grid") or [], record["units"]
    if not grid:
        return ""
    ests = [e for e in record["summary"]["lr"] if lr_key(e, grid[0]) in units]
    rows = ["| estimator | " + " | ".join(f"{lr:.3g}" for lr in grid) + " | chosen |", "|---" * (len(grid) + 2) + "|"]
    dagger = False
    for e in ests:
        chosen = record["summary"]["lr"][e]
        cells = []
        for lr in grid:
            u = units[lr_key(e, lr)]
            v = u.get(score)
            cell = "diverged" if v is None else fmt.format(v) + ("†" if u.get("censored") else "")
            dagger |= bool(v is not None and u.get("censored"))
            cells.append(f"**{cell}**" if np.isclose(lr, chosen) else cell)
        edge = "" if V.grid_edge([chosen], grid, "learning rate").ok else " (grid edge)"
        rows.append(f"| {e} | " + " | ".join(cells) + f" | {chosen:.3g}{edge} |")
    best = "lowest" if lower_is_better else "highest"
    note = (" † early stopping censored (best at the first check, or still improving when the budget or a "
            "divergence ended it): chosen only if every rate is." if dagger else "")
    return "\n".join(rows) + f"\n\nCells: {what}; the {best} is chosen.{note}"


def timing_note(record) -> str:
    """One line: time per unit (for the chapter), over all sessions of a resumed unit where the record knows it."""
    return ", ".join(f"{k} {v:.0f} s" for k, v in unit_times(record).items())
