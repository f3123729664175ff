r"""Many small training runs as one batched model: :func:`fit_ensemble`.

The 2-D experiments train the same small network several times — different seeds, or
different noise levels σ of denoising score matching. Each run alone is a chain of tiny
kernels and Python overhead; stacking the M members' parameters along a new leading axis turns
the M runs into one run of batched kernels (``torch.func.stack_module_state``), with the loss
of one member evaluated on its own parameters (``torch.func.functional_call``) and mapped over
the member axis with ``torch.func.vmap``. One optimiser updates the stacked parameters: Adam,
AdamW and SGD act elementwise, so this is exactly M independent optimisers.

The loss is the registry's own (:mod:`smlib.objectives.registry`: ``SM``, ``DSM``, ``SSM``,
``SSMVR``, the classes marked ``ensemble``), called on a functional view of one member whose
score is −∇ₓE by ``torch.func.grad`` and whose Hessian trace is the forward Laplacian recursion
of `smlib.models.mlp_derivatives` for `MLPEnergy` members, else forward-over-reverse products.
There is no second copy of any loss here.

Semantics (pinned by ``tests/test_ensemble.py``): member m is the model that

.. code-block:: python

    torch.manual_seed(seeds[m]); model = make_model()
    smlib.train.fit(model, data, "dsm", options={"sigma": sigmas[m]}, seed=seeds[m], n_steps=..., ...)

would train — same initialisation, same data order, same noise / projections, same updates —
to floating-point round-off (batched matrix products sum in another order). Like `fit`, the
run leaves torch's global generator as it was, and each member has `fit`'s guards: a non-finite
loss names the member, and the :class:`smlib.train.step.DivergenceGuard` of
``config.divergence_guard`` watches each member's loss and parameter norm; checkpoints are
``fit``'s (atomic, the same careful loader, the run configuration compared on resume, with the
members' seeds and σ), and a resumed run ends bit-identical to an uninterrupted one on CPU.
Energy models only.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import torch
from torch.func import grad_and_value, stack_module_state, vmap

from smlib import _checks
from smlib._checks import check_data, check_positive
from smlib.models import MLPEnergy
from smlib.models.mlp_derivatives import functional_score_divergence
from smlib.objectives import registry
from smlib.objectives.derivatives import _diag_jvp
from smlib.scores import functional_score
from smlib.train.batches import TensorBatches
from smlib.train.checkpoint import CHECKPOINT_FORMAT, CheckpointError, resume_checkpoint, save_checkpoint
from smlib.train.config import TrainConfig
from smlib.train.history import History
from smlib.train.setup import make_optimizer, resolve_device
from smlib.train.state import apply_changes, run_config
from smlib.train.step import DivergenceGuard
from smlib._progress import progress_bar

__all__ = ["fit_ensemble"]

#: TrainConfig settings fit_ensemble does not implement (each must keep its default)
_UNSUPPORTED = ("n_epochs", "drop_last", "lr_schedule", "grad_clip", "fast", "callback_every", "seed")


class _Member:
    """One member as the registry's losses see it inside ``vmap``: score and Hessian trace by ``torch.func``."""

    functional = True  # tells smlib.objectives.losses.ssm to use forward mode, not autograd.grad
    has_energy = True

    def __init__(self, base, params, buffers):
        self.base, self.params, self.dim = base, params, base.dim
        self.score = functional_score(base, (params, buffers))

    def score_divergence(self, x):
        if type(self.base) is MLPEnergy:  # the forward Laplacian recursion (chapter 10): no loop over d
            return functional_score_divergence(self.params, x, self.base.activation)
        return _diag_jvp(self, x, None).sum(-1)


def _member_loss(base, objective):
    """loss(params, buffers, x, noise, sigma) of one member: the registry's ``objective`` (an SM, DSM, SSM or
    SSMVR instance) on the functional view of ``base`` with those tensors; ``sigma``, when not None, is the
    member's σ (DSM) and ``noise`` what ``objective.draw`` gave (ε, v, or None)."""

    def loss(params, buffers, x, noise, sigma):
        settings = objective if sigma is None else objective.with_tensors(sigma=sigma)
        with _checks.disabled():  # inside vmap a check cannot read a value; fit_ensemble checked data and options
            return settings(_Member(base, params, buffers), x, noise)

    return loss


def _as_list(name, values, n):
    values = list(values)
    if n is not None and len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but n_models={n}")
    return values


def _split(objective, options, overrides):
    """Keyword arguments -> (objective options, TrainConfig overrides); anything else is a TypeError naming it."""
    if not isinstance(objective, str) or not registry.spec(objective).ensemble:
        raise ValueError(f"fit_ensemble takes the objectives {registry.names(ensemble=True)} by name, got {objective!r}")
    fields = [f.name for f in dataclasses.fields(registry.spec(objective))]
    options = dict(options or {})
    config = {}
    for k, v in overrides.items():
        if k in fields:
            options[k] = v
        elif k in TrainConfig.field_names():
            config[k] = v
        else:
            raise TypeError(f"fit_ensemble() got an unexpected keyword argument {k!r}: neither an option of "
                            f"{objective!r} ({fields}) nor a TrainConfig setting")
    return options, config


def fit_ensemble(make_model, n_models=None, data=None, objective="dsm", config: TrainConfig | None = None, *,
                 seeds=None, sigmas=None, options=None, **overrides):
    r"""Train M copies of a small energy model at once, as one batched (vmapped) model.

    Parameters
    ----------
    make_model : callable () -> EnergyModel
        Builds one member; member m is built right after ``torch.manual_seed(seeds[m])`` (in a
        forked generator: the caller's global state is left alone).
    n_models : int, optional
        Number of members M (or given by the length of ``seeds`` / ``sigmas``).
    data : torch.Tensor (N, d)
        Training data, shared by the members (each draws its own minibatch order).
    objective : str
        One of ``smlib.objectives.names(ensemble=True)``: "sm", "dsm", "ssm", "ssm_vr".
    config : TrainConfig, optional
        As for :func:`smlib.train.fit` (``n_steps``, ``batch_size``, ``optimizer`` by name, ``lr``,
        ``momentum``, ``weight_decay``, ``device``, ``progress`` — off unless asked —,
        ``log_every``, ``divergence_guard``, ``checkpoint``, ``checkpoint_every``, ``resume``,
        ``allow_changes``); the other settings (schedules, clipping, epochs, ``seed``: use
        ``seeds``) are not implemented here and must keep their defaults.
    seeds : list of int, optional
        Per-member seed of the initialisation, data order and noise; default ``0, …, M−1``.
        Equal seeds with different σ give common random numbers (same init, order and ε).
    sigmas : list of float, optional
        Per-member DSM noise level σ_m (or one ``sigma`` for all, as an option).
    options : dict, optional
        The objective's options shared by all members (``{"sigma": 0.1}``, ``{"n_slices": 2}``).
    **overrides
        A convenience, as in ``fit``: TrainConfig settings (``n_steps=100, lr=1e-2``) and, here
        also, the objective's options (``sigma=0.1``, ``n_slices=2``) as keywords.

    Returns
    -------
    models : list of torch.nn.Module
        The M trained members (independent modules, on the device).
    history : smlib.train.History
        ``"loss"`` (mean over members), ``"loss_0"``, …, ``"loss_{M−1}"`` (each member's loss,
        equal to what fit logs for it), ``"lr"``.

    Raises
    ------
    ValueError
        Inconsistent member counts, bad data, an objective that cannot be batched, a bad option
        or setting (named), σ ≤ 0.
    TypeError
        A keyword that is neither an option nor a setting; a missing σ for DSM.
    FloatingPointError
        A non-finite loss or a diverging member (``DivergenceError``), naming the step and the members.
    """
    options, settings = _split(objective, options, overrides)
    settings.setdefault("progress", False)
    c = TrainConfig.of(config, settings, where="fit_ensemble")
    changed = [k for k in _UNSUPPORTED if getattr(c, k) != TrainConfig.__dataclass_fields__[k].default]
    if changed or not isinstance(c.optimizer, str) or c.n_steps is None:
        raise ValueError(f"fit_ensemble does not implement {changed or ['n_epochs / a custom optimizer']}: "
                         "use n_steps, a named optimizer and smlib.train.fit for the rest")
    if seeds is None and sigmas is None and n_models is None:
        raise ValueError("pass n_models, seeds or sigmas")
    if seeds is not None:
        seeds = _as_list("seeds", seeds, n_models)
        n_models = len(seeds)
    if sigmas is not None:
        sigmas = _as_list("sigmas", sigmas, n_models)
        n_models = len(sigmas)
    n_models = _checks.check_int("n_models", n_models)
    seeds = list(range(n_models)) if seeds is None else seeds
    if len(seeds) != n_models:
        raise ValueError(f"seeds has {len(seeds)} entries but sigmas has {n_models}")
    if objective == "dsm":
        if sigmas is None:
            if "sigma" not in options:
                raise TypeError("objective 'dsm' needs sigma= or sigmas=")
            sigmas = [options["sigma"]] * n_models
        sigmas = [check_positive("sigma", s) for s in sigmas]
        options["sigma"] = sigmas[0]
    elif sigmas is not None:
        raise TypeError(f"sigmas are DSM's noise levels; objective {objective!r} has none")
    objective = registry.resolve(objective, options).settings  # checks every option, named
    device = resolve_device(c.device)
    with torch.random.fork_rng(devices=[]):
        members = []
        for s in seeds:
            torch.manual_seed(s)
            members.append(make_model().to(device))
    return _train(members, data, objective, sigmas, seeds, c, device)


def _train(members, data, objective, sigmas, seeds, c, device):
    # fit projects a constrained model after every update (train.step); the vmapped update here does not
    # (an MPoT without filter_norm has a no-op project_ and is not constrained)
    if getattr(members[0], "project_", None) is not None and getattr(members[0], "filter_norm", True) is not None:
        raise ValueError(f"fit_ensemble cannot keep {type(members[0]).__name__}'s constraint (project_ after each "
                         "update): train these models with smlib.train.fit")
    dtype = next(members[0].parameters()).dtype
    if type(data).__module__ == "numpy":
        data = torch.from_numpy(data)
    check_data(data, "data", getattr(members[0], "dim", None))
    data = data.to(device=device, dtype=dtype)
    n = data.shape[0]
    B, M = min(c.batch_size, n), len(members)

    params, buffers = stack_module_state(members)  # leaves of shape (M, ...)
    base = copy.deepcopy(members[0]).to("meta")
    opt = make_optimizer(c.optimizer, list(params.values()), c.lr, c.momentum, c.weight_decay)
    sigma_t = None if sigmas is None else torch.tensor(sigmas, dtype=dtype, device=device)
    has_noise = type(objective).draw is not registry.ObjectiveConfig.draw  # DSM ε, SSM v; SM none
    step_fn = vmap(grad_and_value(_member_loss(base, objective)), in_dims=(0, 0, 0, 0 if has_noise else None,
                                                                           None if sigma_t is None else 0))

    # per member, as fit: a data-order generator and the noise generator, both seeded with seeds[m]
    order = [torch.Generator().manual_seed(s) for s in seeds]
    noise_gen = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    guards = None if c.divergence_guard is None else [
        DivergenceGuard.from_config(c.divergence_guard, objective_bound=objective.lower_bound,
                                    label=f"{objective.name} (member {m})", initial_norm=v)
        for m, v in enumerate(_norms(params).tolist())]
    per_epoch = math.ceil(n / B)
    st = {"step": 0, "perms": None, "history": History(), "acc": torch.zeros(M, dtype=torch.float64, device=device),
          "n_acc": 0, "changes": []}
    held = (params, buffers, opt, order, noise_gen, guards)
    run = None
    if c.checkpoint is not None:
        run = run_config(members[0], registry.Objective.from_settings(objective), c, opt,
                         TensorBatches(data, B, False, None, device), None if guards is None else guards[0])
        run["ensemble"] = {"seeds": list(seeds), "sigmas": sigmas}
        if c.resume and Path(c.checkpoint).exists():
            ck, changes = resume_checkpoint(c, run)
            _load(ck, st, held, c.checkpoint, device)
            apply_changes(opt, None, c, {x["setting"] for x in changes})
            st["changes"] += [{**x, "step": ck["step"]} for x in changes]

    bar = progress_bar(c.progress, total=c.n_steps, initial=st["step"], desc=f"fit_ensemble[{objective.name}×{M}]")
    t0 = time.perf_counter()
    try:
        while st["step"] < c.n_steps:
            b, epoch = st["step"] % per_epoch, st["step"] // per_epoch
            if b == 0:
                st["perms"] = torch.stack([torch.randperm(n, generator=g) for g in order]).to(device)  # (M, n)
            x = data[st["perms"][:, b * B : (b + 1) * B]]  # (M, b, d)
            noise = torch.stack([objective.draw(x[0], g) for g in noise_gen]) if has_noise else None
            grads, losses = step_fn(params, buffers, x, noise, sigma_t)
            losses = losses.detach()
            if not bool(torch.isfinite(losses).all()):
                bad = [m for m in range(M) if not math.isfinite(float(losses[m]))]
                raise FloatingPointError(f"non-finite loss of member(s) {bad} at step {st['step'] + 1} (epoch {epoch})")
            for name, p in params.items():
                p.grad = grads[name]
            opt.step()
            st["step"] += 1
            step = st["step"]
            _guard(guards, step, epoch, losses, params)
            st["acc"] += losses.to(torch.float64)
            st["n_acc"] += 1
            if step % c.log_every == 0 or step == c.n_steps:
                mean = (st["acc"] / st["n_acc"]).tolist()
                st["history"].log(step, epoch, loss=sum(mean) / M, lr=opt.param_groups[0]["lr"],
                                  **{f"loss_{m}": v for m, v in enumerate(mean)})
                st["acc"], st["n_acc"] = torch.zeros_like(st["acc"]), 0
                bar.set_postfix(loss=f"{sum(mean) / M:.4g}", refresh=False)
            bar.update(1)
            if c.checkpoint_every and step % c.checkpoint_every == 0:
                t0 = _save(c.checkpoint, st, held, run, per_epoch, t0)
    finally:
        bar.close()
        st["history"].wall_time += time.perf_counter() - t0
        t0 = time.perf_counter()
    if c.checkpoint is not None:
        _save(c.checkpoint, st, held, run, per_epoch, t0)

    with torch.no_grad():
        for m, member in enumerate(members):
            for name, p in member.named_parameters():
                p.copy_(params[name][m])
            for name, buf in member.named_buffers():
                buf.copy_(buffers[name][m])
    return members, st["history"]


def _save(path, st, held, run, per_epoch, t0):
    """A checkpoint in fit's format: the stacked parameters, optimiser, every member's generators and guard."""
    params, buffers, opt, order, noise_gen, guards = held
    st["history"].wall_time += time.perf_counter() - t0
    save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "step": st["step"], "epoch": st["step"] // per_epoch,
        "batch_in_epoch": st["step"] % per_epoch,
        "model": {"params": {k: v.detach().clone() for k, v in params.items()},
                  "buffers": {k: v.detach().clone() for k, v in buffers.items()}},
        "optimizer": opt.state_dict(), "scheduler": None, "objective_state": None,
        "rng": {"order": [g.get_state() for g in order], "noise": [g.get_state() for g in noise_gen]},
        "perm": None if st["perms"] is None else st["perms"].cpu(),
        "log_window": {"acc": st["acc"].cpu(), "n": st["n_acc"]}, "history": st["history"].state_dict(),
        "guard": None if guards is None else [g.state_dict() for g in guards], "config": run,
        "changes": list(st["changes"])})
    return time.perf_counter()


def _load(ck, st, held, path, device):
    params, buffers, opt, order, noise_gen, guards = held
    try:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(ck["model"]["params"][k])
            for k, b in buffers.items():
                b.copy_(ck["model"]["buffers"][k])
        opt.load_state_dict(ck["optimizer"])
        for g, s in zip(order + noise_gen, ck["rng"]["order"] + ck["rng"]["noise"], strict=True):
            g.set_state(s)
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit this ensemble: {str(err).splitlines()[0]}") from None
    for g, s in zip(guards or (), ck.get("guard") or ()):
        g.load_state_dict(s)
    st.update(step=ck["step"], perms=None if ck["perm"] is None else ck["perm"].to(device),
              history=History.from_state_dict(ck["history"]), acc=ck["log_window"]["acc"].to(device),
              n_acc=ck["log_window"]["n"], changes=list(ck.get("changes", [])))


def _norms(params) -> torch.Tensor:
    """‖θ_m‖ of every member, shape (M,)."""
    return torch.stack([p.detach().reshape(p.shape[0], -1).square().sum(1) for p in params.values()]).sum(0).sqrt()


def _guard(guards, step, epoch, losses, params):
    """fit's parameter and divergence guards, member by member (one host read of losses and norms)."""
    norms = _norms(params)
    loss_v, norm_v = torch.stack([losses.to(torch.float64), norms.to(torch.float64)]).tolist()
    bad = [m for m, v in enumerate(norm_v) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite parameters of member(s) {bad} after the update at step {step} "
                                 f"(epoch {epoch})")
    for g, loss, norm in zip(guards or (), loss_v, norm_v):
        g.check(step, epoch, loss, norm)
