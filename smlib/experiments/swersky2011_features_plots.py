"""Drawing a record of `smlib.experiments.swersky2011_features` (live or recorded): Table 1 as dots and bars,
and the validation curves the early stopping read."""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from smlib.experiments.records import unit_key
from smlib.experiments.swersky2011_plots import COLORS

__all__ = ["ESTIMATORS", "plot_table1", "plot_stopping"]

ESTIMATORS = ("CD", "PCD", "FPCD", "SM", "SMD", "AE")  # Table 1's column order


def plot_table1(record, ax):
    """Test accuracy per estimator (dots: seeds; bar: mean) with the two baselines as lines."""
    S = record["summary"]
    for i, e in enumerate(ESTIMATORS):
        v = S["accuracy"][e]
        ax.bar(i, np.mean(v), color=COLORS[e], alpha=0.35, width=0.6)
        ax.scatter(np.full(len(v), i) + np.linspace(-0.12, 0.12, len(v)), v, color=COLORS[e], s=14, zorder=3)
    for (name, value), ls in zip(S["baselines"].items(), ("--", ":")):
        ax.axhline(value, color="grey", ls=ls, lw=1, label=name)
    lo = min(min(min(v) for v in S["accuracy"].values()), *S["baselines"].values())
    ax.set_ylim(lo - 1, max(max(v) for v in S["accuracy"].values()) + 1)
    ax.set_xticks(range(len(ESTIMATORS)), ESTIMATORS)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"MNIST patch features, {record['record_name']}, {record['config']['n_seeds']} seeds", fontsize=9)
    ax.legend(fontsize=7)
    return ax


def plot_stopping(record, axes):
    """One panel per estimator: the validation accuracy at every check of every seed's run (x: epochs trained,
    logarithmic, so the checks inside the first epoch show), a dot at the check whose model was kept and,
    dashed, the untrained mPoT's mean test accuracy for scale."""
    cfg, units = record["config"], record["units"]
    base = record["summary"]["baselines"]["untrained mPoT features"]
    for ax, e in zip(np.ravel(axes), ESTIMATORS):
        for r in range(cfg["n_seeds"]):
            u = units[unit_key(e, seed=r)]
            t = u.get("check_epochs") or list(range(1, len(u["val_curve"]) + 1))
            best = u.get("check", u.get("epoch"))
            ax.plot(t, u["val_curve"], color=COLORS[e], lw=0.8, alpha=0.8)
            ax.plot(t[best - 1], u["val_curve"][best - 1], "o", color=COLORS[e], ms=3)
        ax.axhline(base, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ticks = [0.25, 0.5, 1, 2, 5, 10, 30]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{e} (lr {units[unit_key(e, seed=0)]['lr']:.3g})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in np.atleast_2d(axes)[:, 0]:
        ax.set_ylabel("validation accuracy (%)", fontsize=7)
    for ax in np.atleast_2d(axes)[-1]:
        ax.set_xlabel("epochs trained", fontsize=7)
    return axes
