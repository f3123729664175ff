"""fit_ensemble: a batched (vmapped) run of M members equals M runs of fit, member by member."""
import pytest
import torch

from smlib import train
from smlib.ensemble import fit_ensemble
from smlib.models import MLPEnergy


pytestmark = pytest.mark.usefixtures("float64")  # every test in float64 (conftest.py)


def data2d(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * torch.tensor([1.0, 0.5]) + torch.tensor([1.0, -1.0])


def make():
    return MLPEnergy(2, hidden=(8, 8), activation="softplus")


def one_by_one(objective, seeds, sigmas=None, options=None, **kw):
    out = []
    for m, s in enumerate(seeds):
        torch.manual_seed(s)
        model = make()
        okw = {"sigma": sigmas[m]} if sigmas is not None else {}
        h = train.fit(model, data2d(), objective, options={**okw, **(options or {})}, seed=s, progress=False,
                      fast=False, **kw)
        out.append((model, h))
    return out


def assert_same(models, history, reference, tol):
    for m, (ref, h_ref) in enumerate(reference):
        for (name, p), q in zip(models[m].named_parameters(), ref.parameters()):
            err = float((p - q).detach().abs().max())
            assert err < tol, (m, name, err)
        losses = torch.tensor(history[f"loss_{m}"])
        assert float((losses - torch.tensor(h_ref["loss"])).abs().max()) < tol, m
        assert history.steps == h_ref.steps and history.epochs == h_ref.epochs


@pytest.mark.parametrize("objective,kw", [
    ("dsm", dict(sigmas=[0.1, 0.3, 1.0], seeds=[0, 1, 2])),
    ("dsm", dict(sigmas=[0.2, 0.5], seeds=[7, 7])),          # common random numbers, two noise levels
    ("ssm", dict(seeds=[3, 4], n_slices=2)),
    ("ssm_vr", dict(seeds=[5, 6])),
    ("sm", dict(seeds=[8, 9])),
], ids=["dsm-sigmas", "dsm-crn", "ssm", "ssm_vr", "sm"])
def test_batched_run_equals_members_one_by_one(objective, kw):
    # 40 rows, batch 16: 11 steps cross epoch boundaries (reshuffles) and a partial batch of 8 rows
    common = dict(n_steps=11, batch_size=16, lr=1e-2)
    models, history = fit_ensemble(make, None, data2d(), objective, **kw, **common)
    fkw = {"n_slices": kw["n_slices"]} if "n_slices" in kw else {}
    reference = one_by_one(objective, kw["seeds"], kw.get("sigmas"), options=fkw, **common)
    assert_same(models, history, reference, tol=1e-10)
    assert history["loss"][-1] == pytest.approx(sum(history[f"loss_{m}"][-1] for m in range(len(models))) / len(models))


def test_sgd_and_log_every_match_fit():
    common = dict(n_steps=9, batch_size=20, lr=0.05, optimizer="sgd", momentum=0.5, log_every=4)
    models, history = fit_ensemble(make, 2, data2d(), "dsm", sigma=0.4, **common)  # seeds default 0, 1
    assert history.steps == [4, 8, 9]
    assert_same(models, history, one_by_one("dsm", [0, 1], [0.4, 0.4], **common), tol=1e-10)


def test_members_differ_and_training_lowers_the_loss():
    models, history = fit_ensemble(make, 3, data2d(200), "dsm", sigma=0.5, n_steps=60, batch_size=50, lr=1e-2)
    p = [next(m.parameters()).detach() for m in models]
    assert not torch.equal(p[0], p[1]) and not torch.equal(p[1], p[2])
    first, last = sum(history["loss"][:10]) / 10, sum(history["loss"][-10:]) / 10
    assert last < first, (first, last)


def test_a_perturbed_member_is_detected():
    # the equality above can fail: one member with another σ no longer matches its reference
    models, history = fit_ensemble(make, None, data2d(), "dsm", sigmas=[0.3, 0.31], seeds=[0, 1], n_steps=4,
                                   batch_size=16)
    reference = one_by_one("dsm", [0, 1], [0.3, 0.3], n_steps=4, batch_size=16)
    with pytest.raises(AssertionError):
        assert_same(models, history, reference, tol=1e-10)


@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((None, data2d()), {"sigma": 0.1}, ValueError, "n_models, seeds or sigmas"),
    ((2, data2d()), {"seeds": [1, 2, 3], "sigma": 0.1}, ValueError, "seeds has 3 entries"),
    ((None, data2d()), {"seeds": [1, 2], "sigmas": [0.1]}, ValueError, "entries"),
    ((2, data2d()), {}, TypeError, "sigma"),
    ((2, data2d()), {"sigma": -1.0}, ValueError, "sigma must be > 0"),
    ((2, data2d()[:, :1]), {"sigma": 0.1}, ValueError, "dimension"),
    ((2, data2d()), {"sigma": 0.1, "optimizer": "lbfgs"}, ValueError, "optimizer"),
])
def test_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fit_ensemble(make, *args, n_steps=2, **kwargs)
    with pytest.raises(ValueError, match="objective"):
        fit_ensemble(make, 2, data2d(), "cd", n_steps=2)


def test_non_finite_loss_names_the_member():
    x = data2d()
    with pytest.raises(FloatingPointError, match=r"member\(s\) \[1\] at step 1"):
        fit_ensemble(make, None, x, "dsm", sigmas=[0.5, 1e-300], n_steps=2, batch_size=8)


def make_grbm():
    from smlib.models import GRBM

    return GRBM(2, 3)


@pytest.mark.parametrize("objective,kw", [("sm", {}), ("ssm", {"n_slices": 2}), ("dsm", {"sigma": 0.3})])
def test_a_model_without_the_laplacian_recursion_matches_fit(objective, kw):
    # GRBM members: the Hessian trace by forward-over-reverse products on the functional view, where fit
    # uses the GRBM's closed form (sm) or autograd (ssm): two independent routes to the same loss
    common = dict(n_steps=6, batch_size=16, lr=1e-2)
    models, history = fit_ensemble(make_grbm, None, data2d(), objective, seeds=[3, 4], **kw, **common)
    for m, s in enumerate([3, 4]):
        torch.manual_seed(s)
        ref = make_grbm()
        h = train.fit(ref, data2d(), objective, options=kw, seed=s, progress=False, **common)
        assert max(abs(a - b) for a, b in zip(history[f"loss_{m}"], h["loss"])) < 1e-10
        for p, q in zip(models[m].parameters(), ref.parameters()):
            assert float((p - q).detach().abs().max()) < 1e-10


def test_fit_ensemble_leaves_the_global_generator_alone():
    torch.manual_seed(5)
    state = torch.get_rng_state().clone()
    fit_ensemble(make, 2, data2d(), "dsm", sigma=0.3, n_steps=3, batch_size=16)
    assert torch.equal(torch.get_rng_state(), state)


def test_the_divergence_guard_watches_every_member():
    with pytest.raises(train.DivergenceError, match=r"objective 'dsm \(member [01]\)'.*beyond 1.5×"):
        fit_ensemble(make, 2, data2d(), "dsm", sigma=0.3, n_steps=40, batch_size=16, optimizer="sgd", lr=0.3,
                     divergence_guard={"factor": 1.5})
    fit_ensemble(make, 2, data2d(), "dsm", sigma=0.3, n_steps=40, batch_size=16, optimizer="sgd", lr=0.3,
                 divergence_guard=False)  # the same run without the guard


def test_settings_it_does_not_implement_are_refused_by_name():
    with pytest.raises(ValueError, match=r"does not implement \['lr_schedule', 'grad_clip'\]"):
        fit_ensemble(make, 2, data2d(), "dsm", sigma=0.3, n_steps=2, lr_schedule="cosine", grad_clip=1.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sigmaa'"):
        fit_ensemble(make, 2, data2d(), "dsm", sigmaa=0.3, n_steps=2)
    with pytest.raises(ValueError, match="option 'n_slices' of objective 'ssm' must be >= 1"):
        fit_ensemble(make, 2, data2d(), "ssm", n_slices=0, n_steps=2)
    with pytest.raises(TypeError, match="sigmas are DSM's noise levels"):
        fit_ensemble(make, None, data2d(), "sm", sigmas=[0.1, 0.2], n_steps=2)


def test_checkpoint_resume_is_bit_identical_and_checked(tmp_path):
    common = dict(sigmas=[0.2, 0.5], seeds=[1, 2], batch_size=16, lr=1e-2)
    whole, h_whole = fit_ensemble(make, None, data2d(), "dsm", n_steps=11, **common)
    path = tmp_path / "ens.pt"
    fit_ensemble(make, None, data2d(), "dsm", n_steps=5, checkpoint=path, **common)  # "killed" at step 5, mid-epoch
    ck = train.load_checkpoint(path)
    assert ck["step"] == 5 and ck["config"]["ensemble"] == {"seeds": [1, 2], "sigmas": [0.2, 0.5]}
    resumed, h = fit_ensemble(make, None, data2d(), "dsm", n_steps=11, checkpoint=path, resume=True, **common)
    for a, b in zip(whole, resumed):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)
    assert h["loss"] == h_whole["loss"] and h.steps == h_whole.steps
    with pytest.raises(train.CheckpointError, match=r"ensemble.sigmas: checkpoint \[0.2, 0.5\], now \[0.2, 0.6\]"):
        fit_ensemble(make, None, data2d(), "dsm", n_steps=12, checkpoint=path, resume=True,
                     **{**common, "sigmas": [0.2, 0.6]})
    with pytest.raises(train.CheckpointError, match="lr: checkpoint 0.01, now 0.02"):
        fit_ensemble(make, None, data2d(), "dsm", n_steps=12, checkpoint=path, resume=True, **{**common, "lr": 2e-2})


def test_a_constrained_model_is_refused_not_trained_without_its_projection():
    from smlib.models import MPoT

    with pytest.raises(ValueError, match="project_"):
        fit_ensemble(lambda: MPoT(4, n_cov=3, n_mean=2, filter_norm=1.0), 2, torch.randn(16, 4), "sm",
                     n_steps=1, batch_size=8)
