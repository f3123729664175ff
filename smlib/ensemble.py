r"""Many small training runs as one batched model: :func:`fit_ensemble`.

The 2-D experiments train the same small network several times — different seeds, or
different noise levels σ of denoising score matching. Each run alone is a chain of tiny
kernels and Python overhead; stacking the M members' parameters along a new leading axis turns
the M runs into one run of batched kernels (``torch.func.stack_module_state``), with the loss
of one member written as a pure function of its parameters (``torch.func.functional_call``)
and mapped over the member axis with ``torch.func.vmap``. One optimiser updates the stacked
parameters: Adam, AdamW and SGD act elementwise, so this is exactly M independent optimisers.

Semantics (pinned by ``tests/test_ensemble.py``): member m is the model that

.. code-block:: python

    torch.manual_seed(seeds[m]); model = make_model()
    smlib.train.fit(model, data, objective, sigma=sigmas[m], seed=seeds[m], n_steps=..., ...)

would train — same initialisation, same data order, same noise / projections, same updates —
to floating-point round-off (batched matrix products sum in another order). The member losses
are written with ``torch.func`` here (``fit`` uses :mod:`smlib.objectives`), so the test is also
an independent check of the objectives:

* DSM (Vincent 2011):  mean ½‖ψ(x + σε) + ε/σ‖²
* SSM (Song et al. 2019) and SSM-VR: mean ½(vᵀψ)² + vᵀ(∇ψ)v  (VR: ½‖ψ‖² for the first term)
* SM (Hyvärinen 2005): mean ½‖ψ‖² + Σᵢ ∂ψᵢ/∂xᵢ, the trace by the forward Laplacian recursion of
  `smlib.models.mlp_derivatives` for `MLPEnergy` members, else by forward-over-reverse products

with ψ = −∇ₓE. Energy models only (the score is the autograd gradient of ``model.energy``).
"""
from __future__ import annotations

import copy
import math
import time

import torch
from torch.func import grad_and_value, jvp, stack_module_state, vmap

from smlib._checks import check_choice, check_data, check_int, check_positive
from smlib.models import MLPEnergy
from smlib.models.mlp_derivatives import functional_score_divergence
from smlib.objectives import registry
from smlib.scores import functional_score
from smlib.train.history import History
from smlib.train.setup import make_optimizer, resolve_device

__all__ = ["fit_ensemble"]


def _member_loss(base, objective, n_slices):
    """loss(params, buffers, x, noise, sigma) of one member (noise: ε for DSM, v for SSM)."""

    def loss(params, buffers, x, noise, sigma):
        score = functional_score(base, (params, buffers))
        if objective == "dsm":
            psi = score(x + sigma * noise)
            return 0.5 * ((psi + noise / sigma) ** 2).sum(-1).mean()
        psi = score(x)
        if objective == "sm":
            if type(base) is MLPEnergy:  # the forward Laplacian recursion (chapter 10): no loop over d
                div = functional_score_divergence(params, x, base.activation)
            else:
                d = x.shape[-1]
                eye = torch.eye(d, dtype=x.dtype, device=x.device)

                def diag(e):  # eᵢᵀ(∇ψ)eᵢ for every sample
                    return (jvp(score, (x,), (e.expand_as(x),))[1] * e).sum(-1)

                div = vmap(diag)(eye).sum(0)
            return (0.5 * (psi * psi).sum(-1) + div).mean()
        # ssm / ssm_vr: noise holds the projections v, shape (n_slices, B, d)
        jv = vmap(lambda v: jvp(score, (x,), (v,))[1])(noise)  # (∇ψ)v
        vjv = (noise * jv).sum(-1)
        first = 0.5 * (psi * psi).sum(-1) if objective == "ssm_vr" else 0.5 * (noise * psi).sum(-1) ** 2
        return (first + vjv).mean()

    return loss


def _as_list(name, values, n):
    values = list(values)
    if n is not None and len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but n_models={n}")
    return values


def fit_ensemble(make_model, n_models=None, data=None, objective="dsm", *, seeds=None, sigmas=None, sigma=None,
                 n_steps, batch_size=128, lr=1e-3, optimizer="adam", momentum=0.9, weight_decay=0.0,
                 n_slices=1, device="auto", progress=False, log_every=1):
    r"""Train M copies of a small energy model at once, as one batched (vmapped) model.

    Parameters
    ----------
    make_model : callable () -> EnergyModel
        Builds one member; member m is built right after ``torch.manual_seed(seeds[m])``.
    n_models : int, optional
        Number of members M (or given by the length of ``seeds`` / ``sigmas``).
    data : torch.Tensor (N, d)
        Training data, shared by the members (each draws its own minibatch order).
    objective : str
        One of ``smlib.objectives.registry.names(ensemble=True)``: "sm", "dsm", "ssm", "ssm_vr".
    seeds : list of int, optional
        Per-member seed of the initialisation, data order and noise; default ``0, …, M−1``.
        Equal seeds with different σ give common random numbers (same init, order and ε).
    sigmas : list of float, optional
        Per-member DSM noise level σ_m (or one ``sigma`` for all).
    n_steps, batch_size, lr, optimizer ("adam" | "adamw" | "sgd"), momentum, weight_decay :
        As for :func:`smlib.train.fit`.
    n_slices : int
        Projections per sample for SSM.
    device : "auto" | str
    progress : bool
    log_every : int
        Log window means every this many steps (as fit).

    Returns
    -------
    models : list of torch.nn.Module
        The M trained members (independent modules, on ``device``).
    history : smlib.train.History
        ``"loss"`` (mean over members), ``"loss_0"``, …, ``"loss_{M−1}"`` (each member's loss,
        equal to what fit logs for it), ``"lr"``.

    Raises
    ------
    ValueError
        Inconsistent member counts, bad data, unknown objective or optimiser, σ ≤ 0.
    FloatingPointError
        A non-finite loss (naming the step and the members).
    """
    check_choice("objective", objective, registry.names(ensemble=True))
    if seeds is None and sigmas is None and n_models is None:
        raise ValueError("pass n_models, seeds or sigmas")
    if seeds is not None:
        seeds = _as_list("seeds", seeds, n_models)
        n_models = len(seeds)
    if sigmas is not None:
        sigmas = _as_list("sigmas", sigmas, n_models)
        n_models = len(sigmas)
    n_models = check_int("n_models", n_models)
    seeds = list(range(n_models)) if seeds is None else seeds
    if len(seeds) != n_models:
        raise ValueError(f"seeds has {len(seeds)} entries but sigmas has {n_models}")
    if objective == "dsm":
        if sigmas is None:
            if sigma is None:
                raise TypeError("objective 'dsm' needs sigma= or sigmas=")
            sigmas = [sigma] * n_models
        sigmas = [check_positive("sigma", s) for s in sigmas]
    for name, v in (("n_steps", n_steps), ("batch_size", batch_size), ("log_every", log_every), ("n_slices", n_slices)):
        if v is not None:
            check_int(name, v)
    device = resolve_device(device)

    members = []
    for s in seeds:
        torch.manual_seed(s)
        members.append(make_model().to(device))
    dtype = next(members[0].parameters()).dtype
    if type(data).__module__ == "numpy":
        data = torch.from_numpy(data)
    check_data(data, "data", getattr(members[0], "dim", None))
    data = data.to(device=device, dtype=dtype)
    n, d = data.shape
    B = min(batch_size, n)
    M = n_models

    params, buffers = stack_module_state(members)  # leaves of shape (M, ...)
    base = copy.deepcopy(members[0]).to("meta")
    opt = make_optimizer(optimizer, list(params.values()), lr, momentum, weight_decay)
    sigma_t = torch.tensor(sigmas if objective == "dsm" else [1.0] * M, dtype=dtype, device=device)
    step_fn = vmap(grad_and_value(_member_loss(base, objective, n_slices)), in_dims=(0, 0, 0, 0, 0))

    # per member, as fit: a data-order generator and the noise generator, both seeded with seeds[m]
    order = [torch.Generator().manual_seed(s) for s in seeds]
    noise_gen = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    per_epoch = math.ceil(n / B)
    history = History()
    acc, n_acc = torch.zeros(M, dtype=torch.float64, device=device), 0
    from tqdm.auto import tqdm

    bar = tqdm(total=n_steps, disable=not progress, desc=f"fit_ensemble[{objective}×{M}]")
    t0 = time.perf_counter()
    step, epoch, perms = 0, 0, None
    try:
        while step < n_steps:
            b = step % per_epoch
            epoch = step // per_epoch
            if b == 0:
                perms = torch.stack([torch.randperm(n, generator=g) for g in order]).to(device)  # (M, n)
            idx = perms[:, b * B : (b + 1) * B]
            x = data[idx]  # (M, b, d)
            shape = (n_slices, *x.shape[1:]) if objective in ("ssm", "ssm_vr") else x.shape[1:]
            if objective == "sm":
                noise = torch.zeros(M, 1, dtype=dtype, device=device)
            else:
                noise = torch.stack([torch.randn(shape, dtype=dtype, device=device, generator=g) for g in noise_gen])
            grads, losses = step_fn(params, buffers, x, noise, sigma_t)
            losses = losses.detach()
            if not bool(torch.isfinite(losses).all()):
                bad = [m for m in range(M) if not math.isfinite(float(losses[m]))]
                raise FloatingPointError(f"non-finite loss of member(s) {bad} at step {step + 1} (epoch {epoch})")
            for name, p in params.items():
                p.grad = grads[name]
            opt.step()
            step += 1
            acc += losses.detach().to(torch.float64)
            n_acc += 1
            if step % log_every == 0 or step == n_steps:
                mean = (acc / n_acc).tolist()
                history.log(step, epoch, loss=sum(mean) / M, lr=opt.param_groups[0]["lr"],
                            **{f"loss_{m}": v for m, v in enumerate(mean)})
                acc, n_acc = torch.zeros_like(acc), 0
                bar.set_postfix(loss=f"{sum(mean) / M:.4g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
        history.wall_time += time.perf_counter() - t0

    with torch.no_grad():
        for m, member in enumerate(members):
            for name, p in member.named_parameters():
                p.copy_(params[name][m])
            for name, buf in member.named_buffers():
                buf.copy_(buffers[name][m])
    return members, history
