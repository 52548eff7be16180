"""Benchmarks: print figures and write bench/results/*.json. Never part of `make test`."""
