r"""The large matrix products of the exact-SM recursion, by oneDNN on CPUs where it is faster.

PyTorch multiplies float32 CPU matrices with MKL. On the AMD EPYC (AVX-512) cores of this book's
machines, MKL's kernels run the direction products of `smlib.models.mlp_derivatives`
((256 × 128) by (128 × 16 384) and their two reverse products) at ≈ 30 GMAC/s, while oneDNN's
kernels — the ones PyTorch's own compiler calls for linear layers on CPU — run the same products at
≈ 38–40: 15–20 % less time, same arithmetic (results equal to MKL's to float32 rounding).
`bench/` measures the effect on the training step (`chapters/10_cost_scaling.md` shows it).

The oneDNN entry point, ``torch.ops.mkldnn._linear_pointwise``, is a private operator, so
:func:`mm` uses it only where it is safe — plain float32 CPU tensors, outside autograd (the custom
backward of the recursion runs without it) and outside ``torch.func`` transforms — and only after a
one-time check in this process (at import) that it exists and agrees with ``@`` on a small product; everywhere
else, and whenever ``SMLIB_CPU_GEMM=default`` is set, it is ``A @ B``.
"""
from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["ENV_VAR", "mm", "onednn_available", "matmul_only"]

#: environment variable: "default" forces ``A @ B`` everywhere
ENV_VAR = "SMLIB_CPU_GEMM"

_STATE: dict = {}


def onednn_available() -> bool:
    """Whether :func:`mm` may use oneDNN in this process (checked once: the operator exists, runs and
    agrees with ``@`` on a 64 × 48 by 48 × 80 float32 product to 1e-5 relative; not when ``SMLIB_CPU_GEMM=default``)."""
    if "ok" not in _STATE:
        _STATE["ok"] = False
        if os.environ.get(ENV_VAR, "auto") != "default" and torch.backends.mkldnn.is_available():
            try:
                op = torch.ops.mkldnn._linear_pointwise
                g = torch.Generator().manual_seed(0)
                a, b = torch.randn(64, 48, generator=g), torch.randn(48, 80, generator=g)
                with torch.no_grad():
                    got, ref = op(a, b.T, None, "none", [], ""), a @ b
                _STATE["ok"] = bool(got.shape == ref.shape and torch.allclose(got, ref, rtol=1e-5, atol=1e-5))
                _STATE["op"] = op
            except (AttributeError, RuntimeError):
                _STATE["ok"] = False
    return _STATE["ok"]


def mm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A @ B for 2-D A (M × K) and B (K × N); by oneDNN when :func:`onednn_available` and both are plain
    float32 CPU tensors outside autograd and ``torch.func``, else by ``@``."""
    if (type(A) is torch.Tensor and type(B) is torch.Tensor and A.device.type == "cpu" and B.device.type == "cpu"
            and A.dtype == torch.float32 and B.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch._C._functorch.is_functorch_wrapped_tensor(A)
            and not torch._C._functorch.is_functorch_wrapped_tensor(B) and onednn_available()):
        return _STATE["op"](A, B.T, None, "none", [], "")  # linear(A, weight = Bᵀ) = A @ B
    return A @ B


@contextlib.contextmanager
def matmul_only():
    """Within the block :func:`mm` is ``A @ B`` (MKL on CPU): for measuring what oneDNN changes."""
    onednn_available()
    old = _STATE["ok"]
    _STATE["ok"] = False
    try:
        yield
    finally:
        _STATE["ok"] = old


# checked at import, where no dispatch mode (a FLOP counter, a graph capture) can see the check's products
onednn_available()
