"""Reruns with papermill: injected parameters take effect; unknown names are an error."""
from __future__ import annotations

import json
import textwrap

import pytest

from smlib.book import rerun

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


def test_parameters_are_read_from_the_tagged_cell(chapter):
    assert rerun.chapter_parameters(chapter) == {"n_steps": "10", "device": '"cpu"'}


def test_unknown_parameter_is_an_error(chapter, tmp_path):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['n_step'\].*n_steps"):
        rerun.rerun(chapter, {"n_step": 5}, tmp_path / "out.ipynb")
    assert rerun.main([str(chapter), "-p", "n_step", "5", "-o", str(tmp_path / "o.ipynb")]) == 2


def test_rerun_injects_values(chapter, tmp_path):
    out = tmp_path / "out.ipynb"
    assert rerun.main([str(chapter), "-p", "n_steps", "20000", "-p", "device", "cuda",
                       "-o", str(out)]) == 0
    nb = json.loads(out.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "n_steps=20000 device=cuda" in text
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1


def test_values_are_typed_like_papermill():
    assert rerun._value("3") == 3 and rerun._value("0.1") == 0.1
    assert rerun._value("true") is True and rerun._value("cuda") == "cuda"


def test_values_are_checked_against_the_parameters_cell(chapter, tmp_path):
    # papermill's -p gives a float for 1e-4; a string or a float where an int stands is an error
    assert rerun._value("1e-4") == 1e-4 and rerun._value("None") is None and rerun._value("[1, 2]") == [1, 2]
    with pytest.raises(ValueError, match=r"parameter 'n_steps' .* is a int .*got 2.5"):
        rerun.check_types(chapter, {"n_steps": 2.5})
    with pytest.raises(ValueError, match=r"parameter 'n_steps' .*got 'abc'"):
        rerun.check_types(chapter, {"n_steps": "abc"})
    with pytest.raises(ValueError, match=r"parameter 'device' .* is a str"):
        rerun.check_types(chapter, {"device": 3})
    rerun.check_types(chapter, {"n_steps": 7, "device": "cuda"})
    assert rerun.main([str(chapter), "-p", "n_steps", "2.5", "-o", str(tmp_path / "o.ipynb")]) == 2


def test_list_of_a_missing_chapter_is_a_clear_error(tmp_path, capsys):
    assert rerun.main([str(tmp_path / "nope.md"), "--list"]) == 2
    assert "no chapter at" in capsys.readouterr().err
