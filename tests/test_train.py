"""Tests of smlib.train.fit: objectives, logging, callbacks, exact resume, guards, validation."""
import math

import pytest
import torch

from smlib import mcmc, objectives, train
from smlib.models import GRBM, MLPEnergy

DT = torch.float64


pytestmark = pytest.mark.usefixtures("float64")  # every test in float64 (conftest.py)


def data2d(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=DT) * torch.tensor([1.0, 0.5]) + torch.tensor([1.0, -1.0])


def make_model(kind):
    torch.manual_seed(123)
    if kind == "mlp":
        return MLPEnergy(2, hidden=(8, 8)).double()
    return GRBM(2, 3).double()


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def same_params(a, b):
    return all(torch.equal(u, v) for u, v in zip(params_of(a), params_of(b)))


class Quadratic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(2, dtype=DT))
        self.dim = 2

    def energy(self, x):
        return 0.5 * ((x - self.mu) ** 2).sum(1)


# ---------------------------------------------------------------------------------- basics
def test_dsm_fit_lowers_loss_and_logs_history():
    model = make_model("mlp")
    x = data2d(200)
    h = train.fit(model, x, "dsm", options={"sigma": 0.3}, n_epochs=15, batch_size=50, lr=1e-2, progress=False)
    assert len(h["loss"]) == len(h.steps) == len(h.epochs) == len(h["lr"]) == 60
    assert h.steps[0] == 1 and h.steps[-1] == 60 and h.epochs[-1] == 14
    first, last = sum(h["loss"][:8]) / 8, sum(h["loss"][-8:]) / 8
    assert last < first - 0.2, (first, last)


def test_mcmc_objective_by_name_trains_gaussian_mean():
    model = Quadratic()
    x = data2d(100)
    train.fit(model, x, "langevin_cd", options={"step_size": 0.1}, n_steps=150, batch_size=50, optimizer="sgd", lr=0.2,
              momentum=0.0, progress=False)
    assert torch.allclose(model.mu.detach(), x.mean(0), atol=0.2)


def test_dict_objective_logs_theorem1_terms_and_callback_per_epoch():
    model = make_model("grbm")
    x = data2d(30)

    def objective(m, xb):
        t = m.sm_terms(xb)
        return {"loss": t["total"], **t}

    calls = []

    def callback(m, step, epoch, history):
        calls.append((step, epoch))
        return {"energy_mean": m.energy(x).mean()}

    h = train.fit(model, x, objective, n_epochs=3, batch_size=10, progress=False, callback=callback)
    for key in ("reconstruction", "variance", "curvature", "total", "loss"):
        assert len(h[key]) == 9
    total = torch.tensor(h["reconstruction"]) + torch.tensor(h["variance"]) + torch.tensor(h["curvature"])
    assert torch.allclose(total, torch.tensor(h["loss"]))
    assert calls == [(3, 0), (6, 1), (9, 2)]
    assert h.per_epoch["epoch"] == [0, 1, 2] and len(h.per_epoch["energy_mean"]) == 3


def test_callback_at_end_of_run_mid_epoch_and_every_n_steps():
    x = data2d(40)
    seen = []
    train.fit(Quadratic(), x, "cd", n_steps=5, batch_size=10, progress=False,
              callback=lambda m, s, e, h: seen.append(s))
    assert seen == [4, 5]  # end of epoch 0, then end of run
    seen.clear()
    train.fit(Quadratic(), x, "cd", n_steps=7, batch_size=10, progress=False, callback_every=3,
              callback=lambda m, s, e, h: seen.append(s))
    assert seen == [3, 6, 7]


def test_numpy_data_is_cast_to_the_model_dtype():
    model = MLPEnergy(2, hidden=(4,)).float()
    h = train.fit(model, data2d(20).numpy(), "dsm", options={"sigma": 0.5}, n_steps=3, batch_size=8, progress=False)
    assert len(h["loss"]) == 3 and next(model.parameters()).dtype == torch.float32


def test_log_every_logs_window_means():
    x = data2d(40)
    h1 = train.fit(make_model("mlp"), x, "dsm", options={"sigma": 0.5}, n_steps=10, batch_size=8, progress=False)
    h5 = train.fit(make_model("mlp"), x, "dsm", options={"sigma": 0.5}, n_steps=10, batch_size=8, progress=False, log_every=5)
    assert h5.steps == [5, 10]
    assert h5["loss"][0] == pytest.approx(sum(h1["loss"][:5]) / 5, rel=1e-12)
    assert h5["loss"][1] == pytest.approx(sum(h1["loss"][5:]) / 5, rel=1e-12)


def test_dataloader_data_and_progress_bar(capsys):
    x = data2d(32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(32)), batch_size=8)
    seen = []
    h = train.fit(make_model("mlp"), loader, "ssm_vr", n_epochs=2, progress=True,
                  callback=lambda m, s, e, hist: seen.append(e))
    assert len(h["loss"]) == 8 and seen == [0, 1]
    assert "fit[ssm_vr]" in capsys.readouterr().err


def test_fit_is_deterministic_and_fast_flag_is_noop_on_cpu():
    x = data2d(40)
    runs = []
    for fast in (False, "auto", True, False):
        m = make_model("mlp")
        h = train.fit(m, x, "dsm", options={"sigma": 0.3}, n_steps=6, batch_size=16, progress=False, fast=fast, seed=7)
        runs.append((m, h["loss"]))
    for m, losses in runs[1:]:
        assert same_params(m, runs[0][0]) and losses == runs[0][1]
    m = make_model("mlp")
    train.fit(m, x, "dsm", options={"sigma": 0.3}, n_steps=6, batch_size=16, progress=False, seed=8)
    assert not same_params(m, runs[0][0])
    assert next(m.parameters()).device.type == "cpu"  # device="auto" on a machine without CUDA


# ---------------------------------------------------------------------------------- resume
class Interrupt(Exception):
    pass


def _stop_at(step_to_stop):
    def cb(model, step, epoch, history):
        if step == step_to_stop:
            raise Interrupt

    return cb


RESUME_CASES = [
    ("mlp", "dsm", dict(sigma=0.3), dict(optimizer="adam", lr_schedule="cosine"), 4),
    ("mlp", "dsm", dict(sigma=0.3), dict(optimizer="adam", lr_schedule="step", log_every=3), 3),
    ("grbm", "pcd", dict(n_chains=16, k=2), dict(optimizer="sgd", lr=0.05, weight_decay=1e-3), 4),
    ("grbm", "fpcd", dict(n_chains=16, k=1, fast_lr=0.05), dict(optimizer="sgd", lr=0.05), 4),
    ("mlp", "langevin_cd", dict(n_steps=2, step_size=0.01, init_noise=0.1), dict(optimizer="adam"), 5),
]


@pytest.mark.parametrize("kind,objective,okw,fkw,every", RESUME_CASES,
                         ids=["dsm-cosine", "dsm-epoch-boundary", "pcd", "fpcd", "langevin_cd"])
def test_resume_is_bit_identical(tmp_path, kind, objective, okw, fkw, every):
    # 40 rows, batch 16 → 3 batches per epoch: the run crosses epoch boundaries and reshuffles.
    x = data2d(40)
    common = dict(n_steps=11, batch_size=16, progress=False, seed=3, callback_every=1, options=okw, **fkw)
    ref = make_model(kind)
    h_ref = train.fit(ref, x, objective, callback=lambda *a: None, **common)

    path = tmp_path / "run.pt"
    model = make_model(kind)
    with pytest.raises(Interrupt):
        train.fit(model, x, objective, checkpoint=path, checkpoint_every=every, callback=_stop_at(every + 2), **common)
    assert path.exists()
    torch.manual_seed(999)  # a fresh process would have some other RNG state
    model2 = make_model(kind)
    h = train.fit(model2, x, objective, checkpoint=path, checkpoint_every=every, resume=True,
                  callback=lambda *a: None, **common)
    assert same_params(model2, ref)
    assert h["loss"] == h_ref["loss"] and h.steps == h_ref.steps and h.epochs == h_ref.epochs
    # resuming a finished run does not train again
    model3 = make_model(kind)
    h3 = train.fit(model3, x, objective, checkpoint=path, resume=True, **common)
    assert same_params(model3, ref) and h3["loss"] == h_ref["loss"]


def test_resume_with_estimator_instance_and_n_epochs(tmp_path):
    x = data2d(40)
    common = dict(n_epochs=4, batch_size=16, progress=False, seed=1, optimizer="sgd", lr=0.05)
    ref = make_model("grbm")
    train.fit(ref, x, mcmc.PCD(n_chains=8, seed=5), **common)
    path = tmp_path / "ck.pt"
    with pytest.raises(Interrupt):
        train.fit(make_model("grbm"), x, mcmc.PCD(n_chains=8, seed=5), checkpoint=path, checkpoint_every=3,
                  callback=_stop_at(5), callback_every=1, **common)
    model = make_model("grbm")
    train.fit(model, x, mcmc.PCD(n_chains=8, seed=5), checkpoint=path, resume=True, **common)
    assert same_params(model, ref)


def test_checkpoint_contents_and_atomic_write(tmp_path, monkeypatch):
    x = data2d(40)
    path = tmp_path / "ck.pt"
    train.fit(make_model("grbm"), x, "pcd", options={"n_chains": 8}, n_steps=4, batch_size=16, progress=False,
              checkpoint=path, checkpoint_every=2)
    ck = train.load_checkpoint(path)
    assert ck["step"] == 4 and ck["objective_state"]["chains"].shape == (8, 2)
    for key in ("model", "optimizer", "scheduler", "rng", "history", "perm", "batch_in_epoch"):
        assert key in ck
    assert set(ck["rng"]) == {"torch", "cuda", "data"}
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train.save_checkpoint(path, {"x": 1})
    assert path.read_bytes() == before  # the old checkpoint survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left behind


# ---------------------------------------------------------------------------------- guards
def test_nan_loss_guard_names_the_step():
    x = data2d(40)

    state = {"n": 0}

    def objective(m, xb):
        state["n"] += 1
        loss = m.energy(xb).mean()
        return loss * math.nan if state["n"] == 3 else loss

    with pytest.raises(FloatingPointError, match=r"non-finite loss.*step 3"):
        train.fit(Quadratic(), x, objective, n_steps=10, batch_size=8, progress=False)


def test_nan_gradient_guard_names_the_parameter():
    x = data2d(40)

    def objective(m, xb):  # value 0, gradient 1/(2·sqrt(0)) = inf
        return torch.sqrt(m.mu - m.mu.detach()).sum() + 0.0 * m.energy(xb).mean()

    with pytest.raises(FloatingPointError, match=r"gradient of parameter\(s\) \['mu'\] at step 1"):
        train.fit(Quadratic(), x, objective, n_steps=3, batch_size=8, progress=False)


def test_non_finite_parameter_after_update():
    x = data2d(40)
    with pytest.raises(FloatingPointError, match=r"parameter\(s\) \['mu'\] after the update at step 1"):
        train.fit(Quadratic(), x, lambda m, xb: 1e300 * m.energy(xb).mean(), n_steps=3, batch_size=8,
                  optimizer="sgd", lr=1e300, momentum=0.0, progress=False)


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "data,objective,kwargs,exc,match",
    [
        (data2d()[:, :1], "sm", {}, ValueError, "dimension"),
        (torch.ones(10, 2, dtype=torch.long), "sm", {}, ValueError, "floating"),
        (torch.full((10, 2), math.nan), "sm", {}, ValueError, "NaN"),
        (data2d(), "dsm", {"options": {"sigma": 0.0}}, ValueError, "sigma.*must be > 0"),
        (data2d(), "dsm", {}, TypeError, "sigma"),
        (data2d(), "dsm", {"options": {"sigma": 0.1, "sigmaa": 1}}, TypeError, "sigmaa"),
        (data2d(), "pcd", {"options": {"n_chainz": 3}}, TypeError, "n_chainz"),
        (data2d(), "nce", {}, ValueError, "objective"),
        (data2d(), 42, {}, TypeError, "objective"),
        (data2d(), "sm", {"optimizer": "lbfgs"}, ValueError, "optimizer"),
        (data2d(), "sm", {"lr_schedule": "warmup"}, ValueError, "lr_schedule"),
        (data2d(), "sm", {"n_epochs": 1}, ValueError, "exactly one"),
        (data2d(), "sm", {"n_steps": None}, ValueError, "exactly one"),
        (data2d(), "sm", {"batch_size": 0}, ValueError, "batch_size"),
        (data2d(), "sm", {"lr": -1.0}, ValueError, "lr"),
        (data2d(), "sm", {"resume": True}, ValueError, "checkpoint"),
        (data2d(), "sm", {"fast": "yes"}, ValueError, "fast"),
        (data2d(), "sm", {"device": "tpu9"}, ValueError, "device"),
        ("not data", "sm", {}, TypeError, "data"),
        ([], "sm", {}, ValueError, "no batches"),
    ],
)
def test_bad_input_raises_clearly(data, objective, kwargs, exc, match):
    kw = dict(n_steps=2, progress=False)
    kw.update(kwargs)
    if kw.get("n_steps") is None:
        kw.pop("n_steps")
    with pytest.raises(exc, match=match):
        train.fit(make_model("mlp"), data, objective, **kw)


# ---------------------------------------------------------------------------------- model × objective
def _all_models():
    from smlib.models import MCRBM, MPoT, DAEEnergy

    torch.manual_seed(0)
    return {
        "grbm": GRBM(3, 4),
        "mcrbm": MCRBM(3, n_factors=4, n_cov=4, n_mean=2),
        "mpot": MPoT(3, n_cov=4, n_mean=2),
        "dae": DAEEnergy(3, 4, sigma=0.5),
        "mlp": MLPEnergy(3, hidden=(8,)),
    }


OBJECTIVE_KW = {
    "sm": {}, "dsm": {"sigma": 0.3}, "ssm": {"n_slices": 2}, "ssm_vr": {}, "kingma_lecun": {"lam": 0.1},
    "ae": {}, "cd": {"k": 1, "step_size": 0.01}, "pcd": {"n_chains": 6, "step_size": 0.01},
    "fpcd": {"n_chains": 6, "fast_lr": 0.01, "step_size": 0.01}, "langevin_cd": {"n_steps": 1, "step_size": 0.01},
}


@pytest.mark.parametrize("objective", list(OBJECTIVE_KW))
def test_every_model_trains_with_every_objective(objective):
    # two SGD steps of each (model, objective) pair run, stay finite and change the parameters
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    for name, model in _all_models().items():
        if objective == "ae" and not hasattr(model, "reconstruct"):
            continue
        model = model.double()
        before = params_of(model)
        h = train.fit(model, x, objective, n_steps=2, batch_size=8, progress=False, optimizer="sgd", lr=1e-3,
                      options=OBJECTIVE_KW[objective])
        assert all(math.isfinite(v) for v in h["loss"]), (name, objective)
        assert not all(torch.equal(a, b) for a, b in zip(before, params_of(model))), (name, objective)


SM_FAMILY = {
    "sm": lambda m, x, g: objectives.sm(m, x),
    "dsm": lambda m, x, g: objectives.dsm(m, x, 0.3, noise=torch.randn(x.shape, dtype=x.dtype, generator=g)),
    "ssm": lambda m, x, g: objectives.ssm(m, x, projections=torch.randn((4, *x.shape), dtype=x.dtype, generator=g)),
    "ssm_vr": lambda m, x, g: objectives.ssm(m, x, vr=True,
                                             projections=torch.randn((4, *x.shape), dtype=x.dtype, generator=g)),
    "kingma_lecun": lambda m, x, g: objectives.kingma_lecun(m, x, 0.1),
    "ae": lambda m, x, g: objectives.ae(m, x),
}


@pytest.mark.parametrize("objective", list(SM_FAMILY))
def test_score_matching_losses_fall_through_fit(objective):
    # The objective on the whole data set, with its noise / projections held fixed, is lower after
    # 60 Adam steps through fit than before, for every model it applies to.
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(64, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.5, 2.0],
                                                                             dtype=torch.float64) + 1.0)
    for name, model in _all_models().items():
        if objective == "ae" and not hasattr(model, "reconstruct"):
            continue
        model = model.double()
        def measure(model=model):
            return SM_FAMILY[objective](model, x, torch.Generator().manual_seed(7)).item()

        before = measure()
        train.fit(model, x, objective, n_steps=60, batch_size=32, progress=False, lr=1e-2,
                  options=OBJECTIVE_KW[objective])
        after = measure()
        assert after < before, (name, objective, before, after)


def test_a_model_with_project_is_projected_after_every_update():
    """fit calls model.project_() after each optimizer step (MPoT's filter_norm: a projected gradient step)."""
    from smlib.models import MLPEnergy

    class UnitFirstLayer(MLPEnergy):
        calls = 0

        @torch.no_grad()
        def project_(self):
            type(self).calls += 1
            w = self.layers[0].weight
            w.div_(w.norm(dim=1, keepdim=True))

    torch.manual_seed(0)
    model = UnitFirstLayer(2, hidden=(8,))
    train.fit(model, torch.randn(64, 2), "dsm", options={"sigma": 0.5}, n_steps=7, batch_size=16, lr=0.1,
              progress=False)
    assert UnitFirstLayer.calls == 7
    torch.testing.assert_close(model.layers[0].weight.norm(dim=1), torch.ones(8))
