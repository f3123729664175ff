"""The one table of objectives (smlib.objectives.registry): names, options, capabilities."""
import dataclasses
import typing

import pytest
import torch

from smlib import mcmc, objectives, train
from smlib.objectives import registry
from smlib.models import MLPEnergy


def test_names_and_capabilities():
    assert registry.names() == ("sm", "dsm", "ssm", "ssm_vr", "kingma_lecun", "ae", "msdsm", "cd", "pcd", "fpcd",
                                "langevin_cd")
    assert registry.names(stateful=True) == ("cd", "pcd", "fpcd", "langevin_cd")
    assert registry.names(ensemble=True) == ("sm", "dsm", "ssm", "ssm_vr")
    # every stateless objective is captured in a CUDA graph but msdsm, whose capture no GPU has checked yet
    assert set(registry.names(cuda_graph=True)) == set(registry.names(stateful=False)) - {"msdsm"}


@pytest.mark.parametrize("name", [n for n in registry.names() if n != "msdsm"])  # msdsm: tests/test_multiscale.py
def test_every_name_builds_with_its_defaults_and_runs(name):
    required = {o.name: 0.3 for o in registry.spec(name).options() if o.required}
    obj = objectives.make(name, **required)
    assert obj.name == name and obj.config()["options"].keys() == {o.name for o in obj.spec.options()}
    assert isinstance(obj.settings, registry.spec(name)) and obj.settings == registry.spec(name)(**required)
    assert (obj.state is not None) == obj.spec.stateful
    torch.manual_seed(0)
    model = MLPEnergy(2, hidden=(4,)).double()
    if name == "ae":
        return  # needs a reconstruct(x) model; covered by tests/test_train.py
    loss = obj(model, torch.randn(8, 2, dtype=torch.float64))
    assert loss.ndim == 0 and loss.requires_grad


def test_options_are_typed_and_named_in_errors():
    with pytest.raises(ValueError, match="option 'sigma' of objective 'dsm' must be a real number.*'0.1'"):
        objectives.make("dsm", sigma="0.1")
    with pytest.raises(ValueError, match="option 'n_chains' of objective 'pcd' must be an integer"):
        objectives.make("pcd", n_chains=2.0)
    with pytest.raises(ValueError, match=r"objective 'fpcd': fast_decay must be in \[0, 1\)"):
        objectives.make("fpcd", fast_decay=1.0)
    with pytest.raises(ValueError, match="option 'adapt' of objective 'cd' must be True or False"):
        objectives.make("cd", adapt="yes")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['k'\] for objective 'langevin_cd'"):
        objectives.make("langevin_cd", k=2)
    with pytest.raises(TypeError, match="needs option"):
        objectives.make("kingma_lecun")
    with pytest.raises(ValueError, match="unknown objective 'nce'"):
        objectives.make("nce")


def test_defaults_match_the_estimator_classes():
    # the registry's defaults are those of the classes it builds (one source of truth for behaviour)
    for name, cls in (("cd", mcmc.CD), ("pcd", mcmc.PCD), ("fpcd", mcmc.FPCD),
                      ("langevin_cd", mcmc.LangevinCD)):
        built = objectives.make(name).state
        plain = cls()
        assert vars(built).keys() == vars(plain).keys()
        assert all(vars(built)[k] == vars(plain)[k] for k in vars(plain) if k != "generator"), name


def test_fit_takes_a_name_with_options_or_an_objective():
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    runs = []
    for objective, options in (("dsm", {"sigma": 0.3}), (objectives.make("dsm", sigma=0.3), None)):
        torch.manual_seed(0)
        model = MLPEnergy(2, hidden=(4,))
        runs.append(train.fit(model, x, objective, options=options, n_steps=3, batch_size=8, progress=False)["loss"])
    assert runs[0] == runs[1]
    with pytest.raises(TypeError, match="already carries its options"):
        train.fit(MLPEnergy(2, hidden=(4,)), x, objectives.make("dsm", sigma=0.3), options={"sigma": 1.0}, n_steps=1)
    with pytest.raises(TypeError, match="options must be a dict"):
        train.fit(MLPEnergy(2, hidden=(4,)), x, "dsm", options=0.3, n_steps=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sigma': not a TrainConfig setting"):
        train.fit(MLPEnergy(2, hidden=(4,)), x, "dsm", sigma=0.3, n_steps=1)  # no shared keyword space


def test_describe():
    assert registry.spec("dsm").option("sigma").describe() == "sigma (float; required): noise standard deviation σ > 0"
    assert registry.spec("fpcd").option("fast_decay").describe() == \
        "fast_decay (float; default 0.95): fast-weight decay λ in [0, 1)"
    assert registry.spec("cd").option("seed").describe().startswith("seed (int | None; default None)")


def test_objectives_are_frozen_self_validating_dataclasses():
    import dataclasses

    d = objectives.DSM(sigma=0.1)
    assert dataclasses.asdict(d) == {"sigma": 0.1} and d == objectives.DSM(sigma=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.sigma = 1.0
    with pytest.raises(ValueError, match="option 'sigma' of objective 'dsm' must be > 0, got -1.0"):
        objectives.DSM(sigma=-1)
    with pytest.raises(ValueError, match="option 'sigma' of objective 'dsm' must be finite"):
        objectives.DSM(sigma=float("inf"))
    with pytest.raises(ValueError, match="option 'n_slices' of objective 'ssm_vr' must be >= 1"):
        objectives.SSMVR(n_slices=0)
    with pytest.raises(ValueError, match="option 'kind' of objective 'ssm' must be one of 'gaussian'"):
        objectives.SSM(kind="normal")
    with pytest.raises(ValueError, match="option 'sampler' of objective 'pcd' must be one of 'auto', 'gibbs'"):
        objectives.PCD(sampler="nuts")
    with pytest.raises(ValueError, match="option 'seed' of objective 'langevin_cd' must be an integer"):
        objectives.LangevinCD(seed=1.5)
    with pytest.raises(ValueError, match="objective 'pcd': n_chains must be an integer >= 1, got 0"):
        objectives.PCD(n_chains=0)
    # a stateful objective's settings build a fresh estimator of smlib.mcmc with exactly those settings
    est = objectives.PCD(n_chains=7, k=2, sampler="langevin").build()
    assert isinstance(est, mcmc.PCD) and (est.n_chains, est.k, est.sampler) == (7, 2, "langevin")
    with pytest.raises(TypeError, match="settings of a stateful estimator"):
        objectives.PCD()(MLPEnergy(2, hidden=(4,)), torch.zeros(3, 2))


def test_one_list_of_samplers():
    assert typing.get_args(dict((f.name, f.type) for f in dataclasses.fields(objectives.CD))["sampler"]) == mcmc.SAMPLERS


def test_resolve_takes_every_form_into_one_objective():
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    model = MLPEnergy(2, hidden=(4,))
    by_name = registry.resolve("dsm", {"sigma": 0.3})
    by_settings = registry.resolve(objectives.DSM(sigma=0.3))
    assert by_name.config() == by_settings.config() == {"objective": "dsm", "options": {"sigma": 0.3}}
    assert registry.resolve(by_name) is by_name
    est = mcmc.PCD(n_chains=4)
    r = registry.resolve(est)
    assert r.state is est and r.label == "PCD" and r.config()["options"]["n_chains"] == 4
    r = registry.resolve(lambda m, x, scale: scale * m(x).mean(), {"scale": 2.0})
    assert r.label == "<lambda>" and r.config()["options"] == {"scale": "2.0"} and r.spec is None
    with torch.no_grad():
        assert float(r(model, x)) == pytest.approx(2.0 * float(model(x).mean()))
    with pytest.raises(TypeError, match="objective must be a name"):
        registry.resolve(3)
    with pytest.raises(TypeError, match="already carries its options"):
        registry.resolve(objectives.DSM(sigma=0.3), {"sigma": 1.0})
