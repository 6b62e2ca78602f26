"""The scenarios of `python -m bench`, one module each.

A scenario module has NAME, SIZE_HELP, DEFAULT_SIZES, PEERS_DEFAULT, `run(ctx, size) -> dict`
(main side: starts targets, drives the workers, returns the figures of one size), worker-side
coroutines that `run` calls through the pool, and the views of its results: `rows(doc)` for the
summary table, `summary(doc)` for the lines under it, `plots(doc, run_dir)` for the PNGs.
"""
from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("hold", "chat", "fanout", "storm", "cluster", "media")


def load(name: str) -> ModuleType:
    if name not in NAMES:
        raise KeyError(name)
    return importlib.import_module(f"{__name__}.{name}")
