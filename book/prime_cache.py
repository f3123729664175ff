"""Offer the chapters that ``make test`` executed under nbval to the book's execution cache.

``python book/prime_cache.py EXECUTED_DIR CACHE_DIR``: each ``EXECUTED_DIR/<chapter>.ipynb``
(written by tests/nbval_myst.py) is matched to ``chapters/<chapter>.md`` as myst-nb reads it; if the
code cells are identical, the outputs are stored in the jupyter-cache at ``CACHE_DIR`` under the
hash myst-nb will look up, so ``jb build`` in cache mode renders them without executing. Anything
that does not match exactly is skipped (and then executed by the build as usual). The Makefile
names EXECUTED_DIR by a key of smlib, results/ and the installed packages, so outputs computed
with other code are never offered.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import yaml
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from myst_nb.core.read import read_myst_markdown_notebook
from myst_parser.config.main import MdParserConfig


def prime(executed_dir: Path, cache_dir: Path, root: Path = Path(".")) -> list[str]:
    cache = get_cache(str(cache_dir))
    # the book's own Markdown settings, so that cells are split exactly as the build splits them
    extensions = yaml.safe_load((root / "_config.yml").read_text())["parse"]["myst_enable_extensions"]
    config = MdParserConfig(enable_extensions=set(extensions))
    primed = []
    for path in sorted(executed_dir.glob("*.ipynb")):
        executed = nbformat.read(path, as_version=4)
        source = root / executed.metadata.get("smlib_executed", {}).get("source", "")
        if not source.is_file():
            print(f"prime_cache: skip {path.name}: no chapter {source}")
            continue
        nb = read_myst_markdown_notebook(source.read_text(), config=config, add_source_map=True,
                                         path=str(source))
        mine = [c for c in nb.cells if c.cell_type == "code"]
        theirs = [c for c in executed.cells if c.cell_type == "code"]
        if [c.source for c in mine] != [c.source for c in theirs]:
            print(f"prime_cache: skip {path.name}: its code differs from {source} (edited since make test)")
            continue
        for cell, done in zip(mine, theirs, strict=True):
            cell.outputs, cell.execution_count = done.outputs, done.execution_count
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(source.resolve()), data={"source": "nbval"}),
                                    check_validity=False, overwrite=True)
        primed.append(source.name)
    return primed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python book/prime_cache.py EXECUTED_DIR CACHE_DIR")
    done = prime(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"prime_cache: {len(done)} chapter(s) executed by make test offered to the book: {', '.join(done)}")
