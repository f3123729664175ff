r"""The data of one replicate of `smlib.experiments.swersky2011`: patches, whitening, test sets, baselines.

Issue 22 found the first protocol's test photographs off the training distribution (whitened
variance 2.40 per dimension against 1.01). A replicate now draws, with its own split seed
(``split_seed + seed``):

* training, validation and test patches from **spatially disjoint regions** of every photograph
  but two (`smlib.data.patches.natural_patches_regions`, tiles of ``block`` pixels), so all three
  come from one distribution; near-flat patches (pixel standard deviation below ``drop_flat`` ×
  the median patch's, before whitening) are replaced by fresh draws and counted;
* a second, **image-disjoint** test set from the two held-out photographs (the first protocol's),
  whitened with the same training statistics and evaluated on the same trained models;
* the whitened test/train variance ratio of both test sets
  (`smlib.data.whitening.whitened_variance_ratio`, gated in [0.8, 1.25]);
* the denoising baselines of every curve, on the same noisy patches: predict zero, the noisy
  input, ṽ/(1 + σ²) (the first protocol's reference line) and the per-component Wiener filter
  fitted on the training patches (`smlib.data.whitening.WienerFilter`); the untrained model is
  every curve's epoch 0.
"""
from __future__ import annotations

import numpy as np
import torch

from smlib import data, metrics
from smlib.data.whitening import WienerFilter, whitened_variance_ratio

__all__ = ["make_split", "COLUMNS"]

COLUMNS = {"": "region test set", "img_": "held-out photographs"}  # curve-key prefix -> test set


def make_split(cfg: dict, seed: int, keep: float, device, dtype) -> dict:
    """Patches, whitener, test tensors (noisy copies made once) and baselines of replicate ``seed``."""
    split_seed = cfg["split_seed"] + seed
    pool = data.list_natural_images(cfg["sources"], gray=None if cfg["gray"] else False)
    rng = np.random.default_rng(split_seed)
    held_out = sorted(rng.choice(pool, size=cfg["n_test_images"], replace=False).tolist())
    train_images = sorted(set(pool) - set(held_out))
    train_px, val_px, test_px, info = data.patches.natural_patches_regions(
        cfg["n_train"], cfg["n_val"], cfg["n_test"], size=cfg["patch_size"], gray=cfg["gray"], seed=split_seed,
        block=cfg["block"], images=train_images, sources=cfg["sources"], drop_flat=cfg["drop_flat"], return_info=True)
    img_px, img_info = data.natural_patches(cfg["n_denoise"], size=cfg["patch_size"], gray=cfg["gray"],
                                            seed=split_seed + 3, images=held_out, sources=cfg["sources"],
                                            flat_threshold=info["flat_threshold"], return_info=True)
    whitener = data.PatchWhitener(keep=keep).fit(train_px)
    g = torch.Generator().manual_seed(split_seed + 1)
    s, n_den = cfg["noise_std"], cfg["n_denoise"]
    X_train, X_val = whitener.transform(train_px), whitener.transform(val_px)
    tests = {"": whitener.transform(test_px), "img_": whitener.transform(img_px)}
    eps = torch.randn((cfg["n_noise"], len(tests[""]), X_train.shape[1]), generator=g, dtype=X_train.dtype)
    eps_val = torch.randn(X_val.shape, generator=g, dtype=X_val.dtype)
    to = lambda t: t.to(device=torch.device(device), dtype=dtype)  # noqa: E731
    wiener = WienerFilter(s).fit(X_train)
    ref = {"explained_variance": float(whitener.explained_variance_ratio_), "d": whitener.n_components_,
           "n_flat": {**info["n_flat"], "image_test": img_info["n_flat"]}, "flat_threshold": info["flat_threshold"],
           "held_out_images": held_out, "n_tiles": info.get("n_tiles"),
           "variance_ratio": {"test": whitened_variance_ratio(whitener, train_px, test_px)["ratio"],
                              "denoise": whitened_variance_ratio(whitener, train_px, test_px[:n_den])["ratio"],
                              "image_test": whitened_variance_ratio(whitener, train_px, img_px)["ratio"]}}
    ctx = {"whitener": whitener, "d": whitener.n_components_, "X_train": X_train.to(dtype),
           "X_eval": to(X_train[: cfg["n_eval"]]), "X_val": to(X_val), "N_val": to(X_val + s * eps_val), "reference": ref}
    for col, X in tests.items():
        clean = X[:n_den]
        noisy = [clean + s * e[:n_den] for e in eps]
        ref[col + "baselines"] = {
            "zero": float(metrics.mse(clean, torch.zeros_like(clean))),
            "noisy": [float(metrics.mse(clean, y)) for y in noisy],
            "shrink": [float(metrics.mse(clean, y / (1 + s * s))) for y in noisy],
            "wiener": [float(metrics.mse(clean, wiener.denoise(y))) for y in noisy]}
        ctx[col + "X_test"], ctx[col + "eps_test"] = to(X), to(eps[:, : len(X)])
        ctx[col + "noisy_test"] = [to(y) for y in noisy]
    return ctx
