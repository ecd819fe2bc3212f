"""Benchmarks of the serving path: `make bench` (speed) and `make bench-quality` (accuracy)."""
