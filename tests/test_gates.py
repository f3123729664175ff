"""Health gates of smlib.experiments.verdicts, each tripped by a run built for it, and the selection
steps that decide verdicts (MAP λ, the TOST interval, the Parzen normaliser) pinned."""
import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from smlib import metrics, models, train
from smlib.experiments import verdicts as V
from smlib.experiments.deen_mnist import parzen_ll


def _gauss(n, d, scale=1.0, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _deen(d=2, seed=0):
    torch.manual_seed(seed)
    return models.MLPEnergy(d, hidden=(16, 16), activation="tanh").double()


def _params(m):
    return [p.detach().clone().numpy() for p in m.parameters()]


def _fit(model, x, **kw):
    return train.fit(model, x, "dsm", options={"sigma": 0.5}, batch_size=128, progress=False, device="cpu", **kw)


def test_claim_is_gated_and_has_a_stable_id():
    ok, bad, unk = V.Gate("a", True, "fine"), V.Gate("b", False, "λ at the edge"), V.missing("c", "θ₀")
    c = V.claim("sm-curvature", "x", "r", ["n"], V.HOLDS, gates=[ok])
    assert (c["id"], c["verdict"], c["ungated"]) == ("sm-curvature", V.HOLDS, V.HOLDS)
    c = V.claim("sm-curvature", "x", "r", ["n"], V.HOLDS, gates=[ok, bad, unk])
    assert c["verdict"] == "not testable: λ at the edge; θ₀ not recorded" and c["ungated"] == V.HOLDS
    with pytest.raises(ValueError, match="slug"):
        V.claim("SM curvature", "x", "r", ["n"], V.HOLDS)


def test_trivial_level_gate_trips_on_a_deen_with_zero_score():
    # a DEEN whose output layer is zero has ψ ≡ 0: its L_DEEN = 2σ⁴ J_DSM sits at the zero-score level σ²d
    sigma, d = 0.5, 16
    x = _gauss(4000, d)
    dead = _deen(d)
    with torch.no_grad():
        for p in dead.parameters():
            p.zero_()
    noise = _gauss(4000, d, seed=1)
    from smlib.objectives import dsm as dsm_loss
    loss = float(2 * sigma**4 * dsm_loss(dead, x, sigma=sigma, noise=noise).detach())
    g = V.ended_at_trivial(loss, sigma**2 * d, "L_DEEN")
    assert g.ok is False and "trivial level" in g.reason
    trained = _deen(d)
    _fit(trained, x, n_steps=400, lr=1e-2)
    loss = float(2 * sigma**4 * dsm_loss(trained, x, sigma=sigma, noise=noise).detach())
    assert V.ended_at_trivial(loss, sigma**2 * d).ok is True
    assert V.ended_at_trivial(None, 1.0).ok is None


def test_theta_moved_gate_trips_on_a_run_with_a_negligible_step():
    x = _gauss(1000, 2)
    m = _deen()
    p0 = _params(m)
    _fit(m, x, n_steps=20, lr=1e-7, optimizer="sgd", momentum=0.0)
    g = V.theta_moved(V.relative_change(_params(m), p0))
    assert g.ok is False and "did not move" in g.reason
    _fit(m, x, n_steps=200, lr=1e-2)
    assert V.theta_moved(V.relative_change(_params(m), p0)).ok is True
    assert V.theta_moved(None).ok is None


def test_grid_edge_gate_trips_when_the_optimum_lies_outside_the_grid():
    # Gaussian prior N(0, I), noise σ = 1: the MAP denoiser's best λ is 1/σ² = 1
    model = models.GaussianEnergy(torch.zeros(4, dtype=torch.float64))
    x = _gauss(400, 4)
    xn = x + _gauss(400, 4, seed=3)
    lam, _ = metrics.select_map_lambda(model, x, xn, [2.0, 4.0, 8.0], n_steps=20, lr=1.0)
    g = V.grid_edge([lam], [2.0, 4.0, 8.0])
    assert lam == 2.0 and g.ok is False and "edge" in g.reason
    lam, _ = metrics.select_map_lambda(model, x, xn, [0.25, 0.5, 1.0, 2.0, 4.0], n_steps=20, lr=1.0)
    assert V.grid_edge([lam], [0.25, 0.5, 1.0, 2.0, 4.0]).ok is True
    assert V.grid_edge([float("nan")], [1, 2, 3]).ok is None


def test_map_lambda_is_chosen_by_the_smallest_validation_error():
    """Pins the selection: λ chosen by the largest validation error fails here."""
    model = models.GaussianEnergy(torch.zeros(4, dtype=torch.float64))
    x = _gauss(400, 4)
    xn = x + _gauss(400, 4, seed=3)
    grid = [0.125, 0.5, 1.0, 2.0, 8.0]
    lam, errors = metrics.select_map_lambda(model, x, xn, grid, n_steps=20, lr=1.0)
    # closed form for this prior: x̂ = λ x̃ / (1 + λ)
    want = [float(((x - g * xn / (1 + g)) ** 2).sum(1).mean()) / 4 for g in grid]
    assert errors == pytest.approx(want, rel=1e-6)
    assert lam == 1.0 == grid[int(np.argmin(want))]


def test_never_improved_gate_trips_on_a_run_fitted_to_other_data():
    # validated on N(0, I) but trained on N(3, I): its validation loss is lowest before training
    xv, noise = _gauss(500, 2, seed=5), _gauss(500, 2, seed=6)
    from smlib.objectives import dsm as dsm_loss

    def curve(x):
        m = _deen()
        out = [float(dsm_loss(m, xv, sigma=0.5, noise=noise).detach())]
        for _ in range(3):
            _fit(m, x, n_steps=100, lr=1e-2)
            out.append(float(dsm_loss(m, xv, sigma=0.5, noise=noise).detach()))
        return out

    g = V.improved(curve(_gauss(1000, 2) + 3.0), "validation loss")
    assert g.ok is False and "never improved" in g.reason
    assert V.improved(curve(_gauss(1000, 2))).ok is True
    assert V.improved([1.0, float("nan")]).ok is None


def test_shift_gate_trips_on_test_data_from_another_distribution():
    train_x = _gauss(5000, 8).numpy() @ np.diag(np.linspace(0.5, 3, 8))
    same = _gauss(5000, 8, seed=9).numpy() @ np.diag(np.linspace(0.5, 3, 8))
    mean, U = train_x.mean(0), np.linalg.svd(np.cov(train_x.T))
    W = U[0] / np.sqrt(U[1])                       # PCA whitening fitted on the training data
    white = lambda z: (z - mean) @ W               # noqa: E731
    r_same = V.variance_ratio(white(same), white(train_x))
    r_shift = V.variance_ratio(white(1.55 * same), white(train_x))  # a test set with 2.4× the variance
    assert V.same_distribution(r_same).ok is True and abs(r_same - 1) < 0.05
    g = V.same_distribution(r_shift)
    assert g.ok is False and "another distribution" in g.reason and r_shift == pytest.approx(2.4, rel=0.05)
    assert V.same_distribution(None).ok is None


def test_dead_units_gate_trips_on_filters_shrunk_by_weight_decay():
    x = _gauss(1000, 2)
    m = _deen()
    w0 = m.parameters().__next__().detach().clone()
    _fit(m, x, n_steps=100, lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=1.0)
    w = next(m.parameters()).detach()
    g = V.dead_units(w.norm(dim=1).numpy(), w0.norm(dim=1).numpy())
    assert g.ok is False and "dead" in g.reason
    m2 = _deen()
    _fit(m2, x, n_steps=100, lr=1e-2)
    assert V.dead_units(next(m2.parameters()).detach().norm(dim=1).numpy(), w0.norm(dim=1).numpy()).ok is True
    assert V.dead_units(None, [1.0]).ok is None


def test_noise_gate_trips_on_a_fraction_within_its_standard_error():
    se = V.binomial_se(0.5, 64)
    assert se == pytest.approx(0.0625)
    g = V.separated([0.54, 0.48], 0.5, se, "Gabor fraction")
    assert g.ok is False and "noise" in g.reason
    assert V.separated([0.9, 0.05], 0.5, se).ok is True


def test_controls_gate_trips_on_a_rule_the_untrained_model_passes_or_nobody_can():
    rule = lambda masses, start: min(a / b for a, b in zip(masses, start)) < 0.5  # noqa: E731
    start = [0.3, 0.3, 0.4]
    assert V.controls(rule(start, start), rule([0.5, 0.5, 0.0], start)).ok is True
    # a rule with an absolute condition that the initialisation already meets
    absolute = lambda masses, start: min(masses) < 0.35  # noqa: E731
    g = V.controls(absolute(start, start), absolute([0.5, 0.5, 0.0], start))
    assert g.ok is False and "already holds on the untrained" in g.reason
    never = lambda masses, start: False  # noqa: E731
    assert "cannot hold" in V.controls(never(start, start), never([1, 0, 0], start)).reason
    assert V.controls(None, True).ok is None


def test_margin_gate_trips_on_equivalence_that_only_the_margin_gives():
    sig = [0.1570, 0.1575, 0.1565, 0.1572]          # 12 % above 0.14, tightly: significant yet inside ±15 %
    t = V.tost_paired(sig, [0.14] * 4, 0.15 * 0.14)
    assert t["equivalent"] and V.margin_decides(t).ok is False
    t = V.tost_paired([0.141, 0.139, 0.1405, 0.1395], [0.14] * 4, 0.15 * 0.14)
    assert t["equivalent"] and V.margin_decides(t).ok is True


def test_tost_interval_uses_the_one_sided_quantile():
    """Pins the TOST interval: built with the two-sided quantile it is too wide and this fails."""
    rng = np.random.default_rng(4)
    b = rng.normal(0, 1, 12)
    d = rng.normal(0, 1, 12)
    d = (d - d.mean()) / d.std(ddof=1)              # sd 1, n = 12: se = 1/√12
    se = 1 / math.sqrt(12)
    q90, q95 = stats.t.ppf(0.95, 11), stats.t.ppf(0.975, 11)
    margin = 0.3 + 0.5 * (q90 + q95) * se           # between the 90 % and the 95 % interval's edge
    t = V.tost_paired(b + d + 0.3, b, margin)
    lo, hi = stats.ttest_rel(b + d + 0.3, b).confidence_interval(0.90)
    assert t["ci"] == pytest.approx((lo, hi), rel=1e-10)
    assert t["equivalent"] and t["ci"][1] < margin


def test_paired_tests_are_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 7), rng.normal(0.3, 1, 7)
    for alt in ("two-sided", "less", "greater"):
        r = stats.ttest_rel(a, b, alternative=alt)
        out = V.paired_t(a, b, alt)
        assert (out["p"], out["t"]) == (pytest.approx(r.pvalue, rel=1e-12), pytest.approx(r.statistic, rel=1e-12))
    t = V.tost_paired(a, b, 1.0)
    p = max(stats.ttest_rel(a + 1, b, alternative="greater").pvalue, stats.ttest_rel(a - 1, b, alternative="less").pvalue)
    assert t["p"] == pytest.approx(p, rel=1e-12)


def test_parzen_normaliser_is_that_of_a_gaussian_with_variance_sigma_squared():
    """Pins the Parzen log-likelihood that selects σ: σ in place of σ² in the normaliser fails here."""
    kern, held = _gauss(30, 5, seed=1), _gauss(8, 5, seed=2)
    D2 = torch.cdist(held, kern) ** 2
    for sigma in (0.14, 0.5, 2.0):
        logpdf = np.stack([stats.multivariate_normal(k.numpy(), sigma**2 * np.eye(5)).logpdf(held.numpy()) for k in kern])
        want = float(np.mean(special.logsumexp(logpdf, axis=0) - math.log(30)))
        assert parzen_ll(D2, sigma, 5) == pytest.approx(want, rel=1e-10)
