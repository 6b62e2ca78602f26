"""The cyclic garbage collector, set for a server whose per-message objects die young.

A message's objects (the decoded send, its future, the row, the stored result) are freed by
reference counting, never by the collector. But CPython collects its youngest generation every
700 net allocations, so at saturation the ~10,000 objects of the messages in flight (a commit
of up to 1,024 of them waits in the writer) are scanned again and again, survive, are promoted,
and set off full collections of the whole heap: a quarter of the server's CPU at saturation,
measured (bench/README.md). So, once the server is up, what exists then (modules, protobuf
descriptors, configuration, the gateway: never garbage) is frozen out of every scan, and a
young collection waits for YOUNG_COLLECTION net allocations. Reference cycles are still
collected, in rarer rounds; the older generations keep CPython's thresholds.
"""
from __future__ import annotations

import gc

YOUNG_COLLECTION = 10_000  # net allocations of container objects between young collections


def settle() -> None:
    """Call once the server serves: collect what start-up left, freeze the rest, widen the
    young generation."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, older, oldest)
