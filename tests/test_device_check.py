"""The GPU machine's prepared run (bench/device_check.sh) works here in its dry-run mode, without the book tools."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: what the GPU machine hands back: at most this many files under $OUT
MAX_FILES_RETURNED = 8
#: every file the full run can write (bench_<device>.json and deen_2d_<device>.tar for the device)
FULL_RUN_FILES = ["bench_{dev}.json", "deen_2d_{dev}.tar", "device_check.log", "device_tests.log", "env.json"]


def readme_citations(text):
    """The README sections a file cites as ``README: "Section title"``."""
    return re.findall(r'README: "([^"]+)"', text)


def readme_headings():
    return [m.group(1).strip() for m in re.finditer(r"^#+ (.+)$", (ROOT / "README.md").read_text(), re.M)]


def test_bench_cites_only_readme_sections_that_exist():
    headings = readme_headings()
    cited = {p.name: readme_citations(p.read_text()) for p in sorted((ROOT / "bench").rglob("*")) if p.is_file()
             and p.suffix in (".sh", ".py", ".md")}
    assert cited["device_check.sh"], "device_check.sh names the README section that documents it"
    for name, titles in cited.items():
        for title in titles:  # a cited title is a heading, or the start of one ("… (one prepared run)")
            assert any(h == title or h.startswith(title + " ") for h in headings), (name, title, headings)


def test_readme_citation_check_can_fail():
    assert readme_citations('x (README: "Train on a GPU"): y') == ["Train on a GPU"]
    assert not any(h == "Train on a GPU" or h.startswith("Train on a GPU ") for h in readme_headings())


def test_full_run_writes_no_more_files_than_come_back():
    """What device_check.py can write under $OUT, listed from its source, fits what the machine returns."""
    src = (ROOT / "bench" / "device_check.py").read_text()
    written = set(re.findall(r'out / f?"([^"]+)"', src))
    assert written == {"env.json", "device_check.log", "device_tests.log", "bench_{args.device.split(':')[0]}.json",
                       "deen_2d_{args.device.split(':')[0]}.tar"}, written
    assert len(written) == len(FULL_RUN_FILES) <= MAX_FILES_RETURNED


def _run_blocked(code, absent):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench" / "book_tools_blocked")]),
           "SMLIB_BLOCK_ABSENT": "1" if absent else "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_blocker_blocks_what_the_gpu_machine_lacks():
    code = "import importlib.util, sys\nfor m in ('tqdm', 'yaml', 'pywt', 'jupytext'):\n    try:\n" \
           "        __import__(m); print(m, 'importable')\n    except ImportError: print(m, 'blocked')"
    out = _run_blocked(code, absent=True).stdout
    assert all(f"{m} blocked" in out for m in ("tqdm", "yaml", "pywt", "jupytext")), out
    out = _run_blocked(code, absent=False).stdout
    assert "jupytext blocked" in out and "tqdm importable" in out, out


FIT_WITHOUT_PROGRESS_BAR = """
import torch
from smlib import train
from smlib.models import MLPEnergy
train.fit(MLPEnergy(2, hidden=(4,)), torch.randn(32, 2), "dsm", options={"sigma": 0.3}, n_steps=2, batch_size=16,
          progress=False)
print("fit ran")
"""


def test_fit_runs_without_tqdm():
    # the GPU machine's python3 has no tqdm: fit with progress=False must not import it
    run = _run_blocked(FIT_WITHOUT_PROGRESS_BAR, absent=True)
    assert run.returncode == 0 and "fit ran" in run.stdout, run.stderr[-2000:]


@pytest.mark.slow
def test_device_check_dry_run(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("SMLIB_TEST_DEVICE", None)
    run = subprocess.run(["bash", "bench/device_check.sh", "cpu", "--tiny", "--block-book-tools", "--block-absent"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    # the dry run writes the full run's files but the DEEN 2-D record (paper scale: full runs only)
    assert files == sorted(f.format(dev="cpu") for f in FULL_RUN_FILES if not f.startswith("deen_2d")), files
    info = json.loads((tmp_path / "env.json").read_text())
    assert info["pkg_papermill"] is None and info["pkg_jupytext"] is None and info["pkg_IPython"] is None
    tests_log = (tmp_path / "device_tests.log").read_text()
    assert " passed" in tests_log and " failed" not in tests_log
    for name in ("test_deen_mnist_sm_step_captured_equals_eager", "test_deen_mnist_first_layer_factor_captured[qr]"):
        assert f"PASSED tests/test_device.py::{name}" in tests_log, name  # issue 26's d > k capture ran
    bench = json.loads((tmp_path / "bench_cpu.json").read_text())
    assert bench["complete"] is True
    assert {"sm_vs_dsm", "exact_sm", "training_loop", "mcmc", "guards", "latent", "first_layer", "targets"} <= set(bench)
    assert {r["network"] for r in bench["sm_vs_dsm"]} == {"784-128-128-256-1", "1024-256-256-256-512-512-1"}
