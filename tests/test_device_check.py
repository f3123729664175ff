"""The GPU machine's prepared run (bench/device_check.sh) works here in its dry-run mode, without the book tools."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_device_check_dry_run(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("SMLIB_TEST_DEVICE", None)
    run = subprocess.run(["bash", "bench/device_check.sh", "cpu", "--tiny", "--block-book-tools"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["bench_cpu.json", "device_check.log", "device_tests.log", "env.json"], files
    assert len(files) <= 8  # what comes back from the GPU machine
    info = json.loads((tmp_path / "env.json").read_text())
    assert info["pkg_papermill"] is None and info["pkg_jupytext"] is None and info["pkg_IPython"] is None
    assert " passed" in (tmp_path / "device_tests.log").read_text()
    bench = json.loads((tmp_path / "bench_cpu.json").read_text())
    assert {"exact_sm", "training_loop", "mcmc", "guards", "latent", "first_layer", "targets"} <= set(bench)
