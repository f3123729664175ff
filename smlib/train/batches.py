"""Minibatches for `smlib.train.fit`: a tensor reshuffled every epoch, or any iterable of batches."""
from __future__ import annotations

import hashlib
import math

import torch

from smlib._checks import check_data

__all__ = ["TensorBatches", "IterableBatches", "as_batches", "fingerprint"]


class TensorBatches:
    """Minibatches of a (N, d) tensor, reshuffled each epoch by a seeded CPU generator.

    ``batch_size`` larger than N gives one batch of all N rows per epoch, unless ``drop_last``
    (then it is an error: no batch would be left).
    """

    def __init__(self, data, batch_size, drop_last, generator, device):
        self.n = data.shape[0]
        if drop_last and batch_size > self.n:
            raise ValueError(f"drop_last=True with batch_size={batch_size} > {self.n} rows of data leaves no batches")
        self.data = data.to(device)
        self.batch_size = min(batch_size, self.n)
        self.drop_last = drop_last
        self.generator = generator
        self.perm = None
        self.pos = 0  # batches of the current epoch already used

    def __len__(self):
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def epoch(self, start=0):
        if self.perm is None or start == 0:
            self.perm = torch.randperm(self.n, generator=self.generator)
        perm = self.perm.to(self.data.device)
        for b in range(start, len(self)):
            self.pos = b + 1
            yield self.data[perm[b * self.batch_size : (b + 1) * self.batch_size]]


class IterableBatches:
    """Batches from a DataLoader / iterable; ``(x, y)`` tuples give x. Validated per batch."""

    def __init__(self, data, device, dtype, dim):
        self.data, self.device, self.dtype, self.dim = data, device, dtype, dim
        self.perm = None
        self.pos = 0
        try:
            self._len = len(data)
        except TypeError:
            self._len = None

    def __len__(self):
        if self._len is None:
            raise TypeError("len() of an iterable without __len__")
        return self._len

    def epoch(self, start=0):
        for b, batch in enumerate(self.data):
            if b < start:
                continue
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            if not isinstance(batch, torch.Tensor):
                batch = torch.as_tensor(batch)
            check_data(batch, f"batch {b} of data", self.dim)
            self.pos = b + 1
            yield batch.to(device=self.device, dtype=self.dtype)


def as_batches(data, *, batch_size, drop_last, device, dtype, dim):
    """A numpy array or tensor -> :class:`TensorBatches` (checked, cast to ``dtype``); an iterable -> :class:`IterableBatches`."""
    try:
        import numpy as np

        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(data, torch.Tensor):
        check_data(data, "data", dim)
        return TensorBatches(data.to(dtype), batch_size, drop_last, torch.Generator(), device)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(f"data must be a (N, d) tensor, an array or an iterable of batches, got {type(data).__name__}")
    return IterableBatches(data, device, dtype, dim)


def fingerprint(batches) -> dict:
    """What identifies the training data in a checkpoint: shape, dtype and a SHA-256 of the rows."""
    if isinstance(batches, TensorBatches):
        data = batches.data.detach().cpu().contiguous()
        digest = hashlib.sha256(data.numpy().tobytes()).hexdigest()[:16]
        return {"kind": "tensor", "shape": list(data.shape), "dtype": str(data.dtype), "sha256": digest}
    return {"kind": type(batches.data).__name__, "len": batches._len}
