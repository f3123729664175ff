"""Building blocks of the Swersky protocol fixes (issue 22, item 2): region splits, flat patches,
the whitened variance ratio, mPoT column normalisation, HMC rejection-rate step control, Wiener filter."""
import numpy as np
import pytest
import torch

from smlib.data.patch_sampling import remove_flat_patches
from smlib.data.patches import natural_patches, natural_patches_regions, natural_patches_split, tile_regions
from smlib.data.photos import _load_raw
from smlib.data.whitening import PatchWhitener, whitened_variance_ratio

RGB = ["skimage", "skimage_jpeg", "sklearn"]


# ------------------------------------------------------------------ regions
def test_tiles_are_disjoint_cover_every_image_and_respect_fractions():
    keys = ["skimage:astronaut", "skimage:coffee", "sklearn:china"]
    reg = tile_regions(keys, size=8, block=64, fractions=(0.7, 0.1, 0.2), seed=3)
    for key in keys:
        h, w = _load_raw(key).shape[:2]
        owner = np.full((h, w), -1)
        for s, name in enumerate(("train", "val", "test")):
            tiles = [t for t in reg[name] if t[0] == key]
            assert tiles, f"{key} has no {name} tile"  # every photograph feeds every set
            for _, r0, r1, c0, c1 in tiles:
                assert (owner[r0:r1, c0:c1] == -1).all()  # no pixel in two tiles
                owner[r0:r1, c0:c1] = s
        m = (owner >= 0).sum()
        assert abs((owner == 2).sum() / m - 0.2) < 0.05 and abs((owner == 1).sum() / m - 0.1) < 0.05
    assert tile_regions(keys, 8, 64, (0.7, 0.1, 0.2), seed=3) == reg
    assert tile_regions(keys, 8, 64, (0.7, 0.1, 0.2), seed=4) != reg


def _locate(patch, img, size):
    """All (key, row, col) top-left positions where ``patch`` (gray, raw pixels) occurs."""
    hits = []
    for key in img:
        win = np.lib.stride_tricks.sliding_window_view(img[key], (size, size))
        rr, cc = np.nonzero((np.abs(win - patch).reshape(*win.shape[:2], -1).max(-1) < 1e-12))
        hits += [(key, r, c) for r, c in zip(rr, cc)]
    return hits


def test_region_patches_lie_inside_tiles_of_their_own_set():
    from smlib.data.photos import load_natural_image

    size, keys = 6, ["skimage:brick", "skimage:grass"]
    tr, va, te, info = natural_patches_regions(40, 20, 20, size=size, seed=1, images=keys, block=32,
                                               remove_mean=False, dtype=torch.float64, return_info=True)
    reg = tile_regions(keys, size, 32, (0.7, 0.1, 0.2),
                       seed=int(np.random.SeedSequence(1).spawn(4)[0].generate_state(1)[0]))
    img = {k: load_natural_image(k) for k in keys}
    for x, name in ((tr, "train"), (va, "val"), (te, "test")):
        for p in x.numpy()[:10]:
            hits = _locate(p.reshape(size, size), img, size)
            inside = [h for h in hits if any(h[0] == k and r0 <= h[1] and h[1] + size <= r1 and c0 <= h[2]
                                             and h[2] + size <= c1 for k, r0, r1, c0, c1 in reg[name])]
            assert inside, f"a {name} patch is not inside one {name} tile"


def test_region_split_same_distribution_image_split_not():
    """Whitened test/train variance ratio: ≈ 1 for regions, far from 1 for held-out photographs."""
    kw = dict(size=8, gray=True, seed=0, sources=["skimage"], dtype=torch.float64)
    tr, _, te = natural_patches_regions(20000, 0, 5000, block=32, fractions=(0.8, 0.0, 0.2), **kw)
    w = PatchWhitener(0.99).fit(tr)
    r_regions = whitened_variance_ratio(w, tr, te)["ratio"]
    tr2, te2 = natural_patches_split(20000, 5000, by="images", test_images=["skimage:brick", "skimage:gravel"], **kw)
    w2 = PatchWhitener(0.99).fit(tr2)
    r_images = whitened_variance_ratio(w2, tr2, te2)["ratio"]
    assert 0.8 <= r_regions <= 1.25, r_regions
    assert not 0.8 <= r_images <= 1.25, r_images


def test_split_by_regions_and_old_splits_still_work():
    a, b, info = natural_patches_split(300, 100, size=8, seed=2, by="regions", sources=["skimage"], return_info=True)
    assert a.shape == (300, 64) and b.shape == (100, 64) and info["n_tiles"]["val"] == 0
    tr, te, tri, tei = natural_patches_split(200, 50, size=8, seed=0, sources=["skimage"], return_images=True)
    assert not set(tri) & set(tei)  # the image-disjoint split is kept
    with pytest.raises(ValueError, match="block"):
        natural_patches_regions(10, 1, 10, size=16, block=8)
    with pytest.raises(ValueError, match="fractions"):
        natural_patches_regions(10, 1, 10, size=8, fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="n_val"):
        natural_patches_regions(10, 0, 10, size=8, fractions=(0.7, 0.1, 0.2))
    with pytest.raises(ValueError, match="too few"):
        natural_patches_regions(10, 1, 10, size=8, images=["skimage:coins"], block=300)


# ------------------------------------------------------------------ ratio
def test_whitened_variance_ratio_recovers_a_known_scale():
    g = torch.Generator().manual_seed(0)
    d, A = 12, torch.randn(12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tr = torch.randn(40000, d, generator=g, dtype=torch.float64) @ A
    te = torch.randn(40000, d, generator=g, dtype=torch.float64) @ A
    w = PatchWhitener(1.0).fit(tr)
    assert abs(whitened_variance_ratio(w, tr, te)["ratio"] - 1) < 0.03
    assert abs(whitened_variance_ratio(w, tr, 2.0 * te)["ratio"] - 4) < 0.12  # variance ×4
    shifted = te + 3.0 * A[0]  # a mean shift counts with center="train", not with center="own"
    assert whitened_variance_ratio(w, tr, shifted)["ratio"] > 1.5
    assert abs(whitened_variance_ratio(w, tr, shifted, center="own")["ratio"] - 1) < 0.03


# ------------------------------------------------------------------ flat patches
def test_flat_patches_removed_and_counted():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 16))
    x[:37] = 0.0  # exactly flat
    x[37:50] *= 0.005  # nearly flat: std ≈ 0.5 % of the median
    x[50:60] *= 0.02  # 2 %: kept
    kept, info = remove_flat_patches(torch.from_numpy(x))
    assert info["n_removed"] == 50 and kept.shape == (950, 16)
    _, info2 = remove_flat_patches(x, threshold=info["threshold"])
    assert info2["n_removed"] == 50
    with pytest.raises(ValueError, match="drop_flat"):
        remove_flat_patches(x, drop_flat=1.5)


def test_extraction_drop_flat_replaces_flat_patches_and_reports_count():
    kw = dict(size=8, seed=0, images=["skimage:astronaut", "skimage:moon"], dtype=torch.float64)  # astronaut: black areas
    x0 = natural_patches(3000, **kw)
    s0 = x0.std(1, correction=0)
    t = 0.01 * float(np.median(s0.numpy()))  # numpy: the mean of the two middle values
    x, info = natural_patches(3000, drop_flat=0.01, return_info=True, **kw)
    assert info["n_flat"] == int((s0 < t).sum()) and info["n_flat"] > 0
    assert abs(info["flat_threshold"] - t) < 1e-12
    assert x.shape == x0.shape and bool((x.std(1, correction=0) >= t).all())
    # validation and test are filtered with the training threshold
    tr, va, te, inf = natural_patches_regions(2000, 300, 500, size=8, seed=0, images=kw["images"], block=32,
                                              drop_flat=0.01, return_info=True, dtype=torch.float64)
    t = inf["flat_threshold"]
    raw = natural_patches_regions(2000, 300, 500, size=8, seed=0, images=kw["images"], block=32, dtype=torch.float64)
    assert abs(t - 0.01 * float(np.median(raw[0].std(1, correction=0).numpy()))) < 1e-12  # set on the (unfiltered) training draw
    assert all(bool((s.std(1, correction=0) >= t).all()) for s in (tr, va, te)) and inf["n_flat"]["train"] > 0


# ------------------------------------------------------------------ mPoT column normalisation
from smlib.models import MPoT  # noqa: E402


def test_mpot_project_fixed_norm_keeps_directions():
    torch.manual_seed(0)
    m = MPoT(6, n_cov=5, n_mean=2, filter_norm=2.0)
    with torch.no_grad():
        m.C.mul_(torch.tensor([0.1, 1.0, 3.0, 7.0, 0.5]))
    before = m.C.detach().clone()
    m.project_()
    assert torch.allclose(m.C.norm(dim=0), torch.full((5,), 2.0), atol=1e-6)
    cos = (before * m.C).sum(0) / (before.norm(dim=0) * m.C.norm(dim=0))
    assert torch.allclose(cos, torch.ones(5), atol=1e-6)


def test_mpot_project_running_follows_ranzatos_rule():
    torch.manual_seed(1)
    m = MPoT(4, n_cov=3, filter_norm="running")
    with torch.no_grad():
        m.C.copy_(torch.eye(4)[:, :3] * torch.tensor([2.0, 4.0, 6.0]))  # column norms 2, 4, 6: mean 4
    m.project_()
    nu = 0.95 * 1.0 + 0.05 * 4.0
    assert abs(float(m.filter_norm_running) - nu) < 1e-6
    assert torch.allclose(m.C.norm(dim=0), torch.full((3,), nu), atol=1e-6)
    with torch.no_grad():
        m.C[:, 0] *= 3.0  # norms 3ν, ν, ν: mean 5ν/3
    m.project_()
    nu2 = 0.95 * nu + 0.05 * (5 * nu / 3)
    assert abs(float(m.filter_norm_running) - nu2) < 1e-6
    assert torch.allclose(m.C.norm(dim=0), torch.full((3,), nu2), atol=1e-6)
    assert "filter_norm_running" in m.state_dict()


def test_mpot_unconstrained_default_unchanged_and_bad_option_named():
    torch.manual_seed(2)
    m = MPoT(4, n_cov=3)
    c = m.C.detach().clone()
    m.project_()
    assert torch.equal(m.C, c) and "filter_norm_running" not in m.state_dict()
    torch.manual_seed(2)
    assert torch.equal(MPoT(4, n_cov=3, filter_norm=1.0).C, c)  # same initialisation: projection starts at step 1
    for bad in (0.0, -1.0, "fixed", True, float("nan")):
        with pytest.raises(ValueError, match="filter_norm"):
            MPoT(4, n_cov=3, filter_norm=bad)


def test_sm_on_a_repeated_point_needs_the_constraint():
    """SM on data with a repeated point: unconstrained ‖C‖ keeps growing, projected steps stay on the sphere."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g, dtype=torch.float64)
    x[:128] = 0.0  # half the data on one atom, as flat patches after whitening
    out = {}
    for norm in (None, 1.0, "running"):
        torch.manual_seed(0)
        m = MPoT(4, n_cov=4, filter_norm=norm).double()
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            m.sm_terms(x)["total"].backward()
            opt.step()
            m.project_()
        out[norm] = (float(m.C.detach().norm()), float(m.sm_terms(x)["total"].detach()))
    assert out[None][0] > 4 * out[1.0][0], out  # the free filters grew
    assert abs(out[1.0][0] - 2.0) < 1e-9  # 4 unit columns: Frobenius norm 2
    assert out[None][1] < out[1.0][1]  # and bought a lower (unbounded) SM objective
    # Ranzato's running common norm only slows the growth (ν follows 5 % of each step's increase)
    assert out[1.0][0] < out["running"][0] < out[None][0], out


# ------------------------------------------------------------------ HMC at ≈ 10 % rejection
from smlib import samplers  # noqa: E402
from smlib.step_control import RejectionTargetStep  # noqa: E402

SCALES = torch.linspace(0.5, 1.5, 20, dtype=torch.float64)  # target N(0, diag(s²)), d = 20


def _gauss_energy(x):
    return 0.5 * ((x / SCALES) ** 2).sum(1)


def _exact_reject_rate(eps, n_leapfrog=10, n=100_000, seed=0):
    """P(reject) of one HMC transition from stationarity, by the exact leapfrog map (no sampler code).

    Per dimension leapfrog is linear: (x, p) ← M (x, p) with M = K D K, K = [[1, 0], [−ε/2s², 1]],
    D = [[1, ε], [0, 1]]; ΔH = Σᵢ [½x_L²/sᵢ² + ½p_L² − ½x₀²/sᵢ² − ½p₀²]; reject with 1 − min(1, e^{−ΔH}).
    """
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, SCALES.numel(), generator=g, dtype=torch.float64) * SCALES
    p0 = torch.randn(n, SCALES.numel(), generator=g, dtype=torch.float64)
    dH = torch.zeros(n, dtype=torch.float64)
    for i, s in enumerate(SCALES.tolist()):
        K = torch.tensor([[1.0, 0.0], [-eps / (2 * s * s), 1.0]], dtype=torch.float64)
        D = torch.tensor([[1.0, eps], [0.0, 1.0]], dtype=torch.float64)
        M = torch.linalg.matrix_power(K @ D @ K, n_leapfrog)
        xl, pl = M[0, 0] * x0[:, i] + M[0, 1] * p0[:, i], M[1, 0] * x0[:, i] + M[1, 1] * p0[:, i]
        dH += 0.5 * (xl**2 - x0[:, i] ** 2) / s**2 + 0.5 * (pl**2 - p0[:, i] ** 2)
    return float((1 - torch.exp(-dH.clamp(min=0))).mean())


def _step_for(target, lo=0.01, hi=0.6):
    for _ in range(20):  # bisection: the rejection rate grows with ε below the stability limit
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _exact_reject_rate(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def test_hmc_reject_rate_matches_the_exact_leapfrog_rate():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4000, 20, generator=g, dtype=torch.float64) * SCALES
    for eps in (0.2, 0.4):
        _, info = samplers.hmc(_gauss_energy, x0, 5, n_leapfrog=10, step_size=eps, adapt=False, jitter=0.0,
                               generator=g, return_info=True)
        assert abs(info["reject_rate"] - _exact_reject_rate(eps)) < 0.012, (eps, info)


def test_hmc_step_control_settles_at_ten_percent_rejection():
    eps_star = _step_for(0.10)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 20, generator=g, dtype=torch.float64) * SCALES
    rule = RejectionTargetStep(step_size=0.05, max_step=2.0)
    steps, rejects = [], []
    for _ in range(60):  # 60 calls × 10 transitions, the rule's state carried across calls as in training
        x, info = samplers.hmc(_gauss_energy, x, 10, n_leapfrog=10, adapt=False, jitter=0.0, generator=g,
                               return_info=True, step_control=rule)
        steps.append(rule.step_size)
        rejects.append(info["reject_rate"])
    late = float(np.mean(steps[-20:]))
    assert abs(late / eps_star - 1) < 0.08, (late, eps_star)
    assert abs(float(np.mean(rejects[-20:])) - 0.10) < 0.02, rejects[-20:]
    assert abs(_exact_reject_rate(late) - 0.10) < 0.03


def test_rejection_rule_arithmetic_bounds_and_errors():
    r = RejectionTargetStep(step_size=0.01)
    assert r.update(0.0) == pytest.approx(0.0101) and r.ave_reject == pytest.approx(0.09)
    r.update(1.0)  # ρ̄ = 0.9·0.09 + 0.1 = 0.181 ≥ 0.1: step down by 0.99
    assert r.ave_reject == pytest.approx(0.181) and r.step_size == pytest.approx(0.0101 * 0.99)
    hi = RejectionTargetStep(step_size=0.25)
    assert hi.update(0.0) == 0.25  # clipped at max_step
    lo = RejectionTargetStep(step_size=0.001)
    assert lo.update(1.0) == 0.001
    s = RejectionTargetStep(step_size=0.02)
    s.update(0.5)
    t = RejectionTargetStep(step_size=0.02)
    t.load_state_dict(s.state_dict())
    assert t.update(0.3) == s.update(0.3)
    for kw, msg in ((dict(target_reject=1.0), "target_reject"), (dict(step_size=1.0), "step_size"),
                    (dict(up=0.9), "up"), (dict(decay=1.0), "decay")):
        with pytest.raises(ValueError, match=msg):
            RejectionTargetStep(**kw)
    with pytest.raises(ValueError, match="reject_rate"):
        RejectionTargetStep().update(1.5)
    with pytest.raises(ValueError, match="step_control"):
        samplers.hmc(_gauss_energy, torch.zeros(3, 20, dtype=torch.float64), 4, n_adapt=2,
                     step_control=RejectionTargetStep())


# ------------------------------------------------------------------ Wiener filter baseline
from smlib.data.whitening import WienerFilter  # noqa: E402


def test_wiener_filter_is_the_monte_carlo_optimum_on_gaussian_data():
    g = torch.Generator().manual_seed(0)
    k, sigma = 8, 0.7
    v = torch.logspace(-1, 1, k, dtype=torch.float64)  # variances 0.1 … 10
    mu = torch.linspace(-1, 1, k, dtype=torch.float64)
    draw = lambda n: mu + v.sqrt() * torch.randn(n, k, generator=g, dtype=torch.float64)  # noqa: E731
    wf = WienerFilter(sigma).fit(draw(50_000))
    x = draw(400_000)
    noisy = x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
    # Monte-Carlo optimum: per component, the least-squares affine map noisy -> clean on fresh data
    xc, nc = x - x.mean(0), noisy - noisy.mean(0)
    a = (xc * nc).sum(0) / (nc * nc).sum(0)
    b = x.mean(0) - a * noisy.mean(0)
    mse_mc = float(((a * noisy + b - x) ** 2).mean())
    mse_w = float(((wf.denoise(noisy) - x) ** 2).mean())
    assert torch.allclose(wf.gain_, a, rtol=0.02), (wf.gain_, a)
    assert abs(mse_w / mse_mc - 1) < 0.005, (mse_w, mse_mc)
    assert abs(mse_w / wf.expected_mse_ - 1) < 0.01
    # it beats the one-size shrinkage z̃/(1 + σ²), which assumes unit variances
    assert mse_w < 0.9 * float(((mu + (noisy - mu) / (1 + sigma**2) - x) ** 2).mean())
    out = wf.denoise(noisy[:3].numpy())
    assert isinstance(out, np.ndarray) and out.shape == (3, k)
    with pytest.raises(ValueError, match="sigma"):
        WienerFilter(0.0)
    with pytest.raises(ValueError, match="columns"):
        wf.denoise(torch.zeros(2, k + 1, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="not fitted"):
        WienerFilter(1.0).denoise(torch.zeros(2, k))
