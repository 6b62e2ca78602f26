"""Reference twin of switchboard.core._native.rollup, for tests only: the kept rollup and the
receipt flush's walk over acks with plain Python, and the rollup recomputed over every member
from scratch (as the receipt flush did before it was kept), which both kept ones must equal."""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

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
        counts: dict[int, int] = {}
        for value in values:
            counts[value] = counts.get(value, 0) + 1
        self._counts = counts
        self._heap = list(counts)
        heapq.heapify(self._heap)
        self.low = self._heap[0] if self._heap else 0

    def rise(self, old: int, new: int) -> None:
        if new <= old:
            return
        counts = self._counts
        left = counts[old] - 1
        if left:
            counts[old] = left
        else:
            del counts[old]
        if new in counts:
            counts[new] += 1
        else:
            counts[new] = 1
            heapq.heappush(self._heap, new)
        if not left and old == self.low:
            while self._heap[0] not in counts:
                heapq.heappop(self._heap)
            self.low = self._heap[0]


class Rollup:
    def __init__(self, members: Mapping[str, Membership], receipts: Mapping[str, Receipt],
                 shown: Mapping[str, bool]) -> None:
        self._shown = dict(shown)
        self._delivered: dict[str, int] = {}
        self._read: dict[str, int] = {}
        for user, membership in members.items():
            joined = membership.joined_seq
            receipt = receipts.get(user)
            if receipt is None:
                self._delivered[user] = self._read[user] = joined
            else:
                self._delivered[user] = max(receipt.delivered_seq, joined)
                self._read[user] = max(receipt.public_read_seq if shown[user] else 0, joined)
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
    low = high = None
    for user, seq in delivered.items():
        old = receipts.get(user)
        if old is None:
            old = receipts[user] = Receipt(0, 0)
        before = old.delivered_seq
        if seq <= before and not fresh:
            continue
        if seq > before:
            old.delivered_seq = seq
            if kept is not None:
                kept.raised(user, old)
        moved.add(user)
        changed[user] = Receipt(old.delivered_seq, old.read_seq, old.public_read_seq)
        if fresh:
            before = max(0, seq - lookback)
        if low is None or before < low:
            low = before
        if high is None or seq > high:
            high = seq
    return None if high is None else (low, high)


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
