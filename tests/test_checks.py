"""Tests of the shared input-validation helpers in smlib._checks."""
import numpy as np
import pytest
import torch

from smlib._checks import check_choice, check_int


@pytest.mark.parametrize("value", [3.0, 2.5, "3", None, [1], torch.tensor(3)])
def test_check_int_rejects_non_integers(value):
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        check_int("n_steps", value)


@pytest.mark.parametrize("value", [True, False])
def test_check_int_rejects_bool(value):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        check_int("batch_size", value)


def test_check_int_below_minimum():
    with pytest.raises(ValueError, match=r"n_steps must be an integer >= 1, got 0"):
        check_int("n_steps", 0)
    with pytest.raises(ValueError, match=r"k must be an integer >= 0, got -1"):
        check_int("k", -1, minimum=0)
    with pytest.raises(ValueError, match=r"size must be an integer >= 5, got 4"):
        check_int("size", 4, minimum=5)


def test_check_int_returns_int():
    assert check_int("k", 0, minimum=0) == 0
    out = check_int("n", 7)
    assert out == 7 and type(out) is int
    out = check_int("n", np.int64(5))
    assert out == 5 and type(out) is int


def test_check_choice():
    assert check_choice("kind", "basis", ("basis", "filter")) == "basis"
    with pytest.raises(ValueError, match="unknown kind 'x'; choose one of 'basis', 'filter'"):
        check_choice("kind", "x", ("basis", "filter"))
