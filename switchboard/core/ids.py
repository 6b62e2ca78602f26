"""Identifiers: validation of client-chosen ids and 64-bit server ids."""
from __future__ import annotations

import re
import time

_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")
_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def valid_id(value: str) -> bool:
    return _ID_RE.match(value) is not None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ServerIds:
    """Snowflake-style ids: 41 bits of ms since 2024, 10 bits of node, 12 bits of counter.

    Unique across nodes without coordination; they carry no ordering promise (per-chat order
    is the seq), so a clock step back only needs the counter to keep them unique.
    """
    __slots__ = ("_node", "_last_ms", "_counter")

    def __init__(self, node: int) -> None:
        if not 0 <= node < 1024:
            raise ValueError("node id must be in 0..1023")
        self._node = node
        self._last_ms = 0
        self._counter = 0

    def next(self) -> int:
        ms = now_ms() - _EPOCH_MS
        if ms <= self._last_ms:
            self._counter += 1
            if self._counter >= 4096:
                self._last_ms += 1
                self._counter = 0
            ms = self._last_ms
        else:
            self._last_ms = ms
            self._counter = 0
        return (ms << 22) | (self._node << 12) | self._counter
