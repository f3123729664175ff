r"""Health gates of the Swersky et al. (2011) claims, read from a record (`smlib.experiments.verdicts`).

Each function returns one :class:`~smlib.experiments.verdicts.Gate` for the runs a claim reads:

* :func:`shift` — the whitened test/train variance ratio (the test photographs are not the
  training distribution when it lies outside [0.8, 1.25]);
* :func:`map_lambda` — the MAP denoiser's λ, selected on validation patches, at an edge of its grid;
* :func:`improved` — a denoising error whose minimum is the initialisation ("never improved");
* :func:`dead` — covariance or mean filters whose norm fell below 10 % of their initial norm;
* :func:`noise` — a per-replicate measure within two standard errors of its threshold;
* :func:`controls` — the rule on the untrained model (it must not hold) and on a planted positive;
* :func:`finished` — a training run that diverged and stopped early (every claim reads it).

A record without what a gate needs gets a gate that says so (``ok=None``), which makes the claim
"not testable: … not recorded" — never a silent pass.
"""
from __future__ import annotations

import numpy as np

from smlib.experiments import verdicts as V
from smlib.experiments.records import unit_key
from smlib.experiments.swersky2011_plots import curves_of

__all__ = ["baselines", "finished", "lr_edge", "controls", "dead", "improved", "map_lambda", "median_se", "noise", "replicate_se", "shift"]


def shift(record, key: str = "test") -> V.Gate:
    """Test/train variance ratio of the whitened test patches (``key`` "test") or of the denoising ones."""
    vr = record["summary"]["reference"].get("variance_ratio")
    return V.same_distribution(None if vr is None else vr[key])


def map_lambda(record, estimators) -> V.Gate:
    """λ selected by validation error at every denoised epoch of ``estimators``: none at the grid's edge."""
    lam = [v for e in estimators for s in record["config"]["seeds"]
           for v in record["units"][unit_key(e, seed=s)]["curves"]["map_lambda"]]
    g = V.grid_edge(lam, record["config"]["map_lambdas"], "MAP λ")
    return V.Gate(g.name, g.ok, f"{'/'.join(estimators)}: {g.reason}")


def improved(record, estimators, keys=("mf_mse", "map_mse")) -> V.Gate:
    """Every denoising curve of ``estimators`` has its minimum after epoch 0."""
    never = []
    for e in estimators:
        for k in keys:
            gates = [V.improved(c, "error") for c in curves_of(record, e, key=k)]
            if any(g.ok is None for g in gates):
                return V.missing("never improved", f"the {k} curve of {e}")
            if not all(g.ok for g in gates):
                never.append(f"{e} {k.split('_')[0].upper()}")
    return V.Gate("never improved", not never, f"never improved (minimum at epoch 0): {', '.join(never)}" if never
                  else "every minimum after epoch 0")


def _norms(record, e, s, name):
    """(final, initial) filter norms of one unit: recorded ones, else — for the first seed only, whose
    untrained filters the record keeps — the 16 displayed filters, dewhitened (a proxy, said so)."""
    f = record["units"][unit_key(e, seed=s)]["filters"]
    if f"{name}_norms" in f:
        return f[f"{name}_norms"], f[f"{name}_norms0"], "all"
    untrained = record["summary"]["reference"].get("untrained")
    if s == record["config"]["seeds"][0] and untrained and f"{name}_show" in untrained:
        return (np.linalg.norm(f[f"{name}_show"], axis=1), np.linalg.norm(untrained[f"{name}_show"], axis=1),
                "16 displayed, in pixels")
    return None, None, ""


def dead(record, estimators, name: str = "C") -> V.Gate:
    """Dead ``name`` filters (norm < 10 % of the initial) in any unit of ``estimators``."""
    bad, unknown = [], []
    for e in estimators:
        for s in record["config"]["seeds"]:
            n, n0, which = _norms(record, e, s, name)
            if n is None:
                unknown.append(unit_key(e, seed=s))
                continue
            g = V.dead_units(n, n0, f"{name} filters ({which})")
            if not g.ok:
                bad.append(f"{e} seed {s}: {g.reason}")
    if bad:
        return V.Gate("dead units", False, "; ".join(bad))
    if unknown:
        return V.missing("dead units", f"the initial {name} filter norms of {', '.join(unknown)}")
    return V.Gate("dead units", True, f"no dead {name} filters")


def replicate_se(values: dict) -> float | None:
    """Standard error of one replicate's value, pooled over entries: √(mean of the per-entry variances)."""
    var = [np.var(v, ddof=1) for v in values.values() if len(v) > 1]
    return float(np.sqrt(np.mean(var))) if var else None


def median_se(record, name: str = "W") -> float | None:
    """The largest recorded standard error of a unit's median Gabor R² (None: the record has none)."""
    se = [u["filters"][f"{name}_gabor"].get("median_r2_se") for u in record["units"].values() if "filters" in u]
    se = [v for v in se if v is not None and np.isfinite(v)]
    return max(se) if se else None


def noise(values: dict, threshold: float, se: float | None, what: str) -> V.Gate:
    """No entry's replicate within two standard errors of ``threshold``."""
    if se is None or not se > 0:
        return V.missing("within noise", f"a spread of the {what} (one replicate)")
    close = {e: v for e, v in values.items() if any(abs(x - threshold) < V.NOISE_Z * se for x in v)}
    return V.Gate("within noise", not close,
                  f"{what} of {', '.join(close)} within {V.NOISE_Z:g} SE ({se:.3f}) of {threshold:g}: decided by noise"
                  if close else f"every {what} ≥ {V.NOISE_Z:g} SE from {threshold:g}")


def controls(rule, untrained, planted, what: str = "rule") -> V.Gate:
    """The rule (a function of one set of numbers) on the untrained model's and a planted positive's."""
    return V.controls(None if untrained is None else bool(rule(untrained)), None if planted is None else bool(rule(planted)),
                      what)


def baselines(record, mins: dict) -> V.Gate:
    """A denoising ranking reads signal only where the best estimator's minimum beats the trivial denoisers:
    predicting zero and returning the noisy input (region test set, mean over noise draws). ``mins``:
    ``{denoiser label: {estimator: minima over epochs ≥ 1}}``; one gate over all the denoisers given."""
    b = record["summary"]["reference"].get("baselines")
    if b is None:
        return V.missing("beats baselines", "the baselines (predict zero, noisy input)")
    trivial = min(b["zero"], float(np.mean(b["noisy"])))
    fails = {what: min(float(np.mean(v)) for v in m.values()) for what, m in mins.items()}
    fails = {what: best for what, best in fails.items() if not best < trivial}
    ref = f"the better of predict-zero ({b['zero']:.4f}) and the noisy input ({np.mean(b['noisy']):.4f})"
    return V.Gate("beats baselines", not fails, "; ".join(f"{w}: best minimum {v:.4f} ≥ {ref}" for w, v in fails.items())
                  if fails else f"every denoiser's best minimum < {ref}")


def finished(record, estimators) -> V.Gate:
    """Every training run of ``estimators`` (all seeds) finished its epochs: a run that diverged ended early,
    its curves are NaN after that, and its final values are not the protocol's. Records made before runs
    could stop this way carry no ``diverged`` field: a run that diverged then left no unit at all."""
    bad = [f"{e}-s{s} ({u['diverged'].split(':')[0]})" for e in estimators for s in record["config"]["seeds"]
           if (u := record["units"][unit_key(e, seed=s)]).get("diverged")]
    return V.Gate("diverged", not bad, f"training diverged: {', '.join(bad)}" if bad
                  else "every training run finished its epochs")


def lr_edge(record, estimators) -> V.Gate:
    """The learning rate selected for each of ``estimators`` (validation MAP error) inside its grid."""
    grid = record["config"].get("lr_grid") or []
    if not grid:
        return V.Gate("grid edge", True, "no learning-rate selection in this configuration (one rate for all)")
    lrs = {e: record["units"][unit_key(e, seed=record["config"]["seeds"][0])].get("lr") for e in estimators}
    if None in lrs.values():
        return V.missing("grid edge", "the selected learning rates")
    edge = [e for e, lr in lrs.items() if np.isclose(lr, min(grid)) or np.isclose(lr, max(grid))]
    return V.Gate("grid edge", not edge, f"learning rate at the edge of its grid {min(grid):.3g}…{max(grid):.3g} for "
                  f"{', '.join(edge)}: extend the grid" if edge else "every selected learning rate inside its grid")
