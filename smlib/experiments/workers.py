"""All of an experiment's units at once, as worker processes of one thread each.

``python -m smlib.experiments NAME --scale paper --workers N`` starts N processes of
``python -m smlib.experiments NAME ... --worker`` on one work folder. Each worker walks the
units in order and runs every unit that is neither done nor locked by another worker (the lock of
:mod:`smlib.experiments.locks`), with one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``),
so N workers use N cores and never oversubscribe them. The command waits for them; the caller
then merges the units (and records them with ``--record``). N defaults to the cores this process
may use minus one, at least one, so the machine stays usable. A killed command is resumed by
giving it again: finished units are kept, interrupted ones continue from their checkpoints.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from smlib.experiments.records import package_dir

__all__ = ["default_workers", "run_workers", "one_thread"]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def default_workers() -> int:
    """Cores this process may use, minus one, at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def one_thread() -> None:
    """Make this process compute on one thread (a worker)."""
    import torch

    for var in _THREAD_VARS:
        os.environ[var] = "1"
    torch.set_num_threads(1)


def worker_command(name: str, scale: str, *, overrides=None, device="cpu", only=None, workdir) -> list[str]:
    """The argv of one worker process."""
    argv = [sys.executable, "-m", "smlib.experiments", name, "--scale", scale, "--device", str(device),
            "--workdir", os.fspath(workdir), "--no-progress", "--worker"]
    for key in sorted(overrides or {}):
        argv += ["--set", f"{key}={json.dumps(overrides[key])}"]
    for pattern in only or []:
        argv += ["--only", pattern]
    return argv


def run_workers(name: str, scale: str, n: int, *, overrides=None, device="cpu", only=None, workdir, say=print) -> None:
    """Run the units with ``n`` worker processes and wait for them; ValueError naming the workers that failed."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"--workers must be a whole number >= 1, got {n!r}")
    argv = worker_command(name, scale, overrides=overrides, device=device, only=only, workdir=os.path.abspath(workdir))
    # the workers import the smlib this process runs, wherever it was imported from
    path = os.pathsep.join(p for p in (str(package_dir().parent), os.environ.get("PYTHONPATH")) if p)
    procs = []
    try:
        for i in range(1, n + 1):
            env = {**os.environ, **{v: "1" for v in _THREAD_VARS}, "SMLIB_WORKER": str(i), "PYTHONPATH": path}
            procs.append(subprocess.Popen(argv, env=env))
        say(f"{name}: {n} worker process(es) of one thread each started: pids {', '.join(str(p.pid) for p in procs)}")
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:  # on an interruption, the workers stop too (their units resume next time)
            if p.poll() is None:
                p.terminate()
                p.wait()
    failed = [f"worker {i} (pid {p.pid}) exited with {c}" for i, (p, c) in enumerate(zip(procs, codes), 1) if c != 0]
    if failed:
        raise ValueError("; ".join(failed) + " — see its messages above; give the command again to resume")
