"""What allow_changes and the divergence guard promise (issue 20, training side), each with a check that fails
for the planted error it names: a resume check that compares only the old keys, allow_changes matched by
prefix, a custom guard factor replaced by the default, no stall check."""
import dataclasses

import pytest
import torch

from smlib import data, models, train
from smlib.models import MLPEnergy
from smlib.train import CheckpointError, DivergenceError, DivergenceGuard

X = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))


def run(path, **kw):
    torch.manual_seed(0)
    model = MLPEnergy(2, hidden=(8,))
    args = dict(n_steps=3, batch_size=8, progress=False, checkpoint=path, resume=True, optimizer="sgd", lr=1e-2)
    args.update(kw)
    return model, train.fit(model, X, "dsm", options={"sigma": 0.3}, **args)


# ---------------------------------------------------------------------------------------- allow_changes
def test_allow_changes_names_are_checked_on_a_first_run(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(ValueError, match=r"allow_changes names unknown setting\(s\) \['lrr'\].*'lr', 'momentum'"):
        run(path, allow_changes=["lrr"])
    assert not path.exists()  # refused before any training


def test_allow_changes_momentum_is_matched_exactly_and_applied(tmp_path):
    path = tmp_path / "run.pt"
    run(path, momentum=0.9)
    with pytest.raises(CheckpointError, match=r"momentum: checkpoint 0.9, now 0.5.*allow_changes=\['momentum'\]"):
        run(path, n_steps=6, momentum=0.5)
    with pytest.warns(UserWarning, match="momentum 0.9 -> 0.5"):
        run(path, n_steps=6, momentum=0.5, allow_changes=["momentum"])
    ck = train.load_checkpoint(path)
    assert ck["optimizer"]["param_groups"][0]["momentum"] == 0.5
    assert [(c["setting"], c["step"]) for c in ck["changes"]] == [("momentum", 3)]


def test_allowing_lr_does_not_allow_lr_schedule(tmp_path):
    # planted error: allow_changes matched by prefix ("lr" letting "lr_schedule" change)
    path = tmp_path / "run.pt"
    run(path, lr_schedule=None)
    with pytest.raises(CheckpointError, match=r"lr_schedule: checkpoint None, now 'constant'") as err:
        run(path, n_steps=6, lr=5e-3, lr_schedule="constant", allow_changes=["lr"])
    assert "lr: checkpoint" not in str(err.value)  # the allowed change is not refused
    assert train.load_checkpoint(path)["step"] == 3


def test_a_setting_the_checkpoint_did_not_record_is_compared(tmp_path):
    # planted error: a resume check that compares only the keys the old checkpoint stored
    path = tmp_path / "run.pt"
    run(path)
    ck = train.load_checkpoint(path)
    del ck["config"]["grad_clip"]  # as if grad_clip had been added to the run configuration since
    train.save_checkpoint(path, ck)
    with pytest.raises(CheckpointError, match=r"grad_clip: checkpoint '<absent>', now None"):
        run(path, n_steps=6)


def test_the_guard_settings_are_part_of_the_run_configuration(tmp_path):
    path = tmp_path / "run.pt"
    run(path, divergence_guard={"factor": 1e3})
    assert train.load_checkpoint(path)["config"]["divergence_guard"]["factor"] == 1e3
    with pytest.raises(CheckpointError, match=r"divergence_guard.factor: checkpoint 1000.0, now 10000.0"):
        run(path, n_steps=6)
    run(path, n_steps=6, allow_changes=["divergence_guard"])


# ---------------------------------------------------------------------------------------- divergence guard
def _runaway(n_steps, **guard):
    """SSM-VR under SGD at lr = 1, momentum 0.9 on the spiral: tanh units saturate within ten steps, the
    loss is exactly 0 from then on and ‖θ‖ creeps on to ~750× its start, under the 10⁴× limit."""
    torch.manual_seed(0)
    model = MLPEnergy(2)
    train.fit(model, data.spiral(1000).float(), "ssm_vr", n_steps=n_steps, optimizer="sgd", lr=1.0, momentum=0.9,
              progress=False, divergence_guard=guard or True)
    return model


def test_the_stall_check_stops_the_ssm_runaway():
    with pytest.raises(DivergenceError, match=r"at step \d+ .*the loss stayed at 0 .*kept growing .*7\d\d× its scale"):
        _runaway(300)
    _runaway(300, stall_steps=None)  # what the factor alone lets through (the run of the issue)


def test_a_custom_factor_is_honoured():
    # planted error: divergence_guard={'factor': f} replaced by the default factor
    with pytest.raises(DivergenceError, match=r"training diverged at step \d .*the guard stops beyond 100×"):
        _runaway(60, factor=100, stall_steps=None)
    _runaway(60, stall_steps=None)  # the default factor lets the same run finish


def test_the_stall_check_on_planted_sequences():
    def feed(losses, norms, **kw):
        g = DivergenceGuard(label="t", initial_norm=norms[0], **kw)
        for step, (loss, norm) in enumerate(zip(losses, norms), 1):
            g.check(step, 0, loss, norm)
        return g

    n = 120
    growing = [1.05 ** t for t in range(n)]  # ×11.5 in 50 steps, ×340 in all: under the factor 10⁴
    with pytest.raises(DivergenceError, match="at step 51 .*loss stayed at 0"):
        feed([0.0] * n, growing)
    with pytest.raises(DivergenceError, match="loss stayed at 2.5"):
        feed([2.5 * (1 + 1e-9 * (t % 2)) for t in range(n)], growing)  # constant to 1e-9: stalled
    feed([1.0 + 0.01 * (t % 3) for t in range(n)], growing)  # a loss that still moves: no stall
    feed([0.0] * n, [5.0] * n)  # a stalled loss with ‖θ‖ still: a dead run, not a runaway
    feed([0.0] * n, growing, stall_steps=None)  # the check switched off
    feed([0.0] * n, growing, stall_growth=1e3)  # ×340 in all: under a stall_growth of 10³
    with pytest.raises(DivergenceError, match="at step 49 "):  # 30 stalled steps, and 1.05⁴⁸ ≥ 10
        feed([0.0] * n, growing, stall_steps=30)
    # the window is part of the guard's state: a resumed guard sees the same steps
    g = feed([0.0] * 40, growing[:40])
    h = DivergenceGuard(label="t", initial_norm=1.0)
    h.load_state_dict(g.state_dict())
    with pytest.raises(DivergenceError, match="at step 51 "):
        for step in range(41, n + 1):
            h.check(step, 0, 0.0, growing[step - 1])


def test_guard_options_are_validated_with_the_users_names():
    h = train.fit(MLPEnergy(2, hidden=(4,)), X, "dsm", options={"sigma": 0.3}, n_steps=2, batch_size=8,
                  progress=False, divergence_guard={"lower_bound": -1e9})
    assert len(h["loss"]) == 2
    cfg = train.TrainConfig(n_steps=1, divergence_guard={"lower_bound": -1e9, "factor": 50})
    assert dataclasses.asdict(cfg.divergence_guard)["lower_bound"] == -1e9
    assert DivergenceGuard.from_config(cfg.divergence_guard, objective_bound=0.0).lower_bound == -1e9
    assert DivergenceGuard.from_config(train.GuardConfig(), objective_bound=0.0).lower_bound == 0.0
    for guard, exc, match in (({"factr": 10}, TypeError, r"unknown divergence_guard setting\(s\) \['factr'\]; accepted"),
                              ({"factor": 0.5}, ValueError, "divergence_guard 'factor' must be a finite number > 1"),
                              ({"lower_bound": "low"}, ValueError, "divergence_guard 'lower_bound' must be a finite"),
                              ({"stall_steps": 0}, ValueError, "divergence_guard 'stall_steps' must be an integer >= 1"),
                              ({"stall_growth": 1}, ValueError, "divergence_guard 'stall_growth' must be")):
        with pytest.raises(exc, match=match):
            train.TrainConfig(n_steps=1, divergence_guard=guard)


@pytest.mark.parametrize("make,match", [
    (lambda: models.GRBM(2.5, 3), "n_visible must be an integer >= 1, got 2.5"),
    (lambda: models.GRBM(2, -1), "n_hidden must be an integer >= 0, got -1"),
    (lambda: models.DAEEnergy(2, 3.0), "n_hidden must be an integer >= 1, got 3.0"),
    (lambda: models.MCRBM(4, 2, 0, 1), "n_cov must be an integer >= 1, got 0"),
    (lambda: models.MPoT(4, n_factors=0), "n_factors must be an integer >= 1, got 0"),
    (lambda: models.MPoT(4, 2, n_mean=-1), "n_mean must be an integer >= 0, got -1"),
])
def test_model_constructors_name_the_users_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()
