"""A chat's receipt rollups (delivered to all, read by all) kept as its members' watermarks
rise, and the receipt flush's work per member (native: core/_native/rollup.pyx; twin:
tests/reference/rollup_model.py).

The rollup is a minimum over every member, and a receipt flush needs it each time: in a group of
10,000 whose members ack every message, recomputing it walked all 10,000 members per flush, about
twenty times per message. Watermarks only rise, so the minimum is kept instead: per value, how
many members hold it, and the values themselves in a heap (`RisingMin`). A change costs a dict
update and, when the lowest value's last holder moves up, heap pops that are each paid once.

The flush's walk over a large group's acks is native too (`raise_delivered`, then `readers` and
`visible_to` per sender told): every member's ack moves its watermark once per message, and
that walk in Python (the cached watermark, the rollup, a snapshot, the sender's view) cost ~5 us
per member, ~50 ms of the event loop per message of a group of 10,000.
"""
from __future__ import annotations

from switchboard.core._native import native

_rollup = native("rollup")
RisingMin = _rollup.RisingMin
"""RisingMin(values): `.low`, the minimum; `rise(old, new)`: a member holding `old` now holds
`new` (not lower)."""
Rollup = _rollup.Rollup
"""Rollup(members, receipts, shown): `.totals` (delivered_all, read_all) over the members, each
counted from the seq it joined at, reads only public ones and none where `shown` is false;
`raised(user, receipt)`: the member's watermarks rose to the receipt's (others are ignored)."""
raise_delivered = _rollup.raise_delivered
"""raise_delivered(receipts, delivered, rollup, fresh, lookback, changed, moved) -> (low, high)
or None: a flush's acked watermarks {user: seq} into the cached receipts and the kept rollup
(None: none kept); members whose watermark moved into `moved` and, snapshotted, `changed`."""
readers = _rollup.readers
"""readers(target, changed, delivered_moved, public_moved) -> [user]: those whose public read
the target would be told of, whether it may see them to be asked."""
visible_to = _rollup.visible_to
"""visible_to(target, changed, delivered_moved, public_moved, hidden) -> {user: Receipt}: the
changes a sender is told of, reads hidden from it shown as 0."""

__all__ = ["RisingMin", "Rollup", "raise_delivered", "readers", "visible_to"]
