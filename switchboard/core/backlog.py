"""A device's sync snapshot, built from narrow reads a partitioned store answers one partition
each: the user's chats with joined_seq (one read by user), the device's cursors (one read by
device) and the heads of those chats (one read per chat, concurrently).
"""
from __future__ import annotations

import asyncio

from .model import Backlog
from .store import Store


async def read_backlog(store: Store, user_id: str, device_id: str) -> list[Backlog]:
    """Chats of the user whose head is above the device's cursor, by chat id. A device with no
    cursor for a chat starts at the member's joined_seq, and so does a re-joined member whose
    cursor is from before it left: nothing below joining is replayed."""
    joined, cursors = await asyncio.gather(store.user_chats(user_id),
                                           store.cursors(user_id, device_id))
    heads = await store.heads(joined)
    rows = []
    for chat_id in sorted(joined):
        cursor = max(cursors.get(chat_id, 0), joined[chat_id])
        head = heads.get(chat_id, 0)
        if head > cursor:
            rows.append(Backlog(chat_id, cursor, head))
    return rows
