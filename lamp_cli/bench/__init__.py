"""Benchmarks (`lamp bench ...`): measurements of speed and memory, not tests."""
