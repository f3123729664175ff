r"""Benchmark section ``sm_vs_dsm`` (issue 26): the exact-SM / DSM step-time ratio of the DEEN image energies.

For the DEEN MNIST energy (784-128-128-256-1) and the patch energy (1024-256-256-256-512-512-1),
at their experiments' batch size 128, one interleaved group times an Adam step (float32) of

* exact SM, ``objectives.sm``: ΔE = tr(H W₁W₁ᵀ) from r = min(d, k) directions pushed through the
  layers after the first, with the QR of W₁ᵀ (d > k) inside the step;
* DSM, σ = 0.1;

eagerly and, on a GPU, each captured whole in a CUDA graph (``reference.GraphedStep``, the floor);
and the SM step once more with TF32 matrix products (tensor cores, 10-bit mantissa: a CUDA
setting, without effect on the CPU; the row says whether it was in effect). Ratios come from the
one group, side by side.

TF32 is checked against float64 on the same weights and inputs: for ΔE per sample and for the SM
loss's θ-gradient, the max relative error max |a − a₆₄| / max |a₆₄| (over the batch, resp. over
the gradient's entries), beside the same error of plain float32, which is the scale to compare with.

Then the first-layer factor alone, forward + backward: the QR that smlib uses against a float64
Cholesky of the k × k Gram matrix (``reference.cholesky_factor``), eager and, on a GPU, in a graph.
"""
from __future__ import annotations

import contextlib
import copy

import torch

from bench import reference
from bench.cases import SIGMA, _adam_step, _dsm, _mlp
from smlib import objectives
from smlib.book.timing import time_group
from smlib.models.first_layer import first_layer_factor

__all__ = ["NETWORKS", "QUICK_NETWORKS", "sm_vs_dsm", "sm_vs_dsm_targets", "tf32", "max_relative_error"]

# (label, dim, hidden, batch)
NETWORKS = [("784-128-128-256-1", 784, (128, 128, 256), 128),
            ("1024-256-256-256-512-512-1", 1024, (256, 256, 256, 512, 512), 128)]
QUICK_NETWORKS = [("784-128-128-256-1", 784, (128, 128, 256), 16),
                  ("1024-256-256-256-512-512-1", 1024, (256, 256, 256, 512, 512), 4)]
#: the TF32 check's goal, fixed before any GPU run: TF32 rounds operands to 2⁻¹¹ relative; a
#: sum of a few hundred rounded products keeps the error of ΔE well under 1 %
TF32_MAX_RELATIVE_ERROR = 1e-2


@contextlib.contextmanager
def tf32(on: bool = True):
    """float32 matrix products in TF32 (``torch.backends.cuda.matmul.allow_tf32``) for the duration."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def max_relative_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a − ref| / max |ref| (norm-wise, so that entries of ref near 0 do not blow it up)."""
    a, ref = a.double(), ref.double()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def _sm(m, v):
    return objectives.sm(m, v)


def _with_tf32(fn):
    def run():
        with tf32():
            return fn()

    return run


def _accuracy(model, x):
    """ΔE and ∇_θ J_SM in float32 (plain and TF32) against float64 on the same weights and inputs."""
    def laplacian_and_grad(m, v):
        m.zero_grad(set_to_none=True)
        lap = -m.score_divergence(v)  # ΔE = −∇·ψ
        objectives.sm(m, v).backward()
        # the output bias does not enter J_SM: its gradient stays None
        return lap.detach(), torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None])

    model64 = copy.deepcopy(model).double()
    lap64, grad64 = laplacian_and_grad(model64, x.double())
    out = {}
    for name, on in (("float32", False), ("tf32", True)):
        with tf32(on):
            lap, grad = laplacian_and_grad(model, x)
        out[f"{name}_laplacian_max_rel_err"] = max_relative_error(lap, lap64)
        out[f"{name}_sm_grad_max_rel_err"] = max_relative_error(grad, grad64)
    model.zero_grad(set_to_none=True)
    return out


def _factor_fns(W, device):
    """Forward + backward of the first-layer factor, QR (smlib) and float64 Cholesky of the Gram matrix."""
    W = W.detach().clone().requires_grad_(True)
    C = torch.randn(W.shape[0], W.shape[0], device=device)  # a fixed linear functional of V

    def step(factor):
        def run():
            W.grad = None
            (factor(W) * C).sum().backward()
            return W.grad

        return run

    fns = {"factor_qr_ms": step(first_layer_factor), "factor_cholesky64_ms": step(reference.cholesky_factor)}
    if device.type == "cuda":
        for k in list(fns):
            fns[k.replace("_ms", "_graph_ms")] = reference.graphed(fns[k])
    return fns


def _row(label, dim, hidden, batch, device, reps):
    torch.manual_seed(0)
    x = torch.rand(batch, dim, device=device)  # images and whitened patches are O(1) per pixel
    cuda = device.type == "cuda"
    row = {"network": label, "batch": batch, "directions": min(dim, hidden[0]), "first_layer_qr": dim > hidden[0],
           "tf32_in_effect": cuda, "dsm_sigma": SIGMA}
    fns = {"sm_ms": _adam_step(_mlp(dim, hidden, device), _sm, x),
           "dsm_ms": _adam_step(_mlp(dim, hidden, device), _dsm, x),
           "sm_tf32_ms": _with_tf32(_adam_step(_mlp(dim, hidden, device), _sm, x))}
    if cuda:
        def graph(loss_fn, tf=False):
            model = _mlp(dim, hidden, device)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
            with tf32(tf):  # the kernels are chosen at capture: the replay keeps them
                g = reference.GraphedStep(model, opt, loss_fn, x)
            return lambda: g(x)

        fns.update(sm_graph_ms=graph(_sm), dsm_graph_ms=graph(_dsm), sm_tf32_graph_ms=graph(_sm, tf=True))
    fns.update(_factor_fns(_mlp(dim, hidden, device).first_linear.weight, device))
    row.update(time_group(fns, device, reps=reps, warmup=2, budget_s=30.0))
    row["sm_over_dsm_eager"] = row["sm_ms"] / row["dsm_ms"]
    row["tf32_speedup_eager"] = row["sm_ms"] / row["sm_tf32_ms"]
    row["factor_qr_share_of_sm_eager"] = row["factor_qr_ms"] / row["sm_ms"]
    if cuda:
        row["sm_over_dsm_graph"] = row["sm_graph_ms"] / row["dsm_graph_ms"]
        row["tf32_speedup_graph"] = row["sm_graph_ms"] / row["sm_tf32_graph_ms"]
        row["eager_over_graph_sm"] = row["sm_ms"] / row["sm_graph_ms"]
        row["eager_over_graph_dsm"] = row["dsm_ms"] / row["dsm_graph_ms"]
        row["factor_qr_share_of_sm_graph"] = row["factor_qr_graph_ms"] / row["sm_graph_ms"]
    row.update(_accuracy(_mlp(dim, hidden, device), x))
    print("sm_vs_dsm", row, flush=True)
    return row


def sm_vs_dsm(networks, device, reps):
    """One row per network (see the module docstring); times in ms per step, median."""
    return [_row(*net, device, reps) for net in networks]


def sm_vs_dsm_targets(doc):
    """Issue 26: the ratios have no fixed target (reported, met = None); the TF32 check has one."""
    out = []
    for row in doc.get("sm_vs_dsm", []):
        tag = f"{row['network']}, B={row['batch']}"
        for mode in ("eager", "graph"):
            v = row.get(f"sm_over_dsm_{mode}")
            out.append({"target": f"issue 26: exact SM step / DSM step, {mode}, {tag}", "goal": "no fixed target",
                        "value": None if v is None else round(v, 3), "met": None,
                        "note": "" if v is not None else "CUDA graphs need a GPU"})
        if row["tf32_in_effect"]:
            err = row["tf32_laplacian_max_rel_err"]
            out.append({"target": f"issue 26: TF32 direction products, ΔE max relative error vs float64, {tag}",
                        "goal": f"<= {TF32_MAX_RELATIVE_ERROR:g}", "value": float(f"{err:.3g}"),
                        "met": bool(err <= TF32_MAX_RELATIVE_ERROR),
                        "note": f"plain float32: {row['float32_laplacian_max_rel_err']:.2g}"})
    return out
