"""A chat's receipt rollups (delivered to all, read by all) kept as its members' watermarks rise.

The rollup is a minimum over every member, and a receipt flush needs it each time: in a group of
10,000 whose members ack every message, recomputing it walked all 10,000 members per flush, about
twenty times per message. Watermarks only rise, so the minimum is kept instead: per value, how
many members hold it, and the values themselves in a heap (`RisingMin`). A change costs a dict
update and, when the lowest value's last holder moves up, heap pops that are each paid once.
The rollup over all members, recomputed (tests/reference/rollup_model.py), is its twin.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from .model import Membership, Receipt


class RisingMin:
    """The minimum of a multiset of integers whose members only ever rise (0 when empty)."""
    __slots__ = ("_counts", "_heap", "low")

    def __init__(self, values: Iterable[int]) -> None:
        counts: dict[int, int] = {}
        for value in values:
            counts[value] = counts.get(value, 0) + 1
        self._counts = counts
        self._heap = list(counts)
        heapq.heapify(self._heap)
        self.low = self._heap[0] if self._heap else 0

    def rise(self, old: int, new: int) -> None:
        """One member held `old` (it must) and now holds `new` (not lower)."""
        if new <= old:
            return
        counts = self._counts
        left = counts[old] - 1
        if left:
            counts[old] = left
        else:
            del counts[old]
        held = counts.get(new)
        if held is None:
            counts[new] = 1
            heapq.heappush(self._heap, new)
        else:
            counts[new] = held + 1
        if not left and old == self.low:
            heap = self._heap
            while heap[0] not in counts:  # values nobody holds any more: dropped once each
                heapq.heappop(heap)
            self.low = heap[0]


class Rollup:
    """(delivered to all, read by all) over a chat's current members, each counted from the seq
    it joined at; a member whose read receipts are off (`shown` false) counts as having read
    nothing since it joined, and reads count only as far as they were made in public."""
    __slots__ = ("_joined", "_shown", "_delivered", "_read", "_delivered_min", "_read_min")

    def __init__(self, members: Mapping[str, Membership], receipts: Mapping[str, Receipt],
                 shown: Mapping[str, bool]) -> None:
        self._joined = {user: membership.joined_seq for user, membership in members.items()}
        self._shown = shown
        self._delivered: dict[str, int] = {}
        self._read: dict[str, int] = {}
        for user, joined in self._joined.items():
            receipt = receipts.get(user)
            if receipt is None:
                self._delivered[user] = self._read[user] = joined
            else:
                self._delivered[user] = max(receipt.delivered_seq, joined)
                self._read[user] = max(receipt.public_read_seq if shown[user] else 0, joined)
        self._delivered_min = RisingMin(self._delivered.values())
        self._read_min = RisingMin(self._read.values())

    def raised(self, user: str, receipt: Receipt) -> None:
        """The member's watermarks are now `receipt`'s (they never fall); others are ignored."""
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
        """(delivered_all, read_all)."""
        return self._delivered_min.low, self._read_min.low
