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

Connections made later are long-lived too: left to CPython, each full collection walks every
object of every one of them (~200 ms at 10,000 connections: one message's whole latency in a
large group, wherever it falls). So what survives a middle or full collection (what CPython
would promote to the oldest generation) is frozen as well, and a full collection walks only
what came since. Frozen objects are still freed by reference counting; only a reference cycle
among them outlives its last use (a closed connection leaves none: docs/architecture.md,
"Timers"). So once the frozen objects have doubled since the last complete collection, one is
made (unfreeze, collect, freeze) from the event loop within COMPLETE_CHECK_INTERVAL: in the
connect bursts that grow the heap rather than at the next full collection, and cyclic garbage
stays bounded by the live heap.
"""
from __future__ import annotations

import asyncio
import gc

YOUNG_COLLECTION = 10_000  # net allocations of container objects between young collections
COMPLETE_AFTER_GROWTH = 2  # frozen objects grown this many times since the last complete pass
COMPLETE_CHECK_INTERVAL = 1.0  # s between the event loop's looks at whether one is due

YOUNGEST = 0


class _SurvivorFreezer:
    """The gc callback: freeze the survivors of each middle and full collection, and note when
    the frozen objects have grown COMPLETE_AFTER_GROWTH-fold since the last complete one."""

    def __init__(self) -> None:
        self.frozen_after_complete = gc.get_freeze_count()
        self.complete_due = False

    def __call__(self, phase: str, info: dict) -> None:
        if phase != "stop" or info["generation"] == YOUNGEST:
            return
        gc.freeze()
        if gc.get_freeze_count() >= COMPLETE_AFTER_GROWTH * max(1, self.frozen_after_complete):
            self.complete_due = True

    def complete(self) -> None:
        """Walk everything once: frees the cycles among frozen objects, freezes the rest."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.frozen_after_complete = gc.get_freeze_count()
        self.complete_due = False


_freezer: _SurvivorFreezer | None = None


def settle() -> None:
    """Call once the server serves: collect what start-up left, freeze the rest, widen the
    young generation, and freeze the survivors of older collections from now on."""
    global _freezer
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, older, oldest)
    if _freezer is None:
        _freezer = _SurvivorFreezer()
        gc.callbacks.append(_freezer)


def complete_if_due() -> None:
    """The complete collection, when the frozen objects doubled since the last one."""
    if _freezer is not None and _freezer.complete_due:
        _freezer.complete()


def watch(loop: asyncio.AbstractEventLoop) -> None:
    """Look every COMPLETE_CHECK_INTERVAL whether a complete collection is due, for as long as
    the loop runs."""
    def look() -> None:
        complete_if_due()
        loop.call_later(COMPLETE_CHECK_INTERVAL, look)
    loop.call_later(COMPLETE_CHECK_INTERVAL, look)
