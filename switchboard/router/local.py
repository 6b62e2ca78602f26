"""Single-node routing: this process owns every chat and holds every connection, so each call
goes straight to the local MessageService or back to this node."""
from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

from switchboard.core.futures import Done, awaited
from switchboard.core.ids import now_ms
from switchboard.core.messaging import MessageService
from switchboard.core.metrics import Metric
from switchboard.core.model import CommitResult, MembershipEvent, SendRequest

from .base import Invalidation, LocalNode


class LocalRouter:
    sees_every_commit = True

    def __init__(self, messages: MessageService, node: LocalNode) -> None:
        """`messages` fans its commits out to `node.deliver` (the caller passes it in)."""
        self._messages = messages
        self._node = node

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def readiness(self) -> dict[str, bool]:
        return {}

    def submit_send(self, send: SendRequest, done: Done) -> None:
        self._messages.submit_send(send, done)

    def submit_event(self, chat_id: str, event: MembershipEvent) -> asyncio.Future[CommitResult]:
        return awaited(self._messages.submit_send, SendRequest.membership(chat_id, event))

    def note_receipt(self, chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        self._node.note_receipt(chat_id, user, delivered, read, public_read)

    def note_delivered(self, chat_id: str, delivered: dict[str, int]) -> None:
        self._node.note_delivered(chat_id, delivered)

    def push(self, users: Collection[str], data: bytes,
             exclude: tuple[str, str] | None = None) -> None:
        self._node.push(users, data, exclude)

    def invalidate(self, kind: Invalidation, key: str, removed: Sequence[str] = ()) -> None:
        self._node.invalidate(kind, key, removed)

    def session_opened(self, user: str, device: str, opened_ms: int) -> None:
        return None  # this node holds every connection: the hub closes an older one (4010)

    def session_closed(self, user: str, device: str) -> None:
        return None

    def presence_changed(self, user: str, online: bool, last_seen_ms: int) -> None:
        return None

    def kick(self, user: str, device: str, code: int, reason: str) -> None:
        self._node.kick(user, device, code, reason, now_ms() + 1)

    async def online_devices(self, user: str) -> set[str]:
        return self._node.online_devices(user)

    async def last_seen(self, user: str) -> int | None:
        return None

    async def share_usage(self, usage: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        return {}  # one node: its own buckets are the whole truth

    def metrics(self) -> list[Metric]:
        return []
