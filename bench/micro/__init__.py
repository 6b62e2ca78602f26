"""Micro benchmarks (pytest-benchmark) of the per-message hot paths: `pytest bench/micro
--benchmark-only`. Outside the root testpaths, so the default test run never collects them."""
