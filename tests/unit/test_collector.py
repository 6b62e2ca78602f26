"""The collector's setting for a serving process (switchboard/collector.py): what exists at
start-up is frozen out of the scans, young collections are rarer, and reference cycles made
afterwards are still collected."""
from __future__ import annotations

import gc
import weakref

import pytest

from switchboard import collector


@pytest.fixture
def restored():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


def test_settle_freezes_start_up_and_widens_the_young_generation(restored):
    older = gc.get_threshold()[1:]
    collector.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (collector.YOUNG_COLLECTION, *older)


def test_a_cycle_made_after_settle_is_still_collected(restored):
    collector.settle()
    a, b = Node(), Node()
    a.peer, b.peer = b, a
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None  # only the collector frees a cycle
    gc.collect()
    assert gone() is None
