"""The bounded caches of the services (member maps, settings, receipts, admitted devices)."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(OrderedDict[K, V], Generic[K, V]):
    """A map of at most `capacity` entries that forgets the least recently used one."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def use(self, key: K) -> V | None:
        """The value (marked as just used), or None."""
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)

    async def use_many(self, keys: Iterable[K], load: Callable[[K], Awaitable[V]],
                       at_once: int) -> dict[K, V]:
        """The values of many keys: those held, and the others from `load` (which keeps what
        it should), `at_once` loads in flight, so a large group's members cost a few rounds of
        concurrent store reads, not one round trip each. The first load that fails fails the
        call, once the others of its round are done."""
        found: dict[K, V] = {}
        missing = []
        for key in keys:
            value = self.use(key)
            if value is None:
                missing.append(key)
            else:
                found[key] = value
        for start in range(0, len(missing), at_once):
            part = missing[start:start + at_once]
            loaded = await asyncio.gather(*map(load, part), return_exceptions=True)
            for key, value in zip(part, loaded):
                if isinstance(value, BaseException):
                    raise value
                found[key] = value
        return found
