"""Benchmark scripts (run from a checkout; see each module's docstring)."""
