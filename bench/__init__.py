"""Switchboard's load generator and benchmarks: `python -m bench <scenario>` (see README.md)."""
