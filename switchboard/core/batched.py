"""Reads of one loop turn, made together: what a reconnect storm's handshakes ask the store.

Thousands of devices connecting in the same second each want the same kinds of read (is the
device listed, what is its sync snapshot). One store call per device costs a hand-off to a
reader thread (SQLite) or a round trip (ScyllaDB) each; gathered per loop turn, as the writer
gathers sends into one commit, the turn's handshakes cost one call of up to `max_batch` keys.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

from .store import StoreError
from .tasks import TaskGroup

K = TypeVar("K")
V = TypeVar("V")


class BatchedReads(Generic[K, V]):
    """`read(key)` -> a future of its value. `fetch(keys)` answers a batch, one value per key
    in order; each waiter gets its own value, or the StoreError of its batch."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Sequence[V]]], tasks: TaskGroup,
                 max_batch: int) -> None:
        self._fetch = fetch
        self._tasks = tasks
        self._max_batch = max_batch
        self._waiting: list[tuple[K, asyncio.Future[V]]] = []
        self.batches = 0  # fetches made; reads / batches is how many keys one carried
        self.reads = 0

    def read(self, key: K) -> asyncio.Future[V]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((key, future))
        return future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), self._max_batch):
            self._tasks.spawn(self._run(waiting[start:start + self._max_batch]))

    async def _run(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        self.batches += 1
        self.reads += len(batch)
        try:
            values = await self._fetch([key for key, _ in batch])
        except asyncio.CancelledError:  # a drain: nobody is left waiting for these
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # each waiter gets it; a bug is also logged (TaskGroup)
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreError(str(exc)))
            if isinstance(exc, StoreError):
                return
            raise
        for (_, future), value in zip(batch, values, strict=True):
            if not future.done():
                future.set_result(value)
