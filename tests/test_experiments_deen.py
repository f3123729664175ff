"""The DEEN experiments (deen_2d, deen_mnist, deen_patches): each runs to a record at a tiny size,
its claims carry verdicts from the allowed set, its figures draw from a record read back from disk,
and the verdict rules can reach their "does not hold" branches."""
from __future__ import annotations

import copy
import json

import matplotlib
import pytest

matplotlib.use("Agg")

from smlib import data, experiments  # noqa: E402
from smlib.experiments import deen_2d, deen_mnist, deen_patches  # noqa: E402
from smlib.experiments import verdicts as V  # noqa: E402
from smlib.book import reproduction  # noqa: E402
from smlib.experiments.__main__ import main  # noqa: E402

ALLOWED = {V.HOLDS, V.PARTLY, V.FAILS, V.UNTESTABLE}
TINY = {
    "deen_2d": dict(seeds=[0, 1], n_steps=20, eval_every=10, n_train=256, n_grid=24, n_eval=128, n_plot=12,
                    n_curl_plot=8, cd_variants=["sgd", "sgdsum"]),
    "deen_mnist": dict(n_parzen=160, n_valid=40, parzen_replicates=2, sigma_kernels=160, n_steps=6, hidden=[8, 8, 8],
                       n_test=40, log_every=2, checkpoint_every=6, n_show=2, select_steps=4, warmup=2, val_every=2,
                       seeds=[0, 1]),
    "deen_patches": dict(n_patches=600, n_valid=50, n_test=40, n_steps=4, hidden=[8, 8, 8, 8, 8], log_every=2,
                         checkpoint_every=4, n_show=2, median_sizes=[1, 3], gauss_widths=[0.0, 1.0], select_steps=4,
                         warmup=2, val_every=2, seeds=[0, 1]),
}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Each experiment at its ci preset with the tiny overrides, recorded to a temporary results folder."""
    mp = pytest.MonkeyPatch()
    results = tmp_path_factory.mktemp("results")
    mp.setenv("SMLIB_RESULTS_DIR", str(results))
    work = tmp_path_factory.mktemp("work")
    out = {}
    try:
        for name, ov in TINY.items():
            live = experiments.run(name, "ci", overrides=ov, workdir=work, record=True, progress=False, quiet=True)
            saved = experiments.load_record(live["record_name"])
            out[name] = {"live": live, "saved": saved, "work": work, "folder": results / live["record_name"]}
    finally:
        mp.undo()
    return out


@pytest.mark.parametrize("name", list(TINY))
def test_ci_preset_runs_to_a_record_under_the_custom_name(records, name):
    r = records[name]
    assert r["live"]["record_name"] == f"{name}_ci_custom"  # overridden sizes never get the paper name
    assert r["saved"] is not None and (r["folder"] / "results.json").is_file()
    assert r["saved"]["provenance"]["parameters"]["scale"] == "ci"
    assert json.loads(json.dumps(r["live"]["summary"], allow_nan=True)) == r["saved"]["data"]["summary"]


@pytest.mark.parametrize("name", list(TINY))
def test_claims_have_rules_numbers_and_allowed_verdicts(records, name):
    claims = records[name]["saved"]["data"]["summary"]["claims"]
    assert claims
    for c in claims:
        assert set(c) >= {"claim", "rule", "numbers", "verdict", "decided_by"}
        assert c["verdict"] in ALLOWED or c["verdict"].startswith(V.NOT_TESTABLE + ": "), c
        assert c["id"] and c["ungated"] in ALLOWED
        assert c["decided_by"] in {"experiment", "architecture"}
        assert c["rule"] and c["numbers"]


@pytest.mark.parametrize("name", list(TINY))
def test_figures_draw_from_a_record_read_back_from_disk(records, name):
    import matplotlib.pyplot as plt

    figs = experiments.get(name).figures(records[name]["saved"]["data"])
    assert figs and all(f.axes for f in figs.values())
    for key in figs:
        assert (records[name]["folder"] / f"{key}.png").is_file()
    for f in figs.values():
        plt.close(f)


def test_a_second_run_reuses_the_finished_units(records):
    r = records["deen_2d"]
    again = experiments.run("deen_2d", "ci", overrides=TINY["deen_2d"], workdir=r["work"], progress=False, quiet=True)
    assert again["units"] == r["live"]["units"]


@pytest.mark.parametrize("name, n_units", [("deen_2d", 30), ("deen_mnist", 9), ("deen_patches", 8)])
def test_paper_presets(name, n_units, capsys):
    exp = experiments.get(name)
    cfg = experiments.resolve(exp, "paper")
    assert experiments.record_name(exp, "paper", cfg) == name
    assert len(exp.units(cfg)) == n_units
    assert main([name, "--scale", "paper", "--list"]) == 0
    assert f"-> record {name}" in capsys.readouterr().out


def test_paper_protocol_values():
    """The paper's settings: networks, σ = 0.1 in 2-D, σ′ = 0.3, patch noise 0.5, lr 1e-3, CD by Adam at ε = 1e-3
    (the paper's optimiser) with plain SGD of the batch mean and of the batch sum as labelled variants."""
    c2 = experiments.resolve(experiments.get("deen_2d"), "paper")
    assert c2["hidden"] == [32, 32, 32] and c2["sigma"] == 0.1 and c2["lr"] == 1e-3 and len(c2["seeds"]) == 3
    assert c2["cd_optimizer"] == "adam" and c2["cd_lr"] == 1e-3 and c2["cd_variants"] == ["sgd", "sgdsum"]
    cm = experiments.resolve(experiments.get("deen_mnist"), "paper")
    assert cm["hidden"] == [128, 128, 256] and cm["sigma_prime"] == 0.3 and cm["sigma"] is None
    cp = experiments.resolve(experiments.get("deen_patches"), "paper")
    assert cp["hidden"] == [256, 256, 256, 512, 512] and cp["noise_factor"] == 0.5 and cp["size"] == 32
    assert data.list_natural_images(cp["sources"], gray=None)  # named sources that exist on this machine


def test_cd_unit_uses_adam_and_its_variants_plain_sgd_of_the_batch_mean_and_sum(records):
    units, B = records["deen_2d"]["live"]["units"], records["deen_2d"]["live"]["config"]["batch_size"]
    assert units["CD-spiral-s0"]["optimizer"] == {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "reduction": "mean"}
    assert units["CD_sgd-spiral-s0"]["optimizer"] == {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.0, "reduction": "mean"}
    assert units["CD_sgdsum-spiral-s0"]["optimizer"]["lr"] == pytest.approx(1e-3 * B)
    ids = {c["id"] for c in records["deen_2d"]["live"]["summary"]["claims"]}
    assert {"cd-mode-collapse", "cd-mode-collapse-sgd", "cd-mode-collapse-sgd-sum"} <= ids
    with pytest.raises(ValueError, match="unknown CD reading"):
        deen_2d.cd_optimizer(records["deen_2d"]["live"]["config"], "CD_rmsprop", B)


def test_claim_ids_follow_the_recorded_optimiser_not_the_unit_key():
    """The first record's unit "CD" ran plain SGD: its claim is the SGD variant's, whatever the key."""
    from smlib.experiments.deen_2d_claims import cd_reading
    assert cd_reading({"optimizer": "sgd", "lr": 1e-3})[0] == "cd-mode-collapse-sgd"
    assert cd_reading({"optimizer": "adam", "lr": 1e-3})[0] == "cd-mode-collapse"
    assert cd_reading({"optimizer": "sgd", "lr": 0.256, "reduction": "sum"})[0] == "cd-mode-collapse-sgd-sum"


@pytest.mark.parametrize("optimizer, same", [("adam", True), ("sgd", False)])
def test_batch_sum_and_mean_coincide_under_adam_only(optimizer, same):
    """Adam's step m̂/(√v̂ + 1e-8) is unchanged when every gradient is scaled by B; SGD's is scaled by B."""
    import torch

    torch.manual_seed(0)
    B, grads = 256, [torch.randn(5) for _ in range(4)]
    out = []
    for scale in (1.0, B):
        w = torch.zeros(5, requires_grad=True)
        opt = torch.optim.Adam([w], lr=1e-3) if optimizer == "adam" else torch.optim.SGD([w], lr=1e-3)
        for g in grads:
            w.grad = scale * g
            opt.step()
        out.append(w.detach().clone())
    assert torch.allclose(out[0], out[1], rtol=1e-5, atol=1e-9) == same


# ---------------------------------------------------------------------- the rules can fail
def _verdict(claims, start):
    return next(c for c in claims if c["claim"].startswith(start))


def test_sigma_falls_claim_can_fail_and_be_partly_true(records):
    rec = copy.deepcopy(records["deen_mnist"]["live"])
    P = rec["units"]["parzen"]
    P["sigma_star"] = [[0.20, 0.21, 0.22, 0.23], [0.20, 0.21, 0.22, 0.23]]  # rises with n
    assert _verdict(deen_mnist.claims(rec), "σ decreases")["verdict"] == V.FAILS
    P["sigma_star"] = [[0.30, 0.25, 0.25, 0.20], [0.30, 0.25, 0.25, 0.20]]  # one flat step
    assert _verdict(deen_mnist.claims(rec), "σ decreases")["verdict"] == V.PARTLY
    P["sigma_star"] = [[0.30, 0.25, 0.20, 0.15], [0.30, 0.25, 0.20, 0.15]]
    assert _verdict(deen_mnist.claims(rec), "σ decreases")["verdict"] == V.HOLDS


def test_sigma_equality_needs_an_equivalence_test(records):
    rec = copy.deepcopy(records["deen_mnist"]["live"])
    rec["units"]["parzen"]["sigma_star"] = [[0.3, 0.2, 0.16, 0.141], [0.3, 0.2, 0.16, 0.139]]
    assert _verdict(deen_mnist.claims(rec), "σ chosen")["verdict"] == V.HOLDS
    rec["units"]["parzen"]["sigma_star"] = [[0.3, 0.2, 0.16, 0.10], [0.3, 0.2, 0.16, 0.18]]  # mean 0.14, too spread
    assert _verdict(deen_mnist.claims(rec), "σ chosen")["verdict"] == V.FAILS


def _one_seed(rec):
    rec = copy.deepcopy(rec)
    rec["config"]["seeds"] = [0]
    return rec


def test_architecture_label_only_when_the_bound_forces_every_failure():
    assert deen_mnist.decided_by([False, True], [True, False]) == "architecture"
    assert deen_mnist.decided_by([False, False], [True, False]) == "experiment"
    assert deen_mnist.decided_by([True], [True]) == "experiment"


def test_patch_claim_is_decided_by_the_architecture_only_if_the_bound_exceeds_the_baseline(records):
    rec = _one_seed(records["deen_patches"]["live"])
    ref, D = rec["summary"]["reference"], rec["units"]["DEEN-s0"]
    c2d = rec["config"]["noise_factor"] ** 2 * rec["config"]["size"] ** 2
    D["loss"]["loss"] = [0.5 * c2d] * len(D["loss"]["loss"])      # a trained network (below the zero-score level)
    D["best_val"] = D["loss_floor"]                                # that reaches its rank bound
    rec["units"]["select-DEEN"]["selected_lr"] = 1e-3              # a learning rate inside its grid
    rec["config"]["gauss_widths"], ref["tuned_params"] = [0.0, 0.5, 1.0], [3, 0.5]  # a width inside its grid
    ref["tuned"], ref["fixed"] = [1.0, 1.0], [2.0, 2.0]
    D["err_pixel"], D["rank_floor"] = [1.5, 1.5], [0.5, 0.5]
    c = deen_patches.claims(rec)[0]
    assert (c["verdict"], c["decided_by"]) == (V.PARTLY, "experiment")
    D["err_pixel"], D["rank_floor"] = [1.5, 1.5], [1.2, 1.2]
    c = deen_patches.claims(rec)[0]
    assert (c["verdict"], c["decided_by"]) == (V.PARTLY, "architecture")
    D["err_pixel"] = [0.5, 0.5]
    D["rank_floor"] = [0.4, 0.4]
    assert deen_patches.claims(rec)[0]["verdict"] == V.HOLDS


def test_patch_gate_a_network_at_the_zero_score_level_is_not_testable(records):
    """The recorded patch DEEN ended at L_DEEN ≈ c²d: its claim says so instead of blaming the architecture."""
    rec = _one_seed(records["deen_patches"]["live"])
    rec["units"]["select-DEEN"]["selected_lr"] = 1e-3
    D = rec["units"]["DEEN-s0"]
    c2d = rec["config"]["noise_factor"] ** 2 * rec["config"]["size"] ** 2
    D["loss"]["loss"] = [0.8 * c2d] * 5 + [0.99 * c2d] * 20     # fell, then collapsed back to the zero-score level
    rec["config"]["gauss_widths"], rec["summary"]["reference"]["tuned_params"] = [0.0, 0.5, 1.0], [3, 0.5]
    c = deen_patches.claims(rec)[0]
    assert c["verdict"].startswith("not testable: ") and "trivial level" in c["verdict"]
    assert "decided by the architecture" not in reproduction.claims_table(None, [c])
    D["loss"]["loss"] = [0.9 * c2d] * 25
    assert not deen_patches.claims(rec)[0]["verdict"].startswith("not testable")
    rec["summary"]["reference"]["tuned_params"] = [3, 1.0]          # the tuned width at its grid's edge
    assert "edge" in deen_patches.claims(rec)[0]["verdict"]


def test_mnist_gate_sigma_equal_only_through_the_margin_is_not_testable(records):
    rec = copy.deepcopy(records["deen_mnist"]["live"])
    rec["units"]["parzen"]["sigma_star"] = [[0.3, 0.2, 0.16, s] for s in (0.1565, 0.1570, 0.1584)]  # 12 % high, tight
    c = _verdict(deen_mnist.claims(rec), "σ chosen")
    assert c["ungated"] == V.HOLDS and c["verdict"].startswith("not testable: equivalent only through")


def _modes(masses, missed=0.0):
    return {"masses": list(masses), "missed": missed, "min_ratio": 0.0, "tv": 0.0}


def _collapse_record(records, cd_end, moved=0.5):
    rec = copy.deepcopy(records["deen_2d"]["live"])
    for key, u in rec["units"].items():
        if key.startswith(("CD-", "CD_", "DEEN-")):
            ds = key.split("-")[1]
            k = len(rec["summary"]["reference"][ds]["true_masses"])
            u["start_modes"] = _modes([1 / k] * k)
            u.update(_modes([1 / k] * k) if key.startswith("DEEN") else cd_end(k))
            u["theta_rel_change"] = moved
    return rec


def test_collapse_rule_is_judged_against_the_initialisation(records):
    collapse = lambda k: _modes([0.0] + [1 / (k - 1)] * (k - 1), missed=0.2)  # noqa: E731  one part emptied
    c = _verdict(deen_2d.claims(_collapse_record(records, collapse)), "CD with one Langevin step")
    assert c["verdict"] == V.HOLDS
    same = lambda k: _modes([1 / k] * k)  # noqa: E731  CD ends where it started: no collapse
    assert _verdict(deen_2d.claims(_collapse_record(records, same)), "CD with one Langevin step")["verdict"] == V.FAILS


def test_collapse_gate_theta_that_did_not_move_is_not_testable(records):
    collapse = lambda k: _modes([0.0] + [1 / (k - 1)] * (k - 1), missed=0.2)  # noqa: E731
    c = _verdict(deen_2d.claims(_collapse_record(records, collapse, moved=1e-4)), "CD with one Langevin step")
    assert c["verdict"].startswith("not testable: ") and "did not move" in c["verdict"]
    rec = _collapse_record(records, collapse)
    for u in rec["units"].values():
        u.pop("theta_rel_change", None)
    assert "not recorded" in _verdict(deen_2d.claims(rec), "CD with one Langevin step")["verdict"]


def test_collapse_rule_on_the_untrained_model_and_a_planted_collapse(records):
    from smlib.experiments import deen_2d_claims as dc
    start = _modes([0.3, 0.3, 0.4])
    assert not dc.collapsed(start, start)
    assert dc.collapsed(dc.planted_collapse([0.4, 0.35, 0.25]), start)
    rows = dc.rules_table_rows(records["deen_2d"]["live"])
    assert all(r[1].startswith(V.FAILS) and r[2].startswith(V.HOLDS) for r in rows)


def test_live_cd_units_record_how_far_theta_moved(records):
    for key, u in records["deen_2d"]["live"]["units"].items():
        assert u["theta_rel_change"] > 0, key


# ---------------------------------------------------------------------- the image training protocol (issue 23 item 2)
def test_patch_architecture_label_needs_a_network_that_reached_its_bound(records):
    rec = _one_seed(records["deen_patches"]["live"])
    ref, D = rec["summary"]["reference"], rec["units"]["DEEN-s0"]
    c2d = rec["config"]["noise_factor"] ** 2 * rec["config"]["size"] ** 2
    D["loss"]["loss"] = [0.8 * c2d] * len(D["loss"]["loss"])
    rec["config"]["gauss_widths"], ref["tuned_params"] = [0.0, 0.5, 1.0], [3, 0.5]
    rec["units"]["select-DEEN"]["selected_lr"] = 1e-3
    ref["tuned"], ref["fixed"] = [1.0, 1.0], [2.0, 2.0]
    D["err_pixel"], D["rank_floor"] = [1.5, 1.5], [1.2, 1.2]
    D["best_val"] = 1.5 * D["loss_floor"]                         # trained, but far above its bound
    assert deen_patches.claims(rec)[0]["decided_by"] == "experiment"
    D["best_val"] = D["loss_floor"]
    assert deen_patches.claims(rec)[0]["decided_by"] == "architecture"


def test_learning_rate_selected_at_the_grid_edge_is_not_testable(records):
    rec = _one_seed(records["deen_patches"]["live"])
    rec["units"]["select-DEEN"]["selected_lr"] = rec["units"]["select-DEEN"]["lr_grid"][0]
    assert "learning rate of DEEN at the edge" in deen_patches.claims(rec)[0]["verdict"]


def test_selection_picks_the_least_validation_loss_and_seeds_use_it(records):
    U = records["deen_mnist"]["live"]["units"]
    sel = U["select-DEEN"]
    assert sel["selected_lr"] == sel["lr_grid"][min(range(len(sel["best_val"])), key=sel["best_val"].__getitem__)]
    assert len(sel["val"]) == len(sel["lr_grid"]) and all(len(v["loss"]) >= 1 for v in sel["val"])
    for s in records["deen_mnist"]["live"]["config"]["seeds"]:
        u = U[f"DEEN-s{s}"]
        assert u["lr"] == sel["selected_lr"] and u["seed"] == s
        assert u["best_val"] == pytest.approx(min(u["val"]["loss"]))   # the kept checkpoint is the best one
    assert U["DEEN-s0"]["loss"]["loss"] != U["DEEN-s1"]["loss"]["loss"]  # seeds vary training


def test_valid_loss_is_the_zero_score_level_for_a_zero_score():
    import torch
    from smlib.experiments import deen_training as T

    class Zero(torch.nn.Module):
        dim = 50

        def score(self, x):
            return torch.zeros_like(x)

    x = torch.rand(4000, 50, dtype=torch.float64)
    pairs = T.valid_pairs(x, 0.3, 0)
    assert T.valid_loss(Zero(), pairs, 0.3) == pytest.approx(0.3**2 * 50, rel=0.02)

    class Gaussian(torch.nn.Module):  # the exact score of q_σ when x ~ N(0, s²I): Tweedie's posterior mean
        dim = 50

        def score(self, xi):
            return -xi / (0.5**2 + 0.3**2)

    x = 0.5 * torch.randn(20000, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = 50 * 0.5**2 * 0.3**2 / (0.5**2 + 0.3**2)    # d × the posterior variance
    assert T.valid_loss(Gaussian(), T.valid_pairs(x, 0.3, 0), 0.3) == pytest.approx(want, rel=0.02)
    assert T.Warmup(4)(0) == 0.25 and T.Warmup(4)(10) == 1.0 and repr(T.Warmup(4)) == "Warmup(4)"
    with pytest.raises(ValueError):
        T.Warmup(0)


def test_parzen_splits_are_disjoint():
    exp = experiments.get("deen_mnist")
    cfg = dict(experiments.resolve(exp, "ci"), n_parzen=300, n_valid=50, parzen_replicates=3)
    import torch
    blocks = [exp.split(cfg, r) for r in range(3)]
    rows = [torch.cat([v, k]) for v, k, _ in blocks]
    keys = [{tuple(r.nonzero().flatten().tolist()[:20]) + (float(r.sum()),) for r in b} for b in rows]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    valid, _, train = blocks[0]
    assert len(train) == 60_000 - 50
    with pytest.raises(ValueError, match="disjoint Parzen blocks"):
        exp.split(dict(cfg, n_parzen=30_000), 0)


def test_first_record_cd_claims_map_to_the_reading_they_ran():
    """The first record's SGD claim (unit "CD") maps to cd-mode-collapse-sgd, its Adam variant to cd-mode-collapse
    (the mapping read from the frozen first-record file, results/deen_2d/first_record_claims.json)."""
    from smlib.experiments import first_claims
    from smlib.book import reproduction as rp
    wording = first_claims.first_wording("deen_2d")
    stored = [{"claim": wording["cd-mode-collapse-sgd"], "verdict": "sgd-old"},
              {"claim": wording["cd-mode-collapse"], "verdict": "adam-old"}]
    assert wording["cd-mode-collapse-sgd"] != wording["cd-mode-collapse"]
    gated = [{"id": "cd-mode-collapse", "claim": "new adam wording", "verdict": "x"},
             {"id": "cd-mode-collapse-sgd", "claim": "new sgd wording", "verdict": "y"}]
    table = rp.gate_changes(stored, gated, reworded=wording)
    assert "`cd-mode-collapse` | new adam wording | adam-old" in table
    assert "`cd-mode-collapse-sgd` | new sgd wording | sgd-old" in table
    same = rp.gate_changes([{"id": "cd-mode-collapse", "claim": "c", "verdict": "x"}], gated[:1])
    assert same.startswith("Every verdict stored with the record (1 claim) equals"), same


def test_a_network_that_died_has_no_relative_curl_and_its_curl_claim_is_not_testable():
    """A 2-D net whose ∂ψ/∂x vanishes on q_σ (saturated in training: a recorded CD variant did this) gives
    rel_curl None instead of a division by zero, and the curl claims' gate fails on it."""
    import torch

    from smlib.experiments import deen_2d_claims
    from smlib.models import MLPEnergy
    net = MLPEnergy(2, hidden=(8, 8)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()  # E constant: ψ = 0, ∂ψ/∂x = 0
    ctx = {"eval_q": {"spiral": torch.randn(64, 2, dtype=torch.float64)}}
    c = deen_2d.Deen2D().curl(ctx, net, "spiral", torch.float64)
    assert c["rel_curl"] is None and c["jacobian_rms"] == 0.0 and c["rms_curl"] == 0.0
    assert deen_2d_claims._alive({"spiral": [1e-17, None], "mixture": [2e-17]}, "DEEN").ok is False
    assert deen_2d_claims._alive({"spiral": [1e-17], "mixture": [2e-17]}, "DEEN").ok is True
