"""environment.yml (conda) and pyproject.toml (pip) must list the same packages and ranges."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip", "nodejs"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*(#.*)?$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += extra
    pairs = (_split(r) for r in reqs)
    return {name: spec for name, spec in pairs if name != meta["name"]}  # smlib[plot,data]: an extra of its own


def _conda() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            out.update(_split(r) for r in dep["pip"])
        else:
            name, spec = _split(dep)
            if name not in CONDA_ONLY:
                out[CONDA_TO_PYPI.get(name, name)] = spec
    return out


def test_environment_yml_matches_pyproject():
    pip, conda = _pyproject(), _conda()
    assert sorted(set(pip) - set(conda)) == [], "in pyproject.toml only"
    assert sorted(set(conda) - set(pip)) == [], "in environment.yml only"
    differ = {k: (pip[k], conda[k]) for k in pip if pip[k] != conda[k]}
    assert differ == {}, f"version ranges differ (pyproject, environment.yml): {differ}"


def test_patched_packages_have_upper_bounds():
    # Jupyter Book 2 reads another configuration and would build nothing from ours; book/build.py,
    # book/prime_cache.py and tests/nbval_myst.py use internals of these, checked per minor release.
    pip = _pyproject()
    assert pip["jupyter-book"].endswith("<1.1")
    for name in ("myst-nb", "jupyter-cache", "sphinx-proof", "sphinx-multitoc-numbering", "nbval"):
        assert "<" in pip[name], f"{name} has no upper bound"


def test_core_install_is_the_training_library_only():
    # `pip install .` gives torch, numpy, scipy (and tqdm's progress bars); the rest are extras.
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(_split(r)[0] for r in meta["dependencies"]) == ["numpy", "scipy", "torch", "tqdm"]


def test_environment_sync_check_can_fail(tmp_path, monkeypatch):
    # The check above must notice a drifted range: feed it a modified environment.yml.
    text = (ROOT / "environment.yml").read_text().replace("sympy>=1.12", "sympy>=1.0")
    fake = tmp_path / "environment.yml"
    fake.write_text(text)
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    pip, conda = _pyproject(), _conda()
    assert pip["sympy"] != conda["sympy"]
