"""Devices' acks gathered and handed on together (native: core/_native/acks.pyx; twin:
tests/reference/acks_model.py).

Every member of a large group acks every message. A session puts each ack into the gateway's
`AckBatch` with a C call; the gateway takes the batch whole ACK_HAND_OFF (5 ms) after the first
ack in it: the writer merges its cursors (`raise_all`) and its per-chat delivered watermarks
(`raise_by_chat`), the receipts take each chat's changes, so no Python runs per ack on the way
to either.
"""
from __future__ import annotations

from switchboard.core._native import native

_acks = native("acks")
AckBatch = _acks.AckBatch
"""AckBatch(on_ready): `take()` -> (cursors {(user, device, chat): seq}, by_chat {chat: {user:
seq}}); `on_ready()` when the first ack after a take came."""
raise_all = _acks.raise_all
"""raise_all(into, source): merge watermark dicts into `into`, keeping the higher seq per key."""
raise_by_chat = _acks.raise_by_chat
"""raise_by_chat(into, by_chat): merge {chat: {user: seq}} into `into` keyed (chat, user),
keeping the higher seq per key."""

__all__ = ["AckBatch", "raise_all", "raise_by_chat"]
