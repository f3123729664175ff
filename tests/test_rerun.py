"""Reruns with papermill: injected parameters take effect; unknown names are an error."""
from __future__ import annotations

import importlib.util
import json
import textwrap

import pytest

from smlib.book import rerun

# reruns are the book tool chain's: without the [book] extra (papermill, jupytext) these tests skip
needs_book = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("papermill", "jupytext")),
                                reason="needs the [book] extra (papermill, jupytext)")

CHAPTER = textwrap.dedent("""\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
        format_version: 0.13
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    (ch-demo)=
    # Demo

    ```{code-cell} ipython3
    :tags: [parameters]
    n_steps = 10      # steps
    device = "cpu"    # device
    ```

    ```{code-cell} ipython3
    print(f"n_steps={n_steps} device={device}")
    ```
    """)


@pytest.fixture
def chapter(tmp_path):
    path = tmp_path / "chapters" / "00_demo.md"
    path.parent.mkdir()
    path.write_text(CHAPTER)
    return path


@needs_book
def test_parameters_are_read_from_the_tagged_cell(chapter):
    assert rerun.chapter_parameters(chapter) == {"n_steps": "10", "device": '"cpu"'}


@needs_book
def test_unknown_parameter_is_an_error(chapter, tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['n_step'\].*n_steps"):
        rerun.rerun(chapter, {"n_step": 5}, tmp_path / "out.ipynb")
    assert rerun.main([str(chapter), "-p", "n_step", "5", "-o", str(tmp_path / "o.ipynb")]) == 2


@needs_book
def test_rerun_injects_values(chapter, tmp_path, monkeypatch):
    monkeypatch.delenv("SMLIB_RERUN_COMMAND", raising=False)
    out = tmp_path / "out.ipynb"
    assert rerun.main([str(chapter), "-p", "n_steps", "20000", "-p", "device", "cuda",
                       "-o", str(out)]) == 0
    import os

    assert os.environ["SMLIB_RERUN_COMMAND"] == "python -m smlib.book.rerun chapters/00_demo.md -p n_steps 20000 " \
        "-p device cuda"  # as a user types it: no absolute path
    nb = json.loads(out.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "n_steps=20000 device=cuda" in text
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1


def test_values_are_typed_by_the_parser_the_experiments_use():
    from smlib import _cli
    from smlib.experiments import __main__ as experiments_cli

    assert rerun.parse_value is _cli.parse_value is experiments_cli.parse_value  # one parser for both commands
    v = _cli.parse_value
    assert v("3") == 3 and v("0.1") == 0.1 and v("true") is True and v("True") is True and v("cuda") == "cuda"
    assert v("null") is None and v('"3"') == "3" and v("[1, 2.5]") == [1, 2.5] and v("['a', 'b']") == ["a", "b"]
    assert v('{"a": 1}') == {"a": 1} and v("1_000") == 1000 and v("-2e-3") == -0.002
    for bad in ["NaN", "nan", "Infinity", "-inf", "1e999", "[1, NaN]", '{"a": Infinity}']:
        with pytest.raises(ValueError, match="-p x .* not a finite number"):
            v(bad, f"-p x {bad}")
    with pytest.raises(ValueError, match="starts like a list"):
        v("[a, b")


def test_a_non_finite_parameter_is_refused_with_its_name(chapter, tmp_path, capsys):
    assert rerun.main([str(chapter), "-p", "n_steps", "inf", "-o", str(tmp_path / "o.ipynb")]) == 2
    assert "-p n_steps inf: inf is not a finite number" in capsys.readouterr().err
    assert not (tmp_path / "o.ipynb").exists()


@needs_book
def test_values_are_checked_against_the_parameters_cell(chapter, tmp_path):
    # papermill's -p gives a float for 1e-4; a string or a float where an int stands is an error
    assert rerun.parse_value("1e-4") == 1e-4 and rerun.parse_value("None") is None
    with pytest.raises(ValueError, match=r"parameter 'n_steps' .* is a int .*got 2.5"):
        rerun.check_types(chapter, {"n_steps": 2.5})
    with pytest.raises(ValueError, match=r"parameter 'n_steps' .*got 'abc'"):
        rerun.check_types(chapter, {"n_steps": "abc"})
    with pytest.raises(ValueError, match=r"parameter 'device' .* is a str"):
        rerun.check_types(chapter, {"device": 3})
    rerun.check_types(chapter, {"n_steps": 7, "device": "cuda"})
    assert rerun.main([str(chapter), "-p", "n_steps", "2.5", "-o", str(tmp_path / "o.ipynb")]) == 2


@needs_book
def test_list_of_a_missing_chapter_is_a_clear_error(tmp_path, capsys):
    assert rerun.main([str(tmp_path / "nope.md"), "--list"]) == 2
    assert "no chapter at" in capsys.readouterr().err
