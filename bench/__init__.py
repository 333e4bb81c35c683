"""Benchmarks: ``python -m bench.<name>``; each starts its own servers and writes docs/bench-*."""
