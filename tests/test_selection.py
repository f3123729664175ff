"""python -m smlib.experiments.selection: each selection checked against its grid, by the grid-edge gate's rule."""
import json

import pytest

import smlib.experiments as E
from smlib.experiments import runner, selection
from smlib.experiments.swersky2011 import lr_key, selected_lr

GRID = [0.000333, 0.001, 0.003]


def _folder(tmp_path, name, overrides):
    _, _, folder, *_ = runner.prepare(E.get(name), "ci", overrides=overrides, workdir=tmp_path)
    return folder


def _swersky(tmp_path, scores):
    """A swersky2011 work folder whose lr units scored ``scores[estimator]`` (validation MAP error per rate)."""
    folder = _folder(tmp_path, "swersky2011", {"lr_grid": GRID})
    for est, vals in scores.items():
        for lr, v in zip(GRID, vals):
            (folder / f"{lr_key(est, lr)}.json").write_text(json.dumps({"result": {"val_map_mse": v}}))
    return folder


def _all_estimators(best_index):
    from smlib.experiments.swersky2011 import ESTIMATORS
    return {e: [1.0 if i == best_index else 2.0 for i in range(3)] for e in ESTIMATORS}


def test_rates_inside_the_grid_pass(tmp_path, capsys):
    folder = _swersky(tmp_path, _all_estimators(1))
    rows = selection.check("swersky2011", folder)
    assert rows and all(value == 0.001 and gate.ok for _, value, _, gate in rows)
    assert selection.main(["swersky2011", "--scale", "ci", "--workdir", str(tmp_path),
                           "--record-name", folder.name]) == 0
    assert "learning rate of SM 0.001" in capsys.readouterr().out


def test_a_rate_at_the_edge_stops_the_run_before_training(tmp_path, capsys):
    scores = _all_estimators(1)
    scores["CD"] = [1.0, 2.0, 3.0]  # the smallest rate wins: at the grid's lower edge
    folder = _swersky(tmp_path, scores)
    assert selection.main(["swersky2011", "--scale", "ci", "--workdir", str(tmp_path), "--record-name", folder.name]) == 3
    out = capsys.readouterr().out
    assert "learning rate of CD 0.000333" in out and "AT THE EDGE" in out
    assert out.count("AT THE EDGE") == 1


def test_a_selection_that_has_not_run_or_a_wrong_folder_is_an_error(tmp_path, capsys):
    scores = _all_estimators(1)
    folder = _swersky(tmp_path, {e: v for e, v in scores.items() if e != "AE"})
    with pytest.raises(ValueError, match="lr-AE-0.000333 has not run"):
        selection.check("swersky2011", folder)
    with pytest.raises(ValueError, match="holds a run of 'swersky2011', not 'deen_mnist'"):
        selection.check("deen_mnist", folder)
    assert selection.main(["swersky2011", "--workdir", str(tmp_path / "nowhere")]) == 2
    assert "not a work folder" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["deen_mnist", "deen_patches"])
def test_deen_selection_units_are_read(tmp_path, name):
    folder = _folder(tmp_path, name, {})
    grid = runner.resolve(E.get(name), "ci")["lr_grid"]
    with pytest.raises(ValueError, match=r"\['select-DEEN', 'select-DEEN_expert'\] have not run"):
        selection.check(name, folder)
    for kind, chosen in (("DEEN", grid[1]), ("DEEN_expert", grid[0])):
        (folder / f"select-{kind}.json").write_text(json.dumps({"result": {"selected_lr": chosen, "lr_grid": grid}}))
    rows = {what: gate.ok for what, _, _, gate in selection.check(name, folder)}
    assert rows == {"learning rate of DEEN": True, "learning rate of DEEN_expert": False}


def test_features_rates_are_chosen_by_the_highest_validation_accuracy(tmp_path):
    from smlib.experiments.swersky2011_features import ESTIMATORS
    folder = _folder(tmp_path, "swersky2011_features", {"lr_grid": GRID})
    for est in ESTIMATORS:
        for lr, acc in zip(GRID, [90.0, 91.0, 89.0] if est != "SM" else [92.0, 91.0, 89.0]):
            (folder / f"{lr_key(est, lr)}.json").write_text(json.dumps({"result": {"val_acc": acc}}))
    rows = {what: (value, gate.ok) for what, value, _, gate in selection.check("swersky2011_features", folder)}
    assert rows["learning rate of CD"] == (0.001, True) and rows["learning rate of SM"] == (0.000333, False)


def test_a_rate_whose_early_stopping_is_censored_wins_only_when_every_rate_is(tmp_path):
    folder = _folder(tmp_path, "swersky2011_features", {"lr_grid": GRID})
    cfg = {"lr_grid": GRID, "lr": 1.0}

    def put(lr, acc, why):
        (folder / f"{lr_key('CD', lr)}.json").write_text(json.dumps({"result": {"val_acc": acc, "censored": why}}))

    put(GRID[0], 90.0, None)
    put(GRID[1], 91.0, None)
    put(GRID[2], 95.0, "best at the first check")  # higher, but its peak lies before the first check
    assert selected_lr(cfg, "CD", folder, "val_acc", lower_is_better=False) == GRID[1]
    put(GRID[0], 90.0, "still improving at the 30-epoch budget")
    put(GRID[1], 91.0, "best at the first check")
    assert selected_lr(cfg, "CD", folder, "val_acc", lower_is_better=False) == GRID[2]  # all censored: the best
