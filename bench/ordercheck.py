"""The exactly-once, in-order check every scenario applies to what a receiver gets."""
from __future__ import annotations


class InOrder:
    """One receiver's stream of message numbers k = 0, 1, 2, ...: a duplicate, a gap or a
    reordering counts as an anomaly."""
    __slots__ = ("expected", "delivered", "anomalies")

    def __init__(self) -> None:
        self.expected = 0  # the next k the receiver must see
        self.delivered = 0
        self.anomalies = 0

    def see(self, k: int) -> bool:
        self.delivered += 1
        if k == self.expected:
            self.expected += 1
            return True
        self.anomalies += 1
        self.expected = max(self.expected, k + 1)
        return False
