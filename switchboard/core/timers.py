"""Deadlines for every connection on one shared timer wheel, ticked from the event loop.

A loop.call_later handle per connection costs a TimerHandle and a heap push on every re-arm; with
heartbeat, idle, pre-auth and retransmit deadlines for ~20k connections per process that is most
of the loop's timer work. Instead each connection schedules itself on one native TimerWheel
(lazily: entries are never cancelled, the owner re-checks its own deadline when fired) and a
TimerService advances the wheel once per tick.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from switchboard.core._native import native

TimerWheel = native("timerwheel").TimerWheel

__all__ = ["TimerService", "TimerTarget", "TimerWheel"]

log = logging.getLogger(__name__)


class TimerTarget(Protocol):
    def on_timer(self, now: float) -> None:
        """Called once per fired entry with the tick's time; re-check the own deadline here."""


class TimerService:
    """Drives one TimerWheel on an asyncio loop and calls `item.on_timer(now)` for fired entries.

    At most one loop.call_later handle is armed, one tick ahead, and only while the wheel has
    pending entries: an idle gateway keeps no timer in the loop. A failing on_timer is logged and
    the remaining items of the tick still fire. stop() only disarms; pending entries stay, so a
    later start() resumes them.
    """

    __slots__ = ("_tick", "_wheel", "_loop", "_handle", "_running", "now")

    def __init__(self, tick: float, slots: int = 512) -> None:
        self._tick = tick
        # Its clock is the loop's; the wheel handles the first jump from 0 in one revolution.
        self._wheel = TimerWheel(tick, slots, 0.0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._running = False
        # now(): the loop's clock, which every due passed to schedule() must use. Once started
        # it is the loop's own `time` (no Python frame: every frame a device sends reads it).
        self.now = _not_started

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._running:
            raise RuntimeError("TimerService already started")
        self._loop = loop
        self.now = loop.time
        self._running = True
        self._arm()

    def stop(self) -> None:
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def schedule(self, item: TimerTarget, due: float) -> None:
        """Call `item.on_timer(now)` on the first tick at or after `due` (absolute, loop clock)."""
        self._wheel.schedule(item, due)
        if self._handle is None:
            self._arm()

    def _arm(self) -> None:
        if self._running and self._handle is None and len(self._wheel):
            self._handle = self._loop.call_later(self._tick, self._on_tick)

    def _on_tick(self) -> None:
        self._handle = None
        now = self._loop.time()
        for item in self._wheel.advance(now):
            try:
                item.on_timer(now)
            except Exception:
                log.exception("on_timer failed for %r", item)
        self._arm()


def _not_started() -> float:
    raise RuntimeError("TimerService not started")
