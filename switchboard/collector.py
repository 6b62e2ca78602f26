"""The cyclic garbage collector, set for a server whose per-message objects die young and whose
connections live long.

A message's objects (the decoded send, its future, the row, the stored result) are freed by
reference counting, never by the collector. But CPython collects its youngest generation every
700 net allocations, so at saturation the ~10,000 objects of the messages in flight (a commit
of up to 1,024 of them waits in the writer) are scanned again and again, survive, are promoted,
and set off full collections of the whole heap: a quarter of the server's CPU at saturation,
measured (bench/README.md). So, once the server is up, what exists then (modules, protobuf
descriptors, configuration, the gateway: never garbage) is frozen out of every scan, and a
young collection waits for YOUNG_COLLECTION net allocations.

Connections made later are long-lived too, and a full collection walks every object of every
one of them each time the heap has grown by a quarter: ~200 ms at 10,000 connections, one
message's whole latency in a large group. So what survives a full collection is frozen as
well, and the next full collection walks only what came since. Frozen objects are still freed
by reference counting; only a reference cycle among them outlives its last use, so once the
frozen objects have doubled since the last complete collection they are all unfrozen and the
next full collection walks everything again (then freezes its survivors): cyclic garbage is
bounded by the live heap, and complete collections come each time the heap doubles instead of
each time it grows by a quarter.
"""
from __future__ import annotations

import gc

YOUNG_COLLECTION = 10_000  # net allocations of container objects between young collections
COMPLETE_AFTER_GROWTH = 2  # frozen objects grown this many times since the last complete pass

OLDEST = 2


class _SurvivorFreezer:
    """The gc callback: after each full collection, freeze its survivors, or unfreeze all once
    they have grown COMPLETE_AFTER_GROWTH-fold since the last complete collection."""

    def __init__(self) -> None:
        self.frozen_after_complete = gc.get_freeze_count()
        self.complete_due = False

    def __call__(self, phase: str, info: dict) -> None:
        if phase != "stop" or info["generation"] != OLDEST:
            return
        gc.freeze()
        if self.complete_due:  # this one walked everything: its survivors are the new base
            self.complete_due = False
            self.frozen_after_complete = gc.get_freeze_count()
        elif gc.get_freeze_count() >= COMPLETE_AFTER_GROWTH * max(1, self.frozen_after_complete):
            gc.unfreeze()  # the next full collection walks everything
            self.complete_due = True


_freezer: _SurvivorFreezer | None = None


def settle() -> None:
    """Call once the server serves: collect what start-up left, freeze the rest, widen the
    young generation, and freeze the survivors of each full collection from now on."""
    global _freezer
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, older, oldest)
    if _freezer is None:
        _freezer = _SurvivorFreezer()
        gc.callbacks.append(_freezer)

