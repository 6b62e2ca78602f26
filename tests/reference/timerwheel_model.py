"""Reference twin of switchboard.core._native.timerwheel.TimerWheel, for tests only.

A heap of (due, sequence, item) has the wheel's exact contract with none of its slot
arithmetic, so the native wheel is checked against something obviously right.
"""
from __future__ import annotations

import heapq
import itertools
import math
from typing import Any


class TimerWheel:
    """Same constructor, methods and errors as the native wheel; tick and slots are only
    validated, since the contract does not depend on them."""

    def __init__(self, tick: float, slots: int = 512, now: float = 0.0) -> None:
        if not (tick > 0.0 and math.isfinite(tick)):
            raise ValueError(f"tick must be a finite number > 0, got {tick!r}")
        if slots < 2:
            raise ValueError(f"slots must be >= 2, got {slots!r}")
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        self._now = float(now)
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def schedule(self, item: Any, due: float) -> None:
        due = float(due)
        if not math.isfinite(due):
            raise ValueError(f"due must be finite, got {due!r}")
        heapq.heappush(self._heap, (due, next(self._seq), item))

    def advance(self, now: float) -> list[Any]:
        now = float(now)
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        if now < self._now:
            return []
        self._now = now
        fired = []
        while self._heap and self._heap[0][0] <= now:
            fired.append(heapq.heappop(self._heap)[2])
        return fired
