"""The verdict rules (smlib.experiments.verdicts) against scipy and hand-computed cases."""
import numpy as np
import pytest
from scipy import stats

from smlib.experiments import verdicts as V


def test_verdict_words():
    assert V.verdict([True, True]) == "holds"
    assert V.verdict([True, False]) == "partly"
    assert V.verdict([False, False]) == "does not hold"
    assert V.verdict([True], testable=False) == "not testable on this substitute"
    with pytest.raises(ValueError):
        V.verdict([])


def test_paired_t_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 7), rng.normal(0.3, 1, 7)
    for alt in ("two-sided", "less", "greater"):
        assert V.paired_t(a, b, alt)["p"] == pytest.approx(stats.ttest_rel(a, b, alternative=alt).pvalue, rel=1e-12)


def test_tost_decides_equivalence_by_the_confidence_interval():
    rng = np.random.default_rng(1)
    base = rng.normal(60, 2, 10)
    close = base + rng.normal(0.1, 0.2, 10)     # differences ~0.1 ± 0.2: equivalent within ±1
    far = base + rng.normal(1.5, 0.2, 10)       # ~1.5: not equivalent within ±1
    t_close, t_far = V.tost_paired(close, base, 1.0), V.tost_paired(far, base, 1.0)
    assert t_close["equivalent"] and -1 < t_close["ci"][0] < t_close["ci"][1] < 1
    assert not t_far["equivalent"] and t_far["ci"][1] > 1
    # the TOST p-value is the larger of the two one-sided tests against ±margin (scipy, shifted)
    d = close - base
    p_lo = stats.ttest_1samp(d, -1.0, alternative="greater").pvalue
    p_hi = stats.ttest_1samp(d, 1.0, alternative="less").pvalue
    assert t_close["p"] == pytest.approx(max(p_lo, p_hi), rel=1e-12)


def test_holm_step_down():
    # sorted p 0.01, 0.02, 0.04 at α = 0.05: 0.01 ≤ 0.05/3, 0.02 ≤ 0.05/2, 0.04 ≤ 0.05/1 → all rejected
    assert V.holm({"a": 0.04, "b": 0.01, "c": 0.02}) == {"a": True, "b": True, "c": True}
    # 0.03 > 0.05/2 stops the procedure: it and every larger p-value are kept
    assert V.holm({"a": 0.01, "b": 0.03, "c": 0.04}) == {"a": True, "b": False, "c": False}


def test_lowest_with_tolerance():
    vals = {"SM": [1.00, 1.00], "CD": [1.005, 1.2], "AE": [1.3, 1.3]}
    assert V.lowest_with_tolerance(vals, "SM", 0.01)["holds"]          # CD within 1% above is fine
    vals["CD"] = [0.98, 1.2]                                            # CD 2 % lower in replicate 0
    out = V.lowest_with_tolerance(vals, "SM", 0.01)
    assert not out["holds"] and out["passed"] == 1 and out["worst_margin"] == pytest.approx(-0.02)
    with pytest.raises(ValueError, match="replicates"):
        V.lowest_with_tolerance({"SM": [1.0], "CD": [2.0]}, "SM", 0.01)
