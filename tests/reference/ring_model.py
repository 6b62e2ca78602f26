"""Reference twin of switchboard.core._native.ring.HashRing, for tests only.

The same hash written out in Python integers, a sorted list of (point, node index) and bisect:
none of the native ring's C arrays, qsort comparator or hand-written binary search, so the native
ring is checked against something obviously right.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable

MASK = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK
    h ^= h >> 33
    return h


def fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & MASK
    return h


def ring_hash(data: bytes) -> int:
    return fmix64(fnv1a64(data))


def key_hash(key: str) -> int:
    return ring_hash(key.encode("utf-8"))


class HashRing:
    """Same constructor, attributes, lookups and errors as the native ring."""

    def __init__(self, members: Iterable[tuple[str, int]], epoch: int, vnodes: int = 160) -> None:
        if vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {vnodes!r}")
        pairs = sorted(members)
        if not pairs:
            raise ValueError("a ring needs at least one member")
        for node_id, weight in pairs:
            if not isinstance(node_id, str) or not isinstance(weight, int):
                raise TypeError(f"bad member {(node_id, weight)!r}")
            if not node_id or weight < 1:
                raise ValueError(f"bad member {(node_id, weight)!r}")
        ids = [node_id for node_id, _ in pairs]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate node id")
        self.nodes = tuple(ids)
        self.weights = tuple(weight for _, weight in pairs)
        self.vnodes = vnodes
        self.epoch = epoch
        self.ring = sorted(
            (ring_hash(node_id.encode("utf-8") + j.to_bytes(4, "little")), index)
            for index, (node_id, weight) in enumerate(pairs)
            for j in range(weight * vnodes)
        )
        self.points = [point for point, _ in self.ring]

    def _successor(self, key: str) -> int:
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {key!r}")
        i = bisect.bisect_left(self.points, key_hash(key))
        return i % len(self.points)

    def owner(self, key: str) -> str:
        return self.nodes[self.ring[self._successor(key)][1]]

    def owners(self, key: str, n: int) -> list[str]:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        start = self._successor(key)
        result: list[str] = []
        for i in range(start, start + len(self.ring)):
            if len(result) == n:
                break
            node = self.nodes[self.ring[i % len(self.ring)][1]]
            if node not in result:
                result.append(node)
        return result
