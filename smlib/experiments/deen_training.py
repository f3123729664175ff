r"""Training protocol of the DEEN image networks (`deen_mnist`, `deen_patches`): a learning rate chosen
on validation data, a warm-up, the best checkpoint by validation loss, several training seeds.

The first paper-scale record of the patch network collapsed: with Adam at the paper's 10⁻³ its
L_DEEN fell from the zero-score level c²d = 256 to 210, jumped to 310 at step ≈ 12,800 and decayed
back to 256 (a network whose score is ≈ 0). The protocol therefore

* selects the learning rate from ``lr_grid`` (the paper's 10⁻³ inside it) by the lowest validation
  L_DEEN reached within ``select_steps`` steps — the same budget for every candidate — each with a
  linear warm-up over ``warmup`` steps (:class:`Warmup`) and, if ``grad_clip`` is set, gradient-norm
  clipping (one selection unit per network kind, training seed 0);
* trains every seed of ``seeds`` (each seed draws its own initialisation, minibatch order and noise)
  at the selected rate and keeps the parameters of the step with the lowest validation L_DEEN.

The validation L_DEEN = mean ‖x − ξ − σ²ψ(ξ)‖² on held-out points with one fixed noise draw ξ = x + σε
(Saremi et al. 2018, eq. 19); ψ ≡ 0 gives σ²d in expectation, the zero-score level.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from smlib import metrics
from smlib.experiments import runner

__all__ = ["Warmup", "valid_pairs", "valid_loss", "select_lr", "train_seed", "selection_of"]


class Warmup:
    """Learning-rate factor min(1, (step + 1)/n): a linear warm-up over n steps (stable repr for checkpoints)."""

    def __init__(self, n: int):
        if int(n) < 1:
            raise ValueError(f"a warm-up needs n ≥ 1 steps, got {n}")
        self.n = int(n)

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / self.n)

    def __repr__(self):
        return f"Warmup({self.n})"

    def __eq__(self, other):
        return isinstance(other, Warmup) and other.n == self.n

    __hash__ = None


def valid_pairs(x, sigma, seed):
    """Held-out points and one fixed noisy copy ξ = x + σε of each."""
    g = torch.Generator().manual_seed(seed)
    return x, x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)


def valid_loss(model, pairs, sigma) -> float:
    """Validation L_DEEN = mean ‖x − ξ − σ²ψ(ξ)‖² (eq. 19) on fixed pairs (x, ξ)."""
    x, xi = pairs
    was = model.training
    psi = metrics.score_on(model.eval(), xi).to(x.dtype)
    model.train(was)
    return float(((x - xi - sigma**2 * psi) ** 2).sum(1).mean())


def _fit(model, x_train, sigma, cfg, lr, seed, n_steps, pairs, checkpoint, device, progress):
    """DSM at σ with Adam at ``lr`` (warm-up, optional clipping); validation L_DEEN every ``val_every``
    steps; the parameters with the lowest one kept in ``<checkpoint>.best.pt`` (survives a resume)."""
    best_path = None if checkpoint is None else Path(checkpoint).with_suffix(".best.pt")
    best = {"val": float("inf"), "step": None, "state": None}
    if best_path is not None and best_path.exists():
        best = torch.load(best_path, weights_only=False)

    def callback(m, step, epoch, history):
        v = valid_loss(m, pairs, sigma)
        if v < best["val"]:
            best.update(val=v, step=int(step), state=copy.deepcopy({k: t.detach().cpu() for k, t in m.state_dict().items()}))
            if best_path is not None:
                torch.save(best, best_path)
        return {"val_loss": v}

    history = runner.fit(model, x_train, "dsm", options={"sigma": sigma}, n_steps=n_steps, batch_size=cfg["batch_size"],
                        optimizer="adam", lr=lr, lr_schedule=Warmup(cfg["warmup"]), grad_clip=cfg["grad_clip"],
                        device=device, seed=seed, progress=progress, log_every=cfg["log_every"], checkpoint=checkpoint,
                        checkpoint_every=cfg["checkpoint_every"], resume=True, callback=callback,
                        callback_every=cfg["val_every"])
    val = {"step": [int(s) for s in history.per_epoch["step"]], "loss": [float(v) for v in history.per_epoch["val_loss"]]}
    return history, val, best


def select_lr(make, x_train, sigma, cfg, pairs, *, checkpoint, device, progress) -> dict:
    """Train a fresh network (``make(seed)``) for ``select_steps`` at each rate of ``lr_grid``; the rate whose
    lowest validation L_DEEN is least is selected."""
    out = {"lr_grid": list(cfg["lr_grid"]), "select_steps": cfg["select_steps"], "warmup": cfg["warmup"],
           "grad_clip": cfg["grad_clip"], "val": [], "best_val": [], "final_train_loss": []}
    wall = 0.0
    for i, lr in enumerate(cfg["lr_grid"]):
        ck = None if checkpoint is None else Path(checkpoint).with_name(f"{Path(checkpoint).stem}-lr{i}.pt")
        h, val, best = _fit(make(cfg["seeds"][0]), x_train, sigma, cfg, lr, cfg["seeds"][0], cfg["select_steps"], pairs,
                            ck, device, progress)
        out["val"].append(val)
        out["best_val"].append(best["val"])
        out["final_train_loss"].append(2 * sigma**4 * h["loss"][-1])
        wall += h.wall_time or 0.0
    out["selected_lr"] = out["lr_grid"][min(range(len(out["best_val"])), key=out["best_val"].__getitem__)]
    out["train_wall_time_s"] = wall
    return out


def selection_of(checkpoint, key: str) -> dict:
    """The result of the selection unit ``key`` of the same run (the runner's ``<work folder>/<key>.json``)."""
    path = Path(checkpoint).with_name(f"{key}.json")
    if not path.exists():
        raise ValueError(f"unit {Path(checkpoint).stem} needs the learning-rate selection unit {key!r} done first "
                         f"(run it before the training seeds): {path} does not exist")
    return json.loads(path.read_text())["result"]


def selections(experiment, cfg: dict, folder) -> list[tuple[str, float, list]]:
    """``(what, chosen rate, grid)`` of each network kind's selection unit (the ``Experiment.selections`` hook)."""
    keys = [u.key for u in experiment.units(cfg) if u.key.startswith("select-")]
    missing = [k for k in keys if not (Path(folder) / f"{k}.json").exists()]
    if missing:
        raise ValueError(f"the learning-rate selection unit(s) {missing} have not run in {folder}; "
                         "run the selection first (--only 'select-*')")
    return [(f"learning rate of {k[len('select-'):]}", r["selected_lr"], list(r["lr_grid"]))
            for k in keys for r in [selection_of(Path(folder) / f"{k}.pt", k)]]


def train_seed(model, x_train, sigma, cfg, lr, seed, pairs, *, checkpoint, device, progress):
    """One training seed at rate ``lr``; the model is left at its best-validation parameters."""
    history, val, best = _fit(model, x_train, sigma, cfg, lr, seed, cfg["n_steps"], pairs, checkpoint, device, progress)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return history, {"val": val, "best_step": best["step"], "best_val": best["val"], "lr": lr}
