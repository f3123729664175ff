"""Imported at start-up when this folder is on PYTHONPATH (the device check's dry run): makes the book's
tool chain unimportable, as on the GPU machine, so that nothing the device run needs can depend on it."""
import sys


class _BlockBookTools:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("papermill", "jupytext", "IPython", "ipykernel", "nbval", "nbformat"):
            raise ImportError(f"{name} is not available here (as on the GPU machine)")
        return None


sys.meta_path.insert(0, _BlockBookTools())
