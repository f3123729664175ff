"""Chapters are collected by the nbval plugin in tests/nbval_myst.py (on pytest's pythonpath)."""
from nbval_myst import (  # noqa: F401  (pytest hooks, active for the chapters only)
    pytest_collect_file,
    pytest_runtest_makereport,
    pytest_runtest_teardown,
)
