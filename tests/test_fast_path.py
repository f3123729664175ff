"""The CUDA fast path of fit (smlib.train.cuda_graph): decision logic, fallbacks, and the captured-step
machinery on CPU through an emulated graph (replay = rerun of the recorded step).

What runs without a GPU: every decision, every fallback and warning, and everything around the
capture (warm-up, static input buffer, guard flags, snapshot/restore on a non-finite step,
partial batches, capturable Adam with a tensor learning rate under a scheduler, portable
checkpoints, resume). What needs a GPU: CUDA's capture itself (the last test, skipped here).
"""
import math
import warnings

import pytest
import torch

from graph_emulation import emulated_graphs
from smlib import mcmc, train
from smlib.train import cuda_graph as fastpath
from smlib.train.step import EagerStep
from smlib.models import MLPEnergy

DT = torch.float64


pytestmark = pytest.mark.usefixtures("float64")  # every test in float64 (conftest.py)


def data2d(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * torch.tensor([1.0, 0.5]) + torch.tensor([1.0, -1.0])


def mlp(seed=123):
    torch.manual_seed(seed)
    return MLPEnergy(2, hidden=(8, 8)).double()


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def max_diff(a, b):
    return max(float((u - v).abs().max()) for u, v in zip(params_of(a), params_of(b)))


# ---------------------------------------------------------------------------------- decisions
def plan(objective="dsm", data=None, options=None, **kw):
    kw.setdefault("device", "cuda")
    if objective == "dsm" and not options:
        options = {"sigma": 0.1}
    return train.fast_path_plan(mlp(), data2d() if data is None else data, objective, options=options, **kw)


def test_auto_uses_the_graph_on_cuda_for_stateless_objectives():
    for objective, kw in [("dsm", {}), ("ssm", {}), ("ssm_vr", {}), ("sm", {}), ("kingma_lecun", {"lam": 0.1}),
                          ("ae", {})]:
        p = plan(objective, batch_size=16, options=kw)
        assert p.mode == "cuda_graph" and not p.warn, (objective, p)
    p = plan(batch_size=16)
    assert "last batch of each epoch (8 of 16 rows) runs eagerly" in p.reason
    assert "last batch" not in plan(batch_size=16, drop_last=True).reason
    assert "last batch" not in plan(batch_size=20).reason  # 40 rows = 2 full batches


def test_auto_is_eager_on_cpu_without_warning_and_true_warns():
    p = plan(device="cpu")
    assert p.mode == "eager" and not p.warn and "needs a CUDA device" in p.reason
    p = plan(device="cpu", fast=True)
    assert p.mode == "eager" and p.warn
    p = plan(fast=False)
    assert p == ("eager", "fast=False", False)
    with pytest.raises(ValueError, match="fast must be True, False or 'auto'"):
        plan(fast="yes")


@pytest.mark.parametrize("objective,kw,match", [
    ("pcd", {"n_chains": 8}, "keeps state between steps"),
    ("fpcd", {"n_chains": 8}, "keeps state between steps"),
    ("cd", {}, "keeps state between steps"),
    ("langevin_cd", {"n_steps": 2}, "keeps state between steps"),
])
def test_mcmc_estimators_fall_back_with_a_reason(objective, kw, match):
    p = plan(objective, options=kw)
    assert p.mode == "eager" and p.warn and match in p.reason
    p = plan(mcmc.PCD(n_chains=4))  # an estimator instance too
    assert p.mode == "eager" and "PCD" in p.reason


def test_other_fallbacks_name_their_reason():
    custom = lambda m, x: m.energy(x).mean()  # noqa: E731
    p = plan(custom)
    assert p.mode == "eager" and p.warn and "custom objective" in p.reason and "fast=True" in p.reason
    assert plan(custom, fast=True).mode == "cuda_graph"
    loader = [data2d()[:16], data2d()[16:32]]
    p = plan(data=loader)
    assert p.mode == "eager" and "iterable" in p.reason
    assert plan(data=loader, fast=True).mode == "cuda_graph"
    p = plan(optimizer="sgd", lr_schedule="cosine")
    assert p.mode == "eager" and "SGD with a learning-rate schedule" in p.reason
    assert plan(optimizer="sgd").mode == "cuda_graph"
    assert plan(optimizer="adamw", lr_schedule="cosine").mode == "cuda_graph"
    p = plan(optimizer=lambda params: torch.optim.RMSprop(params))
    assert p.mode == "eager" and "not one fit can capture" in p.reason
    # fit decides on the optimiser instance: RMSprop falls back, a callable returning Adam does not
    assert plan(optimizer=lambda params: torch.optim.Adam(params, lr=0.1)).mode == "cuda_graph"


# ---------------------------------------------------------------------------------- fallbacks on CPU
def test_fit_on_cpu_is_eager_auto_silently_true_with_a_warning():
    x = data2d()
    ref = mlp()
    h_ref = train.fit(ref, x, "dsm", options={"sigma": 0.3}, n_steps=6, batch_size=16, progress=False, fast=False)
    m1 = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastpath.FastPathWarning)
        h1 = train.fit(m1, x, "dsm", options={"sigma": 0.3}, n_steps=6, batch_size=16, progress=False)  # fast="auto"
    m2 = mlp()
    with pytest.warns(fastpath.FastPathWarning, match="device is cpu"):
        h2 = train.fit(m2, x, "dsm", options={"sigma": 0.3}, n_steps=6, batch_size=16, progress=False, fast=True)
    assert max_diff(m1, ref) == 0 and max_diff(m2, ref) == 0
    assert h1["loss"] == h_ref["loss"] == h2["loss"]


# ---------------------------------------------------------------------------------- the captured step (emulated)
class Counter:
    """Counts how GraphStep handles each step."""

    def __init__(self, monkeypatch):
        self.replays, self.eager = 0, 0
        orig_replay, orig_eager = fastpath.GraphStep._replay, EagerStep.__call__

        def replay(step_self, *a):
            self.replays += 1
            return orig_replay(step_self, *a)

        def eager(step_self, *a):
            self.eager += 1
            return orig_eager(step_self, *a)

        monkeypatch.setattr(fastpath.GraphStep, "_replay", replay)
        monkeypatch.setattr(EagerStep, "__call__", eager)


@pytest.mark.parametrize("objective,okw,fkw", [
    ("dsm", {"sigma": 0.3}, {}),
    ("dsm", {"sigma": 0.3}, {"lr_schedule": "cosine", "grad_clip": 0.5}),
    ("ssm", {"n_slices": 2}, {"optimizer": "adamw", "weight_decay": 0.01, "lr_schedule": "step"}),
    ("ssm_vr", {}, {"optimizer": "sgd", "lr": 0.05}),
    ("sm", {}, {}),
], ids=["dsm", "dsm-cosine-clip", "ssm-adamw-step", "ssm_vr-sgd", "sm"])
def test_emulated_graph_step_equals_the_eager_loop(monkeypatch, objective, okw, fkw):
    # 40 rows, batch 16: per epoch 2 full batches (captured) and one of 8 rows (eager)
    x = data2d()
    common = dict(n_steps=11, batch_size=16, progress=False, seed=3, options=okw, **fkw)
    ref = mlp()
    h_ref = train.fit(ref, x, objective, fast=False, **common)
    count = Counter(monkeypatch)
    model = mlp()
    with emulated_graphs():
        h = train.fit(model, x, objective, **common)
    # 8 full-size steps: 2 eager warm-up steps, then 6 replays; 3 partial batches run eagerly
    assert (count.replays, count.eager) == (6, 2 + 3)
    assert max_diff(model, ref) < 1e-12
    assert h.steps == h_ref.steps and max(abs(a - b) for a, b in zip(h["loss"], h_ref["loss"])) < 1e-12
    assert h["lr"] == pytest.approx(h_ref["lr"], rel=1e-12)


def test_emulated_graph_drop_last_never_runs_a_partial_batch(monkeypatch):
    count = Counter(monkeypatch)
    with emulated_graphs():
        train.fit(mlp(), data2d(), "dsm", options={"sigma": 0.3}, n_steps=8, batch_size=16, drop_last=True, progress=False)
    assert (count.replays, count.eager) == (6, 2)


def _nan_at(k):
    state = {"n": 0}

    def objective(m, xb):
        state["n"] += 1
        loss = 0.5 * (m.score(xb) ** 2).sum(-1).mean()
        return loss * math.nan if state["n"] == k else loss

    return objective


@pytest.mark.parametrize("fast", [False, True])
def test_non_finite_step_raises_the_same_error_and_leaves_the_pre_step_state(fast):
    # eager: the guard raises before optimizer.step(); graph: the in-graph snapshot is restored
    x = data2d()
    opts = []

    def make_opt(params):
        opts.append(torch.optim.Adam(params, lr=1e-2))
        return opts[-1]

    before = {}

    def cb(model, step, epoch, history):
        if step == 4:
            before["params"] = params_of(model)
            before["opt"] = {k: v.clone() for k, v in opts[-1].state[next(model.parameters())].items()}

    model = mlp()
    ctx = emulated_graphs() if fast else warnings.catch_warnings()
    with ctx, pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 5 \(epoch 2\)"):
        train.fit(model, x, _nan_at(5), n_steps=10, batch_size=20, progress=False, optimizer=make_opt, fast=fast,
                  callback=cb, callback_every=1)
    assert all(torch.equal(a, b) for a, b in zip(before["params"], params_of(model)))
    state = opts[-1].state[next(model.parameters())]
    assert all(torch.equal(before["opt"][k], state[k]) for k in before["opt"])


def test_non_finite_gradient_names_the_parameter_on_the_graph_path():
    x = data2d()
    calls = {"n": 0}

    def objective(m, xb):  # at the 4th call (a replay): finite loss, infinite gradient of out.bias
        calls["n"] += 1
        loss = 0.5 * (m.score(xb) ** 2).sum(-1).mean()
        if calls["n"] == 4:
            b = m.out.bias
            loss = loss + torch.sqrt(b - b.detach()).sum()  # value 0, d/db = 1/(2·sqrt(0)) = inf
        return loss

    with emulated_graphs(), pytest.raises(FloatingPointError, match=r"gradient of parameter\(s\) \['out.bias'\] at step 4"):
        train.fit(mlp(), x, objective, n_steps=6, batch_size=20, progress=False, fast=True)


def test_emulated_graph_resume_and_portable_checkpoint(tmp_path):
    x = data2d()
    common = dict(n_steps=11, batch_size=16, progress=False, seed=3, options={"sigma": 0.3}, lr_schedule="cosine")
    with emulated_graphs():
        ref = mlp()
        h_ref = train.fit(ref, x, "dsm", **common)
        path = tmp_path / "ck.pt"

        def stop(model, step, epoch, history):
            if step == 7:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train.fit(mlp(), x, "dsm", checkpoint=path, checkpoint_every=5, callback=stop, callback_every=1, **common)
        ck = train.load_checkpoint(path)
        assert ck["step"] == 5
        group = ck["optimizer"]["param_groups"][0]
        assert group["capturable"] is False and isinstance(group["lr"], float)
        mid = tmp_path / "step5.pt"
        mid.write_bytes(path.read_bytes())
        model = mlp()
        h = train.fit(model, x, "dsm", checkpoint=path, resume=True, **common)  # graph rebuilt after loading
    assert max_diff(model, ref) == 0 and h["loss"] == h_ref["loss"]
    # the portable checkpoint also resumes on the eager path (plain Adam, float lr)
    model2 = mlp()
    train.fit(model2, x, "dsm", checkpoint=mid, resume=True, fast=False, **common)
    assert max_diff(model2, ref) < 1e-12


def test_capture_failure_warns_and_continues_eagerly(monkeypatch):
    def broken(self, x, step):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(fastpath.GraphStep, "_capture", broken)
    x = data2d()
    ref = mlp()
    train.fit(ref, x, "dsm", options={"sigma": 0.3}, n_steps=6, batch_size=20, progress=False, fast=False)
    model = mlp()
    with emulated_graphs(capturable=False):
        with pytest.warns(fastpath.FastPathWarning, match="capture of the 'dsm' step failed at step 3"):
            train.fit(model, x, "dsm", options={"sigma": 0.3}, n_steps=6, batch_size=20, progress=False)
    assert max_diff(model, ref) == 0


def test_fallback_for_an_estimator_warns_on_an_emulated_device():
    with emulated_graphs(), pytest.warns(fastpath.FastPathWarning, match="keeps state between steps"):
        train.fit(mlp(), data2d(), "langevin_cd", options={"n_steps": 1, "step_size": 0.01}, n_steps=2, batch_size=20, progress=False)


# ---------------------------------------------------------------------------------- real CUDA graphs
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_fit_matches_eager_on_gpu(monkeypatch):
    x = data2d(4096).float().cuda()
    kw = dict(n_steps=40, batch_size=1000, progress=False, seed=0, options={"sigma": 0.3}, lr_schedule="cosine")
    torch.set_default_dtype(torch.float32)
    ref = MLPEnergy(2, (32, 32, 32)).cuda()
    model = MLPEnergy(2, (32, 32, 32)).cuda()
    model.load_state_dict(ref.state_dict())
    train.fit(ref, x, "dsm", fast=False, **kw)
    count = Counter(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastpath.FastPathWarning)
        train.fit(model, x, "dsm", **kw)
    assert count.replays > 20
    # same noise stream, capturable vs plain Adam: equal to float32 round-off, not bit for bit
    assert max_diff(model, ref) < 1e-4
