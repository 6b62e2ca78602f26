"""Threads that run one event loop's blocking calls (the SQLite store's writer and readers).

Why not `run_in_executor`: every call through a ThreadPoolExecutor builds a concurrent Future, a
work item and an asyncio Future chained to it, takes the executor's and the future's locks, and
wakes the loop once per call through `call_soon_threadsafe`. The store's writer makes one call
per commit, so at a few thousand commits a second that hand-off was a fifth of the server's
CPU. Here a call is one asyncio Future and one put on a SimpleQueue (C, lock-free for the
caller); a finished call is appended to a deque, and the loop is woken through an eventfd only
when it is not already due to look: one wake-up takes every result finished by then.
"""
from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections import deque
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_STOP = None


class Lane:
    """`threads` threads taking calls in order from one queue; `run` from the loop's thread.
    `initializer` runs on each thread before its first call."""

    def __init__(self, name: str, threads: int = 1,
                 initializer: Callable[[], None] | None = None) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._done: deque[tuple[asyncio.Future, bool, Any]] = deque()
        self._signalled = False  # an eventfd write is pending: no other one is needed
        self._initializer = initializer
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._wake, self._deliver)
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """fn(*args) on a lane thread; the future has its result or its exception."""
        if self._wake < 0:
            raise RuntimeError("the lane is stopped")
        future = self._loop.create_future()
        self._calls.put((future, fn, args))
        return future

    async def stop(self) -> None:
        """Let the queued calls finish, then end the threads."""
        if self._wake < 0:
            return
        for _ in self._threads:
            self._calls.put(_STOP)
        await asyncio.to_thread(self._join)
        self._deliver()
        self._loop.remove_reader(self._wake)
        os.close(self._wake)
        self._wake = -1

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        # the initializer runs with the thread's first call (the store opens its readers after
        # the writer made the database), and again with the next one if it failed
        ready = self._initializer is None
        calls, done = self._calls, self._done
        while (call := calls.get()) is not _STOP:
            future, fn, args = call
            try:
                if not ready:
                    self._initializer()
                    ready = True
                done.append((future, True, fn(*args)))
            except BaseException as exc:  # handed to the caller, whatever it is
                done.append((future, False, exc))
            if not self._signalled:
                self._signalled = True
                os.eventfd_write(self._wake, 1)

    def _deliver(self) -> None:
        """On the loop: every finished call's result to its future."""
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            pass
        self._signalled = False  # before draining: a call finishing from here on wakes again
        done = self._done
        while done:
            future, ok, value = done.popleft()
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
