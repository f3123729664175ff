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

No verdict here is decided by an ``assert``: every function returns what it found.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["HOLDS", "PARTLY", "FAILS", "UNTESTABLE", "verdict", "claim", "paired_t", "tost_paired", "holm", "lowest_with_tolerance"]

HOLDS, PARTLY, FAILS, UNTESTABLE = "holds", "partly", "does not hold", "not testable on this substitute"


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


def claim(claim: str, rule: str, numbers, verdict: str, decided_by: str = "experiment") -> dict:
    """One row of a claims table: the paper's claim, the rule, the numbers behind it and the verdict.

    ``decided_by="architecture"`` marks an outcome that the model's architecture fixes whatever the run does
    (e.g. DEEN's rank bound), so the table can label it as such.
    """
    return {"claim": claim, "rule": rule, "numbers": "; ".join(numbers), "verdict": verdict, "decided_by": decided_by}


def _t_sf(t: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.sf(t, df))


def paired_t(a, b, alternative: str = "two-sided") -> dict:
    """Paired t-test of mean(a − b): ``alternative`` "two-sided", "less" (a < b) or "greater".

    Returns ``{"mean_diff", "se", "t", "df", "p"}``; with zero spread the p-value is 0 or 1 by the
    sign of the mean difference (a degenerate but decided case).
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"a paired test needs at least 2 pairs, got {d.size}")
    n = d.size
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
    if se == 0.0:
        t = math.copysign(math.inf, mean) if mean != 0 else 0.0
    else:
        t = mean / se
    if alternative == "two-sided":
        p = 2 * _t_sf(abs(t), n - 1) if math.isfinite(t) else (0.0 if t else 1.0)
    elif alternative == "less":
        p = _t_sf(-t, n - 1) if math.isfinite(t) else (0.0 if t < 0 else 1.0)
    elif alternative == "greater":
        p = _t_sf(t, n - 1) if math.isfinite(t) else (0.0 if t > 0 else 1.0)
    else:
        raise ValueError(f"alternative must be 'two-sided', 'less' or 'greater', got {alternative!r}")
    return {"mean_diff": mean, "se": se, "t": t, "df": n - 1, "p": min(1.0, float(p))}


def tost_paired(a, b, margin: float, alpha: float = 0.05) -> dict:
    """Equivalence of paired samples within ±``margin`` by two one-sided t-tests (TOST).

    H₀: |mean(a − b)| ≥ margin. The TOST p-value is the larger of the two one-sided p-values;
    ``equivalent`` is ``p < alpha``. Also returns the (1 − 2α) confidence interval of the mean
    difference, which lies inside (−margin, margin) exactly when ``equivalent``.
    """
    from scipy import stats

    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    lower = paired_t(d + margin, np.zeros_like(d), "greater")   # H₀: mean ≤ −margin
    upper = paired_t(d - margin, np.zeros_like(d), "less")      # H₀: mean ≥ +margin
    p = max(lower["p"], upper["p"])
    n = d.size
    half = float(stats.t.ppf(1 - alpha, n - 1)) * lower["se"]
    mean = float(d.mean())
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
