"""The exactly-once, in-order check every scenario applies to what a receiver gets."""
from __future__ import annotations

from collections.abc import Container


class InOrder:
    """One receiver's stream of message numbers k = 0, 1, 2, ... in the sender's order. A
    duplicate, a gap never filled or a message arriving after a later one ("late") is an
    anomaly, except a late message its sender had to send again after a refusal (RATE_LIMITED,
    UNAVAILABLE): the sends pipelined behind it were accepted first, so it is stored, and
    delivered, after them (docs/protocol.md 8.2). `unexplained(retried)` counts what remains."""
    __slots__ = ("expected", "delivered", "duplicates", "gaps", "late")

    def __init__(self) -> None:
        self.expected = 0  # the next k the receiver must see
        self.delivered = 0
        self.duplicates = 0
        self.gaps: set[int] = set()  # ks skipped by a later one and not delivered yet
        self.late: list[int] = []    # ks delivered after a later one

    def see(self, k: int) -> bool:
        """Record k; False when it is out of the sender's order or a duplicate."""
        self.delivered += 1
        if k == self.expected:
            self.expected += 1
            return True
        if k > self.expected:
            self.gaps.update(range(self.expected, k))
            self.expected = k + 1
        elif k in self.gaps:
            self.gaps.discard(k)
            self.late.append(k)
        else:
            self.duplicates += 1
        return False

    @property
    def anomalies(self) -> int:
        return self.unexplained(())

    def unexplained(self, retried: Container[int]) -> int:
        """Anomalies, not counting late messages whose k is in `retried`."""
        return (self.duplicates + len(self.gaps)
                + sum(1 for k in self.late if k not in retried))
