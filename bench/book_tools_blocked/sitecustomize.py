"""Imported at start-up when this folder is on PYTHONPATH (the device check's dry run): makes the book's
tool chain unimportable, as on the GPU machine, so that nothing the device run needs can depend on it.

With ``SMLIB_BLOCK_ABSENT=1`` (``--block-absent``) also the other packages that the GPU machine's list
lacks (its python3 has torch, numpy, scipy, scikit-learn, scikit-image, sympy, matplotlib, pytest and
their dependencies): tqdm, PyYAML, PyWavelets — the same environment as a virtual environment built
from that list alone.
"""
import importlib.machinery
import os
import sys

BOOK_TOOLS = ("papermill", "jupytext", "IPython", "ipykernel", "nbval", "nbformat")
ABSENT = ("tqdm", "yaml", "pywt")


class _Absent:
    """Loader whose import fails as an absent package's would."""

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked: not available on the GPU machine)",
                                  name=spec.name)

    def exec_module(self, module):  # never reached
        raise ModuleNotFoundError(module.__name__)


class _BlockBookTools:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        # A spec with no origin and a failing loader: `import name` raises ModuleNotFoundError, while a
        # probe by importlib.util.find_spec (torch._dynamo probes optional packages so) gets no file to
        # read, as with a package that is absent; raising here would break such probes instead.
        if name.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, _Absent(), origin=None)
        return None


sys.meta_path.insert(0, _BlockBookTools(BOOK_TOOLS + (ABSENT if os.environ.get("SMLIB_BLOCK_ABSENT") == "1" else ())))
