"""The rules of the DEEN image claims run on the untrained model and on a planted positive.

Each row runs the claim function itself (`deen_mnist.claims`, `deen_patches.claims`) on a copy of a
record whose numbers are replaced by those of a control, and reports the rule's own verdict (before
the health gates): the untrained network, whose score is ≈ 0 so that its single step returns the
noisy input and whose loss stays at the zero-score level; and a planted positive that the claim
describes (a denoiser leaving a quarter of the noise, a loss that falls and settles, σ* = 0.14 on
every split).
"""
from __future__ import annotations

import copy

from smlib.experiments import deen_mnist, deen_patches

__all__ = ["rules_table_rows"]


def _verdict(claims, cid):
    return next(c["ungated"] for c in claims if c["id"] == cid)


def _mnist(rec, kind):
    r = copy.deepcopy(rec)
    U, noisy = r["units"], r["summary"]["reference"]["noisy"]
    for u in deen_mnist.runs(r, "DEEN"):
        n = len(u["loss"]["loss"])
        zero = u["sigma"] ** 2 * round(u["loss_floor"] / u["sigma"] ** 2 + u["rank"])
        u["test"]["t_best"] = list(noisy) if kind == "untrained" else [0.25 * v for v in noisy]
        u["loss"]["loss"] = [zero] * n if kind == "untrained" else [zero * (0.5 + 0.5 * 0.5 ** (10 * i / n)) for i in range(n)]
    if kind == "untrained":
        U["parzen"]["sigma_star"] = [[0.2] * len(s) for s in U["parzen"]["sigma_star"]]  # σ* that does not move with n
    else:
        U["parzen"]["sigma_star"] = [[0.14 * 1.2 ** (len(s) - 1 - k) for k in range(len(s))] for s in U["parzen"]["sigma_star"]]
    return deen_mnist.claims(r)


def _patches(rec, kind):
    r = copy.deepcopy(rec)
    ref = r["summary"]["reference"]
    for D in deen_mnist.runs(r, "DEEN"):
        D["err_pixel"] = list(ref["noisy"]) if kind == "untrained" else [0.5 * min(a, b) for a, b in zip(ref["fixed"], ref["tuned"])]
        D["rank_floor"] = [0.0 for _ in D["rank_floor"]]
    return deen_patches.claims(r)


def rules_table_rows(rec_mnist, rec_patches) -> list[tuple[str, str, str]]:
    """(rule, verdict on the untrained model, verdict on a planted positive) for the image claims."""
    rows = []
    if rec_mnist is not None:
        u, p = _mnist(rec_mnist, "untrained"), _mnist(rec_mnist, "planted")
        rows += [("MNIST: the single step denoises (error < 0.98 × the noisy input's)", _verdict(u, "mnist-single-step"),
                  _verdict(p, "mnist-single-step")),
                 ("MNIST: removes most of the noise (< ½ left)", _verdict(u, "mnist-most-noise"), _verdict(p, "mnist-most-noise")),
                 ("MNIST: the running loss decreases and settles", _verdict(u, "mnist-loss-settles"),
                  _verdict(p, "mnist-loss-settles")),
                 ("MNIST: σ* falls as n grows (σ* fixed at 0.2 / falling to 0.14)", _verdict(u, "sigma-falls-with-n"),
                  _verdict(p, "sigma-falls-with-n"))]
    if rec_patches is not None:
        u, p = _patches(rec_patches, "untrained"), _patches(rec_patches, "planted")
        rows.append(("patches: DEEN beats the median + Gaussian filters", _verdict(u, "patches-beats-filter"),
                     _verdict(p, "patches-beats-filter")))
    return rows
