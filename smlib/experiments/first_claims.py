"""The first records' claims, frozen and mapped by hand to the stable claim ids of today's claim code.

The first paper-scale records (made before claims had ids) are replaced when a re-recording lands in
``results/<name>/results.json``. So that a chapter can still say what changed since them, their
claims are kept in ``results/<name>/first_record_claims.json``: each row's text, rule, numbers and
verdict as recorded, with the id of the claim of today's code that replaces it (or ``None`` and the
reason), the claims of today's code that have no predecessor, the first record's provenance and the
SHA-256 of the ``results.json`` they were taken from. :func:`records.save <smlib.experiments.records.save>`
writes only ``results.json`` and figures, so a new record leaves this file in place.

Re-running ``python -m smlib.experiments.first_claims`` rewrites the files from the first records
while those are still in place (their SHA-256 is checked against :data:`FIRST_SHA256`) and leaves a
frozen file alone once a new record has replaced its source.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
from pathlib import Path

from smlib.experiments import records
from smlib.experiments import verdicts as V

__all__ = ["NAMES", "FIRST_SHA256", "SUCCESSOR", "NEW_CLAIMS", "claim_ids", "sha256", "frozen", "freeze", "load", "first_wording"]

#: experiment → (module whose ``claims(record)`` judges it, source files that hold its ``claim("<id>", ...)`` calls)
NAMES = {
    "swersky2011": ("swersky2011", ("swersky2011_claims.py",)),
    "swersky2011_features": ("swersky2011_features", ("swersky2011_features.py",)),
    "deen_2d": ("deen_2d", ("deen_2d_claims.py",)),
    "deen_mnist": ("deen_mnist", ("deen_mnist_claims.py", "deen_images_rules.py")),
    "deen_patches": ("deen_patches", ("deen_patches.py", "deen_images_rules.py")),
}

#: SHA-256 of each first record's results.json: the files this mapping was written against
FIRST_SHA256 = {
    "swersky2011": "4e520ec63f3d608562a4ead548b888e7f145fbae97b021ebc6fdfc42da57607c",
    "swersky2011_features": "cbb7c3bcfbb143918650f3e253164b76fe76b6db06f169b5d42d9bae0375d8de",
    "deen_2d": "138b3fa89cbb78ae2242123d3707f0bde103a1bee7e00b2e46f549fdfbed4020",
    "deen_mnist": "4cbf8f5cf927af23516ef6096e714973eb97a2219910fc4837e0f9b641ea3214",
    "deen_patches": "73685f8fd7b1d888ba35063f33ab5c7a4de00ebf41673430e5eb4fb9f226271e",
}

_FIG1IJ = "CD with one Langevin step shows severe mode collapse on both data sets (Fig. 1 i–j)"

#: experiment → {first record's wording: (id of the claim that replaces it, or None, and why)} — by hand
SUCCESSOR = {
    "swersky2011": {
        "SM training goes mostly into maximising the curvature (Fig. 1a)": ("sm-curvature", ""),
        "SMD puts less emphasis on changing the curvature than SM (Fig. 1b)": ("smd-less-curvature", ""),
        "AE leaves the curvature almost invariant (Fig. 1c)": ("ae-curvature-invariant", ""),
        "For most estimators the free-energy gap grows during training (Fig. 1d)": ("gap-grows", ""),
        "SM raises the gap, SMD lowers it (Fig. 1d)": ("sm-raises-smd-lowers-gap", ""),
        "SM reaches the lowest denoising error, with both denoisers (Fig. 1e–f)": ("sm-lowest-denoising", ""),
        "…but SM quickly overfits (Fig. 1e–f)": ("sm-overfits", ""),
        "PCD and FPCD do not match SM's minimum and overfit, to a lesser extent (Fig. 1e–f)":
            ("pcd-fpcd-lesser-overfit", ""),
        "CD and SMD do not appear to overfit (Fig. 1e–f)": ("cd-smd-no-overfit", ""),
        "SMD's minimum error is significantly higher than SM's (Fig. 1e–f)": ("smd-higher-than-sm", ""),
        "All methods except AE learn localised Gabor-like covariance filters (Fig. 2b)": ("gabor-covariance", ""),
        "Only PCD and FPCD show structure in the mean filters (Fig. 2a)": ("mean-filter-structure", ""),
    },
    "swersky2011_features": {
        "AE's features classify significantly worse than all others (Table 1)": ("ae-worse", ""),
        "CD, PCD, FPCD, SM, SMD do not differ significantly (Table 1)": ("others-equivalent", ""),
    },
    "deen_2d": {
        "DEEN learns the energy of the spiral and the mixture, at the end of training (Fig. 1 a–d)":
            ("deen-energy-end", ""),
        "DEEN learns the energy of the spiral and the mixture, after 1000 iterations (Fig. 1 caption)":
            ("deen-energy-paper-iterations", ""),
        "DEEN has well-behaved training curves (Sec. 4)": ("deen-training-curves", ""),
        "DEEN's score has zero curl: it is computed from the energy (Sec. 4)": ("deen-zero-curl", ""),
        "A score network trained with the same objective has curl far from zero (Fig. 1 g–h)": ("scorenet-curl", ""),
        "…and learns a worse score than DEEN (\"DSM's failure\", Fig. 1 g–h)": ("scorenet-worse-score", ""),
        # the first record's unit "CD" was plain SGD (batch mean); its labelled Adam variant is the paper's reading now
        _FIG1IJ: ("cd-mode-collapse-sgd", "the first record's plain-SGD run (unit 'CD'), now the labelled SGD variant"),
        _FIG1IJ + " — labelled variant: adam, lr 0.001, not the paper's update":
            ("cd-mode-collapse", "the first record's Adam variant, now the paper's reading of eq. 27"),
    },
    "deen_mnist": {
        "σ chosen by the held-out Parzen likelihood on MNIST is 0.14 (Sec. 4)": ("mnist-sigma-star", ""),
        "σ decreases as the data set grows (Sec. 3)": ("sigma-falls-with-n", ""),
        "DEEN denoises MNIST in a single step at σ′ ≠ σ (Fig. 2 b–c)": ("mnist-single-step", ""),
        "…removing most of the noise, as the clean digits of Fig. 2 b–c suggest":
            ("mnist-most-noise", "reworded: no longer refers to the paper's clean digits, which the book cannot show"),
        "(ours) the plug-in step t = σ′² is worse than t = σ² when σ′ > σ (prop-ch9b-mismatch)":
            ("mnist-plugin-step", ""),
        "The running L_DEEN decreases and settles (Fig. 2a)": ("mnist-loss-settles", ""),
        "(ours) DEEN + one Gaussian expert goes below the paper network's rank bound": ("mnist-expert-below-bound", ""),
    },
    "deen_patches": {
        "DEEN's single step denoises natural patches better than a median + Gaussian filter (Fig. 3)":
            ("patches-beats-filter", ""),
        "(ours) DEEN + one Gaussian expert beats the tuned median + Gaussian filter": ("patches-expert-beats-filter", ""),
    },
}

#: experiment → {id of today's code with no claim in the first record: why} — by hand
NEW_CLAIMS = {
    "swersky2011": {"sm-lowest-one-step": "added after the first record (eq. 17's one-step reconstruction, "
                                          "judged only where the record holds it; the first record does not)"},
}


def _check(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"no first record is kept for {name!r}; known: {', '.join(NAMES)}")


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _literal_ids(path: Path) -> set[str]:
    """Ids written as string literals in ``path``: the first argument of a call to ``claim``/``V.claim``/
    ``_claim``/``_rule_claim``, and the first element (when it reads as an id) of a literal tuple of a
    ``for`` loop over ids."""
    tree, out = ast.parse(path.read_text()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if fname.endswith("claim") and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                out.add(node.args[0].value)
        if isinstance(node, ast.For) and isinstance(node.iter, (ast.Tuple, ast.List)):
            for elt in node.iter.elts:
                if isinstance(elt, ast.Tuple) and elt.elts and isinstance(elt.elts[0], ast.Constant) \
                        and isinstance(elt.elts[0].value, str) and V._ID.match(elt.elts[0].value):
                    out.add(elt.elts[0].value)
    return out


def claim_ids(name: str, record: dict | None = None) -> set[str]:
    """The claim ids of today's code for experiment ``name``: the literal ids of its claim modules and the
    ids its ``claims`` function gives on ``record`` (the data of a record; default: the one in
    ``results/<name>/results.json``) — the latter catches ids built at run time (``cd_reading``)."""
    _check(name)
    module, files = NAMES[name]
    here = Path(__file__).parent
    ids = set().union(*(_literal_ids(here / f) for f in files))
    if record is None:
        rec = records.load(name)
        record = rec["data"] if rec is not None else None
    if record is not None:
        ids |= {c["id"] for c in importlib.import_module(f"smlib.experiments.{module}").claims(record)}
    return ids


def _path(name: str) -> Path:
    return records.results_dir() / name / "first_record_claims.json"


def _is_first(name: str) -> bool:
    path = records.results_dir() / name / "results.json"
    return path.is_file() and sha256(path) == FIRST_SHA256[name]


def frozen(name: str) -> dict:
    """The first record's claims and their mapping, built from ``results/<name>/results.json`` — which must
    still be the first record (its SHA-256 is :data:`FIRST_SHA256`)."""
    _check(name)
    path = records.results_dir() / name / "results.json"
    if not _is_first(name):
        raise ValueError(f"{path} is not the first record of {name!r} (SHA-256 {sha256(path) if path.is_file() else 'absent'}, "
                         f"expected {FIRST_SHA256[name]}); the first record's claims are frozen in {_path(name).name}")
    doc = records.load(name)
    mapping, first = SUCCESSOR[name], doc["data"]["summary"]["claims"]
    unknown = [c["claim"] for c in first if c["claim"] not in mapping]
    if unknown:
        raise ValueError(f"first-record claims of {name!r} without a mapping in SUCCESSOR: {unknown}")
    ids = claim_ids(name, doc["data"])
    bad = sorted({i for i, _ in mapping.values() if i is not None and i not in ids})
    if bad:
        raise ValueError(f"SUCCESSOR maps claims of {name!r} to ids that today's claim code does not have: {bad}")
    rows = []
    for c in first:
        succ, why = mapping[c["claim"]]
        rows.append({**{k: c[k] for k in ("claim", "rule", "numbers", "verdict") if k in c},
                     **({"decided_by": c["decided_by"]} if "decided_by" in c else {}),
                     "successor": succ, "why": why or ("no successor" if succ is None else "")})
    mapped = {r["successor"] for r in rows}
    new = sorted(ids - mapped)
    missing = [i for i in new if i not in NEW_CLAIMS.get(name, {})]
    if missing:
        raise ValueError(f"claims of today's code for {name!r} with no predecessor and no reason in NEW_CLAIMS: {missing}")
    p = doc["provenance"]
    return {"name": name, "taken_from": f"results/{name}/results.json", "sha256": FIRST_SHA256[name],
            "provenance": {k: p.get(k) for k in ("commit", "commit_dirty", "date")},
            "claims": rows, "new_without_predecessor": {i: NEW_CLAIMS[name][i] for i in new}}


def freeze(name: str) -> str:
    """Write ``results/<name>/first_record_claims.json`` from the first record; once a new record has replaced
    it, leave the frozen file alone. Returns what was done."""
    path = _path(name)
    if not _is_first(name):
        if path.is_file():
            return f"{name}: results.json is no longer the first record; {path.name} kept as it is"
        raise ValueError(f"{name}: results.json is not the first record and no {path.name} was frozen from it")
    records.write_json(path, frozen(name))
    return f"{name}: wrote {path.name}"


def load(name: str) -> dict:
    """The frozen first record of ``name`` (``results/<name>/first_record_claims.json``)."""
    _check(name)
    return records.read_json(_path(name), what=f"first record's claims of {name!r}",
                             required=("sha256", "provenance", "claims", "new_without_predecessor"),
                             hint="rebuild it with python -m smlib.experiments.first_claims while the first record is in place")


def first_wording(*names: str) -> dict:
    """id → the first record's wording of the claim it replaced, over the frozen files of ``names``
    (for matching the first records' claims, which have no ids, to today's by id)."""
    return {c["successor"]: c["claim"] for n in names for c in load(n)["claims"] if c.get("successor")}


if __name__ == "__main__":
    for n in NAMES:
        print(freeze(n))
