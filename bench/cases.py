"""The comparisons of ``python -m bench``; each returns JSON-ready rows (times in ms per training step).

A "training step" is loss + backward + Adam update, float32, unless a row says otherwise.
"""
from __future__ import annotations

import statistics
import traceback
import warnings

import torch

from bench import reference
from smlib.book import timing
from smlib.book.timing import time_group
from smlib import models, objectives, train
from smlib.train import cuda_graph as fastpath
from smlib.ensemble import fit_ensemble

SIGMA = 0.1
#: time torch.compile(mode="reduce-overhead") on a GPU (minutes of compilation; --no-compile skips it)
COMPILE = True

# (label, dim, hidden, batch): the sizes of the reference table of the speed issue
NETWORKS = [
    ("2-32-32-32-1", 2, (32, 32, 32), 128),
    ("784-128-128-256-1", 784, (128, 128, 256), 128),
    ("784-128-128-256-1", 784, (128, 128, 256), 1024),
    ("1024-256-256-256-512-512-1", 1024, (256, 256, 256, 512, 512), 128),
]
# --quick (CPU smoke run, well under two minutes): the small network, and d = 784 at batch 16
QUICK_NETWORKS = [NETWORKS[0], ("784-128-128-256-1", 784, (128, 128, 256), 16)]

# On CPU the O(d) exact-SM paths are FLOP-bound: run them only up to this many multiply-adds
# per step, d·B·(number of weights) (= the 784-128-128-256 network at batch 128).
CPU_EXACT_SM_BUDGET = 784 * 128 * 150_000


def _n_weights(dim, hidden):
    sizes = (dim, *hidden, 1)
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _adam_step(model, loss_fn, x):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return lambda: reference.eager_step(model, opt, loss_fn, x)


def _mlp(dim, hidden, device):
    return models.MLPEnergy(dim, hidden, activation="tanh").to(device)


def _sm_jvp(m, v):
    return objectives.sm_generic(m, v, method="jvp")


def _dsm(m, v):
    return objectives.dsm(m, v, SIGMA)


def _ssm(m, v):
    return objectives.ssm(m, v, n_slices=1)


# ------------------------------------------------------------------------------------------ exact SM
def exact_sm(networks, device, reps):
    """Exact SM step: per-dimension loop (reference) vs vmapped forward-over-reverse vs closed form."""
    rows = []
    for label, dim, hidden, batch in networks:
        torch.manual_seed(0)
        x = torch.randn(batch, dim, device=device)
        row = {"network": label, "batch": batch}
        cost = dim * batch * _n_weights(dim, hidden)
        heavy = device.type == "cpu" and cost > CPU_EXACT_SM_BUDGET
        fns = {"dsm_ms": _adam_step(_mlp(dim, hidden, device), _dsm, x),
               "sm_closed_form_ms": _adam_step(_mlp(dim, hidden, device), objectives.sm, x)}
        if heavy:
            row["skipped"] = (f"sm_loop and sm_jvp: d·B·weights = {cost:.2g} multiply-adds per backward "
                              f"sweep is beyond the CPU budget {CPU_EXACT_SM_BUDGET:.2g}")
        else:
            fns["sm_jvp_ms"] = _adam_step(_mlp(dim, hidden, device), _sm_jvp, x)
        row.update(time_group(fns, device, reps=reps, warmup=1))
        if not heavy:
            # the loop is slow (d backward passes): few repetitions, timed separately
            loop = _adam_step(_mlp(dim, hidden, device), reference.sm_loop, x)
            row.update(time_group({"sm_loop_ms": loop}, device, reps=2 if dim > 100 else reps, warmup=1,
                                  budget_s=30.0))
            # … and the three fast paths once more right after it, so the ratio is side by side
            again = time_group({k: fns[k] for k in ("sm_jvp_ms", "sm_closed_form_ms")}, device, reps=reps, warmup=1,
                               budget_s=30.0)
            for k, v in again.items():
                row[k] = statistics.median([row[k], v])
            row["loop_over_jvp"] = row["sm_loop_ms"] / row["sm_jvp_ms"]
            row["loop_over_closed_form"] = row["sm_loop_ms"] / row["sm_closed_form_ms"]
        row["closed_form_over_dsm"] = row["sm_closed_form_ms"] / row["dsm_ms"]
        rows.append(row)
        print("exact_sm", row, flush=True)
    return rows


# ------------------------------------------------------------------------------------------ training loop
def _fit_run(model, data, objective, batch, **kw):
    """run(n): n steps of fit; fast-path warnings (a fallback, a failed capture) are kept in run.warnings."""

    def run(n):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", fastpath.FastPathWarning)
            train.fit(model, data, objective, n_steps=n, batch_size=batch, progress=False, seed=0, **kw)
        for w in caught:
            if issubclass(w.category, fastpath.FastPathWarning) and str(w.message) not in run.warnings:
                run.warnings.append(str(w.message))

    run.warnings = []
    return run


def _eager_run(model, data, loss_fn, batch):
    def run(n):
        reference.eager_loop(model, data, loss_fn, n, batch)

    return run


def _graph_run(model, loss_fn, data, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    xs = data.view(-1, batch, data.shape[1])
    graphed = reference.GraphedStep(model, opt, loss_fn, xs[0])

    def run(n):
        for i in range(n):
            graphed(xs[i % xs.shape[0]])

    return run


def _compile_run(model, loss_fn, data, batch):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    xs = data.view(-1, batch, data.shape[1])
    step = torch.compile(lambda x: reference.eager_step(model, opt, loss_fn, x), mode="reduce-overhead")
    for i in range(3):  # compile + record
        step(xs[i % xs.shape[0]])

    def run(n):
        for i in range(n):
            step(xs[i % xs.shape[0]])

    return run


def training_loop(networks, device, reps, seconds):
    """Per-step cost of fit (its default path on the device) against the plain eager loop and the graph floor.

    Marginal times: each run is timed at n_short and n_long steps, with n_long − n_short chosen
    so that the difference lasts about ``seconds`` for the plain eager loop.
    """
    rows = []
    for label, dim, hidden, batch in networks:
        torch.manual_seed(0)
        data = torch.randn(8 * batch, dim, device=device)  # 8 full batches per epoch
        for name, obj, kw, fn in (("dsm", "dsm", {"sigma": SIGMA}, _dsm), ("ssm", "ssm", {}, _ssm)):
            row = {"network": label, "batch": batch, "objective": name}
            t = time_group({"t": _adam_step(_mlp(dim, hidden, device), fn, data[:batch])}, device, reps=3, warmup=2)["t"]
            n_short = 5 if device.type == "cpu" else 20
            n_long = n_short + max(10, min(1000, int(1e3 * seconds / t)))
            row["n_steps_timed"] = [n_short, n_long]
            plan = train.fast_path_plan(_mlp(dim, hidden, device), data, obj, options=kw, device=device,
                                        batch_size=batch)
            row["fit_path"] = plan.mode
            runs = {
                "eager_loop_ms": _eager_run(_mlp(dim, hidden, device), data, fn, batch),
                "fit_ms": _fit_run(_mlp(dim, hidden, device), data, obj, batch, options=kw),
                "fit_eager_ms": _fit_run(_mlp(dim, hidden, device), data, obj, batch, fast=False, options=kw),
            }
            if device.type == "cuda":
                runs["cuda_graph_ms"] = _graph_run(_mlp(dim, hidden, device), fn, data, batch)
                try:  # torch.compile(mode="reduce-overhead"), the other candidate (DSM only: compiling is slow)
                    if name == "dsm" and COMPILE:
                        runs["compile_ms"] = _compile_run(_mlp(dim, hidden, device), fn, data, batch)
                except Exception as err:  # noqa: BLE001 - record why torch.compile could not be timed
                    row["compile_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                    traceback.print_exc(limit=2)
            try:
                row.update(timing.per_step_ms(runs, n_short, n_long, device, reps=reps))
            except Exception as err:  # noqa: BLE001 - compile may fail only when run
                if "compile_ms" not in runs:
                    raise
                row["compile_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                runs.pop("compile_ms")
                row.update(timing.per_step_ms(runs, n_short, n_long, device, reps=reps))
            if runs["fit_ms"].warnings:
                row["fit_warnings"] = runs["fit_ms"].warnings
            row["eager_loop_over_fit"] = row["eager_loop_ms"] / row["fit_ms"]
            row["fit_over_eager_loop"] = row["fit_ms"] / row["eager_loop_ms"]
            if "cuda_graph_ms" in row:
                row["fit_over_cuda_graph"] = row["fit_ms"] / row["cuda_graph_ms"]
                row["eager_loop_over_cuda_graph"] = row["eager_loop_ms"] / row["cuda_graph_ms"]
            rows.append(row)
            print("training_loop", row, flush=True)
    return rows


# ------------------------------------------------------------------------------------------ latent models
def latent(device, reps, quick):
    """Closed-form SM (Theorem 1) of the GRBM and the mPoT against DSM and SSM steps on the same model."""
    cases = [("GRBM 256v-256h", lambda: models.GRBM(256, 256)),
             ("MPoT 256v-256c-100m", lambda: models.MPoT(256, n_cov=256, n_mean=100))]
    if quick:
        cases = [("GRBM 64v-64h", lambda: models.GRBM(64, 64)),
                 ("MPoT 64v-64c-32m", lambda: models.MPoT(64, n_cov=64, n_mean=32))]
    rows = []
    for name, make in cases:
        torch.manual_seed(0)
        x = torch.randn(128, make().dim, device=device)
        fns = {}
        for key, fn in (("sm_closed_form_ms", objectives.sm), ("dsm_ms", _dsm), ("ssm_ms", _ssm)):
            torch.manual_seed(0)
            fns[key] = _adam_step(make().to(device), fn, x)
        row = {"model": name, "batch": 128, **time_group(fns, device, reps=reps)}
        row["closed_form_over_dsm"] = row["sm_closed_form_ms"] / row["dsm_ms"]
        rows.append(row)
        print("latent", row, flush=True)
    return rows


# ------------------------------------------------------------------------------------------ ensembles
def ensemble(device, reps, sizes, n_short, n_long):
    """M small 2-D runs as one vmapped model (fit_ensemble) vs the same M runs one after the other."""
    torch.manual_seed(0)
    batch = 128
    data = torch.randn(8 * batch, 2, device=device)

    def make():
        return models.MLPEnergy(2, (32, 32, 32), activation="tanh")

    rows = []
    for M in sizes:
        seeds = list(range(M))

        def ens(n, M=M):
            fit_ensemble(make, M, data, "dsm", sigma=SIGMA, n_steps=n, batch_size=batch, device=device)

        def seq_fit(n, seeds=seeds):
            for s in seeds:
                torch.manual_seed(s)
                train.fit(make(), data, "dsm", options={"sigma": SIGMA}, n_steps=n, batch_size=batch, seed=s,
                          device=device, progress=False)

        def seq_eager(n, seeds=seeds):
            reference.sequential_members(make, seeds, data, _dsm, n, batch)

        times = timing.per_step_ms({"ensemble_ms": ens, "sequential_fit_ms": seq_fit, "sequential_eager_ms": seq_eager},
                                n_short, n_long, device, reps=reps)
        row = {"network": "2-32-32-32-1", "batch": batch, "objective": "dsm", "n_models": M, **times}
        row["speedup_vs_sequential_fit"] = row["sequential_fit_ms"] / row["ensemble_ms"]
        row["speedup_vs_sequential_eager"] = row["sequential_eager_ms"] / row["ensemble_ms"]
        rows.append(row)
        print("ensemble", row, flush=True)
    return rows


# ------------------------------------------------------------------------------------------ scaling
def scaling(device, reps, dims, batches, hidden=(64, 64), batch=64, dim_for_batches=32):
    """Cost per step against the dimension d (batch fixed) and against the batch size (d fixed)."""
    out = {"hidden": list(hidden), "batch": batch, "dim_for_batches": dim_for_batches, "vs_dim": [], "vs_batch": []}
    losses = {"sm_loop_ms": reference.sm_loop, "sm_jvp_ms": _sm_jvp, "sm_closed_form_ms": objectives.sm,
              "ssm_ms": _ssm, "dsm_ms": _dsm}
    for d in dims:
        torch.manual_seed(0)
        x = torch.randn(batch, d, device=device)
        fns = {k: _adam_step(_mlp(d, hidden, device), fn, x) for k, fn in losses.items()}
        if device.type == "cuda":
            model = _mlp(d, hidden, device)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
            g = reference.GraphedStep(model, opt, _dsm, x)
            fns["dsm_cuda_graph_ms"] = lambda g=g, x=x: g(x)
        row = {"dim": d, **time_group(fns, device, reps=reps, warmup=1, budget_s=20.0)}
        out["vs_dim"].append(row)
        print("scaling d", row, flush=True)
    for b in batches:
        torch.manual_seed(0)
        x = torch.randn(b, dim_for_batches, device=device)
        fns = {k: _adam_step(_mlp(dim_for_batches, hidden, device), fn, x)
               for k, fn in losses.items() if k != "sm_loop_ms"}
        row = {"batch": b, **time_group(fns, device, reps=reps, warmup=1, budget_s=20.0)}
        out["vs_batch"].append(row)
        print("scaling B", row, flush=True)
    return out
