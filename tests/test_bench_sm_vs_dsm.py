"""The helpers of the bench's ``sm_vs_dsm`` section (issue 26): the error measure, the TF32 switch, its rule."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the bench package sits beside smlib
from bench import reference, sm_vs_dsm  # noqa: E402


def test_max_relative_error_is_normwise():
    ref = torch.tensor([1e-9, 2.0, -4.0])
    # an entry of ref near 0 does not make the error blow up: 1e-3 / max|ref| = 2.5e-4
    assert sm_vs_dsm.max_relative_error(ref + torch.tensor([1e-3, 0.0, 0.0]), ref) == pytest.approx(2.5e-4)
    assert sm_vs_dsm.max_relative_error(ref, ref) == 0.0
    assert sm_vs_dsm.max_relative_error(torch.tensor([0.0, 0.0, -3.0]), ref) == pytest.approx(0.5)


def test_tf32_switch_is_restored():
    before = torch.backends.cuda.matmul.allow_tf32
    with sm_vs_dsm.tf32():
        assert torch.backends.cuda.matmul.allow_tf32
        with sm_vs_dsm.tf32(False):
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_cholesky_factor_squares_to_the_gram_matrix():
    W = torch.randn(16, 50, dtype=torch.float64)
    V = reference.cholesky_factor(W)
    assert V.shape == (16, 16) and torch.equal(V, V.triu())
    torch.testing.assert_close(V.T @ V, W @ W.T)


def _row(err, in_effect=True):
    return {"network": "784-128-128-256-1", "batch": 128, "tf32_in_effect": in_effect, "sm_over_dsm_eager": 5.0,
            "tf32_laplacian_max_rel_err": err, "float32_laplacian_max_rel_err": 1e-7}


def test_targets_read_the_row():
    met = {t["target"]: t["met"] for t in sm_vs_dsm.sm_vs_dsm_targets({"sm_vs_dsm": [_row(1e-3)]})}
    tf32 = [k for k in met if "TF32" in k]
    assert len(tf32) == 1 and met[tf32[0]] is True
    assert [t["met"] for t in sm_vs_dsm.sm_vs_dsm_targets({"sm_vs_dsm": [_row(0.05)]}) if "TF32" in t["target"]] == [False]
    # on a CPU the TF32 switch does nothing: no TF32 verdict at all; no graph there: its ratio is None
    rows = sm_vs_dsm.sm_vs_dsm_targets({"sm_vs_dsm": [_row(0.05, in_effect=False)]})
    assert not [t for t in rows if "TF32" in t["target"]]
    assert [t["value"] for t in rows if ", graph," in t["target"]] == [None]
