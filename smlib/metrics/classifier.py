r"""A small classifier as a measuring instrument for generated samples, and nearest-neighbour distances.

Generated digits have no likelihood we can compute, so the book measures them with tools a reader can
check on real digits first (the classifier's test accuracy; the distances of held-out test digits):

* :func:`train_classifier` — an MLP x ↦ logits trained by cross-entropy with Adam, from its own
  random generator (torch's global RNG is left alone);
* :func:`class_report` — for samples x₁…x_n, the class histogram h_k = (1/n)·#{i: argmax p(·|x_i) = k},
  the mean confidence (1/n) Σᵢ maxₖ p(k | xᵢ), and the total variation ½ Σₖ |h_k − r_k| to a
  reference histogram r (e.g. the test labels');
* :func:`nearest_distance` — dᵢ = min_j ‖xᵢ − y_j‖₂ to a reference set (the training images): a
  sample with dᵢ far below the distances of held-out test digits to the same set is (nearly) a copy.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from smlib._checks import check_data, check_int, check_positive

__all__ = ["train_classifier", "accuracy", "class_report", "nearest_distance"]


def _mlp(d_in, hidden, n_classes, generator, dtype):
    sizes = (d_in, *hidden, n_classes)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from the global RNG: restore it
            lin = nn.Linear(a, b, dtype=dtype)
        bound = 1.0 / math.sqrt(a)  # PyTorch's default U(−1/√fan_in, 1/√fan_in), drawn from our generator
        with torch.no_grad():
            lin.weight.copy_(torch.rand(b, a, generator=generator, dtype=dtype) * 2 * bound - bound)
            lin.bias.copy_(torch.rand(b, generator=generator, dtype=dtype) * 2 * bound - bound)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train_classifier(x: torch.Tensor, y: torch.Tensor, *, hidden: Sequence[int] = (128,), n_classes: int = 10,
                     n_steps: int = 1000, batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> nn.Module:
    """An MLP classifier (ReLU hidden layers, logits out) trained by minibatch cross-entropy with Adam.

    Parameters
    ----------
    x : (N, d) float tensor;  y : (N,) int64 labels in [0, n_classes)
    hidden : hidden layer widths (``()`` gives multinomial logistic regression)
    n_steps, batch_size, lr : Adam steps, rows per step, learning rate
    seed : seeds the generator of the initial weights and of the minibatches

    Returns
    -------
    torch.nn.Module in eval mode, ``model(x)`` -> logits (B, n_classes).
    """
    check_data(x, "x")
    n_classes, n_steps = check_int("n_classes", n_classes, 2), check_int("n_steps", n_steps, 0)
    batch_size, lr = check_int("batch_size", batch_size), check_positive("lr", lr)
    if y.shape != (x.shape[0],) or y.dtype != torch.int64:
        raise ValueError(f"y must be an int64 tensor of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes - 1}], got [{int(y.min())}, {int(y.max())}]")
    g = torch.Generator().manual_seed(int(seed))
    model = _mlp(x.shape[1], tuple(check_int("hidden", h) for h in hidden), n_classes, g, x.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(n_steps):
        idx = torch.randint(len(x), (min(batch_size, len(x)),), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of rows whose most probable class is the label."""
    return float((model(x).argmax(1) == y).double().mean())


@torch.no_grad()
def class_report(model: nn.Module, x: torch.Tensor, reference: Sequence[float] | None = None) -> dict:
    """Class histogram, mean confidence and (given ``reference``) the TV of the histogram to it.

    Returns ``{"histogram": [h_k], "confidence": mean_i max_k p(k|x_i), "confidence_each": [max_k p(k|x_i)],
    "tv": ½Σ|h − r| or None}``; p(·|x) = softmax of the logits. Non-finite rows are refused.
    """
    check_data(x, "x")
    prob = torch.softmax(model(x).double(), 1)
    conf, cls = prob.max(1)
    hist = torch.bincount(cls, minlength=prob.shape[1]).double() / len(x)
    tv = None
    if reference is not None:
        r = torch.as_tensor(reference, dtype=torch.float64)
        if r.shape != hist.shape or not bool((r >= 0).all()) or abs(float(r.sum()) - 1) > 1e-6:
            raise ValueError(f"reference must be a histogram of {hist.numel()} non-negative shares summing to 1")
        tv = 0.5 * float((hist - r).abs().sum())
    return {"histogram": hist.tolist(), "confidence": float(conf.mean()), "confidence_each": conf.tolist(), "tv": tv}


@torch.no_grad()
def nearest_distance(x: torch.Tensor, ref: torch.Tensor, chunk: int = 256, return_index: bool = False):
    r"""dᵢ = min_j ‖xᵢ − ref_j‖₂, shape (len(x),), float64 (‖a‖² + ‖b‖² − 2a·b in float64 chunks).

    Exact copies give 0 (up to rounding, ~1e-6·‖x‖). ``return_index``: also the argmin j per row.
    """
    check_data(x, "x")
    check_data(ref, "ref", x.shape[1])
    b = ref.double()
    bn = (b * b).sum(1)
    out, idx = [], []
    for i in range(0, len(x), check_int("chunk", chunk)):
        a = x[i:i + chunk].double()
        m = ((a * a).sum(1)[:, None] + bn[None] - 2 * a @ b.T).min(1)
        out.append(m.values.clamp_min(0).sqrt())
        idx.append(m.indices)
    return (torch.cat(out), torch.cat(idx)) if return_index else torch.cat(out)
