r"""The typed settings of each experiment: one frozen dataclass per experiment (:mod:`.presets`).

Each class states the fields of its experiment with their types and the rules a value must meet
(checked when a preset is made and after every ``--set`` override, errors naming the field); the
experiment module holds its ``"ci"`` and ``"paper"`` instances in ``PRESETS``. Fields are in the
order of the dict presets they replace (``kw_only``), so ``config.json`` is unchanged; a field
without a default differs between the presets.

A new experiment adds its class here in the same form, then ``PRESETS = {"ci": FooConfig(...), ...}`` in
its module.
"""
from __future__ import annotations

from dataclasses import dataclass

from smlib.experiments.presets import Preset
from smlib.experiments.stopping import check_epochs
from smlib.train.config import OPTIMIZERS

__all__ = ["Swersky2011Config", "Swersky2011FeaturesConfig", "Deen2dConfig", "DeenMnistConfig",
           "DeenPatchesConfig", "MultiscaleConfig", "MultiscaleMnistConfig"]

_DTYPES = ("float32", "float64")


@dataclass(frozen=True, kw_only=True)
class Swersky2011Config(Preset):
    """Settings of :class:`smlib.experiments.swersky2011.Swersky2011` (mPoT on natural-image patches)."""

    batch_size: int = 128
    patch_size: int = 16
    gray: bool = False
    keep: float = 0.99  # fraction of the patch variance the PCA whitening keeps
    gamma: float = 1.0
    optimizer: str = "sgd"
    momentum: float = 0.0
    dtype: str = "float32"
    smd_sigma: float = 1.0  # SMD's noise σ for the main comparison
    noise_std: float = 1.0  # σ of the noise added for the denoising task
    sampler: str = "hmc"
    n_leapfrog: int = 10
    hmc_step: float = 0.05
    target_accept: float = 0.9
    step_rule: str = "reject_target"
    target_reject: float = 0.1
    fast_lr: float = 1e-2  # fast-weights learning rate (FPCD)
    fast_decay: float = 0.95
    map_lambdas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # MAP denoising prior weights
    tol: float = 0.01
    sources: tuple[str, ...] = ("skimage", "skimage_jpeg", "sklearn")
    n_test_images: int = 2
    split_seed: int = 0
    block: int = 32
    drop_flat: float = 0.01  # patches flatter than this (std) are dropped
    filter_norm: str = "running"
    ablation_keep: float = 0.973  # `keep` of the "keep" ablation
    lr_epochs: int = 10  # epochs of each learning-rate selection unit
    n_train: int
    n_epochs: int
    n_cov: int  # covariance (mPoT) hidden units
    n_mean: int  # mean hidden units
    lr: float
    seeds: tuple[int, ...]
    smd_sweep: tuple[float, ...]  # SMD σ values of the σ sweep
    n_test: int
    n_val: int
    n_denoise: int
    n_eval: int
    n_noise: int = 2
    map_steps: int
    n_gabor: int
    denoise_dense_until: int
    denoise_every: int
    ablations: tuple[str, ...]
    lr_grid: tuple[float, ...]  # empty: train at `lr` without selection

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("batch_size", "patch_size", "gamma", "smd_sigma", "noise_std", "n_leapfrog", "hmc_step",
                              "fast_lr", "map_lambdas", "tol", "n_test_images", "block", "lr_epochs", "n_train",
                              "n_epochs", "n_cov", "n_mean", "lr", "smd_sweep", "n_test", "n_val", "n_denoise",
                              "n_eval", "n_noise", "map_steps", "n_gabor", "denoise_dense_until", "denoise_every",
                              "lr_grid")
        self.require_nonnegative("momentum", "split_seed", "seeds", "drop_flat")
        self.require_fraction("keep", "target_accept", "target_reject", "fast_decay", "ablation_keep")
        self.require_nonempty("seeds", "sources", "map_lambdas")
        self.require_sorted("seeds", "smd_sweep", "map_lambdas", "lr_grid")
        self.require_choice("dtype", _DTYPES)
        self.require_choice("optimizer", OPTIMIZERS)
        self.require_choice("ablations", ("free", "keep"))


@dataclass(frozen=True, kw_only=True)
class Swersky2011FeaturesConfig(Preset):
    """Settings of :class:`smlib.experiments.swersky2011_features.Swersky2011Features` (Table 1: features on a labelled substitute)."""

    batch_size: int = 128
    patch: int = 8
    stride: int = 4
    pool: int = 2
    keep: float = 0.99  # fraction of the patch variance the PCA whitening keeps
    gamma: float = 1.0
    optimizer: str = "sgd"
    momentum: float = 0.0
    dtype: str = "float32"
    smd_sigma: float = 1.0
    sampler: str = "hmc"
    n_leapfrog: int = 10
    hmc_step: float = 0.05
    target_accept: float = 0.9
    step_rule: str = "reject_target"
    target_reject: float = 0.1
    fast_lr: float = 1e-2
    fast_decay: float = 0.95
    probe_Cs: tuple[float, ...] = (0.01, 0.1, 1.0)  # inverse regularisation strengths of the linear probe
    alpha: float = 0.05  # level of the paired tests
    margin_rel: float  # equivalence margin relative to the paper's error (PAPER_MARGIN_REL)
    learned_margin: float = 1.0
    split_seed: int = 0
    lr_epochs: int = 2  # epoch budget of each learning-rate selection unit (trained by the patience protocol)
    early_checks: tuple[float, ...] = ()  # validation checks inside the first epoch (fractions of it), before its end
    n_seeds: int
    n_patches: int
    n_epochs: int
    n_cov: int
    n_mean: int
    lr: float
    probe_iter: int = 100
    n_train_images: int
    n_val_images: int
    n_test_images: int
    patience: int
    lr_grid: tuple[float, ...]  # empty: train at `lr` without selection
    smd_sweep: tuple[float, ...]

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("batch_size", "patch", "stride", "pool", "gamma", "smd_sigma", "n_leapfrog", "hmc_step",
                              "fast_lr", "probe_Cs", "margin_rel", "learned_margin", "lr_epochs", "n_seeds",
                              "n_patches", "n_epochs", "n_cov", "n_mean", "lr", "probe_iter", "n_train_images",
                              "n_val_images", "n_test_images", "patience", "lr_grid", "smd_sweep")
        self.require_nonnegative("momentum", "split_seed")
        self.require_fraction("keep", "target_accept", "target_reject", "fast_decay", "alpha")
        self.require_nonempty("probe_Cs")
        self.require_sorted("probe_Cs", "lr_grid", "smd_sweep")
        self.require_choice("dtype", _DTYPES)
        self.require_choice("optimizer", OPTIMIZERS)
        check_epochs(self.early_checks, self.n_epochs)  # increasing fractions of the first epoch, each in (0, 1)


@dataclass(frozen=True, kw_only=True)
class Deen2dConfig(Preset):
    """Settings of :class:`smlib.experiments.deen_2d.Deen2d` (DEEN on 2-D densities)."""

    sigma: float = 0.1  # DEEN's noise σ
    lr: float = 1e-3
    hidden: tuple[int, ...] = (32, 32, 32)
    activation: str = "tanh"
    mixture: str = "deen"  # `smlib.data.gaussian_mixture_2d` preset
    spiral_noise: float = 0.05
    spiral_bound: float = 1.6  # half-width of the evaluation grid of the spiral
    mixture_bound: float = 4.0
    cd_optimizer: str = "adam"
    cd_lr: float = 1e-3
    n_arcs: int = 4
    n_plot: int = 48
    n_curl_plot: int = 40
    paper_iterations: int = 1000
    tol: float = 0.1
    data_seed: int = 1
    n_steps: int
    batch_size: int
    n_train: int
    seeds: tuple[int, ...]
    n_grid: int  # grid points per axis of the KL evaluation
    n_eval: int
    eval_every: int
    cd_variants: tuple[str, ...]  # extra CD runs with another optimiser (kinds CD_<name>)

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("sigma", "lr", "hidden", "spiral_noise", "spiral_bound", "mixture_bound", "cd_lr",
                              "n_arcs", "n_plot", "n_curl_plot", "paper_iterations", "tol", "n_steps", "batch_size",
                              "n_train", "n_grid", "n_eval", "eval_every")
        self.require_nonnegative("data_seed", "seeds")
        self.require_nonempty("seeds", "hidden")
        self.require_sorted("seeds")


@dataclass(frozen=True, kw_only=True)
class DeenMnistConfig(Preset):
    """Settings of :class:`smlib.experiments.deen_mnist.DeenMnist` (DEEN on MNIST)."""

    sigma: float | None = None  # None: σ chosen by Parzen likelihood on held-out digits
    sigma_prime: float = 0.3
    lr_grid: tuple[float, ...]  # learning rates tried by the selection units
    warmup: int  # steps of linear learning-rate warm-up
    grad_clip: float | None = None  # None: no gradient-norm clipping
    hidden: tuple[int, ...] = (128, 128, 256)
    activation: str = "tanh"
    gaussian_expert: bool = True
    sigma_margin: float = 0.15
    sigma_tol: float = 0.01
    tol: float = 0.02
    n_t: int = 31
    n_show: int = 8
    split_seed: int = 0
    n_parzen: int
    n_valid: int
    parzen_replicates: int
    sigma_kernels: int
    select_steps: int
    n_steps: int
    val_every: int
    seeds: tuple[int, ...]
    batch_size: int = 128
    log_every: int
    checkpoint_every: int
    n_test: int
    n_noise: int

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("sigma", "sigma_prime", "lr_grid", "grad_clip", "hidden", "sigma_margin", "sigma_tol",
                              "tol", "n_t", "n_show", "n_parzen", "n_valid", "parzen_replicates", "sigma_kernels",
                              "select_steps", "n_steps", "val_every", "batch_size", "log_every", "checkpoint_every",
                              "n_test", "n_noise")
        self.require_nonnegative("warmup", "split_seed", "seeds")
        self.require_nonempty("lr_grid", "hidden", "seeds")
        self.require_sorted("lr_grid", "seeds")


@dataclass(frozen=True, kw_only=True)
class DeenPatchesConfig(Preset):
    """Settings of :class:`smlib.experiments.deen_patches.DeenPatches` (DEEN denoising image patches)."""

    size: int = 32  # patch side
    noise_factor: float = 0.5
    sources: tuple[str, ...] = ("skimage",)
    flat: float = 2 / 255  # patches flatter than this (std) are dropped
    lr: float = 1e-3
    hidden: tuple[int, ...] = (256, 256, 256, 512, 512)
    activation: str = "tanh"
    gaussian_expert: bool = True
    median_sizes: tuple[int, ...] = (1, 3, 5)  # median-filter baselines
    gauss_widths: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0, 1.5)  # Gaussian-blur baselines (0: none)
    fixed_baseline: tuple[int, float] = (3, 1.0)  # (median size, blur width) of the fixed baseline
    tol: float = 0.02
    n_show: int = 8
    split_seed: int = 0
    lr_grid: tuple[float, ...]
    warmup: int
    grad_clip: float | None = None  # None: no gradient-norm clipping
    n_patches: int
    n_valid: int
    n_test: int
    n_noise: int
    select_steps: int
    n_steps: int
    val_every: int
    seeds: tuple[int, ...]
    batch_size: int = 128
    log_every: int
    checkpoint_every: int

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("size", "noise_factor", "lr", "hidden", "median_sizes", "tol", "n_show", "lr_grid",
                              "grad_clip", "n_patches", "n_valid", "n_test", "n_noise", "select_steps", "n_steps",
                              "val_every", "batch_size", "log_every", "checkpoint_every", "fixed_baseline")
        self.require_nonnegative("flat", "gauss_widths", "split_seed", "warmup", "seeds")
        self.require_nonempty("sources", "hidden", "median_sizes", "gauss_widths", "lr_grid", "seeds")
        self.require_sorted("median_sizes", "gauss_widths", "lr_grid", "seeds")


@dataclass(frozen=True, kw_only=True)
class MultiscaleConfig(Preset):
    """Settings of :class:`smlib.experiments.multiscale.Multiscale` (one σ against a ladder of σ on 2-D data)."""

    sigma_single: float = 0.1  # σ of the single-noise-level model
    sigma_min: float = 0.05  # smallest σ of the ladder
    spiral_sigma_max: float = 2.0
    mixture_sigma_max: float = 4.0
    n_levels: int = 10
    hidden: tuple[int, ...]
    single_hidden: tuple[int, ...] = (32, 32, 32)
    activation: str = "softplus"
    lr: float = 1e-3
    spiral_noise: float = 0.05
    spiral_components: int = 128
    spiral_bound: float = 1.6
    mixture_bound: float = 4.5
    mixture_sep: float = 2.0
    mixture_std: float = 0.35
    mixture_weights: tuple[float, ...] = (0.8, 0.2)
    n_arcs: int = 4
    n_hist: int = 40
    off_quantile: float = 0.01
    step_lr: float = 5e-4  # annealed Langevin step scale
    data_seed: int = 1
    distance_bins: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
    n_plot_points: int = 600
    n_steps: int
    batch_size: int
    n_train: int
    seeds: tuple[int, ...]
    n_samples: int
    n_steps_each: int  # Langevin steps per noise level

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("sigma_single", "sigma_min", "spiral_sigma_max", "mixture_sigma_max", "n_levels", "hidden",
                              "single_hidden", "lr", "spiral_noise", "spiral_components", "spiral_bound",
                              "mixture_bound", "mixture_sep", "mixture_std", "mixture_weights", "n_arcs", "n_hist",
                              "step_lr", "n_plot_points", "n_steps", "batch_size", "n_train", "n_samples",
                              "n_steps_each")
        self.require_nonnegative("data_seed", "seeds", "distance_bins")
        self.require_fraction("off_quantile")
        self.require_nonempty("hidden", "single_hidden", "mixture_weights", "seeds", "distance_bins")
        self.require_sorted("distance_bins", "seeds")
        for name in ("spiral_sigma_max", "mixture_sigma_max"):
            if getattr(self, name) <= self.sigma_min:
                self._fail(name, f"must exceed sigma_min = {self.sigma_min}")


@dataclass(frozen=True, kw_only=True)
class MultiscaleMnistConfig(Preset):
    """Settings of :class:`smlib.experiments.multiscale_mnist.MultiscaleMnist` (annealed Langevin on MNIST)."""

    sigma_max: float = 1.0  # the ladder σ₁ > … > σ_L, geometric
    sigma_min: float = 0.03
    n_levels: int = 10
    sigma_single: float = 0.1  # σ of the single-noise-level model
    activation: str = "swish"
    lr: float = 1e-3
    step_lr: float = 2e-4  # ε: the Langevin step at the last level
    sigma_data: float = 0.3  # σ_d of the preconditioning
    ema: float = 0.999  # decay of the weights' moving average that is sampled from (0: none)
    clf_hidden: tuple[int, ...] = (128,)
    clf_batch_size: int = 128
    clf_lr: float = 1e-3
    data_seed: int = 0
    min_confidence_ratio: float = 0.8  # the rules' thresholds (see the module's claims)
    max_class_tv: float = 0.2
    copy_quantile: float = 0.05
    max_copy_share: float = 0.1
    data_quantile: float = 0.95
    min_on_data: float = 0.5
    on_data_lead: float = 0.1
    min_clf_accuracy: float = 0.9
    n_show: int = 32
    n_pairs: int = 8
    n_train: int
    n_test: int
    hidden: tuple[int, ...]
    n_steps: int
    batch_size: int
    seeds: tuple[int, ...]
    n_samples: int
    n_steps_each: int  # T: Langevin steps per noise level
    clf_steps: int

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("sigma_max", "sigma_min", "n_levels", "sigma_single", "lr", "step_lr", "sigma_data",
                              "clf_hidden", "clf_batch_size", "clf_lr", "n_show", "n_pairs", "n_train", "n_test",
                              "hidden", "n_steps", "batch_size", "n_samples", "n_steps_each", "clf_steps")
        self.require_nonnegative("data_seed", "seeds", "ema", "on_data_lead")
        self.require_fraction("min_confidence_ratio", "max_class_tv", "copy_quantile", "max_copy_share",
                              "data_quantile", "min_on_data", "min_clf_accuracy")
        self.require_nonempty("seeds", "hidden")
        if self.ema >= 1:
            self._fail("ema", "must be below 1 (0 turns the average off)")
        if self.sigma_min >= self.sigma_max:
            self._fail("sigma_min", "must be below sigma_max")
