"""Smoke tests of smlib.plotting (Agg backend): each function returns a Figure with content."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from smlib import plotting  # noqa: E402
from smlib.models import GRBM, MLPEnergy, ScoreMLP  # noqa: E402
from smlib.train import History  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_energy_landscape_kinds_and_given_axes():
    model = MLPEnergy(2, hidden=(8,))
    for kind in ("density", "log_density", "energy"):
        fig = plotting.energy_landscape(model, 3.0, n_grid=20, kind=kind, data=torch.randn(10, 2))
        assert isinstance(fig, matplotlib.figure.Figure) and fig.axes[0].images
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (20, 20)
    fig, axes = plt.subplots(1, 2)
    out = plotting.energy_landscape(lambda x: 0.5 * (x**2).sum(1), (-2, 2, -1, 1), n_grid=10, ax=axes[1],
                                    colorbar=False)
    assert out is fig and axes[1].images and not axes[0].images
    # the normalised density integrates to 1 on the grid
    X = np.linspace(-2, 2, 10)
    Y = np.linspace(-1, 1, 10)
    q = axes[1].images[0].get_array()
    assert float(q.sum() * (X[1] - X[0]) * (Y[1] - Y[0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kind"):
        plotting.energy_landscape(model, 3.0, kind="pdf")


@pytest.mark.parametrize("kind,normalize", [("quiver", False), ("quiver", True), ("stream", False)])
def test_score_field(kind, normalize):
    fig = plotting.score_field(GRBM(2, 3), (-3, 3, -3, 3), n_grid=8, kind=kind, normalize=normalize)
    ax = fig.axes[0]
    assert ax.collections or ax.patches


def test_curl_map_of_score_network():
    fig = plotting.curl_map(ScoreMLP(2, hidden=(8,)).double(), 2.0, n_grid=12, title="curl")
    assert fig.axes[0].images[0].get_array().shape == (12, 12)


@pytest.mark.parametrize("shape", [(4, 5), (3, 3, 3)])
def test_filter_grid(shape):
    filters = torch.randn(7, int(np.prod(shape)))
    fig = plotting.filter_grid(filters, shape, n_cols=3)
    canvas = fig.axes[0].images[0].get_array()
    assert canvas.shape[:2] == (3 * (shape[0] + 1) + 1, 3 * (shape[1] + 1) + 1)
    assert canvas.min() >= 0 and canvas.max() <= 1
    with pytest.raises(ValueError, match="filters"):
        plotting.filter_grid(filters, (2, 2))


def test_training_curves_from_history():
    h = History()
    for s in range(1, 41):
        h.log(s, (s - 1) // 10, loss=1.0 / s, variance=0.1, lr=1e-3)
        if s % 10 == 0:
            h.log_epoch(s, s // 10 - 1, gap=float(s))
    fig = plotting.training_curves(h, ["loss", "variance", "gap"], log_y=True, smooth=5)
    ax = fig.axes[0]
    assert len(ax.lines) == 5  # loss raw+smoothed, variance raw+smoothed, gap
    assert ax.get_yscale() == "log"
    fig = plotting.training_curves(h, x="epochs")
    assert {line.get_label() for line in fig.axes[0].lines} == {"loss", "variance"}
    with pytest.raises(KeyError, match="nope"):
        plotting.training_curves(h, "nope")
