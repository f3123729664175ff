"""fit's typed settings (TrainConfig), its short signature and its own random stream."""
import dataclasses
import inspect

import pytest
import torch

from smlib import objectives, train
from smlib.models import MLPEnergy
from smlib.train import TrainConfig


def _x(n=40):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0))


def _model():
    torch.manual_seed(0)
    return MLPEnergy(2, hidden=(8,))


def test_fit_has_at_most_ten_parameters():
    assert len(inspect.signature(train.fit).parameters) <= 10


def test_config_and_keywords_are_the_same_run():
    x = _x()
    a = train.fit(_model(), x, objectives.DSM(sigma=0.3), TrainConfig(n_steps=5, batch_size=8, lr=1e-2, progress=False))
    b = train.fit(_model(), x, "dsm", options={"sigma": 0.3}, n_steps=5, batch_size=8, lr=1e-2, progress=False)
    c = train.fit(_model(), x, "dsm", TrainConfig(n_steps=99, batch_size=8, lr=1e-2, progress=False),
                  options={"sigma": 0.3}, n_steps=5)  # keywords override the config's fields
    assert a["loss"] == b["loss"] == c["loss"] and len(a["loss"]) == 5


def test_unknown_keyword_names_itself_and_the_settings():
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'n_step': not a TrainConfig setting .*n_steps"):
        train.fit(_model(), _x(), "sm", n_step=3)
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train.fit(_model(), _x(), "sm", {"n_steps": 3})


def test_trainconfig_is_frozen_and_checks_itself():
    c = TrainConfig(n_steps=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 1.0
    for kw, match in ((dict(), "exactly one of n_steps and n_epochs"),
                      (dict(n_steps=3, n_epochs=1), "exactly one of n_steps and n_epochs"),
                      (dict(n_steps=0), "n_steps must be an integer >= 1"),
                      (dict(n_steps=3, lr=float("nan")), "lr must be a finite number > 0"),
                      (dict(n_steps=3, optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
                      (dict(n_steps=3, lr_schedule="exp"), "unknown lr_schedule 'exp'"),
                      (dict(n_steps=3, resume=True), "resume=True needs a checkpoint path"),
                      (dict(n_steps=3, progress="yes"), "progress must be True or False")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kw)
    # the guard's settings are normalised to their own dataclass
    assert TrainConfig(n_steps=1).divergence_guard == train.GuardConfig()
    assert TrainConfig(n_steps=1, divergence_guard=False).divergence_guard is None
    assert TrainConfig(n_steps=1, divergence_guard={"factor": 50}).divergence_guard.factor == 50.0


def test_checkpoint_run_configuration_is_the_configs_fields(tmp_path):
    path = tmp_path / "run.pt"
    cfg = TrainConfig(n_steps=3, batch_size=8, optimizer="sgd", momentum=0.5, progress=False, checkpoint=path)
    train.fit(_model(), _x(), objectives.DSM(sigma=0.3), cfg)
    run = train.load_checkpoint(path)["config"]
    assert run["objective"] == {"name": "dsm", "sigma": 0.3}
    assert run["divergence_guard"] == dataclasses.asdict(train.GuardConfig(lower_bound=0.0))  # DSM's bound
    for name in ("batch_size", "optimizer", "momentum", "lr", "seed", "weight_decay", "grad_clip", "drop_last"):
        assert run[name] == getattr(cfg, name), name
    # what does not change the computation is not compared on resume
    assert not set(run) & {"device", "progress", "log_every", "checkpoint", "checkpoint_every", "resume"}


@pytest.mark.parametrize("objective,options", [("dsm", {"sigma": 0.3}), ("pcd", {"n_chains": 8}), ("ssm", None)])
def test_fit_leaves_the_global_generator_and_default_dtype_alone(objective, options):
    torch.manual_seed(123)
    before, dtype = torch.get_rng_state().clone(), torch.get_default_dtype()
    model = MLPEnergy(2, hidden=(8,))
    after_init = torch.get_rng_state().clone()
    train.fit(model, _x(), objective, options=options, n_steps=4, batch_size=8, progress=False)
    assert torch.equal(torch.get_rng_state(), after_init) and torch.get_default_dtype() == dtype
    assert not torch.equal(before, after_init)  # the check can see a change of state
    train.fit(model.double(), _x().double(), objective, options=options, n_steps=2, batch_size=8, progress=False,
              seed=None)
    assert torch.equal(torch.get_rng_state(), after_init) and torch.get_default_dtype() == dtype


def test_the_run_is_its_own_stream_whatever_the_global_state():
    x = _x()
    runs = []
    for global_seed in (1, 2):
        model = _model()
        torch.manual_seed(global_seed)  # must not matter: fit seeds its own stream
        runs.append(train.fit(model, x, "dsm", options={"sigma": 0.3}, n_steps=4, batch_size=8, progress=False)["loss"])
    assert runs[0] == runs[1]
