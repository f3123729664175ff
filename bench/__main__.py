"""Benchmarks: ``python -m bench [--device cpu|cuda] [--quick]`` (``make bench BENCH_ARGS=...``).

Times one training step (loss + backward + optimiser update, float32) of every estimator at the
network sizes of the DEEN experiments, against our own plain reference code in
``bench/reference.py`` (the per-dimension autograd loop, the plain eager training loop, members
trained one after the other, the CUDA-graph floor), all in one run and interleaved, so that
*ratios* are measured side by side; and (section ``sm_vs_dsm``, issue 26) the exact-SM / DSM step
ratio of the DEEN image energies, eager and in a CUDA graph, with TF32 checked against float64.
Prints a table and writes ``results/bench_<device>.json`` (after every section) with provenance
(command, commit, date, versions), the machine (threads, cores, load) and the targets of the speed
issue with whether they are met.

On a GPU machine: ``make bench BENCH_ARGS="--device cuda"`` (10–20 minutes, most of it torch.compile).
On CPU: ``make bench`` (full sizes, 4–7 minutes on a shared 2-core machine; the O(d) exact-SM
paths are skipped where d·B·weights exceeds a CPU budget, and the JSON says so) or
``make bench BENCH_ARGS="--quick"`` (small sizes, under 2 minutes).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from bench import cases, first_layer, mcmc, sm_vs_dsm, units
from smlib import _alloc
from smlib.book import timing
from smlib.experiments import records

# in this order: a run stopped by --budget-s keeps the sections before it
SECTIONS = ("sm_vs_dsm", "exact_sm", "training_loop", "latent", "ensemble", "scaling", "first_layer", "mcmc", "guards", "units")


def _device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available on this machine")
    return device


def run(device, quick, reps, sections, budget_s=None, on_section=None, loop_seconds=None):
    """Run the selected sections in the order of ``SECTIONS``; return the JSON document (without provenance).

    ``budget_s``: start no section after this many seconds (the skipped ones are listed under
    ``"skipped_sections"``); ``on_section(doc)`` is called after each section (to write what is done);
    ``loop_seconds``: how long the plain eager loop runs per timing in ``training_loop``.
    """
    cpu = device.type == "cpu"
    nets = cases.QUICK_NETWORKS if quick else cases.NETWORKS
    fl_nets = first_layer.QUICK_FIRST_LAYER_NETWORKS if quick else first_layer.FIRST_LAYER_NETWORKS
    jobs = {
        "sm_vs_dsm": lambda: sm_vs_dsm.sm_vs_dsm(sm_vs_dsm.QUICK_NETWORKS if quick else sm_vs_dsm.NETWORKS, device,
                                                 reps),
        "exact_sm": lambda: cases.exact_sm(nets, device, reps),
        "training_loop": lambda: cases.training_loop(nets, device, max(3, reps // 3),
                                                     loop_seconds or (0.6 if quick else 1.5)),
        "latent": lambda: cases.latent(device, reps, quick),
        "ensemble": lambda: cases.ensemble(device, 3, [8] if quick else [4, 8, 16], 5 if cpu else 20,
                                           (45 if quick else 105) if cpu else 220),
        "scaling": lambda: cases.scaling(device, max(3, reps // 2), [2, 8, 32, 128] if quick else [2, 8, 32, 128, 512],
                                         [16, 64, 256] if quick else [16, 64, 256, 1024]),
        "first_layer": lambda: first_layer.first_layer(fl_nets, device, reps,  # issue 11
                                                       [2, 32, 128] if quick else [2, 8, 32, 128, 512]),
        "mcmc": lambda: mcmc.mcmc(device, reps, quick),  # issues 10 and 15
        "guards": lambda: mcmc.guards(device, reps, quick),  # issue 13
        "units": lambda: units.units(device, max(3, reps // 3)),  # issue 21: short units of the paper presets
    }
    doc = {}
    start = time.perf_counter()
    for name in SECTIONS:
        if name not in sections:
            continue
        if budget_s is not None and time.perf_counter() - start > budget_s:
            doc.setdefault("skipped_sections", []).append(name)
            print(f"{name}: skipped, the budget of {budget_s:g} s is spent", flush=True)
            continue
        doc[name] = jobs[name]()
        if on_section is not None:
            on_section(doc)
    return doc


def targets(doc, device):
    """The speed issue's targets, evaluated on this run's numbers (None where not measured)."""
    out = []

    def add(name, value, goal, ok, note=""):
        out.append({"target": name, "goal": goal, "value": None if value is None else round(value, 3),
                    "met": None if value is None else bool(ok(value)), "note": note})

    for row in doc.get("exact_sm", []):
        if row["network"].startswith("784") and "loop_over_jvp" in row:
            add(f"exact SM, generic Hessian trace (vmapped jvp) vs per-dimension loop, d=784, B={row['batch']}",
                row["loop_over_jvp"], ">= 100x", lambda v: v >= 100)
            add(f"exact SM, MLPEnergy closed-form Laplacian vs per-dimension loop, d=784, B={row['batch']}",
                row["loop_over_closed_form"], ">= 100x", lambda v: v >= 100)
            if device.type == "cuda":  # issue 15
                add(f"exact SM on the GPU, closed form vs per-dimension loop, d=784, B={row['batch']}",
                    row["loop_over_closed_form"], ">= 300x", lambda v: v >= 300)
    for row in doc.get("latent", []):
        add(f"closed-form SM / DSM step, {row['model']}", row["closed_form_over_dsm"], "<= 2", lambda v: v <= 2)
    for row in doc.get("training_loop", []):
        tag = f"{row['objective']} {row['network']} B={row['batch']}"
        if "fit_over_cuda_graph" in row:
            add(f"fit step / CUDA-graph floor, {tag}", row["fit_over_cuda_graph"], "<= 1.5", lambda v: v <= 1.5)
        if device.type == "cuda":
            add(f"plain eager loop / fit step, {tag}", row["eager_loop_over_fit"], ">= 5", lambda v: v >= 5)
    for row in doc.get("ensemble", []):
        add(f"ensemble of {row['n_models']} vs sequential fit (speed-up)", row["speedup_vs_sequential_fit"],
            "> 1 (no fixed target)", lambda v: v > 1)
    out.extend(first_layer.first_layer_targets(doc))
    out.extend(sm_vs_dsm.sm_vs_dsm_targets(doc))
    out.extend(mcmc.mcmc_targets(doc))
    out.extend(units.units_targets(doc))
    return out


def _fmt(v):
    return f"{v:10.2f}" if isinstance(v, (int, float)) else f"{'—':>10s}"


def print_tables(doc, checks):
    if "sm_vs_dsm" in doc:
        print("\nexact SM vs DSM step, ms (median); TF32 and float32 max relative error vs float64")
        cols = ["sm_ms", "dsm_ms", "sm_graph_ms", "dsm_graph_ms", "sm_tf32_ms", "sm_tf32_graph_ms", "factor_qr_ms",
                "factor_cholesky64_ms", "sm_over_dsm_eager", "sm_over_dsm_graph"]
        print(f"{'network':28s} {'B':>5s} " + " ".join(f"{c.replace('_ms', ''):>10.10s}" for c in cols))
        for r in doc["sm_vs_dsm"]:
            print(f"{r['network']:28s} {r['batch']:5d} " + " ".join(_fmt(r.get(c)) for c in cols))
            print(f"{'':34s} ΔE: float32 {r['float32_laplacian_max_rel_err']:.2g}, TF32 {r['tf32_laplacian_max_rel_err']:.2g}"
                  f" ({'in effect' if r['tf32_in_effect'] else 'no effect on CPU'}); ∇θ J_SM: float32 "
                  f"{r['float32_sm_grad_max_rel_err']:.2g}, TF32 {r['tf32_sm_grad_max_rel_err']:.2g}")
    if "exact_sm" in doc:
        print("\nexact SM training step, ms (median)")
        cols = ["sm_loop_ms", "sm_jvp_ms", "sm_closed_form_ms", "dsm_ms", "loop_over_jvp", "loop_over_closed_form"]
        print(f"{'network':28s} {'B':>5s} " + " ".join(f"{c.replace('_ms', ''):>10.10s}" for c in cols))
        for r in doc["exact_sm"]:
            print(f"{r['network']:28s} {r['batch']:5d} " + " ".join(_fmt(r.get(c)) for c in cols))
    if "training_loop" in doc:
        print("\ntraining loop, ms per step (marginal)")
        cols = ["eager_loop_ms", "fit_ms", "fit_eager_ms", "cuda_graph_ms", "compile_ms", "eager_loop_over_fit",
                "fit_over_cuda_graph"]
        print(f"{'network':28s} {'B':>5s} {'obj':>4s} " + " ".join(f"{c.replace('_ms', ''):>10.10s}" for c in cols))
        for r in doc["training_loop"]:
            print(f"{r['network']:28s} {r['batch']:5d} {r['objective']:>4s} " + " ".join(_fmt(r.get(c)) for c in cols))
    if "latent" in doc:
        print("\nlatent models, ms per step")
        for r in doc["latent"]:
            print(f"{r['model']:28s} closed-form SM {r['sm_closed_form_ms']:.2f}, DSM {r['dsm_ms']:.2f}, "
                  f"SSM {r['ssm_ms']:.2f}  -> SM/DSM = {r['closed_form_over_dsm']:.2f}")
    if "ensemble" in doc:
        print("\nensembles (M members, ms per step of all M)")
        for r in doc["ensemble"]:
            print(f"M={r['n_models']:3d}: vmapped {r['ensemble_ms']:.2f}, sequential fit {r['sequential_fit_ms']:.2f}, "
                  f"sequential plain loop {r['sequential_eager_ms']:.2f} -> speed-up "
                  f"{r['speedup_vs_sequential_fit']:.2f}x (vs fit), {r['speedup_vs_sequential_eager']:.2f}x (vs plain)")
    for r in doc.get("mcmc", []):
        print(f"\n{r['model']}, ms per update: " + ", ".join(f"{k[:-3]} {v:.2f}" for k, v in r.items() if k.endswith("_ms")))
    for r in doc.get("guards", []):
        print(f"fit step {r['network']}: guard {r['guard_ms']:.3f} ms, no guard {r['no_guard_ms']:.3f} ms")
    if checks:
        print("\ntargets")
        for c in checks:
            met = {True: "met", False: "NOT met", None: "n/a"}[c["met"]]
            print(f"  [{met:7s}] {c['target']}: {c['value']} (goal {c['goal']})")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present)")
    parser.add_argument("--quick", action="store_true", help="small sizes only (CPU smoke run, ~2 min)")
    parser.add_argument("--reps", type=int, default=9, help="timed repetitions per measurement")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--out", default=None, help="JSON path (default results/bench_<device>.json)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no section after this many seconds (the JSON lists the skipped ones)")
    parser.add_argument("--loop-seconds", type=float, default=None,
                        help="training_loop: seconds of plain eager loop per timing (default 1.5, --quick 0.6)")
    parser.add_argument("--no-compile", action="store_true", help="skip timing torch.compile on a GPU (saves minutes)")
    args = parser.parse_args(argv)
    cases.COMPILE = not args.no_compile
    device = _device(args.device)
    torch.set_default_dtype(torch.float32)
    # glibc keeps large blocks for reuse if SMLIB_KEEP_LARGE_BLOCKS=1 (`make bench` sets it; chapter 10)
    allocator = _alloc.from_environment()
    load_before = timing.load_average()
    start = time.perf_counter()
    path = args.out or str(records.results_dir() / f"bench_{device.type}.json")
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])

    def write(doc, final=False):
        """The whole document so far: a run stopped from outside keeps its finished sections."""
        wall = time.perf_counter() - start
        load_after = timing.load_average()
        info = timing.machine(device)
        cores = info.get("cpu_affinity") or info["cpu_count"] or 1
        busy = max(x for x in (load_before, load_after, 0.0) if x is not None)
        others = busy - (info["torch_threads"] if device.type == "cpu" else 1)
        shared = others > 0.5
        info["load_average_1min"] = {"before": load_before, "after": load_after}
        info["shared"] = shared
        info["keep_large_blocks"] = allocator
        info["note"] = (
            (f"machine shared with other jobs (1-min load average up to {busy} on {cores} cores while this run used "
             f"{info['torch_threads']} thread(s)): absolute times are inflated and noisy; every ratio was measured "
             "side by side, interleaved, in this one run" if shared else
             "no other load detected; ratios were measured side by side, interleaved, in this one run"))
        checks = targets(doc, device)
        out = {"provenance": records.provenance(wall_time_s=wall, device=str(device), command=command.strip(),
                                                parameters=vars(args)),
               "machine": info, "complete": final, "targets": checks, **doc}
        records.write_json(path, out)
        return info, checks, wall

    doc = run(device, args.quick, args.reps, args.only, args.budget_s, on_section=write, loop_seconds=args.loop_seconds)
    info, checks, wall = write(doc, final=True)
    print_tables(doc, checks)
    print(f"\n{info['note']}\nwall time {wall:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
