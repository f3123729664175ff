"""Imported at start-up when this folder is on PYTHONPATH (the device check's dry run): makes the book's
tool chain unimportable, as on the GPU machine, so that nothing the device run needs can depend on it.

With ``SMLIB_BLOCK_ABSENT=1`` (``--block-absent``) also the other packages that the GPU machine's list
lacks (its python3 has torch, numpy, scipy, scikit-learn, scikit-image, sympy, matplotlib, pytest and
their dependencies): tqdm, PyYAML, PyWavelets — the same environment as a virtual environment built
from that list alone.
"""
import os
import sys

BOOK_TOOLS = ("papermill", "jupytext", "IPython", "ipykernel", "nbval", "nbformat")
ABSENT = ("tqdm", "yaml", "pywt")


class _BlockBookTools:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ImportError(f"{name} is not available here (as on the GPU machine)")
        return None


sys.meta_path.insert(0, _BlockBookTools(BOOK_TOOLS + (ABSENT if os.environ.get("SMLIB_BLOCK_ABSENT") == "1" else ())))
