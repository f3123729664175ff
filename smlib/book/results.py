"""Recorded results, as the chapters and ``bench/`` have always imported them.

Records and their provenance belong to the experiments' layer, :mod:`smlib.experiments.records`;
this module re-exports them so that ``from smlib.book import results`` keeps working. New code
imports :mod:`smlib.experiments.records`.
"""
from __future__ import annotations

from smlib._io import atomic_write as atomic_write_bytes  # the name bench/ uses
from smlib.experiments.records import dumps, load, provenance, read_json, results_dir, save, write_json

__all__ = ["results_dir", "provenance", "save", "load", "dumps", "write_json", "read_json", "atomic_write_bytes"]
