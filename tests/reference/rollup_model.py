"""Reference twin of switchboard.core._native.rollup, for tests only: the kept rollup and the
receipt flush's walk over acks with plain Python, and the rollup recomputed over every member
from scratch (as the receipt flush did before it was kept), which both kept ones must equal."""
from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace

from switchboard.core.model import Membership, Receipt


def rollup(members: Mapping[str, Membership], receipts: Mapping[str, Receipt],
           shown: Mapping[str, bool]) -> tuple[int, int]:
    """(delivered to all, read by all) over the members, each counted from the seq it joined
    at; reads only as far as made in public, and none for a member whose receipts are off."""
    delivered_all = read_all = None
    for user, membership in members.items():
        receipt = receipts.get(user) or Receipt(0, 0)
        delivered = max(receipt.delivered_seq, membership.joined_seq)
        read = max(receipt.public_read_seq if shown[user] else 0, membership.joined_seq)
        delivered_all = delivered if delivered_all is None else min(delivered_all, delivered)
        read_all = read if read_all is None else min(read_all, read)
    return delivered_all or 0, read_all or 0


class RisingMin:
    """The minimum of a multiset of integers whose members only ever rise (0 when empty)."""

    def __init__(self, values: Iterable[int]) -> None:
        self._counts = Counter(values)
        self._heap = sorted(self._counts)  # a sorted list is a heap
        self.low = self._heap[0] if self._heap else 0

    def rise(self, old: int, new: int) -> None:
        if new <= old:
            return
        self._counts[old] -= 1
        if not self._counts[old]:
            del self._counts[old]
        if not self._counts[new]:  # a value nobody held: onto the heap
            heapq.heappush(self._heap, new)
        self._counts[new] += 1
        while self._heap[0] not in self._counts:
            heapq.heappop(self._heap)
        self.low = self._heap[0]


class Rollup:
    def __init__(self, members: Mapping[str, Membership], receipts: Mapping[str, Receipt],
                 shown: Mapping[str, bool]) -> None:
        none = Receipt(0, 0)
        self._shown = dict(shown)
        self._delivered = {user: max((receipts.get(user) or none).delivered_seq, m.joined_seq)
                           for user, m in members.items()}
        self._read = {user: max((receipts.get(user) or none).public_read_seq if shown[user] else 0,
                                m.joined_seq)
                      for user, m in members.items()}
        self._delivered_min = RisingMin(self._delivered.values())
        self._read_min = RisingMin(self._read.values())

    def raised(self, user: str, receipt: Receipt) -> None:
        before = self._delivered.get(user)
        if before is None:
            return
        if receipt.delivered_seq > before:
            self._delivered[user] = receipt.delivered_seq
            self._delivered_min.rise(before, receipt.delivered_seq)
        if self._shown[user]:
            before = self._read[user]
            if receipt.public_read_seq > before:
                self._read[user] = receipt.public_read_seq
                self._read_min.rise(before, receipt.public_read_seq)

    @property
    def totals(self) -> tuple[int, int]:
        return self._delivered_min.low, self._read_min.low


def raise_delivered(receipts: dict[str, Receipt], delivered: dict[str, int],
                    kept: Rollup | None, fresh: bool, lookback: int,
                    changed: dict[str, Receipt], moved: set[str]) -> tuple[int, int] | None:
    spans = []
    for user, seq in delivered.items():
        old = receipts.setdefault(user, Receipt(0, 0))
        raised = seq > old.delivered_seq
        if not (raised or fresh):
            continue
        spans.append((max(0, seq - lookback) if fresh else old.delivered_seq, seq))
        if raised:
            old.delivered_seq = seq
            if kept is not None:
                kept.raised(user, old)
        moved.add(user)
        changed[user] = replace(old)
    if not spans:
        return None
    return min(low for low, _ in spans), max(high for _, high in spans)


def readers(target: str, changed: dict[str, Receipt], delivered_moved: set[str],
            public_moved: set[str]) -> list[str]:
    return [user for user, receipt in changed.items()
            if user != target and (user in delivered_moved or user in public_moved)
            and receipt.public_read_seq > 0]


def visible_to(target: str, changed: dict[str, Receipt], delivered_moved: set[str],
               public_moved: set[str], hidden) -> dict[str, Receipt]:
    visible = {}
    for user, receipt in changed.items():
        if user == target:
            visible[user] = Receipt(receipt.delivered_seq, receipt.read_seq)
        elif user in delivered_moved or user in public_moved:
            is_hidden = user in hidden
            if user in delivered_moved or not is_hidden:
                visible[user] = Receipt(receipt.delivered_seq,
                                        0 if is_hidden else receipt.public_read_seq)
    return visible
