"""The experiment runner cannot lie about provenance, cannot run a unit twice, and names the file it cannot read
(issue 20), records its units' time split and runs them as one-thread workers (issue 21)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from smlib import experiments
from smlib.experiments import records, runner
from smlib.experiments.__main__ import main
from smlib.experiments.locks import LockHeld, UnitLock

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from toy_experiment import Toy  # noqa: E402

GIT = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-c", "commit.gpgsign=false"]


def _copy_smlib(dest: Path) -> Path:
    shutil.copytree(ROOT / "smlib", dest / "smlib", ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "smlib"


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("SMLIB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("SMLIB_RERUN_COMMAND", raising=False)
    return tmp_path / "results"


# ---------------------------------------------------------------------------------- provenance
def test_an_edit_between_the_units_and_the_record_is_an_error_or_recorded(tmp_path, results, monkeypatch):
    repo = tmp_path / "checkout"
    pkg = _copy_smlib(repo)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "smlib"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", "x"], check=True)
    monkeypatch.setattr(records, "package_dir", lambda: pkg)  # as if smlib had been imported from this checkout
    runner.run(Toy(), "ci", workdir=tmp_path / "w", progress=False, quiet=True)
    unit = json.loads((tmp_path / "w" / "toy_ci" / "dsm-s0.json").read_text())["provenance"]
    assert unit["commit_dirty"] is False and len(unit["commit"]) == 40
    with open(pkg / "experiments" / "verdicts.py", "a") as f:  # the code that would compute the claims changes
        f.write("\n# edited after the units ran\n")
    with pytest.raises(ValueError, match="source changed since the units ran.*--allow-dirty-record"):
        runner.run(Toy(), "ci", workdir=tmp_path / "w", record=True, quiet=True)
    assert not (results / "toy_ci").exists()
    runner.run(Toy(), "ci", workdir=tmp_path / "w", record=True, quiet=True, allow_dirty_record=True)
    prov = records.load("toy_ci")["provenance"]
    assert prov["commit_dirty"] is True and prov["record_commit_dirty"] is True
    assert prov["source_changed_since_units"]["units_source_digest"] != prov["source_changed_since_units"]["record_source_digest"]


def test_a_record_made_outside_a_checkout_says_unknown_not_clean(tmp_path, monkeypatch):
    # the results folder sits in a clean git checkout; smlib does not: the commit is smlib's, so unknown
    book = tmp_path / "book"
    (book / "results").mkdir(parents=True)
    (book / "README").write_text("x")
    subprocess.run(["git", "init", "-q", str(book)], check=True)
    subprocess.run([*GIT, "-C", str(book), "add", "README"], check=True)
    subprocess.run([*GIT, "-C", str(book), "commit", "-qm", "x"], check=True)
    monkeypatch.setenv("SMLIB_RESULTS_DIR", str(book / "results"))
    pkg = _copy_smlib(tmp_path / "installed")
    monkeypatch.setattr(records, "package_dir", lambda: pkg)
    runner.run(Toy(), "ci", workdir=tmp_path / "w", record=True, progress=False, quiet=True)
    prov = records.load("toy_ci")["provenance"]
    assert prov["commit"] is None and prov["commit_dirty"] is None
    assert "not imported from a git checkout" in prov["commit_unknown_reason"]
    assert prov["source_digest"].startswith("sha256:")


def test_records_name_the_command_a_user_types_and_no_absolute_path(tmp_path, results):
    rec = runner.run(Toy(), "ci", overrides={"n_steps": 4}, workdir=tmp_path / "w", record=True, progress=False,
                     quiet=True)
    doc = records.load(rec["record_name"])
    assert doc["provenance"]["command"] == \
        "python -m smlib.experiments toy --scale ci --device cpu --set n_steps=4 --record"
    text = (results / rec["record_name"] / "results.json").read_text()
    assert records.absolute_paths(doc) == [] and str(tmp_path) not in text and str(Path.home()) not in text
    prov = dict(doc["provenance"], command=f"python {tmp_path}/x.py")
    with pytest.raises(ValueError, match="absolute paths"):
        records.save("bad", doc["data"], provenance=prov)


# ---------------------------------------------------------------------------------- the lock
def _toy_process(tmp_path, only=None, wait=False, log=None, **env):
    code = ("import sys; sys.path.insert(0, %r)\nfrom toy_experiment import Toy\nfrom smlib.experiments import runner\n"
            "from smlib.experiments.locks import LockHeld\n"
            "try:\n    runner.run(Toy(), 'ci', only=%r, workdir=%r, progress=False, wait=%r)\n"
            "except LockHeld as e:\n    print('LOCKED:', e, file=sys.stderr); sys.exit(3)\n"
            % (str(TESTS), only, str(tmp_path / "w"), wait))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.PIPE if log is None else open(log, "w"))


def _wait_for(path: Path, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_two_processes_never_run_one_unit(tmp_path):
    count, go = tmp_path / "count.txt", tmp_path / "go"
    first = _toy_process(tmp_path, only=["dsm-s0"], TOY_COUNT=str(count), TOY_GO=str(go))
    _wait_for(count)  # the first process is inside the unit, holding its lock
    second = _toy_process(tmp_path, only=["dsm-s0"], TOY_COUNT=str(count))
    out, err = second.communicate(timeout=300)
    assert second.returncode == 3, err
    assert f"unit dsm-s0 of toy_ci is being run by process {first.pid}" in err and "--wait" in err
    log = tmp_path / "waiting.log"
    waiting = _toy_process(tmp_path, only=["dsm-s0"], wait=True, log=log, TOY_COUNT=str(count))
    t0 = time.time()
    while "waiting for process" not in log.read_text():
        assert time.time() - t0 < 120 and waiting.poll() is None, log.read_text()
        time.sleep(0.05)
    go.touch()
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert waiting.wait(timeout=300) == 0, log.read_text()
    assert "done meanwhile by another process" in log.read_text()
    assert count.read_text().split() == ["dsm-s0"]  # trained once
    assert not (tmp_path / "w" / "toy_ci" / "dsm-s0.lock").exists()  # released on exit


@pytest.mark.slow
def test_the_lock_of_a_crashed_process_is_taken_over(tmp_path):
    crashed = _toy_process(tmp_path, only=["dsm-s0"], TOY_CRASH="1")
    crashed.communicate(timeout=300)
    assert crashed.returncode == -signal.SIGKILL
    lock = tmp_path / "w" / "toy_ci" / "dsm-s0.lock"
    assert json.loads(lock.read_text())["pid"] == crashed.pid  # left behind by the crash
    again = _toy_process(tmp_path, only=["dsm-s0"])
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and f"took over the lock of process {crashed.pid}" in err, err
    assert (tmp_path / "w" / "toy_ci" / "dsm-s0.json").exists() and not lock.exists()


def test_a_live_holder_named_in_the_lock_file_is_respected_without_flock(tmp_path):
    # on a file system where flock does nothing, the holder's process id still guards the unit
    import socket

    from smlib.experiments import locks

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        path = tmp_path / "u.lock"
        path.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                    "start": locks._start_ticks(sleeper.pid), "since": "now"}))
        with pytest.raises(LockHeld, match=f"process {sleeper.pid}"):
            UnitLock(path, what="unit u").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with UnitLock(path, what="unit u") as lock:  # the holder is gone: stale, taken over
        assert lock.stale["pid"] == sleeper.pid
    assert not path.exists()


# ---------------------------------------------------------------------------------- files and arguments
def test_corrupt_unit_and_config_files_are_named(tmp_path, results):
    runner.run(Toy(), "ci", workdir=tmp_path, progress=False, quiet=True)
    folder = tmp_path / "toy_ci"
    unit = folder / "dsm-s1.json"
    good = unit.read_text()
    for text, why in [("{\"unit\": \"dsm-s1\", ", "is not valid JSON: .* line 1"), ("", "is empty"),
                      ("[1, 2]", "holds a JSON list"), ('{"unit": "dsm-s1"}', "lacks 'params'")]:
        unit.write_text(text)
        with pytest.raises(ValueError, match=f"unit file of dsm-s1 .*dsm-s1.json {why}.*delete it"):
            runner.run(Toy(), "ci", workdir=tmp_path, quiet=True)
    unit.write_text(good.replace('"seed": 1', '"seed": 5'))
    with pytest.raises(ValueError, match="written for unit 'dsm-s1' with .*'seed': 5"):
        runner.run(Toy(), "ci", workdir=tmp_path, quiet=True)
    unit.write_text(good)
    (folder / "config.json").write_text('{"experiment": "toy", "config": {')
    with pytest.raises(ValueError, match="config file .*config.json is not valid JSON"):
        runner.run(Toy(), "ci", workdir=tmp_path, quiet=True)
    unit.unlink()  # a unit to resume, from a checkpoint cut short: fit's loader names the file
    (folder / "config.json").unlink()
    (folder / "dsm-s1.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match="checkpoint .*dsm-s1.pt .* truncated, corrupt"):
        runner.run(Toy(), "ci", workdir=tmp_path, progress=False, quiet=True)


def test_a_file_as_workdir_is_named_before_any_set_up(tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    assert main(["deen_2d", "--workdir", str(afile), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--workdir {afile} is not a folder" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="workdir .* is not a folder"):
        runner.run(Toy(), "ci", workdir=afile / "sub", quiet=True)


@pytest.mark.parametrize("item, name", [("sigma=Infinity", "deen_2d"), ("lr=NaN", "swersky2011"),
                                        ("seeds=[0, NaN]", "deen_2d"), ("lr=1e999", "swersky2011")])
def test_non_finite_settings_are_refused_before_any_set_up(tmp_path, capsys, item, name):
    assert main([name, "--set", item, "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--set {item}" in err and "not a finite number" in err
    assert not list(tmp_path.rglob("config.json"))  # nothing invalid written


def test_the_python_api_refuses_non_finite_settings_too(tmp_path):
    with pytest.raises(ValueError, match="setting 'sigma' of experiment 'toy'.*not a finite number"):
        runner.run(Toy(), "ci", overrides={"sigma": float("nan")}, workdir=tmp_path, quiet=True)
    assert not list(tmp_path.rglob("config.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_before_any_set_up(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["swersky2011", "--scale", "paper", "--device", "cuda", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--device 'cuda': CUDA is not available" in err
    assert time.perf_counter() - t0 < 10 and not list(tmp_path.iterdir())  # no set-up, nothing written
    with pytest.raises(ValueError, match="device 'cuda:0': CUDA is not available"):
        runner.run(Toy(), "ci", device="cuda:0", workdir=tmp_path, quiet=True)
    assert main(["deen_2d", "--device", "gpu", "--workdir", str(tmp_path)]) == 2
    assert "--device 'gpu' is not a device" in capsys.readouterr().err


def test_a_unit_leaves_the_global_default_dtype_alone(tmp_path, monkeypatch):
    before = torch.get_default_dtype()
    runner.run(Toy(), "ci", only=["dsm-s0"], workdir=tmp_path, progress=False, quiet=True)  # default_dtype inside
    assert torch.get_default_dtype() == before
    monkeypatch.setenv("TOY_LEAK_DTYPE", "1")
    with pytest.raises(RuntimeError, match="left torch's global default dtype at torch.float64"):
        runner.run(Toy(), "ci", only=["dsm-s1"], workdir=tmp_path, progress=False, quiet=True)
    assert torch.get_default_dtype() == before


# ---------------------------------------------------------------------------------- time split, claims, workers
def test_each_unit_records_its_time_split(tmp_path, results, monkeypatch):
    monkeypatch.setenv("TOY_SLEEP", "0.2")
    runner.run(Toy(), "ci", workdir=tmp_path, record=True, progress=False, quiet=True)
    doc = records.load("toy_ci")["provenance"]
    for key in ("dsm-s0", "dsm-s1"):
        t = json.loads((tmp_path / "toy_ci" / f"{key}.json").read_text())["provenance"]["time"]
        # two callbacks (steps 3 and 6) and one timing("eval") block sleep 0.2 s each; set-up sleeps 0.2 s
        assert 0.6 <= t["eval_s"] < 0.6 + 0.5 * t["wall_s"], t
        assert t["train_s"] > 0 and t["other_s"] >= 0 and t["data_s"] >= 0.2
        assert abs(t["train_s"] + t["eval_s"] + t["other_s"] - t["wall_s"]) < 0.01
        assert doc["units"][key]["time"] == t
    assert doc["time"]["data_s"] == t["data_s"]  # one process: its set-up counted once
    assert doc["time"]["eval_s"] >= 1.2


def test_a_callback_that_is_part_of_training_is_timed_as_training(tmp_path, results, monkeypatch):
    monkeypatch.setenv("TOY_SLEEP", "0.2")
    monkeypatch.setenv("TOY_CALLBACK_TRAINS", "1")
    runner.run(Toy(), "ci", only=["dsm-s0"], workdir=tmp_path, progress=False, quiet=True)
    t = json.loads((tmp_path / "toy_ci" / "dsm-s0.json").read_text())["provenance"]["time"]
    # the two callbacks' 0.4 s go to training; only the timing("eval") block's 0.2 s is evaluation
    assert 0.2 <= t["eval_s"] < 0.4 and t["train_s"] >= 0.4, t


def test_a_unit_that_trains_outside_the_runner_has_an_unknown_split(tmp_path, monkeypatch):
    import smlib.experiments.clock as clock

    monkeypatch.setattr(runner, "fit", clock.train.fit)  # the protocol calls smlib.train.fit itself
    monkeypatch.setattr(runner, "timing", lambda part: __import__("contextlib").nullcontext())
    runner.run(Toy(), "ci", only=["dsm-s0"], workdir=tmp_path, progress=False, quiet=True)
    t = json.loads((tmp_path / "toy_ci" / "dsm-s0.json").read_text())["provenance"]["time"]
    assert t["train_s"] is None and t["eval_s"] is None and t["other_s"] is None and t["wall_s"] > 0


def test_the_cli_prints_the_claims_without_record(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(experiments.EXPERIMENTS, "toy", ("toy_experiment", "Toy"))
    assert main(["toy", "--workdir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "claims of toy_ci (this run):" in out and "holds  losses are finite" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_workers_run_every_unit_once_with_one_thread_each(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(  # the workers find the toy experiment in the registry
        "import smlib.experiments as e\ne.EXPERIMENTS['toy'] = ('toy_experiment', 'Toy')\n")
    count = tmp_path / "count.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), str(site)]),
           "SMLIB_RESULTS_DIR": str(tmp_path / "results"), "TOY_COUNT": str(count), "OMP_NUM_THREADS": "4"}
    out = subprocess.run([sys.executable, "-m", "smlib.experiments", "toy", "--workers", "2", "--record",
                          "--workdir", str(tmp_path / "w")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 worker process(es) of one thread each" in out.stderr and "[worker 1]" in out.stderr
    assert sorted(count.read_text().split()) == ["dsm-s0", "dsm-s1"]  # each unit once
    assert "claims of toy_ci (this run):" in out.stdout
    units = [json.loads((tmp_path / "w" / "toy_ci" / f"{k}.json").read_text())["provenance"] for k in ("dsm-s0", "dsm-s1")]
    assert all(p["torch_threads"] == 1 for p in units)
    assert (tmp_path / "results" / "toy_ci" / "results.json").is_file()


@pytest.mark.slow
def test_workers_run_the_prerequisite_units_first(tmp_path):
    """dsm-s1 reads dsm-s0's result (TOY_FIRST): with two workers it would start beside dsm-s0 and fail."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import smlib.experiments as e\ne.EXPERIMENTS['toy'] = ('toy_experiment', 'Toy')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), str(site)]),
           "SMLIB_RESULTS_DIR": str(tmp_path / "results"), "TOY_FIRST": "1", "TOY_SLEEP": "0.3"}
    out = subprocess.run([sys.executable, "-m", "smlib.experiments", "toy", "--workers", "2",
                          "--workdir", str(tmp_path / "w")], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("1 worker process(es) of one thread each") == 2  # one phase per unit
