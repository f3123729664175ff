"""Typed presets (smlib.experiments.presets, configs) and the typed record schema (smlib.experiments.schema).

``presets_on_main.json`` holds the ci and paper configurations and unit keys of every converted
experiment as the dict presets on main produced them (before the presets became dataclasses): the
dataclasses must give exactly these, byte for byte, so work folders in progress and records stay valid.
"""
import copy
import dataclasses
import importlib
import json
from pathlib import Path

import pytest

from smlib.experiments import records, runner, schema, verdicts
from smlib.experiments.configs import Deen2dConfig, DeenMnistConfig, DeenPatchesConfig
from smlib.experiments.presets import Preset
from toy_experiment import Toy

HERE = Path(__file__).resolve().parent
ON_MAIN = json.loads((HERE / "presets_on_main.json").read_text())
EXPERIMENTS = sorted(ON_MAIN["configs"])


def _experiment(name):
    module = importlib.import_module(f"smlib.experiments.{name}")
    return module, next(v for v in vars(module).values() if isinstance(v, type) and issubclass(v, runner.Experiment)
                        and v.__module__ == module.__name__)()


# ------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_configs_and_unit_keys_as_on_main(name, tmp_path):
    module, exp = _experiment(name)
    for scale in ("ci", "paper"):
        expected = ON_MAIN["configs"][name][scale]
        assert isinstance(module.PRESETS[scale], Preset)
        cfg = runner.resolve(exp, scale)
        assert type(cfg) is dict and records.dumps(cfg, sort_keys=False) == records.dumps(expected, sort_keys=False)
        assert records.dumps(dict(module.PRESETS[scale]), sort_keys=False) == records.dumps(expected, sort_keys=False)
        assert [u.key for u in exp.units(cfg)] == ON_MAIN["unit_keys"][name][scale]
        assert runner.record_name(exp, scale, cfg) == (name if scale == "paper" else f"{name}_{scale}")
        # config.json of a work folder: the same bytes as the dict preset's
        runner.prepare(exp, scale, workdir=tmp_path / scale)
        records.write_json(tmp_path / f"{scale}.json", {"experiment": exp.name, "scale": scale, "config": expected})
        written = tmp_path / scale / runner.record_name(exp, scale, cfg) / "config.json"
        assert written.read_bytes() == (tmp_path / f"{scale}.json").read_bytes()
    # an override, even to the paper value, is a custom record; the hooks get lists, not tuples
    ci, paper = ON_MAIN["configs"][name]["ci"], ON_MAIN["configs"][name]["paper"]
    key = next(k for k, v in ci.items() if isinstance(v, list) and v != paper[k])
    custom = runner.resolve(exp, "ci", {key: tuple(ON_MAIN["configs"][name]["paper"][key])})
    assert isinstance(custom[key], list) and custom[key] == ON_MAIN["configs"][name]["paper"][key]
    assert runner.record_name(exp, "ci", custom) == f"{name}_ci_custom"


def test_preset_errors_name_the_field():
    base = runner.resolve(_experiment("deen_2d")[1], "ci")
    with pytest.raises(ValueError, match=r"Deen2dConfig\.n_steps must be positive, got 0"):
        Deen2dConfig(**{**base, "n_steps": 0})
    with pytest.raises(ValueError, match=r"Deen2dConfig\.seeds must not be empty"):
        Deen2dConfig(**{**base, "seeds": []})
    with pytest.raises(ValueError, match=r"Deen2dConfig\.sigma: inf is not a finite number"):
        Deen2dConfig(**{**base, "sigma": float("inf")})
    with pytest.raises(ValueError, match=r"Deen2dConfig\.n_train must be of type int, got 10.5"):
        Deen2dConfig(**{**base, "n_train": 10.5})
    with pytest.raises(ValueError, match=r"Deen2dConfig\.hidden\[1\] must be of type int"):
        Deen2dConfig(**{**base, "hidden": [32, "wide"]})
    mnist = runner.resolve(_experiment("deen_mnist")[1], "ci")
    with pytest.raises(ValueError, match=r"DeenMnistConfig\.lr_grid must be sorted without repeats"):
        DeenMnistConfig(**{**mnist, "lr_grid": [1e-3, 3e-3, 3e-4]})
    with pytest.raises(ValueError, match=r"DeenMnistConfig\.grad_clip must be positive"):
        DeenMnistConfig(**{**mnist, "grad_clip": -1.0})
    patches = runner.resolve(_experiment("deen_patches")[1], "ci")
    with pytest.raises(ValueError, match=r"DeenPatchesConfig\.fixed_baseline must be of type tuple\[int, float\]"):
        DeenPatchesConfig(**{**patches, "fixed_baseline": [3, 1.0, 2.0]})
    with pytest.raises(TypeError, match="missing .* 'n_steps'"):
        Deen2dConfig(**{k: v for k, v in base.items() if k != "n_steps"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        _experiment("deen_2d")[0].PRESETS["ci"].n_steps = 5


def test_override_checked_against_the_field_type():
    _, d2 = _experiment("deen_2d")
    with pytest.raises(ValueError, match="setting 'n_steps' of experiment 'deen_2d' must be of type int, got '6'"):
        runner.resolve(d2, "ci", {"n_steps": "6"})
    with pytest.raises(ValueError, match="setting 'sigma' of experiment 'deen_2d' must be of type float, got None"):
        runner.resolve(d2, "ci", {"sigma": None})
    with pytest.raises(ValueError, match=r"setting 'cd_variants' of experiment 'deen_2d' must be of type tuple\[str, \.\.\.\]"):
        runner.resolve(d2, "ci", {"cd_variants": "sgd"})
    with pytest.raises(ValueError, match="setting 'gray' .* must be of type bool, got 1"):
        runner.resolve(_experiment("swersky2011")[1], "ci", {"gray": 1})
    with pytest.raises(ValueError, match="setting 'lr' of experiment 'deen_2d': .* is not a finite number"):
        runner.resolve(d2, "ci", {"lr": float("nan")})
    with pytest.raises(ValueError, match=r"experiment 'deen_2d': Deen2dConfig\.batch_size must be positive"):
        runner.resolve(d2, "ci", {"batch_size": -4})
    with pytest.raises(ValueError, match="unknown setting 'n_step' for experiment 'deen_2d'"):
        runner.resolve(d2, "ci", {"n_step": 3})
    assert runner.resolve(d2, "ci", {"sigma": 1})["sigma"] == 1.0 and isinstance(runner.resolve(d2, "ci", {"sigma": 1})["sigma"], float)
    _, mnist = _experiment("deen_mnist")
    # a None-default field has a real type: float | None
    assert runner.resolve(mnist, "ci", {"sigma": 0.2})["sigma"] == 0.2
    assert runner.resolve(mnist, "ci", {"sigma": None})["sigma"] is None
    with pytest.raises(ValueError, match=r"setting 'sigma' of experiment 'deen_mnist' must be of type float \| None"):
        runner.resolve(mnist, "ci", {"sigma": "auto"})
    fixed = runner.resolve(_experiment("deen_patches")[1], "ci", {"fixed_baseline": [5, 2]})["fixed_baseline"]
    assert fixed == [5, 2.0] and type(fixed[0]) is int and type(fixed[1]) is float


# ------------------------------------------------------------------------------------ record schema
class _ToyWithIds(Toy):
    """The toy experiment with claims as `verdicts.claim` writes them (ids, gates)."""

    def summarise(self, ctx, cfg, results):
        last = [r["loss"][-1] for r in results.values()]
        gate = verdicts.Gate("finite", all(v == v for v in last), "a loss is NaN")
        return {"claims": [verdicts.claim("losses-finite", "losses are finite", "all finite", [str(last)],
                                          verdicts.verdict([all(v == v for v in last)]), gates=[gate])]}


class _ToyWithoutIds(Toy):
    def summarise(self, ctx, cfg, results):
        return {"claims": [{"claim": "losses are finite", "rule": "all finite", "numbers": "", "verdict": verdicts.HOLDS}]}


def test_record_round_trip_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("SMLIB_RESULTS_DIR", str(tmp_path / "results"))
    runner.run(_ToyWithIds(), "ci", workdir=tmp_path, record=True, progress=False, quiet=True)
    doc = json.loads((tmp_path / "results" / "toy_ci" / "results.json").read_text())
    rec = schema.Record.from_dict(doc, source="toy_ci")
    assert not rec.legacy and rec.data.claims[0].id == "losses-finite"
    assert rec.to_dict() == doc and records.dumps(rec.to_dict()) == records.dumps(doc)
    assert runner.load_record("toy_ci") == doc
    # a claim without its id: refused in a new record, naming the file and field; nothing is written
    bad = copy.deepcopy(doc)
    del bad["data"]["summary"]["claims"][0]["id"]
    with pytest.raises(ValueError, match=r"toy_ci: data\.summary\.claims\[0\]\.id is missing"):
        schema.Record.from_dict(bad, source="toy_ci")
    with pytest.raises(ValueError, match=r"claims\[0\]\.id is missing"):
        runner.run(_ToyWithoutIds(), "ci", workdir=tmp_path / "w2", record=True, progress=False, quiet=True)
    assert not (tmp_path / "results" / "toy_ci_custom").exists() and json.loads(
        (tmp_path / "results" / "toy_ci" / "results.json").read_text()) == doc
    # other fields named
    for path, value, match in [(("data", "summary", "claims", 0, "verdict"), "maybe", r"claims\[0\]\.verdict is not a verdict"),
                               (("data", "summary", "claims", 0, "id"), "Losses Finite", r"claims\[0\]\.id must be a lower-case slug"),
                               (("data", "summary", "claims", 0, "gates", 0, "ok"), False, r"claims\[0\]\.verdict is 'holds', but"),
                               (("data", "unit_wall_time_s", "dsm-s0"), -1.0, r"unit_wall_time_s\.dsm-s0 must be a number"),
                               (("data", "record_name"), "other", r"record_name 'other' does not start"),
                               (("data", "config"), [], r"data\.config must be a dict")]:
        broken = copy.deepcopy(doc)
        *head, last = path
        node = broken
        for p in head:
            node = node[p]
        node[last] = value
        with pytest.raises(ValueError, match=match):
            schema.Record.from_dict(broken, source="toy_ci")
    broken = copy.deepcopy(doc)
    del broken["provenance"]["commit"]
    with pytest.raises(ValueError, match=r"toy_ci: provenance lacks \['commit'\]"):
        schema.Record.from_dict(broken, source="toy_ci")
    twice = copy.deepcopy(doc)
    twice["data"]["summary"]["claims"] *= 2
    with pytest.raises(ValueError, match=r"repeat the ids \['losses-finite'\]"):
        schema.Record.from_dict(twice, source="toy_ci")


@pytest.mark.parametrize("name", ["deen_2d", "deen_mnist", "deen_patches", "swersky2011", "swersky2011_features"])
def test_records_on_main_load_as_first_or_new_records(name, monkeypatch):
    """A first record (its SHA-256 frozen in first_record_claims.json) loads as legacy and only so; a
    record that replaced it loads strictly, every claim with its id."""
    from smlib.experiments import first_claims

    results = HERE.parent / "results"
    monkeypatch.setenv("SMLIB_RESULTS_DIR", str(results))
    doc = runner.load_record(name)  # checks it, accepting the first records' claims without ids
    is_first = first_claims.sha256(results / name / "results.json") == first_claims.load(name)["sha256"]
    rec = schema.Record.from_dict(doc, source=name, allow_legacy=True)
    assert rec.legacy == is_first and rec.to_dict() == doc
    if is_first:
        with pytest.raises(ValueError, match=rf"{name}: data\.summary\.claims\[0\]\.id is missing"):
            schema.Record.from_dict(doc, source=name)
    else:
        assert schema.Record.from_dict(doc, source=name).to_dict() == doc


def test_recorded_multiscale_round_trips(monkeypatch):
    monkeypatch.setenv("SMLIB_RESULTS_DIR", str(HERE.parent / "results"))
    doc = runner.load_record("multiscale")
    rec = schema.Record.from_dict(doc, source="multiscale")  # re-recorded with claim ids: not legacy
    assert not rec.legacy and rec.to_dict() == doc
