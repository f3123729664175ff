"""Section ``units`` of ``make bench`` (issue 21 item 1): one short unit of each paper preset against the bench step.

Each case runs one unit of a paper preset through the experiment runner (`smlib.experiments.runner.run`,
the ``--set`` overrides of ``python -m smlib.experiments`` given as ``overrides``) with a few hundred
updates, in a temporary work folder, on this process's thread(s), and reads the unit's recorded time
split (`smlib.experiments.clock`). Beside it, in the same run, the bench times one update of the same
model at the same batch size (loss + backward + optimiser step, `smlib.book.timing.time_group`). It
reports

* ``train_over_bench``: the unit's training seconds / (updates × bench step) — target ≤ 1.5;
* ``eval_share_paper``: evaluation's share of a paper-scale unit, extrapolated as
  E / (U·t + E) with U the paper preset's updates, t the unit's training seconds per update and
  E the paper preset's evaluation seconds = the per-evaluation costs timed here × the number of
  evaluation points of the paper preset — target ≤ 25 %.

The short units use the paper preset's model, batch, optimiser and evaluation sizes; only the amount of
training data (Swersky: 300 minibatches, one epoch) or steps (DEEN: 300) is cut, Swersky's learning-rate
selection is off (its units are short runs of the same step), and DEEN's σ is given (the paper's 0.14)
instead of searched, since the search is set-up, not the unit.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import torch

from bench.mcmc import _update
from smlib import data, objectives
from smlib.book.timing import time_group
from smlib.experiments import deen_mnist, runner, swersky2011

__all__ = ["units", "units_targets", "CASES"]

N_UPDATES = 300
# (label, experiment, unit key, overrides of the paper preset, units it needs first: not timed here)
CASES = [
    ("Swersky SM (paper preset)", "swersky2011", "SM-s0", dict(n_train=128 * N_UPDATES, n_epochs=1, lr_grid=[]), ()),
    ("Swersky CD (paper preset)", "swersky2011", "CD-s0", dict(n_train=128 * N_UPDATES, n_epochs=1, lr_grid=[]), ()),
    # the DEEN training units read their learning rate from the selection unit: a one-point grid, few steps
    ("DEEN MNIST (paper preset)", "deen_mnist", "DEEN-s0",
     dict(n_steps=N_UPDATES, sigma=deen_mnist.PAPER_SIGMA, checkpoint_every=N_UPDATES, lr_grid=[1e-3],
          select_steps=20, warmup=20), ("select-DEEN",)),
]
_EXPERIMENTS = {"swersky2011": swersky2011.Swersky2011, "deen_mnist": deen_mnist.DeenMnist}


def _unit_time(experiment, key, overrides, tmp, needs=()) -> dict:
    workdir = Path(tmp) / f"{experiment.name}-{key}-{len(list(Path(tmp).iterdir()))}"  # a fresh folder per run
    runner.run(experiment, "paper", overrides=overrides, only=[*needs, key], workdir=workdir, progress=False,
               quiet=True)
    cfg = runner.resolve(experiment, "paper", overrides)
    path = runner.work_dir(workdir) / runner.record_name(experiment, "paper", cfg) / f"{key}.json"
    return json.loads(path.read_text())["provenance"]["time"]


def _swersky_step_and_eval(objective_name, cfg, reps):
    """The bench step of the unit's model, and one full and one light evaluation point at the paper sizes."""
    exp = swersky2011.Swersky2011()
    ctx = exp.split(exp.setup(cfg, "cpu"), cfg, 0)
    model = exp.new_model(ctx, cfg, 0)
    name, options = swersky2011.objective_for(objective_name, cfg)
    update = _update(model, objectives.make(name, **options), ctx["X_train"][: cfg["batch_size"]])

    def step():  # the update the unit makes: loss, backward, SGD step and the filter-norm projection
        update()
        model.project_()

    step = time_group({"step_ms": step}, torch.device("cpu"), reps=reps, warmup=2, budget_s=30)["step_ms"]
    t0 = time.perf_counter()
    exp.evaluate(ctx, cfg, model, True)
    t1 = time.perf_counter()
    exp.evaluate(ctx, cfg, model, False)
    return step, t1 - t0, time.perf_counter() - t1


def _deen_step(cfg, reps):
    x = data.load_mnist("train")[0][:2048]
    model = deen_mnist.make_model("DEEN", cfg, x, cfg["sigma"], seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # the step's time does not depend on the rate
    loss = objectives.make("dsm", sigma=cfg["sigma"])
    xb = x[: cfg["batch_size"]]

    def run():
        opt.zero_grad(set_to_none=True)
        loss(model, xb).backward()
        opt.step()

    return time_group({"step_ms": run}, torch.device("cpu"), reps=reps, warmup=2, budget_s=30)["step_ms"]


def units(device, reps) -> list[dict]:
    """One row per case of :data:`CASES` (CPU only: the units run where the recordings run)."""
    if device.type != "cpu":
        print("units: CPU only (the recordings run on CPU); skipped", flush=True)
        return []
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-units-") as tmp:
        for label, name, key, overrides, needs in CASES:
            note = ""
            exp = _EXPERIMENTS[name]()
            cfg = runner.resolve(exp, "paper", overrides)
            paper = runner.resolve(exp, "paper")
            t = _unit_time(exp, key, overrides, tmp, needs)
            if name == "swersky2011":
                updates = cfg["n_epochs"] * math.ceil(cfg["n_train"] / cfg["batch_size"])
                step_ms, full_s, light_s = _swersky_step_and_eval(key.split("-")[0], cfg, reps)
                n_full = len(swersky2011.denoise_epochs(paper))
                n_light = paper["n_epochs"] + 1 - n_full
                paper_updates = paper["n_epochs"] * math.ceil(paper["n_train"] / paper["batch_size"])
                # once per unit (the filters' Gabor fits): what the unit's evaluation spent beyond its points
                n_full_unit = len(swersky2011.denoise_epochs(cfg))
                once_s = max(0.0, t["eval_s"] - n_full_unit * full_s - (cfg["n_epochs"] + 1 - n_full_unit) * light_s)
                eval_paper = n_full * full_s + n_light * light_s + once_s
                per_eval = {"full_eval_s": full_s, "light_eval_s": light_s, "once_eval_s": once_s, "n_full": n_full,
                            "n_light": n_light}
            else:  # DEEN MNIST evaluates once, after training, at the paper's test sizes: all of it is in the unit
                updates = cfg["n_steps"]
                step_ms = _deen_step(cfg, reps)
                if t["train_s"] is None:
                    raise RuntimeError(f"{label}: the unit recorded no time split")
                paper_updates = paper["n_steps"]
                eval_paper = t["wall_s"] - t["train_s"]
                per_eval = {"eval_after_training_s": eval_paper}
            train_paper = paper_updates * t["train_s"] / updates
            row = {"unit": label, "key": key, "overrides": overrides, "updates": updates, "bench_step_ms": step_ms,
                   "unit_train_s": t["train_s"], "unit_eval_s": t["eval_s"], "unit_wall_s": t["wall_s"],
                   "train_ms_per_update": 1000 * t["train_s"] / updates,
                   "train_over_bench": 1000 * t["train_s"] / (updates * step_ms),
                   "paper_updates": paper_updates, "paper_train_s_est": train_paper, "paper_eval_s_est": eval_paper,
                   "eval_share_paper": eval_paper / (train_paper + eval_paper), **per_eval, "note": note}
            print("units", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            rows.append(row)
    return rows


def units_targets(doc) -> list[dict]:
    out = []
    for row in doc.get("units", []):
        out.append({"target": f"short unit, {row['unit']}: training time / (updates × bench step)", "goal": "<= 1.5",
                    "value": round(row["train_over_bench"], 3), "met": bool(row["train_over_bench"] <= 1.5),
                    "note": f"{row['updates']} updates, bench step {row['bench_step_ms']:.2f} ms"})
        out.append({"target": f"evaluation's share of a paper-scale unit, {row['unit']}", "goal": "<= 0.25",
                    "value": round(row["eval_share_paper"], 3), "met": bool(row["eval_share_paper"] <= 0.25),
                    "note": f"extrapolated: {row['paper_eval_s_est']:.0f} s evaluation beside "
                            f"{row['paper_train_s_est']:.0f} s training"})
    return out
