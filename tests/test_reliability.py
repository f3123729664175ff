"""No silent wrong answer: resume with changed settings, bad checkpoints, bad input, divergence."""
import math

import pytest
import torch

from smlib import data as D
from smlib import objectives, train
from smlib.data import _cache
from smlib.models import GRBM, EnergyModel, MLPEnergy
from smlib.train import CheckpointError, DivergenceError


def data2d(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * torch.tensor([1.0, 0.5]) + torch.tensor([1.0, -1.0])


def mlp():
    torch.manual_seed(0)
    return MLPEnergy(2, hidden=(8,))


def run(path, model=None, objective="dsm", options=None, **kw):
    args = dict(n_steps=6, batch_size=8, progress=False, checkpoint=path, checkpoint_every=3, resume=True, seed=1)
    args.update(kw)
    return train.fit(model or mlp(), data2d(), objective, options={"sigma": 0.3} if options is None else options,
                     **args)


# ---------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("change,match", [
    (dict(lr=1e-2), r"lr: checkpoint 0.001, now 0.01"),
    (dict(options={"sigma": 0.5}), r"objective.sigma: checkpoint 0.3, now 0.5"),
    (dict(batch_size=4), r"batch_size: checkpoint 8, now 4"),
    (dict(seed=2), r"seed: checkpoint 1, now 2"),
    (dict(optimizer="sgd"), r"optimizer: checkpoint 'adam', now 'sgd'"),
    (dict(model=GRBM(2, 3)), r"model.class: checkpoint 'MLPEnergy', now 'GRBM'"),
    (dict(weight_decay=0.1), r"weight_decay"),
])
def test_resume_refuses_a_changed_setting_naming_file_and_setting(tmp_path, change, match):
    path = tmp_path / "run.pt"
    run(path, n_steps=3)
    with pytest.raises(CheckpointError, match=f"cannot resume {path}.*{match}"):
        run(path, **change)


def test_resume_refuses_other_data_and_fewer_steps(tmp_path):
    path = tmp_path / "run.pt"
    run(path)
    with pytest.raises(CheckpointError, match=r"data.*sha256"):
        train.fit(mlp(), data2d(seed=5), "dsm", options={"sigma": 0.3}, n_steps=6, batch_size=8, progress=False,
                  checkpoint=path, resume=True, seed=1)
    with pytest.raises(ValueError, match=r"is at step 6, beyond n_steps=4"):
        run(path, n_steps=4)


def test_allowed_changes_are_applied_recorded_and_announced(tmp_path):
    path = tmp_path / "run.pt"
    run(path, n_steps=3, objective="pcd", options={"n_chains": 4}, model=GRBM(2, 3))
    model = GRBM(2, 3)
    with pytest.warns(UserWarning, match=r"changed settings: lr 0.001 -> 0.01; objective.n_chains 4 -> 16"):
        run(path, n_steps=6, objective="pcd", options={"n_chains": 16}, model=model, lr=1e-2,
            allow_changes=["lr", "objective"])
    ck = train.load_checkpoint(path)
    assert ck["optimizer"]["param_groups"][0]["lr"] == 1e-2  # applied
    assert ck["objective_state"]["chains"].shape == (16, 2)   # the estimator started afresh with 16 chains
    assert [(c["setting"], c["step"]) for c in ck["changes"]] == [("lr", 3), ("objective.n_chains", 3)]
    with pytest.raises(ValueError, match=r"allow_changes names unknown setting\(s\) \['batch_size'\]"):
        run(path, n_steps=6, objective="pcd", options={"n_chains": 16}, model=GRBM(2, 3), lr=1e-2,
            allow_changes=["batch_size"])


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"\x00garbage" * 10, "truncated, corrupt or not a torch.save file"),
    ("truncate", "truncated, corrupt or not a torch.save file"),
    ("list", "holds a list, not an smlib.fit checkpoint"),
])
def test_bad_checkpoint_files_are_named_errors(tmp_path, content, match):
    path = tmp_path / "run.pt"
    if content == "truncate":
        run(path)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "list":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}.*{match}|{match}"):
        run(path)


def test_checkpoint_path_that_is_a_directory_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        run(tmp_path)


def test_stale_temporary_files_of_a_killed_write_are_cleaned(tmp_path):
    path = tmp_path / "run.pt"
    stale = tmp_path / ".run.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    run(path)
    assert not stale.exists() and path.exists()


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,exc,match", [
    (dict(lr="1e-4"), ValueError, "lr must be a real number, got '1e-4'"),
    (dict(seed="abc"), ValueError, "seed must be an integer >= 0 or None"),
    (dict(momentum=math.nan, optimizer="sgd"), ValueError, "momentum must be a finite number"),
    (dict(weight_decay=math.nan), ValueError, "weight_decay must be a finite number"),
    (dict(device="meta"), ValueError, "cannot train a model here"),
    (dict(batch_size=64, drop_last=True), ValueError, "batch_size=64 > 40 rows of data leaves no batches"),
    (dict(options={"sigma": "0.1"}), ValueError, "option 'sigma' of objective 'dsm' must be a real number"),
    (dict(allow_changes="lr"), TypeError, "allow_changes must be a list"),
    (dict(divergence_guard="on"), TypeError, "divergence_guard must be"),
])
def test_bad_arguments_name_the_argument(kw, exc, match):
    args = dict(n_steps=2, batch_size=8, progress=False, options={"sigma": 0.3})
    args.update(kw)
    with pytest.raises(exc, match=match):
        train.fit(mlp(), data2d(), "dsm", **args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_value_error():
    with pytest.raises(ValueError, match="device 'cuda': CUDA is not available"):
        train.fit(mlp(), data2d(), "dsm", options={"sigma": 0.3}, n_steps=1, device="cuda", progress=False)


def test_model_constructors_check_their_sizes():
    with pytest.raises(ValueError, match=r"^n_visible must be an integer >= 1, got 2.5"):  # the user's argument
        GRBM(2.5, 3)
    with pytest.raises(ValueError, match="must be an integer >= 1, got -2"):
        MLPEnergy(-2)


def test_dtype_mismatch_between_model_and_data_is_named():
    model = MLPEnergy(2, hidden=(4,)).double()
    for fn in (objectives.sm, lambda m, x: objectives.dsm(m, x, 0.1), objectives.ssm):
        with pytest.raises(ValueError, match=r"x has dtype torch.float32 but MLPEnergy's parameters are torch.float64"):
            fn(model, torch.randn(4, 2))


# ---------------------------------------------------------------------------------- a score with no path to x
class DetachingScore(EnergyModel):
    """A user model whose score detaches its input: the common pattern that breaks the Hessian."""

    def __init__(self):
        super().__init__(2)
        self.w = torch.nn.Parameter(torch.tensor([[1.0, 0.3], [0.3, 2.0]]))

    def energy(self, x):
        return 0.5 * ((x @ self.w) * x).sum(1)

    def score(self, x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.energy(x).sum(), x, create_graph=True)
        return -g


@pytest.mark.parametrize("fn", [objectives.sm, objectives.ssm, lambda m, x: objectives.kingma_lecun(m, x, 0.1)],
                         ids=["sm", "ssm", "kingma_lecun"])
def test_a_score_that_detaches_its_input_is_an_error(fn):
    with pytest.raises(ValueError, match="has no path to x in autograd's graph"):
        fn(DetachingScore(), torch.randn(4, 2))


def test_a_declared_x_independent_score_gives_zero_curvature():
    class Linear(EnergyModel):
        score_depends_on_x = False

        def __init__(self):
            super().__init__(2)
            self.theta = torch.nn.Parameter(torch.tensor([0.5, -1.0]))

        def energy(self, x):
            return x @ self.theta

        def score(self, x):
            return -self.theta.expand(x.shape[0], 2)

    loss = objectives.sm(Linear(), torch.randn(4, 2))
    assert torch.allclose(loss, torch.tensor(0.5 * (0.25 + 1.0)))


# ---------------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("objective,options,kw", [
    ("dsm", {"sigma": 0.1}, dict(optimizer="sgd", lr=1e3, momentum=0.0)),
    ("ssm", {}, dict(optimizer="sgd", lr=1e2, momentum=0.0)),
    ("kingma_lecun", {"lam": 0.1}, dict(optimizer="sgd", lr=1e2, momentum=0.0)),
    ("langevin_cd", {"step_size": 0.01}, dict(optimizer="sgd", lr=1e3, momentum=0.0)),
], ids=["dsm", "ssm", "kingma_lecun", "langevin_cd"])
def test_runaway_training_stops_with_the_step_and_the_quantity(objective, options, kw):
    torch.manual_seed(0)
    model = MLPEnergy(2, hidden=(16, 16), activation="tanh")
    with pytest.raises(FloatingPointError, match=r"step \d+") as err:
        train.fit(model, data2d(200), objective, options=options, n_steps=300, batch_size=50, progress=False, **kw)
    # stopped by the divergence guard or a NaN/Inf guard, long before 300 steps of garbage
    assert isinstance(err.value, DivergenceError) or "non-finite" in str(err.value)


def test_the_guard_does_not_stop_healthy_training_and_can_be_switched_off():
    torch.manual_seed(0)
    h = train.fit(mlp(), data2d(200), "dsm", options={"sigma": 0.3}, n_steps=200, batch_size=50, progress=False)
    assert len(h["loss"]) == 200
    torch.manual_seed(0)
    try:  # without the guard only NaN/Inf can stop a runaway run
        train.fit(MLPEnergy(2, hidden=(16, 16)), data2d(200), "ssm", n_steps=100, batch_size=50, progress=False,
                  optimizer="sgd", lr=1e2, momentum=0.0, divergence_guard=False)
    except FloatingPointError as err:
        assert not isinstance(err, DivergenceError) and "non-finite" in str(err)


def test_the_guard_knows_the_lower_bound_of_a_loss():
    guard = train.DivergenceGuard(lower_bound=0.0, label="dsm")
    with pytest.raises(DivergenceError, match="fell below 0"):
        guard.check(5, 0, -1e-3, 1.0)
    guard = train.DivergenceGuard(factor=10, label="x", initial_norm=1.0)
    guard.check(1, 0, 2.0, 1.0)
    guard.check(2, 0, 19.0, 9.0)  # within 10× of the scales at the start (loss 2, norm 1)
    with pytest.raises(DivergenceError, match=r"parameter norm ‖θ‖ = 25 is 25× its scale at the start"):
        guard.check(3, 0, 1.0, 25.0)
    with pytest.raises(DivergenceError, match=r"\|loss\| = 30 is 15× its scale"):
        guard.check(4, 0, 30.0, 1.0)


# ---------------------------------------------------------------------------------- data caches
def test_a_corrupt_mnist_cache_is_reported_as_corrupt(tmp_path):
    cache = tmp_path / "mnist"
    cache.mkdir()
    bad = cache / "t10k-labels-idx1-ubyte"
    bad.write_bytes(b"not the labels")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.warns(UserWarning, match=r"cached .*t10k-labels-idx1-ubyte was corrupt \(sha256 .*\) and was deleted"):
        with pytest.raises(FileNotFoundError):
            D.load_mnist("test", source=empty, cache_dir=tmp_path)
    assert not bad.exists()
    assert _cache.discard_corrupt(bad, "0" * 64) is None  # gone, nothing more to report
