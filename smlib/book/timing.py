"""Cost measurement: interleaved medians (so that ratios are measured side by side), machine info, and
operation counts (`FlopCounter`, PyTorch's FLOP formulas)."""
from __future__ import annotations

import os
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device) -> None:
    """Wait for the device (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_group(fns: dict, device, *, reps: int = 10, warmup: int = 2, budget_s: float = 60.0,
               min_sample_s: float = 0.02) -> dict:
    """Median wall time in ms of each ``fn()`` in ``fns``, measured round-robin.

    Each repetition runs every function in turn, so that a change of machine load during the
    measurement hits all of them alike and their *ratios* stay meaningful. A sample of a fast
    function repeats it until the sample lasts ``min_sample_s`` (the count is fixed after the
    warm-up), which averages out timer and scheduling jitter. Stops after ``budget_s`` seconds
    once every function has at least 2 samples (3 if ``reps >= 3``). Synchronises a CUDA
    device after every sample.
    """
    inner = {}
    for k, fn in fns.items():  # at least one call each: it also calibrates the sample size
        for _ in range(max(1, warmup)):
            t0 = time.perf_counter()
            fn()
            sync(device)
            t = time.perf_counter() - t0
        inner[k] = max(1, min(1000, int(min_sample_s / max(t, 1e-6))))
    times = {k: [] for k in fns}
    start = time.perf_counter()
    need = min(reps, 3)
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner[k]):
                fn()
            sync(device)
            times[k].append(1e3 * (time.perf_counter() - t0) / inner[k])
        if time.perf_counter() - start > budget_s and min(len(v) for v in times.values()) >= need:
            break
    return {k: statistics.median(v) for k, v in times.items()}


def per_step_ms(runs: dict, n_short: int, n_long: int, device, *, reps: int = 3) -> dict:
    """Marginal time per step of each ``run(n_steps)``: (t(n_long) − t(n_short)) / (n_long − n_short).

    Set-up costs paid once per call (optimiser creation, CUDA-graph capture, warm-up steps)
    cancel out. The runs are interleaved so that a change of machine load hits them alike; the
    median over ``reps`` pairs is returned for each key of ``runs``.
    """
    out = {k: [] for k in runs}
    for _ in range(reps):
        for k, run in runs.items():
            sync(device)
            t0 = time.perf_counter()
            run(n_short)
            sync(device)
            t1 = time.perf_counter()
            run(n_long)
            sync(device)
            t2 = time.perf_counter()
            out[k].append(1e3 * ((t2 - t1) - (t1 - t0)) / (n_long - n_short))
    return {k: statistics.median(v) for k, v in out.items()}


def machine(device) -> dict:
    """Threads, cores, load average and versions: what a reader needs to judge the timings."""
    info = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        pass
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def load_average():
    """1-minute load average (None where the OS does not report it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover
        return None


class _NoModuleTracker:
    """Stands in for FlopCounterMode's per-module tracker: every count goes to "Global" only."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def _onednn_linear_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's linear (`smlib.models._gemm.mm` on CPU): input (…, K) times weightᵀ (K × N), 2·M·K·N."""
    m = 1
    for n in input_shape[:-1]:
        m *= n
    return 2 * m * input_shape[-1] * weight_shape[0]


# PyTorch's counter has no formula for this operator, so the products of the exact-SM route would go uncounted
_ONEDNN_FORMULAS = ({torch.ops.mkldnn._linear_pointwise: _onednn_linear_flops}
                    if hasattr(torch.ops.mkldnn, "_linear_pointwise") else {})


class FlopCounter(FlopCounterMode):
    """``torch.utils.flop_counter.FlopCounterMode`` (PyTorch's own FLOP formulas) without the per-module
    breakdown: its module tracker hooks the inputs of every module, which makes ``torch.autograd.grad``
    with respect to a leaf input fail (pytorch/pytorch#131753) — and every score is such a gradient.
    Use as ``with FlopCounter() as c: ...`` then ``c.get_total_flops()``.
    """

    def __init__(self):
        super().__init__(display=False, custom_mapping=_ONEDNN_FORMULAS)
        self.mod_tracker = _NoModuleTracker()


def count_flops(fn) -> int:
    """Floating-point operations of the matrix products (and convolutions) executed by ``fn()``."""
    with FlopCounter() as counter:
        fn()
    return counter.get_total_flops()
