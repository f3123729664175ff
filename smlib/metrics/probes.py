"""Linear probes on frozen features (Swersky et al. 2011, Table 1)."""
from __future__ import annotations

import numpy as np
import torch

from smlib._checks import check_choice, check_positive

__all__ = ["linear_probe_accuracy"]


def _arr(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, C=1.0, max_iter=2000,
                          backend="sklearn", device="cpu"):
    r"""Test accuracy of a multinomial logistic-regression probe on frozen features.

    Features are standardised with the training set's mean and standard deviation, then a
    multinomial logistic regression minimising Σ cross-entropy + ‖W‖²/(2C) (scikit-learn's
    parametrisation of the strength C) is fit on the training features — the protocol of
    Swersky et al. (2011), Table 1. ``backend="sklearn"`` uses ``LogisticRegression(C=C)``
    (lbfgs, CPU); ``backend="torch"`` minimises the same objective with ``torch.optim.LBFGS``
    (strong-Wolfe line search) on ``device``, for feature sets too large for scikit-learn.

    Returns
    -------
    float in [0, 1]
    """
    check_positive("C", C)
    check_choice("backend", backend, ("sklearn", "torch"))
    if backend == "sklearn":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        clf.fit(_arr(train_features), _arr(train_labels))
        return float(clf.score(_arr(test_features), _arr(test_labels)))
    f_tr = torch.as_tensor(_arr(train_features), dtype=torch.float32, device=device)
    f_te = torch.as_tensor(_arr(test_features), dtype=torch.float32, device=device)
    y_tr = torch.as_tensor(_arr(train_labels), dtype=torch.long, device=device)
    mu, sd = f_tr.mean(0), f_tr.std(0).clamp_min(1e-6)
    f_tr, f_te = (f_tr - mu) / sd, (f_te - mu) / sd
    n_class = int(y_tr.max()) + 1
    W = torch.zeros(f_tr.shape[1], n_class, device=device, requires_grad=True)
    b = torch.zeros(n_class, device=device, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(f_tr @ W + b, y_tr, reduction="sum") + 0.5 / C * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        pred = (f_te @ W + b).argmax(1).cpu().numpy()
    return float((pred == _arr(test_labels)).mean())
