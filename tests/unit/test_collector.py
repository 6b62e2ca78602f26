"""The collector's setting for a serving process (switchboard/collector.py): what exists at
start-up is frozen out of the scans, young collections are rarer, the survivors of older
collections are frozen too, and reference cycles are still collected: those made since the
last collection at once, those among frozen objects by the complete collection made once the
frozen heap has doubled."""
from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from switchboard import collector
from tests.support.waiting import wait_for


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


def test_the_survivors_of_a_middle_or_full_collection_are_frozen(restored):
    collector.settle()
    kept = [Node() for _ in range(1000)]
    assert any(obj is kept[0] for obj in gc.get_objects(generation=0))
    gc.collect(1)
    # tracked, yet in no generation a collection walks: frozen (a count of the frozen objects
    # would not do: objects frozen earlier may die by reference counting meanwhile)
    assert gc.is_tracked(kept[0])
    walked = [gc.get_objects(generation=g) for g in range(3)]
    assert not any(obj is kept[0] or obj is kept[-1] for objects in walked for obj in objects)


def test_a_frozen_cycle_is_collected_once_the_frozen_heap_doubled(restored):
    collector.settle()
    held = cycle()
    gone = weakref.ref(held)
    gc.collect()  # survives (it is still referenced here) and is frozen
    del held
    gc.collect()
    assert gone() is not None  # frozen: a full collection no longer walks it
    collector.complete_if_due()
    assert gone() is not None  # not due: the frozen heap has not grown
    # grow the frozen heap to twice what the last complete collection left
    kept = [[] for _ in range(collector.COMPLETE_AFTER_GROWTH * gc.get_freeze_count())]
    gc.collect(1)  # freezes the growth and finds the frozen heap doubled
    assert gone() is not None
    collector.complete_if_due()  # walks everything, frees the cycle, freezes the survivors
    assert gone() is None
    assert gc.get_freeze_count() >= len(kept)
    gc.collect()
    collector.complete_if_due()  # the survivors are the new base: not due again
    assert gc.get_freeze_count() >= len(kept)


async def test_the_event_loop_makes_the_complete_collection_when_due(restored):
    collector.settle()
    held = cycle()
    gone = weakref.ref(held)
    gc.collect()
    del held
    kept = [[] for _ in range(collector.COMPLETE_AFTER_GROWTH * gc.get_freeze_count())]
    gc.collect(1)
    collector.watch(asyncio.get_running_loop())
    await wait_for(lambda: gone() is None, timeout=10 * collector.COMPLETE_CHECK_INTERVAL)
    assert gc.get_freeze_count() >= len(kept)


def test_frozen_objects_are_still_freed_by_reference_counting(restored):
    collector.settle()
    node = Node()
    gone = weakref.ref(node)
    gc.collect()
    del node
    assert gone() is None
