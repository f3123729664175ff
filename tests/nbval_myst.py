"""pytest plugin: let nbval execute the book's MyST-markdown chapters directly.

nbval collects only ``.ipynb`` files; the chapters are jupytext MyST ``.md`` files and no
notebook is committed. With ``--nbval-lax``, every ``chapters/*.md`` passed to pytest is read by
jupytext and handed to nbval's own collector, so each code cell becomes a test item run in one
kernel, in the chapter's folder, exactly as nbval runs a notebook. A failing cell (an ``assert``
included) fails its item.
"""
from __future__ import annotations

from unittest import mock

import jupytext
import nbval.plugin as nbval_plugin


class MystNotebook(nbval_plugin.IPyNbFile):
    """An nbval notebook whose cells come from a jupytext MyST markdown file."""

    def collect(self):
        nb = jupytext.read(self.path)
        if not any(c.cell_type == "code" for c in nb.cells):
            raise ValueError(f"{self.path} has no code cells: is it a MyST notebook with a jupytext header?")
        # nbval reads the file with nbformat.read; hand it the converted notebook instead.
        with mock.patch.object(nbval_plugin.nbformat, "read", lambda *a, **k: nb):
            yield from super().collect()


def _is_chapter(file_path) -> bool:
    return file_path.suffix == ".md" and file_path.parent.name == "chapters"


def pytest_collect_file(file_path, parent):
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and _is_chapter(file_path):
        return MystNotebook.from_parent(parent, path=file_path)
    return None
