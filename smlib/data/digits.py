"""scikit-learn's 8×8 handwritten digits (bundled with scikit-learn; no download)."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["load_digits"]


def load_digits():
    """The UCI optical-recognition digits shipped with scikit-learn, as floats in [0, 1].

    1797 images of 8×8 pixels with integer intensities 0–16 (Alpaydin & Kaynak, 1998, UCI
    "Optical Recognition of Handwritten Digits"), loaded with
    :func:`sklearn.datasets.load_digits` and divided by 16. A small offline stand-in for MNIST.

    Returns
    -------
    images : torch.Tensor, float32, shape (1797, 64)
        Rows are 8×8 images in row-major order, values in [0, 1].
    labels : torch.Tensor, int64, shape (1797,)
        Digit classes 0–9.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.from_numpy(np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0))
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return x, y
