"""Benchmarks of smlib: ``python -m bench`` (or ``make bench``) writes ``results/bench_<device>.json``."""
