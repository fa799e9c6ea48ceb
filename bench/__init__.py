"""Benchmarks against the real stack.

Each reports ratios against a baseline measured in the same run (docs/benchmarks.md).
"""
