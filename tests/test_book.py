"""The book's structure: every chapter is in the table of contents and is a well-formed MyST notebook."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

jupytext = pytest.importorskip("jupytext", reason="the book's structure tests need the [book] extra")

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc["parts"]:
        walk(part["chapters"])
    return files


def test_toc_lists_exactly_the_chapters():
    listed = {f for f in _toc_files() if f.startswith("chapters/")}
    present = {f"chapters/{p.stem}" for p in CHAPTERS}
    assert listed == present, f"toc only: {listed - present}; files only: {present - listed}"
    for f in _toc_files():
        assert (ROOT / f"{f}.md").exists(), f"_toc.yml names {f} but {f}.md does not exist"


def test_no_notebooks_committed_in_chapters():
    assert not list((ROOT / "chapters").glob("*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_a_myst_notebook(path):
    text = path.read_text()
    assert text.startswith("---\njupytext:"), "missing jupytext header"
    assert re.search(r"^\(ch-[a-z0-9-]+\)=\n# ", text, re.M), "missing (ch-...)= label above the title"
    nb = jupytext.read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) <= 1, "more than one cell tagged parameters"
    assert "{bibliography}" not in text, "only book/bibliography.md holds the bibliography"


def test_config_serves_mathjax_locally():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    path = cfg["sphinx"]["config"]["mathjax_path"]
    assert not path.startswith(("http:", "https:", "//")), "MathJax must be served locally"
    assert cfg["execute"]["allow_errors"] is False
    assert "timeout" in cfg["execute"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_parameter_is_seen_by_papermill(path):
    """papermill silently skips a parameters line it cannot parse; then `-p name` would be refused."""
    import ast

    from smlib.book.rerun import chapter_parameters

    nb = jupytext.read(path)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not tagged:
        pytest.skip("no parameters cell")
    assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
    assert set(chapter_parameters(path)) == assigned


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_round_trips_through_a_notebook(path):
    """What `make lab` does to a chapter: .md -> notebook (.ipynb JSON) -> .md in the configured format.

    Opening a chapter in JupyterLab and saving it must not rewrite the file; jupytext stamps its own
    version into the header, so that one value is compared as the installed version.
    """
    import nbformat

    fmt = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["jupytext"]["formats"]
    text = path.read_text()
    nb = nbformat.reads(nbformat.writes(jupytext.reads(text, fmt=fmt)), as_version=4)
    back = jupytext.writes(nb, fmt=fmt)
    expected = re.sub(r"jupytext_version: \S+", f"jupytext_version: {jupytext.__version__}", text)
    assert back == expected, "the chapter is not in jupytext's own form: run its writer over it"
