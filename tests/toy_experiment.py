"""A two-unit experiment for the runner's tests, with hooks a test turns on through the environment:

``TOY_COUNT=file``  append each unit key to ``file`` when the unit starts (how often did it run?);
``TOY_GO=file``     wait (≤ 120 s) inside the unit until ``file`` exists (a unit that is running);
``TOY_CRASH=1``     SIGKILL the process inside the unit (a crash with the unit's lock held);
``TOY_LEAK_DTYPE=1`` set torch's default dtype to float64 and leave it so (a careless protocol);
``TOY_SLEEP=s``     seconds each evaluation callback sleeps (the time split);
``TOY_CALLBACK_TRAINS=1`` the callback is part of training (``callback_is_training``, e.g. an EMA update);
``TOY_FIRST=1``     unit dsm-s1 reads dsm-s0's result (a prerequisite, like a learning-rate selection).
"""
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from smlib.experiments import runner, verdicts
from smlib.experiments.presets import Preset
from smlib.experiments.records import unit_key
from smlib.models import MLPEnergy


@dataclass(frozen=True, kw_only=True)
class ToyConfig(Preset):
    n_steps: int
    sigma: float = 0.5
    seeds: tuple[int, ...] = (0, 1)
    width: int = 4

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("n_steps", "sigma", "width")


class Toy(runner.Experiment):
    name = "toy"
    title = "two DSM units on a 2-D Gaussian"
    presets = {"ci": ToyConfig(n_steps=6), "paper": ToyConfig(n_steps=12)}
    prerequisite_units = ("dsm-s0",) if os.environ.get("TOY_FIRST") else ()

    def units(self, cfg):
        return [runner.Unit(unit_key("dsm", seed=s), seed=s) for s in cfg["seeds"]]

    def setup(self, cfg, device):
        time.sleep(float(os.environ.get("TOY_SLEEP", 0)))
        return {"x": torch.randn(64, 2, generator=torch.Generator().manual_seed(0))}

    def run_unit(self, ctx, unit, cfg, *, checkpoint, device, progress):
        if os.environ.get("TOY_COUNT"):
            with open(os.environ["TOY_COUNT"], "a") as f:
                f.write(unit.key + "\n")
        if os.environ.get("TOY_GO"):
            t0 = time.time()
            while not Path(os.environ["TOY_GO"]).exists() and time.time() - t0 < 120:
                time.sleep(0.05)
        if os.environ.get("TOY_FIRST") and unit.key == "dsm-s1" and not checkpoint.with_name("dsm-s0.json").exists():
            raise ValueError("dsm-s1 needs dsm-s0 done first")
        if os.environ.get("TOY_CRASH"):
            os.kill(os.getpid(), signal.SIGKILL)
        if os.environ.get("TOY_LEAK_DTYPE"):
            torch.set_default_dtype(torch.float64)
        torch.manual_seed(unit["seed"])
        with runner.default_dtype(torch.float64):
            model = MLPEnergy(2, hidden=(cfg["width"],))
        pause = float(os.environ.get("TOY_SLEEP", 0))

        def evaluate(m, step, epoch, history):
            time.sleep(pause)
            with torch.no_grad():
                return {"energy_mean": float(m.energy(ctx["x"].double()).mean())}

        h = runner.fit(model, ctx["x"].double(), "dsm", options={"sigma": cfg["sigma"]}, n_steps=cfg["n_steps"],
                       batch_size=16, seed=unit["seed"], progress=False, checkpoint=checkpoint, checkpoint_every=2,
                       resume=True, callback=evaluate, callback_every=3,
                       **({"callback_is_training": True} if os.environ.get("TOY_CALLBACK_TRAINS") else {}))
        with runner.timing("eval"):
            time.sleep(pause)
        return {"loss": list(h["loss"]), "train_wall_time_s": h.wall_time}

    def summarise(self, ctx, cfg, results):
        last = [r["loss"][-1] for r in results.values()]
        return {"claims": [verdicts.claim("losses-finite", "losses are finite", "all finite", [str(last)],
                                          verdicts.verdict([all(v == v for v in last)]))]}
