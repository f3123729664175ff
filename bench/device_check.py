"""The one prepared run for the lent GPU machine (issues 15, 26): ``bash bench/device_check.sh cuda``.

Runs with the machine's own ``python3`` (no virtual environment, no download, the checkout on
``PYTHONPATH``) and writes at most 8 files under ``$OUT`` (5 at most; the machine returns 8):

* ``env.json`` — GPU, driver-side CUDA, torch, Python and package versions;
* ``device_tests.log`` — ``tests/test_device.py`` on the device: every model × applicable
  estimator learns, the CUDA-graph step equals the eager step for DSM, SSM and SM on every model
  and for the whole exact-SM step of the DEEN MNIST energy (d = 784 > k = 128: the QR of W₁ᵀ is
  inside the graph), the first-layer factor captured, the samplers' moments;
* ``bench_<device>.json`` — ``python -m bench`` on the device, written after every section: the
  exact-SM / DSM ratio of the DEEN MNIST and patch energies eager and in a CUDA graph, with TF32
  checked against float64 (issue 26); exact SM against the loop at d = 784; fit's step against a
  plain eager loop and a hand-written CUDA-graph step; the latent models; the first-layer routes;
  one MCMC update of the paper-size mPoT eager and graph-captured; the guards — with the targets;
* ``deen_2d_<device>.tar`` — if time is left, the DEEN 2-D experiment at paper scale, recorded;
* ``device_check.log`` — this script's own log; a summary is printed last.

Wall time: at most ``--budget-s`` (280 s) plus a few seconds, so that a rerun fits in the
machine's 15 minutes with its start-up: the device tests get at most 150 s, the bench the rest
(it starts no section in its last 40 s, and a section still running at the end is cut, the
sections before it kept), the DEEN run only what is left beyond 60 s.

``--device cpu --tiny`` is the dry run here (``make device-check-dry``; small sizes, about a
minute), in an environment like the GPU one: with ``--block-book-tools`` papermill, jupytext and
IPython cannot be imported, as there; ``--block-absent`` adds tqdm, PyYAML and PyWavelets, which the
machine's package list does not have either.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCKER = ROOT / "bench" / "book_tools_blocked"


def _run(cmd, log, env, timeout):
    """Run a command, append its output to ``log``; return (exit code or 'timeout', seconds)."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return rc, round(time.perf_counter() - t0, 1)


def environment(device) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
            "device": device, "platform": platform.platform(), "cpu_count": os.cpu_count()}
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                    capability=f"{p.major}.{p.minor}")
    for pkg in ("numpy", "scipy", "sklearn", "skimage", "pywt", "sympy", "matplotlib", "tqdm", "yaml", "pytest",
                "papermill", "jupytext", "IPython"):  # tqdm: smlib's fit imports it
        try:
            mod = __import__(pkg)
            info[f"pkg_{pkg}"] = getattr(mod, "__version__", "present")
        except ImportError:
            info[f"pkg_{pkg}"] = None
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.device_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=os.environ.get("OUT", "_build/device_check"))
    parser.add_argument("--tiny", action="store_true", help="dry run: small sizes, a subset of the device tests")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="the whole run ends within this many seconds (default 280; --tiny: 900, it checks code, not time)")
    parser.add_argument("--block-book-tools", action="store_true", help="make papermill/jupytext/IPython unimportable")
    parser.add_argument("--block-absent", action="store_true",
                        help="with --block-book-tools: also tqdm, PyYAML, PyWavelets (not on the GPU machine's list)")
    args = parser.parse_args(argv)
    if args.block_absent:
        os.environ["SMLIB_BLOCK_ABSENT"] = "1"  # read by the blocker, here and in the subprocesses
    if args.budget_s is None:
        args.budget_s = 900.0 if args.tiny else 280.0
    if args.block_book_tools:  # in this process too (the subprocesses get it through PYTHONPATH)
        import runpy

        runpy.run_path(str(BLOCKER / "sitecustomize.py"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "device_check.log"
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SMLIB_TEST_DEVICE": args.device,
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # the book's plugins (nbval) are not on the GPU machine
           "PYTHONPATH": os.pathsep.join([str(ROOT)] + ([str(BLOCKER)] if args.block_book_tools else [])
                                         + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    py = sys.executable
    summary = {"device": args.device, "tiny": args.tiny, "steps": {}}

    def step(name, cmd, timeout):
        left = args.budget_s - (time.perf_counter() - start)
        if left < 20:
            summary["steps"][name] = {"skipped": f"{left:.0f} s of the budget left"}
            return None
        rc, secs = _run(cmd, log, env, min(timeout, left))
        summary["steps"][name] = {"exit": rc, "seconds": secs}
        return rc

    info = environment(args.device)
    (out / "env.json").write_text(json.dumps(info, indent=1))
    summary["gpu"] = info.get("gpu")
    # addopts cleared: the book's nbval plugin is not installed on the GPU machine
    tests = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-rA", "--rootdir", str(ROOT),
             "tests/test_device.py"]
    if args.tiny:
        tests += ["-k", "grbm or mlp or moments or deen_mnist"]
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(ROOT / "tests")])
    rc = _run(tests, out / "device_tests.log", env, min(150.0, args.budget_s / 2))
    summary["steps"]["device tests"] = {"exit": rc[0], "seconds": rc[1]}
    bench = [py, "-m", "bench", "--device", args.device, "--no-compile", "--out", str(out / f"bench_{args.device.split(':')[0]}.json")]
    sections = ["sm_vs_dsm", "exact_sm", "training_loop", "mcmc", "guards", "latent", "first_layer"]
    # --tiny checks that each section runs, not its numbers: the shortest timed loops will do
    bench += (["--quick", "--reps", "2", "--loop-seconds", "0.1"] if args.tiny else ["--reps", "7", "--loop-seconds", "1.0"])
    bench += ["--only", *sections]
    left = args.budget_s - (time.perf_counter() - start)
    step("bench", bench + ["--budget-s", f"{max(0.0, left - 40):.0f}"], left)
    if not args.tiny:  # DEEN 2-D at paper scale, recorded, if the budget allows
        res = Path("/tmp/smlib_device_results")
        env_deen = {**env, "SMLIB_RESULTS_DIR": str(res)}
        left = args.budget_s - (time.perf_counter() - start)
        if left > 60:
            rc, secs = _run([py, "-m", "smlib.experiments", "deen_2d", "--scale", "paper", "--device", args.device,
                             "--record", "--no-progress", "--workdir", "/tmp/smlib_device_work"], log, env_deen, left - 10)
            summary["steps"]["deen_2d paper"] = {"exit": rc, "seconds": secs}
            if rc == 0 and (res / "deen_2d").is_dir():
                with tarfile.open(out / f"deen_2d_{args.device.split(':')[0]}.tar", "w") as tar:
                    tar.add(res / "deen_2d", arcname="deen_2d")
        else:
            summary["steps"]["deen_2d paper"] = {"skipped": f"{left:.0f} s left"}
    summary["wall_time_s"] = round(time.perf_counter() - start, 1)
    with open(log, "a") as f:
        f.write("\nsummary " + json.dumps(summary) + "\n")
    for name in ("device_tests.log",):
        tail = (out / name).read_text().strip().splitlines()[-3:] if (out / name).exists() else []
        print(f"{name}: " + " | ".join(tail))
    bench_json = out / f"bench_{args.device.split(':')[0]}.json"
    if bench_json.exists():
        doc = json.loads(bench_json.read_text())
        print(f"{bench_json.name}: complete={doc.get('complete')}, sections "
              + ", ".join(k for k in doc if k not in ("provenance", "machine", "complete", "targets")))
        for t in doc.get("targets", []):
            met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
            print(f"  [{met}] {t['target']}: {t['value']} (goal {t['goal']})")
    print(json.dumps(summary))
    ok = summary["steps"]["device tests"]["exit"] == 0 and summary["steps"].get("bench", {}).get("exit") in (0, None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
