"""pytest plugin: let nbval execute the book's MyST-markdown chapters directly.

nbval collects only ``.ipynb`` files; the chapters are jupytext MyST ``.md`` files and no
notebook is committed. With ``--nbval-lax``, every ``chapters/*.md`` passed to pytest is read by
jupytext and handed to nbval's own collector, so each code cell becomes a test item run in one
kernel, in the chapter's folder, exactly as nbval runs a notebook. A failing cell (an ``assert``
included) fails its item.

With ``$SMLIB_EXECUTED_DIR`` set (``make test`` does), a chapter whose every cell passed is also
written there as an executed notebook, so that ``make book`` (``book/prime_cache.py``) renders
these outputs instead of executing the chapter a second time. The folder is named by a key of
everything the outputs depend on besides the code (smlib, results/, installed packages), and the
book's cache matches a notebook by its code cells, so a stale output cannot be used.

Loaded by ``chapters/conftest.py``, i.e. only when chapters are collected: ``pytest tests`` needs
neither jupytext nor nbval.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from unittest import mock

import jupytext
import nbformat
import nbval.plugin as nbval_plugin
import pytest


class MystNotebook(nbval_plugin.IPyNbFile):
    """An nbval notebook whose cells come from a jupytext MyST markdown file."""

    def collect(self):
        nb = jupytext.read(self.path)
        if not any(c.cell_type == "code" for c in nb.cells):
            raise ValueError(f"{self.path} has no code cells: is it a MyST notebook with a jupytext header?")
        self.smlib_nb, self.smlib_passed = nb, {}
        # nbval reads the file with nbformat.read; hand it the converted notebook instead.
        with mock.patch.object(nbval_plugin.nbformat, "read", lambda *a, **k: nb):
            self.smlib_items = list(super().collect())
        yield from self.smlib_items


def _is_chapter(file_path) -> bool:
    return file_path.suffix == ".md" and file_path.parent.name == "chapters"


def pytest_collect_file(file_path, parent):
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and _is_chapter(file_path):
        return MystNotebook.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if isinstance(item.parent, MystNotebook) and (report.when == "call" or not report.passed):
        item.parent.smlib_passed[item.nodeid] = item.parent.smlib_passed.get(item.nodeid, True) and report.passed


def pytest_runtest_teardown(item, nextitem):
    nb_file = item.parent
    if not isinstance(nb_file, MystNotebook) or (nextitem is not None and nextitem.parent is nb_file):
        return
    folder = os.environ.get("SMLIB_EXECUTED_DIR")
    if folder:
        write_executed(nb_file, Path(folder))


def write_executed(nb_file: MystNotebook, folder: Path) -> Path | None:
    """Write the chapter with the outputs nbval collected, if every one of its cells ran and passed."""
    items = nb_file.smlib_items
    if not items or len(nb_file.smlib_passed) != len(items) or not all(nb_file.smlib_passed.values()):
        return None
    nb = nb_file.smlib_nb
    for count, item in enumerate(items, start=1):
        if item.test_outputs is None:  # skipped by an nbval marker: no outputs to offer
            return None
        item.cell.outputs = [nbformat.from_dict(o) for o in item.test_outputs]
        item.cell.execution_count = count
        for out in item.cell.outputs:
            if out.output_type == "execute_result":
                out.execution_count = count
    source = Path(nb_file.path)
    nb.metadata["smlib_executed"] = {"source": f"chapters/{source.name}",
                                     "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{source.stem}.ipynb"
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, target)
    return target
