"""Who may hold an unauthenticated socket (Auth-frame mode, before the Auth frame).

A socket that upgraded without an Authorization header costs a slot until its Auth frame comes
or its deadline passes. Without limits one host's idle sockets fill every slot and lock every
Auth-frame client out. So, decided at the upgrade:

* one source address holds at most `per_address` slots (beyond: HTTP 429, Retry-After);
* when every slot is taken, the oldest silent socket gives up its slot (closed 4002) if it has
  been silent for at least `evict_after` seconds: an honest client sends Auth within a round
  trip, so the oldest silent socket is the likeliest squatter, and its deadline shortens under
  pressure instead of the newcomer being refused;
* only when every slot is younger than that is the newcomer refused (HTTP 503, Retry-After).

Sans-I/O: the gateway calls `admit` at the upgrade, `add` once the socket is open, `remove` when
it authenticates or goes; the slot holders are opaque keys.
"""
from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Hashable


class Verdict(enum.Enum):
    ADMIT = 0
    EVICT_OLDEST = 1   # admit after the oldest slot holder (see `oldest`) is closed
    ADDRESS_FULL = 2   # HTTP 429
    BUSY = 3           # HTTP 503


class PendingAuth:
    def __init__(self, capacity: int, per_address: int, evict_after: float) -> None:
        self.capacity = capacity
        self.per_address = per_address
        self.evict_after = evict_after
        self._slots: OrderedDict[Hashable, tuple[str, float]] = OrderedDict()  # oldest first
        self._per_address: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def count(self, address: str) -> int:
        return self._per_address.get(address, 0)

    def admit(self, address: str, now: float) -> Verdict:
        if self._per_address.get(address, 0) >= self.per_address:
            return Verdict.ADDRESS_FULL
        if len(self._slots) < self.capacity:
            return Verdict.ADMIT
        _, since = next(iter(self._slots.values()))
        return Verdict.EVICT_OLDEST if now - since >= self.evict_after else Verdict.BUSY

    def oldest(self) -> Hashable:
        return next(iter(self._slots))

    def add(self, key: Hashable, address: str, now: float) -> None:
        self._slots[key] = (address, now)
        self._per_address[address] = self._per_address.get(address, 0) + 1

    def remove(self, key: Hashable) -> None:
        entry = self._slots.pop(key, None)
        if entry is None:
            return
        address = entry[0]
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]
