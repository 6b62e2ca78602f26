"""The collector's setting for a serving process (switchboard/collector.py): what exists at
start-up is frozen out of the scans, young collections are rarer, the survivors of each full
collection are frozen too, and reference cycles are still collected: those made since the last
full collection at once, those among frozen objects once the frozen heap has doubled."""
from __future__ import annotations

import gc
import weakref

import pytest

from switchboard import collector


@pytest.fixture
def restored():
    threshold = gc.get_threshold()
    callbacks = list(gc.callbacks)
    yield
    gc.callbacks[:] = callbacks
    collector._freezer = None
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


def cycle() -> Node:
    """Two nodes that refer to each other: once dropped, only the collector frees them."""
    a, b = Node(), Node()
    a.peer, b.peer = b, a
    return a


def test_settle_freezes_start_up_and_widens_the_young_generation(restored):
    older = gc.get_threshold()[1:]
    collector.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (collector.YOUNG_COLLECTION, *older)


def test_a_cycle_made_after_settle_is_still_collected(restored):
    collector.settle()
    gone = weakref.ref(cycle())
    assert gone() is not None  # only the collector frees a cycle
    gc.collect()
    assert gone() is None


def test_the_survivors_of_a_full_collection_are_frozen(restored):
    collector.settle()
    before = gc.get_freeze_count()
    kept = [Node() for _ in range(1000)]
    gc.collect()
    assert gc.get_freeze_count() >= before + len(kept)
    oldest = gc.get_objects(generation=2)  # what the next full collection walks
    assert not any(obj is kept[0] for obj in oldest)


def test_a_frozen_cycle_is_collected_once_the_frozen_heap_doubled(restored):
    collector.settle()
    held = cycle()
    gone = weakref.ref(held)
    gc.collect()  # survives (it is still referenced here) and is frozen
    del held
    gc.collect()
    assert gone() is not None  # frozen: a full collection no longer walks it
    # grow the frozen heap to twice what the last complete collection left
    growth = collector.COMPLETE_AFTER_GROWTH * gc.get_freeze_count()
    kept = [[] for _ in range(growth)]
    gc.collect()  # freezes the growth, sees the doubling, unfreezes everything
    assert gc.get_freeze_count() == 0
    gc.collect()  # complete: walks everything, frees the cycle, freezes the survivors
    assert gone() is None
    assert gc.get_freeze_count() >= len(kept)


def test_frozen_objects_are_still_freed_by_reference_counting(restored):
    collector.settle()
    node = Node()
    gone = weakref.ref(node)
    gc.collect()
    del node
    assert gone() is None
