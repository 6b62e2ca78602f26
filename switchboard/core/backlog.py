"""A device's sync snapshot, built from narrow reads a partitioned store answers one partition
each: the user's membership periods (one read by user), the device's cursors (one read by
device) and the heads of those chats (one read per chat, concurrently).

Every connect reads one, so in a reconnect storm the snapshots of many devices are wanted in
the same loop turn: `backlog_reader` gathers them and asks the store once per turn
(`Store.sync_reads`, core/batched.py).
"""
from __future__ import annotations

from collections.abc import Sequence

from .batched import BatchedReads
from .model import Backlog, Period
from .store import Store, SyncReads
from .tasks import TaskGroup

#: Devices whose snapshots one store call reads at most (a storm's turn may hold thousands).
MAX_BATCH = 128


async def read_backlog(store: Store, user_id: str, device_id: str) -> list[Backlog]:
    """Chats of the user, by chat id, with something visible above the device's cursor."""
    [reads] = await store.sync_reads([(user_id, device_id)])
    return backlog_of(reads)


def backlog_reader(store: Store, tasks: TaskGroup) -> BatchedReads[tuple[str, str], list[Backlog]]:
    """`read((user, device))` -> that device's backlog; a loop turn's reads are one
    `Store.sync_reads` call."""
    async def fetch(devices: list[tuple[str, str]]) -> list[list[Backlog]]:
        return [backlog_of(reads) for reads in await store.sync_reads(devices)]
    return BatchedReads(fetch, tasks, MAX_BATCH)


def backlog_of(reads: SyncReads) -> list[Backlog]:
    """The backlog rows of one device's snapshot reads."""
    periods, cursors, heads = reads
    rows = []
    for chat_id in sorted(periods):
        row = backlog_row(chat_id, periods[chat_id], cursors.get(chat_id, 0),
                          heads.get(chat_id, 0))
        if row is not None:
            rows.append(row)
    return rows


def backlog_row(chat_id: str, periods: Sequence[Period], cursor: int, head: int) -> Backlog | None:
    """What a device with `cursor` still has to get of a chat: every seq above the cursor that
    one of the user's periods covers, up to the head. A period ended at or below the cursor is
    done; delivery starts at the cursor, or where the next period starts when that is higher
    (`jumped`: a device with no cursor, or one from an earlier membership, is told where its
    range starts again). A user who left gets the rest of its last period, then nothing."""
    remaining = [p for p in periods if p.left_seq is None or p.left_seq > cursor]
    if not remaining:
        return None
    start = max(cursor, remaining[0].joined_seq)
    last = remaining[-1]
    end = head if last.left_seq is None else min(head, last.left_seq)
    if end <= start:
        return None
    return Backlog(chat_id, start, end, visible_above(remaining, start), start > cursor)


def visible_above(periods: Sequence[Period], seq: int) -> tuple[Period, ...] | None:
    """The periods that reach above `seq`, or None when that is one open period begun at or
    below `seq` (everything above `seq` is visible). Never empty: with no period above `seq`
    it is one that ends there (nothing more is visible)."""
    remaining = tuple(p for p in periods if p.left_seq is None or p.left_seq > seq)
    if len(remaining) == 1 and remaining[0].left_seq is None and remaining[0].joined_seq <= seq:
        return None
    return remaining or (Period(seq, seq),)
