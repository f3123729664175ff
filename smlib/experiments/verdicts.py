r"""Verdict rules for the papers' claims, fixed before any number is looked at.

Every claim of a reproduction ends in one of four verdicts:

* ``"holds"`` — every condition of its rule holds;
* ``"partly"`` — some do;
* ``"does not hold"`` — none does;
* ``"not testable on this substitute"`` — the data set we can use cannot show the claim (for
  example when untrained features already classify as well as trained ones), said so instead of
  a verdict.

Statistical conditions (all two-sided unless named one-sided, level ``alpha``):

* **equality** ("do not differ") needs an *equivalence* test with a stated margin: the two
  one-sided tests (TOST) of the paired differences d against −margin and +margin; equivalence
  holds when both reject, i.e. when the (1 − 2α) confidence interval of the mean difference lies
  inside (−margin, margin). A failed t-test of difference never shows equality;
* **difference** ("significantly worse") is a one-sided paired t-test;
* several comparisons of one claim are corrected with Holm's step-down procedure;
* **rankings** ("X is lowest") need a tolerance and more than one seed or noise draw: X counts as
  lowest when, in every replicate, no other entry is below X's value by more than the relative
  tolerance.

Health gates (the end of this module) check the run a number came from before a rule reads it;
a failed gate makes the verdict "not testable: <reason>".

No verdict here is decided by an ``assert``: every function returns what it found.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["HOLDS", "PARTLY", "FAILS", "UNTESTABLE", "NOT_TESTABLE", "verdict", "claim", "paired_t", "tost_paired",
           "holm", "lowest_with_tolerance", "Gate", "gated", "missing", "ended_at_trivial", "theta_moved",
           "relative_change", "grid_edge", "improved", "variance_ratio", "same_distribution", "dead_units",
           "separated", "binomial_se", "controls", "margin_decides"]

HOLDS, PARTLY, FAILS, UNTESTABLE = "holds", "partly", "does not hold", "not testable on this substitute"
NOT_TESTABLE = "not testable"  # prefix of a verdict that a health gate refused: "not testable: <reason>"
_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def verdict(conditions, *, testable: bool = True) -> str:
    """"holds" if all ``conditions`` are true, "does not hold" if none is, else "partly"."""
    if not testable:
        return UNTESTABLE
    ok = [bool(c) for c in conditions]
    if not ok:
        raise ValueError("a verdict needs at least one condition")
    if all(ok):
        return HOLDS
    return FAILS if not any(ok) else PARTLY


def claim(id: str, claim: str, rule: str, numbers, verdict: str, decided_by: str = "experiment", *,
          gates=()) -> dict:
    """One row of a claims table: a stable ``id`` (a short slug that records and chapters match rows by,
    whatever the wording), the paper's claim, the rule, the numbers behind it, the health ``gates`` of
    the run behind them and the verdict — "not testable: <reason>" when a gate failed or could not be
    checked (:func:`gated`).

    ``decided_by="architecture"`` marks an outcome that the model's architecture fixes whatever the run does
    (e.g. DEEN's rank bound), so the table can label it as such.
    """
    if not _ID.match(id):
        raise ValueError(f"a claim id is a lower-case slug like 'sm-curvature', got {id!r}")
    gates = list(gates)
    return {"id": id, "claim": claim, "rule": rule, "numbers": "; ".join(numbers), "verdict": gated(verdict, gates),
            "ungated": verdict, "decided_by": decided_by, "gates": [g.asdict() for g in gates]}


def paired_t(a, b, alternative: str = "two-sided") -> dict:
    """Paired t-test of mean(a − b) by ``scipy.stats.ttest_rel``: ``alternative`` "two-sided", "less"
    (a < b) or "greater".

    Returns ``{"mean_diff", "se", "t", "df", "p"}``; with zero spread the p-value is 0 or 1 by the
    sign of the mean difference (a degenerate but decided case, where scipy returns NaN).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"a paired test needs at least 2 pairs, got {d.size}")
    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(f"alternative must be 'two-sided', 'less' or 'greater', got {alternative!r}")
    n = d.size
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    if se == 0.0:
        t = math.copysign(math.inf, mean) if mean != 0 else 0.0
        hit = {"two-sided": t != 0, "less": t < 0, "greater": t > 0}[alternative]
        p = 0.0 if hit else 1.0
    else:
        from scipy import stats  # here, not at import: scipy.stats costs every runner process ≈ 0.5 s

        res = stats.ttest_rel(a, b, alternative=alternative)
        t, p = float(res.statistic), float(res.pvalue)
    return {"mean_diff": mean, "se": se, "t": t, "df": n - 1, "p": min(1.0, p)}


def tost_paired(a, b, margin: float, alpha: float = 0.05) -> dict:
    """Equivalence of paired samples within ±``margin`` by two one-sided paired t-tests (TOST).

    H₀: |mean(a − b)| ≥ margin, tested as mean(a + margin − b) ≤ 0 and mean(a − margin − b) ≥ 0,
    each by ``scipy.stats.ttest_rel``. The TOST p-value is the larger of the two one-sided p-values;
    ``equivalent`` is ``p < alpha``. Also returns the (1 − 2α) confidence interval of the mean
    difference — mean ± t₁₋α,ₙ₋₁ · se, the *one-sided* quantile — which lies inside (−margin, margin)
    exactly when ``equivalent``.
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    lower = paired_t(a + margin, b, "greater")   # H₀: mean ≤ −margin
    upper = paired_t(a - margin, b, "less")      # H₀: mean ≥ +margin
    p = max(lower["p"], upper["p"])
    n = a.size
    from scipy import stats

    half = float(stats.t.ppf(1 - alpha, n - 1)) * lower["se"]
    mean = float((a - b).mean())
    return {"mean_diff": mean, "ci": (mean - half, mean + half), "margin": float(margin), "p": p,
            "equivalent": bool(p < alpha)}


def holm(pvalues: dict, alpha: float = 0.05) -> dict:
    """Holm's step-down correction: ``{key: rejected}`` for a dict of p-values, family-wise level α."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    m, out, stop = len(order), {}, False
    for i, key in enumerate(order):
        if not stop and pvalues[key] <= alpha / (m - i):
            out[key] = True
        else:
            stop = True
            out[key] = False
    return out


def lowest_with_tolerance(values: dict, candidate, rel_tol: float) -> dict:
    """Is ``candidate`` the lowest entry in every replicate, within a relative tolerance?

    ``values`` maps a name to a sequence of replicates (seeds or noise draws, aligned by index).
    In replicate r the candidate passes when no other entry is below
    ``values[candidate][r] · (1 − rel_tol)``. Returns ``{"holds", "replicates", "passed",
    "worst_margin"}`` where ``worst_margin`` is the smallest relative lead of the candidate over
    the best other entry (negative: another entry was lower).
    """
    reps = {k: np.asarray(v, dtype=float) for k, v in values.items()}
    n = {len(v) for v in reps.values()}
    if len(n) != 1 or n.pop() < 2:
        raise ValueError("every entry needs the same number (≥ 2) of replicates")
    c = reps[candidate]
    others = np.stack([v for k, v in reps.items() if k != candidate])
    best_other = others.min(0)
    lead = best_other / c - 1.0          # > 0: the candidate is lower than every other entry
    passed = lead >= -rel_tol
    return {"holds": bool(passed.all()), "replicates": int(len(c)), "passed": int(passed.sum()),
            "worst_margin": float(lead.min())}


# ====================================================================== health gates
# Before a rule reads a number, a gate checks the run the number came from. A failed gate — or one
# that cannot be checked because the record lacks what it needs — turns the verdict into
# "not testable: <reason>": a finding is never read off a run that did not train, a selection at
# its grid's edge, a minimum at the initialisation, a shifted test set or a measure that cannot
# tell its own controls apart. The thresholds were fixed before the records were read (issue 22).
TRIVIAL_REL = 0.02      # a loss within 2 % of its trivial level has learnt nothing measurable
MOVED_REL = 0.01        # ‖θ − θ₀‖/‖θ₀‖ < 1 %: the run shows its initialisation, not its estimator
VARIANCE_RATIO = (0.8, 1.25)  # whitened test/train variance per dimension: ±25 % (symmetric in log) is one distribution
DEAD_NORM = 0.10        # a unit whose norm fell below 10 % of its initial norm has died
DEAD_SHARE = 0.10       # more than a tenth dead: enough to move a ½-threshold fraction by more than its noise
NOISE_Z = 2.0           # a value within 2 standard errors of its threshold is decided by noise


@dataclass(frozen=True)
class Gate:
    """The outcome of one health gate: ``ok`` True (passed), False (failed) or None (the record lacks
    what the gate needs — never read as a pass); ``reason`` says what was measured."""
    name: str
    ok: bool | None
    reason: str

    def asdict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "reason": self.reason}


def missing(name: str, what: str) -> Gate:
    """A gate that cannot be checked: ``what`` is not in the record."""
    return Gate(name, None, f"{what} not recorded")


def gated(verdict: str, gates) -> str:
    """``verdict`` if every gate passed, else "not testable: <reasons of the failed or unchecked gates>"."""
    bad = [g for g in gates if g.ok is not True]
    if not bad:
        return verdict
    return f"{NOT_TESTABLE}: " + "; ".join(g.reason for g in bad)


def ended_at_trivial(final_loss: float | None, trivial: float, what: str = "loss") -> Gate:
    """Fails when the final loss is ≥ (1 − 2 %) of its trivial level (e.g. DEEN's zero-score level c²d).

    For losses that start at or above the trivial level and decrease by learning (``trivial > 0``).
    """
    name = "trivial level"
    if final_loss is None:
        return missing(name, f"final {what}")
    if not trivial > 0:
        raise ValueError(f"the trivial level must be > 0, got {trivial}")
    ok = final_loss < (1 - TRIVIAL_REL) * trivial
    return Gate(name, bool(ok), f"final {what} {final_loss:.4g} ≥ {1 - TRIVIAL_REL:g} × its trivial level {trivial:.4g}: "
                f"training ended at the trivial level" if not ok else f"final {what} {final_loss:.4g} < {1 - TRIVIAL_REL:g} × {trivial:.4g}")


def theta_moved(rel_change: float | None, what: str = "θ") -> Gate:
    """Fails when ‖θ − θ₀‖/‖θ₀‖ < 1 % (``rel_change`` from :func:`relative_change`)."""
    name = "θ moved"
    if rel_change is None:
        return missing(name, f"‖{what} − {what}₀‖/‖{what}₀‖")
    ok = rel_change >= MOVED_REL
    return Gate(name, bool(ok), f"‖{what} − {what}₀‖/‖{what}₀‖ = {rel_change:.2g}" + ("" if ok else f" < {MOVED_REL:g}: {what} did not move"))


def relative_change(params, params0) -> float:
    """‖θ − θ₀‖/‖θ₀‖ over all parameters (two sequences of arrays or tensors in the same order)."""
    a = np.concatenate([np.asarray(p, dtype=float).ravel() for p in params])
    b = np.concatenate([np.asarray(p, dtype=float).ravel() for p in params0])
    if a.shape != b.shape:
        raise ValueError(f"θ and θ₀ differ in size: {a.size} vs {b.size}")
    n0 = float(np.linalg.norm(b))
    if n0 == 0:
        raise ValueError("‖θ₀‖ = 0: the relative change is undefined")
    return float(np.linalg.norm(a - b) / n0)


def grid_edge(selected, grid, what: str = "λ") -> Gate:
    """Fails when any selected value (one per evaluation) equals the first or last grid point."""
    name = "grid edge"
    sel = [s for s in np.atleast_1d(np.asarray(selected, dtype=float)) if np.isfinite(s)]
    if not sel:
        return missing(name, f"the selected {what}")
    grid = sorted(float(g) for g in grid)
    if len(grid) < 3:  # every selection from such a grid sits at an edge
        return Gate(name, False, f"{what} selected from a grid of {len(grid)} point(s), which has no inside")
    at = [s for s in sel if np.isclose(s, grid[0]) or np.isclose(s, grid[-1])]
    ok = not at
    return Gate(name, ok, f"{what} at the edge of its grid {grid[0]:g}…{grid[-1]:g} in {len(at)}/{len(sel)} selections"
                if not ok else f"{what} inside its grid in all {len(sel)} selections")


def improved(curve, what: str = "error", lower_is_better: bool = True) -> Gate:
    """Fails ("never improved") when the best value of ``curve`` (NaN: not evaluated) is at epoch 0."""
    name = "never improved"
    c = np.asarray(curve, dtype=float)
    if c.size < 2 or not np.isfinite(c[0]) or np.isfinite(c[1:]).sum() == 0:
        return missing(name, f"the {what} at epoch 0 and after")
    best = int(np.nanargmin(c) if lower_is_better else np.nanargmax(c))
    ok = best != 0
    return Gate(name, ok, f"{what} never improved (its best is at epoch 0)" if not ok else f"best {what} at epoch {best}")


def variance_ratio(x_test, x_train) -> float:
    """Mean over dimensions of var(test)/var(train), in the (whitened) domain the model sees."""
    a, b = np.asarray(x_test, dtype=float), np.asarray(x_train, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"test and train need shape (n, d) with the same d, got {a.shape} and {b.shape}")
    return float(np.mean(a.var(0) / b.var(0)))


def same_distribution(ratio: float | None) -> Gate:
    """Fails when the whitened test/train variance ratio per dimension (averaged) is outside [0.8, 1.25]."""
    name = "test/train shift"
    if ratio is None:
        return missing(name, "the test/train variance ratio")
    lo, hi = VARIANCE_RATIO
    ok = lo <= ratio <= hi
    return Gate(name, bool(ok), f"test/train variance ratio {ratio:.2f}" + ("" if ok else f" outside [{lo:g}, {hi:g}]: test data from another distribution"))


def dead_units(norms, initial_norms, what: str = "filters") -> Gate:
    """Fails when more than a tenth of the measured units have a norm below 10 % of their initial norm."""
    name = "dead units"
    if norms is None or initial_norms is None:
        return missing(name, f"the initial and final norms of the {what}")
    n, n0 = np.asarray(norms, dtype=float), np.asarray(initial_norms, dtype=float)
    if n.shape != n0.shape or n.size == 0:
        raise ValueError(f"norms and initial norms must match and be non-empty, got {n.shape} and {n0.shape}")
    dead = int((n < DEAD_NORM * n0).sum())
    ok = dead <= DEAD_SHARE * n.size
    return Gate(name, ok, f"{dead}/{n.size} {what} dead (norm < {DEAD_NORM:g} × initial)")


def separated(values, threshold: float, se: float, what: str = "value") -> Gate:
    """Fails when a value lies within 2 standard errors of the threshold it is compared with
    ("differences within noise": the rule's outcome would be decided by noise)."""
    name = "within noise"
    if not se > 0:
        raise ValueError(f"a standard error must be > 0, got {se}")
    v = np.atleast_1d(np.asarray(values, dtype=float))
    close = v[np.abs(v - threshold) < NOISE_Z * se]
    ok = close.size == 0
    return Gate(name, ok, f"{what} {', '.join(f'{x:.2f}' for x in close)} within {NOISE_Z:g} SE ({se:.2f}) of the "
                f"threshold {threshold:g}: decided by noise" if not ok else f"{what} ≥ {NOISE_Z:g} SE from {threshold:g}")


def binomial_se(p: float, n: int) -> float:
    """Standard error of a fraction estimated from n units, at the threshold p: √(p(1 − p)/n)."""
    return math.sqrt(p * (1 - p) / n)


def controls(untrained: bool | None, planted: bool | None, what: str = "rule") -> Gate:
    """Fails when the rule already holds on the untrained model (or a trivial one) or cannot hold on a
    planted positive. ``untrained`` / ``planted``: the rule's outcome on each (None: not run)."""
    name = "controls"
    if untrained is None or planted is None:
        return missing(name, f"the {what} on the untrained model and on a planted positive")
    if untrained:
        return Gate(name, False, f"the {what} already holds on the untrained model")
    if not planted:
        return Gate(name, False, f"the {what} cannot hold: it fails on a planted positive")
    return Gate(name, True, f"the {what} fails on the untrained model and holds on a planted positive")


def margin_decides(tost: dict, alpha: float = 0.05) -> Gate:
    """Fails when equivalence holds only through the margin: the (1 − 2α) CI lies inside ±margin but
    excludes 0, i.e. the difference is significant and the margin's size alone makes it "equal"."""
    name = "margin decides"
    lo, hi = tost["ci"]
    ok = not (tost["equivalent"] and (lo > 0 or hi < 0))
    return Gate(name, ok, f"equivalent only through the ±{tost['margin']:.3g} margin: the difference "
                f"({lo:+.3g}, {hi:+.3g}) is significant" if not ok else "not decided by the margin alone")
