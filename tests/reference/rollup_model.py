"""Reference twin of switchboard.core.rollup.Rollup, for tests only: the rollup recomputed over
every member from scratch, as the receipt flush did before it was kept incrementally."""
from __future__ import annotations

from collections.abc import Mapping

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
