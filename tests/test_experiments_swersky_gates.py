"""The Swersky et al. (2011) claims through the health gates: tiny live runs record what the gates read,
and the recorded paper-scale runs (results/) give the gated verdicts the chapters show."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from smlib import experiments
from smlib.experiments import stopping, swersky2011, swersky2011_features
from smlib.experiments import verdicts as V
from helpers import TINY_SWERSKY, is_verdict  # tests/ is on sys.path (pyproject: pythonpath)

ROOT = Path(__file__).resolve().parent.parent
TINY = TINY_SWERSKY
TINY_CHECKS = swersky2011_features.PRESETS["ci"].early_checks


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    return {name: experiments.run(name, "ci", overrides=ov, workdir=work / name, progress=False, quiet=True)
            for name, ov in TINY.items()}


def test_live_run_records_what_the_gates_read(live):
    rec = live["swersky2011"]
    vr = rec["summary"]["reference"]["variance_ratio"]
    assert vr["test"] > 0 and vr["denoise"] > 0
    f = rec["units"]["SM-s0"]["filters"]
    assert len(f["C_norms"]) == len(f["C_norms0"]) == rec["config"]["n_cov"]
    for c in rec["summary"]["claims"]:
        assert c["id"] and is_verdict(c["verdict"]) and c["ungated"] in (V.HOLDS, V.PARTLY, V.FAILS, V.UNTESTABLE)
        assert all(g["ok"] is not None for g in c["gates"]), c  # a live run records everything its gates need


def test_features_early_stopping_gate_censors_the_one_epoch_live_runs(live):
    for c in live["swersky2011_features"]["summary"]["claims"]:  # one epoch, patience 1: nothing can stop by the rule
        assert c["verdict"].startswith("not testable: ") and "early stopping censored" in c["verdict"]


def test_stop_check_patience_rule():
    stop = stopping.stop_check
    assert stop([1, 2, 3, 4], 3) is None  # still improving
    assert stop([1, 2, 2, 2, 2], 3) == 5  # three epochs without improvement after the best at 2
    assert stop([5, 4, 3], 3) is None
    assert stop([5, 4, 3, 2], 3) == 4
    assert stop([1, 3, 2, 3.5, 3, 3, 3], 3) == 7
    t = stopping.check_epochs((0.25, 0.5), 5)
    assert t == [0.25, 0.5, 1, 2, 3, 4, 5]
    assert stop([9, 8, 7, 6, 5, 4], 3, t) == 6  # best at 0.25 epochs: 3.75 epochs old at epoch 4 (the sixth check)
    assert stop([9, 8, 7, 6, 5], 3, t) is None  # 2.75 epochs old at epoch 3
    assert stop([1, 9, 8, 7, 6], 3, t) is None and stop([1, 9, 8, 7, 6, 5], 3, t) == 6  # best at 0.5: 3.5 epochs at epoch 4
    with pytest.raises(ValueError, match="early_checks"):
        stopping.check_epochs((0.5, 0.25), 3)
    with pytest.raises(ValueError, match="early_checks"):
        stopping.check_epochs((1.0,), 3)


def test_censored_names_both_edges_of_the_stopping_selection():
    t = [0.25, 0.5, 1, 2, 3, 4]
    ok = {"val_curve": [1, 3, 2, 2, 2, 2], "check": 2, "check_epochs": t, "epochs_trained": 4, "diverged": None}
    assert stopping.censored(ok, 3, 30) is None
    assert stopping.censored(dict(ok, check=1, val_curve=[3, 1, 1, 1, 1, 1]), 3, 30) == "best at the first check"
    rising = dict(ok, val_curve=[1, 2, 3, 4, 5, 6], check=6)
    assert stopping.censored(rising, 3, 4) == "still improving at the 4-epoch budget"
    assert stopping.censored(dict(rising, diverged="check 7: planted"), 3, 30).endswith("a divergence stopped it")
    old = {"val_curve": [1, 2, 1, 1, 1], "epoch": 2, "epochs_trained": 5, "diverged": None}  # a first-protocol record
    assert stopping.censored(old, 3, 30) is None and stopping.censored(dict(old, epoch=1), 3, 30)


def test_swersky_gate_shift_and_lambda_edge_trip_on_a_live_record(live):
    rec = copy.deepcopy(live["swersky2011"])
    rec["summary"]["reference"]["variance_ratio"] = {"test": 2.4, "denoise": 2.55}
    c = next(c for c in swersky2011.claims(rec) if c["id"] == "gap-grows")
    assert "outside [0.8, 1.25]" in c["verdict"]
    for u in rec["units"].values():
        if "curves" in u:
            u["curves"]["map_lambda"] = [rec["config"]["map_lambdas"][-1]] * len(u["curves"]["map_lambda"])  # the last grid point
    c = next(c for c in swersky2011.claims(rec) if c["id"] == "sm-overfits")
    assert "MAP λ at the edge" in c["verdict"]


def test_swersky_gate_dead_filters_trip_on_a_record_whose_filters_died(live):
    rec = copy.deepcopy(live["swersky2011"])
    for s in rec["config"]["seeds"]:
        f = rec["units"][f"SMD-s{s}"]["filters"]
        f["C_norms"] = [0.01 * n for n in f["C_norms0"]]
    c = next(c for c in swersky2011.claims(rec) if c["id"] == "smd-less-curvature")
    assert "dead" in c["verdict"]


def _recorded(name):
    path = ROOT / "results" / name / "results.json"
    if not path.is_file():
        pytest.skip(f"no record in results/{name}")
    return json.loads(path.read_text())["data"]


def test_recorded_swersky_claims_say_why_they_are_not_testable():
    rec = _recorded("swersky2011")
    by = {c["id"]: c for c in swersky2011.claims(rec)}
    if "lr_grid" not in rec["config"]:  # the first record (d86d146): one rate for all, a shifted test set
        assert "variance ratio not recorded" in by["gap-grows"]["verdict"]     # it did not measure the shift
        assert "MAP λ at the edge" in by["sm-overfits"]["verdict"]             # λ = 4, the grid's last point, in every selection
        assert "never improved" in by["smd-higher-than-sm"]["verdict"]        # SMD's MAP minimum is its initialisation
        assert "dead" in by["gabor-covariance"]["verdict"] and "noise" in by["gabor-covariance"]["verdict"]
    else:  # a record of the issue-22 protocol: what its gates read is there, and the shift and λ gates pass
        assert [g["ok"] for g in by["gap-grows"]["gates"] if g["name"] == "test/train shift"] == [True]
        assert all(g["ok"] for c in by.values() for g in c["gates"] if g["name"] == "grid edge")  # λ and rates inside
        assert [c["verdict"] for c in rec["summary"]["claims"]] == [by[c["id"]]["verdict"] for c in rec["summary"]["claims"]]
    assert "already holds on the untrained model" in by["sm-lowest-denoising"]["verdict"]  # the tie-passing ranking rule


def test_recorded_swersky_run_holds_the_protocol_of_issue_22():
    rec = _recorded("swersky2011")
    if "lr_grid" not in rec["config"]:
        pytest.skip("results/swersky2011 is still the first record")
    cfg, ref = rec["config"], rec["summary"]["reference"]
    assert len(cfg["seeds"]) >= 3 and cfg["filter_norm"] == "running" and set(cfg["ablations"]) == {"free", "keep"}
    assert all(0.8 <= r["variance_ratio"]["test"] <= 1.25 for r in ref["per_seed"].values())
    assert all(r["n_flat"]["train"] > 0 for r in ref["per_seed"].values())  # near-flat patches found and replaced
    lrs = rec["summary"]["lr"]
    assert set(lrs) == set(swersky2011.ESTIMATORS) and all(cfg["lr_grid"][0] < v < cfg["lr_grid"][-1] for v in lrs.values())
    assert swersky2011.variants_table(rec).count("\n") == 1 + 2 * 3 + len(cfg["smd_sweep"])
    text = (ROOT / "results" / "swersky2011" / "results.json").read_text()
    assert "/work/" not in text and "/home/" not in text  # no absolute path of the recording machine
    feats = {c["id"]: c for c in swersky2011_features.claims(_recorded("swersky2011_features"))}
    if "patience" not in _recorded("swersky2011_features")["config"]:  # the first record: checks at epochs 2, 5, 10
        assert all("early-stopping epoch at the edge" in c["verdict"] for c in feats.values())
    else:  # the new record (b14eea2): one run, SMD's third replicate, flat until patience ran out
        assert all(c["verdict"].endswith("best at the first check (SMD)") for c in feats.values())


def test_rules_table_runs_each_rule_on_the_untrained_model_and_a_planted_positive():
    rows = swersky2011.rules_table_rows(_recorded("swersky2011"))
    assert all(len(r) == 3 for r in rows)
    assert [r[2].split(" (")[0] for r in rows] == [V.HOLDS] * len(rows)   # every rule can pass


def test_swersky_gate_baselines_trips_when_no_denoiser_beats_the_noisy_input(live):
    rec = copy.deepcopy(live["swersky2011"])
    ref = rec["summary"]["reference"]
    ref["baselines"] = dict(ref["baselines"], zero=1e-6)  # a planted trivial denoiser better than every estimator
    c = next(c for c in swersky2011.claims(rec) if c["id"] == "sm-overfits")
    assert c["verdict"].startswith("not testable: ") and "best minimum" in c["verdict"]
    ref["baselines"] = dict(ref["baselines"], zero=1e6, noisy=[1e6, 1e6])  # every estimator beats both
    g = [g for c in swersky2011.claims(rec) if c["id"] == "sm-overfits" for g in c["gates"] if g["name"] == "beats baselines"]
    assert g and all(x["ok"] for x in g)


def test_live_record_holds_the_protocol_of_issue_22(live):
    rec = live["swersky2011"]
    ref = rec["summary"]["reference"]
    assert set(ref["variance_ratio"]) == {"test", "denoise", "image_test"}
    assert set(ref["n_flat"]) >= {"train", "test"} and ref["n_flat"]["train"] >= 0
    assert {"zero", "noisy", "wiener", "shrink"} <= set(ref["baselines"]) and "img_baselines" in ref
    c = rec["units"]["SM-s0"]["curves"]
    assert {"img_mf_mse_0", "img_map_mse_0", "step_mse_0", "val_map_mse"} <= set(c)
    f = rec["units"]["SM-s0"]["filters"]
    assert "best_epoch" in f and "frac_gabor_ci" in f["C_gabor"] and "C_n_dead" in f
    assert rec["config"]["filter_norm"] == "running"


def test_learning_rate_selection_runs_first_and_each_estimator_trains_at_its_choice(tmp_path):
    ov = dict(TINY["swersky2011"], n_epochs=1, lr_grid=[0.001, 0.01, 0.1], lr_epochs=1, smd_sweep=[])
    rec = experiments.run("swersky2011", "ci", overrides=ov, workdir=tmp_path, progress=False, quiet=True)
    sel = rec["summary"]["lr_selection"]
    assert len(sel) == 3 * len(swersky2011.ESTIMATORS)
    for e in swersky2011.ESTIMATORS:
        errs = {u["lr"]: u["val_map_mse"] for k, u in sel.items() if k.startswith(f"lr-{e}-")}
        assert rec["summary"]["lr"][e] == min(errs, key=errs.get)  # the lowest validation error, not the highest
        assert rec["units"][f"{e}-s0"]["lr"] == rec["summary"]["lr"][e]
    rec2 = copy.deepcopy(rec)
    for e in swersky2011.ESTIMATORS:
        rec2["units"][f"{e}-s0"]["lr"] = 0.1  # planted: every choice at the grid's last point
    c = next(c for c in swersky2011.claims(rec2) if c["id"] == "sm-overfits")
    assert "learning rate at the edge" in c["verdict"]


def test_selected_lr_refuses_a_missing_selection(tmp_path):
    cfg = dict(swersky2011.PRESETS["ci"], lr_grid=[0.001, 0.01])
    with pytest.raises(RuntimeError, match="has not run"):
        swersky2011.selected_lr(cfg, "SM", tmp_path)


def test_table1_margin_is_relative_to_the_error_rate():
    F = swersky2011_features
    cfg = dict(F.PRESETS["paper"], n_seeds=5)
    base = [93.0, 93.2, 92.9, 93.1, 93.05]
    acc = {e: [a + 0.5 * (i % 2) for a in base] for i, e in enumerate(F.ESTIMATORS)}  # pairs 0.5 points apart
    acc["AE"] = [a - 5 for a in base]
    summary = {"accuracy": acc, "mean": {e: float(sum(v) / len(v)) for e, v in acc.items()},
               "baselines": {"untrained mPoT features": 80.0, "whitened patch pixels": 85.0}}
    units = {f"{e}-s{r}": {"epoch": 5} for e in F.ESTIMATORS for r in range(5)}
    rec = {"config": cfg, "summary": summary, "units": units}
    eq = next(c for c in F.claims(rec) if c["id"] == "others-equivalent")
    five = [x for e in F.ESTIMATORS if e != "AE" for x in acc[e]]
    margin = round(F.PAPER_MARGIN_REL * (100 - sum(five) / len(five)), 3)  # ≈ 0.19 points at 6.75 % error
    assert f"±{margin} points" in eq["rule"] and 0.15 < margin < 0.25 and eq["ungated"] != V.HOLDS
    old = dict(cfg, margin=1.0)
    del old["margin_rel"]  # a first-protocol record: its absolute ±1 point
    eq_old = next(c for c in F.claims(dict(rec, config=old)) if c["id"] == "others-equivalent")
    assert "±1.0 points" in eq_old["rule"]


def test_features_train_until_patience_runs_out(tmp_path):
    ov = dict(TINY["swersky2011_features"], n_seeds=1, n_epochs=4, patience=1)
    rec = experiments.run("swersky2011_features", "ci", overrides=ov, workdir=tmp_path, progress=False, quiet=True,
                          only=["SM-s0"])
    assert rec is None  # one unit of several: no record yet
    doc = json.loads(next(tmp_path.rglob("SM-s0.json")).read_text())["result"]
    curve, t = doc["val_curve"], doc["check_epochs"]
    assert t == stopping.check_epochs(ov_checks := TINY_CHECKS, 4)[:len(curve)] and doc["epochs_trained"] == t[-1]
    stop = stopping.stop_check(curve, 1, t)
    assert stop == len(curve) or (stop is None and t[-1] == 4)  # stopped by the rule, or at the budget
    assert curve[doc["check"] - 1] == max(curve) == doc["val_acc"] and doc["epoch"] == t[doc["check"] - 1]
    assert ov_checks  # the tiny preset probes inside the first epoch too


def test_features_training_resumes_after_an_interruption_between_checks(tmp_path, monkeypatch):
    ov = dict(TINY["swersky2011_features"], n_seeds=1, n_epochs=3, patience=5)
    whole = tmp_path / "whole"
    experiments.run("swersky2011_features", "ci", overrides=ov, workdir=whole, progress=False, quiet=True, only=["SM-s0"])
    real, calls = swersky2011_features.fit, []

    def fit(*args, **kw):  # the third check's call is interrupted
        calls.append(kw["n_steps"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(swersky2011_features, "fit", fit)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        experiments.run("swersky2011_features", "ci", overrides=ov, workdir=cut, progress=False, quiet=True, only=["SM-s0"])
    monkeypatch.setattr(swersky2011_features, "fit", real)
    experiments.run("swersky2011_features", "ci", overrides=ov, workdir=cut, progress=False, quiet=True, only=["SM-s0"])
    a, b = (json.loads(next(w.rglob("SM-s0.json")).read_text())["result"] for w in (whole, cut))
    assert a["val_curve"] == b["val_curve"] and a["test_acc"] == b["test_acc"]  # bit-identical on CPU


def test_features_learning_rate_selection_by_validation_accuracy(tmp_path):
    ov = dict(TINY["swersky2011_features"], n_seeds=1, lr_grid=[0.001, 0.01, 0.1], lr_epochs=1)
    experiments.run("swersky2011_features", "ci", overrides=ov, workdir=tmp_path, progress=False, quiet=True,
                    only=["lr-*", "SM-s0", "CD-s0"])
    folder = next(tmp_path.rglob("config.json")).parent
    for e in ("SM", "CD"):
        res = {lr: json.loads((folder / f"{swersky2011.lr_key(e, lr)}.json").read_text())["result"] for lr in ov["lr_grid"]}
        got = json.loads((folder / f"{e}-s0.json").read_text())["result"]["lr"]
        fair = [r["val_acc"] for r in res.values() if r["val_acc"] is not None and not r["censored"]]
        assert res[got]["val_acc"] == max(fair or [r["val_acc"] for r in res.values() if r["val_acc"] is not None])
        assert all("check_epochs" in r for r in res.values() if r["val_acc"] is not None)  # the training's own protocol


def test_ablation_units_run_unconstrained_and_with_fewer_dimensions(tmp_path):
    ov = dict(TINY["swersky2011"], ablations=["free", "keep"], ablation_keep=0.9)  # 2 epochs: a minimum over epochs >= 1
    keys = [f"{e}{a}-s0" for e in ("SM", "SMD") for a in ("", "-free", "-keep")]
    experiments.run("swersky2011", "ci", overrides=ov, workdir=tmp_path, progress=False, quiet=True, only=keys)
    folder = next(tmp_path.rglob("config.json")).parent
    res = {k: json.loads((folder / f"{k}.json").read_text())["result"] for k in keys}
    cfg = json.loads((folder / "config.json").read_text())["config"]
    table = swersky2011.variants_table({"config": cfg, "units": res})  # the chapter's table of the ablations
    assert table.count("\n") == 2 + 5 and "C unconstrained" in table and "keeps 90.0 %" in table
    assert swersky2011.variants_table({"config": cfg, "units": {k: res[k] for k in keys[:4]}}) == ""  # one missing: no table
    rows_for_all = {f"{e}-s0": res["SM-s0"] for e in swersky2011.ESTIMATORS} | res  # only SM's row is read below
    den = swersky2011.denoising_table({"config": cfg, "units": rows_for_all, "summary": {"reference": {}}})  # one seed
    cells = lambda text, row: dict(zip(*([x.strip() for x in r.split("|")[1:-1]] for r in (text.splitlines()[0], row))))  # noqa: E731
    den_sm = cells(den, next(r for r in den.splitlines() if r.startswith("| SM |")))
    var_sm = cells(table, next(r for r in table.splitlines() if r.startswith("| SM (main run)")))
    assert var_sm["MF min"] == den_sm["MF (region)"].split()[0] and var_sm["MAP min"] == den_sm["MAP (region)"].split()[0]
    assert res["SM-keep-s0"]["reference"]["d"] < res["SM-s0"]["reference"]["d"]  # 90 % of the variance: fewer dims
    norms = {k: r["filters"]["C_norms"] for k, r in res.items() if k in ("SM-s0", "SM-free-s0")}
    spread = {k: max(v) / min(v) for k, v in norms.items()}
    assert spread["SM-s0"] == pytest.approx(1.0, abs=1e-3)  # the running common norm: every column the same
    assert spread["SM-free-s0"] > 1.001  # unconstrained: the columns drift apart


def test_features_smd_sigma_sweep_units(tmp_path):
    ov = dict(TINY["swersky2011_features"], smd_sweep=[0.3])
    rec = experiments.run("swersky2011_features", "ci", overrides=ov, workdir=tmp_path, progress=False, quiet=True)
    assert rec["summary"]["smd_sweep"]["0.3"] == [rec["units"][f"SMD0.3-s{r}"]["test_acc"] for r in range(2)]
    params = json.loads(next(tmp_path.rglob("SMD0.3-s1.json")).read_text())["params"]
    assert params == {"estimator": "SMD", "seed": 1, "sigma": 0.3}


@pytest.mark.parametrize("name", ["swersky2011_features", "swersky2011"])
def test_a_rate_that_diverges_is_a_result_of_the_selection_and_never_chosen(name, tmp_path):
    if name == "swersky2011":
        ov = dict(TINY[name], lr_grid=[0.001, 1e6], lr_epochs=1, n_epochs=1)
    else:
        ov = dict(TINY[name], n_seeds=1, lr_grid=[0.001, 1e6], lr_epochs=1)
    experiments.run(name, "ci", overrides=ov, workdir=tmp_path, progress=False, quiet=True, only=["lr-SM-*", "SM-s0"])
    folder = next(tmp_path.rglob("config.json")).parent
    score = "val_acc" if name == "swersky2011_features" else "val_map_mse"
    blown = json.loads((folder / f"{swersky2011.lr_key('SM', 1e6)}.json").read_text())["result"]
    assert blown[score] is None and "step" in blown["diverged"]  # the reason names where it stopped
    assert json.loads((folder / "SM-s0.json").read_text())["result"]["lr"] == 0.001


def test_features_training_that_diverges_keeps_its_best_epoch_and_says_so(tmp_path, monkeypatch):
    real = swersky2011_features.fit

    calls = []

    def fit(*args, **kw):  # the third check's training blows up
        calls.append(kw["n_steps"])
        if len(calls) == 3:
            raise FloatingPointError("training diverged at step 99 (planted)")
        return real(*args, **kw)

    monkeypatch.setattr(swersky2011_features, "fit", fit)
    ov = dict(TINY["swersky2011_features"], n_seeds=1, n_epochs=6, patience=5)
    experiments.run("swersky2011_features", "ci", overrides=ov, workdir=tmp_path, progress=False, quiet=True,
                    only=["SM-s0"])
    doc = json.loads(next(tmp_path.rglob("SM-s0.json")).read_text())["result"]
    third = stopping.check_epochs(TINY_CHECKS, 6)[2]
    assert len(doc["val_curve"]) == 2 and doc["diverged"].startswith(f"check 3 (epoch {third:g}): ") and doc["check"] in (1, 2)


def test_features_a_run_that_diverged_while_improving_is_censored():
    cfg = {"n_seeds": 2, "n_epochs": 30, "patience": 3, "alpha": 0.05, "margin_rel": 0.0285, "learned_margin": 1.0}
    acc = {e: [90.0 + i, 90.2 + i] for i, e in enumerate(swersky2011_features.ESTIMATORS)}
    summary = {"accuracy": acc, "mean": {e: sum(v) / 2 for e, v in acc.items()},
               "baselines": {"untrained mPoT features": 80.0, "whitened patch pixels": 85.0}}
    units = {f"{e}-s{r}": {"epoch": 4, "epochs_trained": 7, "val_curve": [1, 2, 3, 4, 3, 3, 3], "diverged": None, "lr": 1e-3}
             for e in swersky2011_features.ESTIMATORS for r in range(2)}
    rec = {"config": cfg, "summary": summary, "units": units}
    assert all("censored" not in c["verdict"] for c in swersky2011_features.claims(rec))
    units["SM-s0"] = {"epoch": 5, "epochs_trained": 5, "val_curve": [1, 2, 3, 4, 5], "diverged": "epoch 6: planted", "lr": 1e-3}
    verdicts = [c["verdict"] for c in swersky2011_features.claims(rec)]
    assert any(v.startswith("not testable: ") and "a divergence stopped it (SM)" in v for v in verdicts)
    units["CD-s1"] = dict(units["CD-s1"], epoch=1, val_curve=[5, 4, 3, 2])
    units["CD-s0"] = dict(units["CD-s0"], epoch=1, val_curve=[5, 4, 3, 2])
    assert any("best at the first check (CD ×2)" in c["verdict"] for c in swersky2011_features.claims(rec))


def test_swersky_training_that_diverges_ends_at_its_last_epoch_and_says_so(tmp_path, monkeypatch):
    from smlib.experiments import runner

    real, calls = runner.fit, []

    def fit(*args, n_epochs, **kw):  # the first call trains one epoch, then "diverges" in the second
        calls.append(n_epochs)
        if len(calls) == 1:
            real(*args, n_epochs=1, **kw)
            raise FloatingPointError("training diverged at step 9 (planted)")
        return real(*args, n_epochs=n_epochs, **kw)

    monkeypatch.setattr(runner, "fit", fit)
    ov = dict(TINY["swersky2011"], n_epochs=3)
    experiments.run("swersky2011", "ci", overrides=ov, workdir=tmp_path, progress=False, quiet=True, only=["SM-s0"])
    doc = json.loads(next(tmp_path.rglob("SM-s0.json")).read_text())["result"]
    assert calls == [3, 1] and doc["diverged"].startswith("epoch 2: training diverged at step 9")
    mf = doc["curves"]["mf_mse_0"]
    assert len(mf) == 4 and all(v == v for v in mf[:2]) and all(v != v for v in mf[2:])  # NaN after the stop


def test_swersky_gate_diverged_trips_every_claim(live):
    rec = copy.deepcopy(live["swersky2011"])
    assert all("training diverged" not in c["verdict"] for c in swersky2011.claims(rec))
    rec["units"]["SMD-s0"]["diverged"] = "epoch 7: planted"
    for c in swersky2011.claims(rec):
        assert c["verdict"].startswith("not testable: ") and "training diverged: SMD-s0 (epoch 7)" in c["verdict"]


def test_selection_table_marks_the_choice_the_edge_and_a_divergence():
    grid = [1e-4, 1e-3, 1e-2]
    units = {swersky2011.lr_key(e, lr): {"val_acc": v} for e, vals in
             {"SM": [90.0, 92.5, None], "CD": [89.0, 89.5, 90.0]}.items() for lr, v in zip(grid, vals)}
    rec = {"config": {"lr_grid": grid}, "units": units, "summary": {"lr": {"SM": 1e-3, "CD": 1e-2}}}
    rows = swersky2011.selection_table(rec, "val_acc", False, "accuracy (%)", "{:.2f}").splitlines()
    sm, cd = (next(r for r in rows if r.startswith(f"| {e} |")) for e in ("SM", "CD"))
    assert sm == "| SM | 90.00 | **92.50** | diverged | 0.001 |"
    assert cd == "| CD | 89.00 | 89.50 | **90.00** | 0.01 (grid edge) |"
    assert swersky2011.selection_table(dict(rec, config={"lr_grid": []}), "val_acc", False, "accuracy (%)") == ""
    assert "†" not in "\n".join(rows)
    units[swersky2011.lr_key("CD", 1e-3)]["censored"] = "best at the first check"
    table = swersky2011.selection_table(rec, "val_acc", False, "accuracy (%)", "{:.2f}")
    assert "| CD | 89.00 | 89.50† | **90.00** |" in table and "† early stopping censored" in table


def test_fit_by_epoch_without_a_checkpoint_raises_the_divergence(monkeypatch):
    from smlib.experiments import runner

    def fit(*args, **kw):
        raise FloatingPointError("training diverged at step 3 (planted)")

    monkeypatch.setattr(runner, "fit", fit)
    cfg = {"batch_size": 2, "n_epochs": 2, "optimizer": "sgd", "lr": 0.1, "momentum": 0.0}
    with pytest.raises(FloatingPointError, match="planted"):  # nothing to fall back to: the error, not a TypeError
        runner.fit_by_epoch(None, [0.0] * 4, None, None, cfg, seed=0, device="cpu", progress=False, checkpoint=None,
                            callback=None, stop_on_divergence=True)


def test_features_replicates_draw_their_own_data():
    import torch
    from smlib.experiments import runner

    exp = swersky2011_features.Swersky2011Features()
    cfg = runner.resolve(exp, "ci", TINY["swersky2011_features"])
    ctx = exp.setup(cfg, "cpu")
    a, b = exp.replicate(ctx, cfg, 0), exp.replicate(ctx, cfg, 1)
    assert not torch.equal(a["images"]["train"], b["images"]["train"]) and not torch.equal(a["X"], b["X"])
    assert torch.equal(a["images"]["test"], b["images"]["test"])  # one test set for every replicate
    assert exp.replicate(ctx, cfg, 0) is a  # made once per worker
