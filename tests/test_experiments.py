"""smlib.experiments: configuration, naming, units, resume after a kill, records, the command line."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smlib import experiments
from smlib.experiments import runner
from helpers import TINY_SWERSKY, is_verdict  # tests/ is on sys.path (pyproject: pythonpath)
from toy_experiment import Toy

ROOT = Path(__file__).resolve().parent.parent

TINY = TINY_SWERSKY


def test_resolve_and_naming():
    toy = Toy()
    cfg = runner.resolve(toy, "ci")
    assert runner.record_name(toy, "ci", cfg) == "toy_ci"
    assert runner.record_name(toy, "paper", runner.resolve(toy, "paper")) == "toy"
    # any override moves the record away from the paper-scale name, even one equal in spirit
    custom = runner.resolve(toy, "paper", {"n_steps": 11})
    assert runner.record_name(toy, "paper", custom) == "toy_paper_custom"
    assert runner.resolve(toy, "ci", {"sigma": 1})["sigma"] == 1.0  # an int for a float setting is fine
    with pytest.raises(ValueError, match="unknown setting 'n_step'"):
        runner.resolve(toy, "ci", {"n_step": 3})
    with pytest.raises(ValueError, match="setting 'n_steps' .* must be of type int"):
        runner.resolve(toy, "ci", {"n_steps": "6"})
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        runner.resolve(toy, "huge")


def test_units_per_process_then_record(tmp_path, monkeypatch):
    monkeypatch.setenv("SMLIB_RESULTS_DIR", str(tmp_path / "results"))
    toy = Toy()
    assert runner.run(toy, "ci", only=["dsm-s0"], workdir=tmp_path, progress=False, quiet=True) is None
    with pytest.raises(ValueError, match="units not done: dsm-s1"):
        runner.run(toy, "ci", only=["dsm-s0"], workdir=tmp_path, record=True, quiet=True)
    rec = runner.run(toy, "ci", workdir=tmp_path, record=True, progress=False, quiet=True)
    assert set(rec["units"]) == {"dsm-s0", "dsm-s1"} and rec["record_name"] == "toy_ci"
    saved = json.loads((tmp_path / "results" / "toy_ci" / "results.json").read_text())
    prov = saved["provenance"]
    assert {"commit", "record_commit", "unit_commands", "units", "cpu", "versions"} <= set(prov)
    assert {"numpy", "scipy", "scikit-image", "PyWavelets"} <= set(prov["versions"])
    assert saved["data"]["summary"]["claims"][0]["verdict"] == "holds"
    # a changed setting is never continued in the folder of another configuration
    cfg_path = tmp_path / "toy_ci" / "config.json"
    doc = json.loads(cfg_path.read_text())
    doc["config"]["n_steps"] = 8
    cfg_path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="another configuration .*n_steps: 8 -> 6"):
        runner.run(toy, "ci", workdir=tmp_path, quiet=True)
    with pytest.raises(ValueError, match="matches no unit"):
        runner.run(toy, "ci", only=["nope"], workdir=tmp_path / "other", quiet=True)


def test_units_of_different_commits_are_not_merged(tmp_path, monkeypatch):
    monkeypatch.setenv("SMLIB_RESULTS_DIR", str(tmp_path / "results"))
    toy = Toy()
    runner.run(toy, "ci", workdir=tmp_path, progress=False, quiet=True)
    doc_path = tmp_path / "toy_ci" / "dsm-s1.json"
    doc = json.loads(doc_path.read_text())
    doc["provenance"]["commit"] = "0" * 40
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="different commits"):
        runner.run(toy, "ci", workdir=tmp_path, record=True, quiet=True)


# ---------------------------------------------------------------------------------- the command line
_BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("papermill", "jupytext", "IPython", "ipykernel", "nbformat"):
            raise ImportError(f"{name} is blocked: the experiments must run without the book tool chain")
sys.meta_path.insert(0, _Block())
"""


def _cli(args, workdir, extra="", env=None):
    code = _BLOCK + extra + "\nfrom smlib.experiments.__main__ import main\nsys.exit(main(%r))\n" % (args,)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SMLIB_RESULTS_DIR": str(workdir / "results"), **(env or {})}
    return subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600)


def _sets(name):
    return [a for k, v in TINY[name].items() for a in ("--set", f"{k}={json.dumps(v)}")]


def test_help_and_list_without_the_book_tool_chain(tmp_path):
    out = _cli(["--help"], tmp_path)
    assert out.returncode == 0 and "--scale" in out.stdout, out.stderr
    out = _cli(["--list"], tmp_path)
    assert out.returncode == 0 and "swersky2011" in out.stdout, out.stderr
    out = _cli(["swersky2011", "--scale", "paper", "--list"], tmp_path)
    assert out.returncode == 0 and "n_train = 128000" in out.stdout and "SM-s0" in out.stdout, out.stderr
    out = _cli(["nosuch"], tmp_path)
    assert out.returncode == 2 and "unknown experiment 'nosuch'" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TINY))
def test_ci_preset_runs_without_the_book_tool_chain(tmp_path, name):
    assert name in experiments.EXPERIMENTS
    out = _cli([name, "--scale", "ci", "--no-progress", "--record", "--workdir", "w", *_sets(name)], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = json.loads((tmp_path / "results" / f"{name}_ci_custom" / "results.json").read_text())
    for c in rec["data"]["summary"]["claims"]:
        assert is_verdict(c["verdict"]), c  # a health gate may refuse a rule on these tiny runs, with its reason


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    args = ["swersky2011", "--scale", "ci", "--no-progress", "--only", "SM-s0", "--workdir", "w", *_sets("swersky2011")]
    args[args.index("n_epochs=2")] = "n_epochs=4"
    (tmp_path / "ref").mkdir()
    ref = _cli(args, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    # the same run, SIGKILLed right after its second checkpoint (epoch 2 of 4), then the same command again
    die = textwrap.dedent("""
        import os, smlib.train.loop as _t
        _save, _n = _t.save_checkpoint, [0]
        def _dying(*a, **k):
            _save(*a, **k)
            _n[0] += 1
            if _n[0] == 2:
                os.kill(os.getpid(), 9)
        _t.save_checkpoint = _dying
    """)
    (tmp_path / "run").mkdir()
    killed = _cli(args, tmp_path / "run", extra=die)
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = tmp_path / "run" / "w" / "swersky2011_ci_custom"
    assert (folder / "SM-s0.pt").exists() and not (folder / "SM-s0.json").exists()
    again = _cli(args, tmp_path / "run")
    assert again.returncode == 0 and "resuming from SM-s0.pt" in again.stderr, again.stderr[-2000:]
    a = json.loads((tmp_path / "ref" / "w" / "swersky2011_ci_custom" / "SM-s0.json").read_text())["result"]
    b = json.loads((folder / "SM-s0.json").read_text())["result"]
    assert a["curves"] == b["curves"] and a["loss"] == b["loss"] and a["filters"] == b["filters"]


# ---------------------------------------------------------------------------------- records
def test_save_writes_the_compact_layout_and_reads_back_identical(tmp_path, monkeypatch):
    from smlib.experiments import records

    monkeypatch.setenv("SMLIB_RESULTS_DIR", str(tmp_path))
    data = {"curve": [0.5 * i for i in range(100)], "rows": [{"x": [1, 2]}, {"y": None}], "nan": float("nan")}
    prov = records.provenance(wall_time_s=1.0, device="cpu", command="python -m smlib.experiments toy")
    folder = records.save("toy", data, provenance=prov)
    text = (folder / "results.json").read_text()
    assert text == records.dumps({"provenance": prov, "data": data})   # the compact writer, not indent=1
    assert len(text.splitlines()) < 60                                   # indent=1 puts each of 100 numbers on a line
    back = records.load("toy")
    assert json.dumps(back, sort_keys=True) == json.dumps({"provenance": prov, "data": data}, sort_keys=True)


def test_unit_keys_are_built_in_one_place():
    from smlib.experiments.records import unit_key

    assert unit_key("SM", seed=0) == "SM-s0" and unit_key("DEEN", "spiral", seed=2) == "DEEN-spiral-s2"
    assert unit_key("parzen") == "parzen"
    for bad in [(), ("a/b",), ("",), (".x",), ("a b",)]:
        with pytest.raises(ValueError, match="unit key"):
            unit_key(*bad)


def test_no_module_of_the_library_imports_the_book_tooling():
    import ast

    for path in (ROOT / "smlib").rglob("*.py"):
        if "book" in path.relative_to(ROOT / "smlib").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.ImportFrom) and node.module == "smlib":
                names += [f"smlib.{a.name}" for a in node.names]
            assert not any(n == "smlib.book" or n.startswith("smlib.book.") for n in names), path
