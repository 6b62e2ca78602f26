"""The send path on the chat's owner: validate, check membership, hand the row to the
coalescing writer, and fan out what the store committed.

Sequencing and dedup happen inside the store's commit (see store.py): the seq is taken from
the chat head in the same transaction that stores the row, so it is gap-free and a retry of
the same (chat, sender, client_msg_id) - even after a restart - returns the original.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Awaitable, Callable

from .chats import ChatService
from .errors import DRAIN_RETRY_AFTER_MS, RETRY_AFTER_MS, Code, DomainError
from .gate import ChatGate
from .ids import ServerIds, now_ms, valid_id
from .media import MediaGate
from .model import CommitResult, Membership, NewMessage, SendRequest, StoredMessage
from .store import Store, StoreError
from .tasks import TaskGroup
from .writer import Backpressure, CoalescingWriter

log = logging.getLogger(__name__)

Fanout = Callable[[str, Mapping[str, Membership], list[StoredMessage]], None]
"""fanout(chat_id, members, messages): deliver freshly committed messages (one chat, seq order)."""

Sent = Callable[[str, str, int], None]
"""sent(chat_id, sender, seq): a new message was committed (the sender's own watermarks moved)."""

MAX_CLIENT_MSG_ID = 64
MAX_MEDIA_ID = 128


class MessageService:
    def __init__(self, store: Store, chats: ChatService, ids: ServerIds, *, fanout: Fanout,
                 sent: Sent | None = None, max_body_bytes: int, max_media_ids: int,
                 writer_options: dict | None = None, on_flush=None,
                 claim_media: Callable[[SendRequest], Awaitable[None]] | None = None) -> None:
        """`claim_media` checks and records a send's media before it goes to the writer
        (core/media.py); without it media ids are taken as they are."""
        self._store = store
        self._chats = chats
        self._ids = ids
        self._fanout = fanout
        self._sent = sent
        self.max_body_bytes = max_body_bytes
        self.max_media_ids = max_media_ids
        self.writer = CoalescingWriter(store, on_commit=self._on_commit, on_flush=on_flush,
                                       **(writer_options or {}))
        self._loading = ChatGate()  # chats whose member map is loading, with the sends behind it
        self._tasks = TaskGroup()   # member map loads, media claims
        self._media = None if claim_media is None else MediaGate(claim_media, self._tasks)
        self._closing = False

    async def close(self) -> None:
        """Drain: sends waiting for a member map still reach the writer (they were accepted),
        then the writer makes everything durable, and fan-outs waiting for a member map end. A
        send submitted after this is UNAVAILABLE."""
        self._closing = True
        await self._tasks.wait()
        await self.writer.close()
        await self._tasks.wait()

    # ------------------------------------------------------------------ send
    def submit_send(self, send: SendRequest) -> asyncio.Future[CommitResult]:
        """Validate and queue a send; the future resolves once the row is durable.

        Raises DomainError at once for what can be told without waiting. With the chat's
        members cached (the common case) no task is created: the writer's future is returned.
        The future fails with StoreError when the batch failed (outcome unknown: retry).
        """
        chat_id = send.chat_id
        self._validate(send)
        if self._closing:
            raise DomainError(Code.UNAVAILABLE, "server draining: reconnect", DRAIN_RETRY_AFTER_MS)
        loading = chat_id in self._loading
        members = None if loading else self._chats.cached_members(chat_id)
        if members is None:
            # behind the member map's load, and behind the chat's sends already waiting for it:
            # a later send must not reach the writer first when the map arrives meanwhile
            if not loading:
                self._tasks.spawn(self._submit_after_load(chat_id))
            return self._loading.hold(send)
        if send.user not in members:
            raise DomainError(Code.NOT_MEMBER, f"not a member of {chat_id}")
        return self._admit(send)

    async def _submit_after_load(self, chat_id: str) -> None:
        try:
            members = await self._chats.members(chat_id)
        except Exception as exc:
            self._loading.fail(chat_id, exc)
            return

        def submit(send: SendRequest) -> asyncio.Future[CommitResult]:
            if send.user not in members:
                raise DomainError(Code.NOT_MEMBER, f"not a member of {chat_id}")
            return self._admit(send)

        self._loading.release(chat_id, submit)

    def _admit(self, send: SendRequest) -> asyncio.Future[CommitResult]:
        """A member's send: to the writer, or first through the media gate when it names
        media or its chat has a send there."""
        if self._media is not None and self._media.needs(send):
            return self._media.hold(send, self._submit)
        return self._submit(send)

    def _submit(self, send: SendRequest) -> asyncio.Future[CommitResult]:
        row = NewMessage(send.chat_id, send.user, send.device, send.client_msg_id, send.body,
                         tuple(send.media_ids), self._ids.next(), now_ms())
        try:
            return self.writer.submit(row)
        except Backpressure as exc:
            raise DomainError(Code.UNAVAILABLE, "server busy", exc.retry_after_ms) from None

    def _validate(self, send: SendRequest) -> None:
        client_msg_id, body, media_ids = send.client_msg_id, send.body, send.media_ids
        if not 0 < len(client_msg_id) <= MAX_CLIENT_MSG_ID or not client_msg_id.isprintable():
            raise DomainError(Code.INVALID_ARGUMENT, "client_msg_id must be 1..64 printable chars")
        if not valid_id(send.chat_id):
            raise DomainError(Code.INVALID_ARGUMENT, "bad chat_id")
        if len(body) > self.max_body_bytes:
            raise DomainError(Code.BODY_TOO_LARGE,
                              f"body of {len(body)} bytes is over {self.max_body_bytes}")
        if len(media_ids) > self.max_media_ids:
            raise DomainError(Code.INVALID_ARGUMENT, f"more than {self.max_media_ids} media ids")
        for media_id in media_ids:
            if not 0 < len(media_id) <= MAX_MEDIA_ID:
                raise DomainError(Code.INVALID_ARGUMENT, "media ids must be 1..128 chars")

    def _on_commit(self, results: list[CommitResult]) -> None:
        """Runs right after a batch is durable, before any SendAck: group new rows per chat
        (already in seq order) and fan each group out once. A duplicate is offered again, on
        its own: its original may have been stored by a commit whose outcome was unknown and
        never fanned out (a store timeout, an owner that died); devices that have it drop it."""
        by_chat: dict[str, list[StoredMessage]] = {}
        again: dict[tuple[str, int], StoredMessage] = {}
        for result in results:
            message = result.message
            if result.duplicate:
                again[(message.chat_id, message.seq)] = message
                continue
            by_chat.setdefault(message.chat_id, []).append(message)
            if self._sent is not None:
                self._sent(message.chat_id, message.sender_user, message.seq)
        for (chat_id, seq), message in sorted(again.items()):
            if not any(m.seq == seq for m in by_chat.get(chat_id, ())):
                self._fanout_group(chat_id, [message])
        for chat_id, messages in by_chat.items():
            self._fanout_group(chat_id, messages)

    def _fanout_group(self, chat_id: str, messages: list[StoredMessage]) -> None:
        members = self._chats.cached_members(chat_id)
        if members is not None:
            self._fanout(chat_id, members, messages)
        else:
            self._tasks.spawn(self._fanout_after_load(chat_id, messages))

    async def _fanout_after_load(self, chat_id: str, messages: list[StoredMessage]) -> None:
        """The member map was evicted between the check and the commit (rare): load it; the
        receiving connections fill any ordering gap from the store."""
        try:
            members = await self._chats.members(chat_id)
        except StoreError:
            log.warning("fan-out of %s skipped: members unavailable; devices get it on sync", chat_id)
            return
        self._fanout(chat_id, members, messages)

    # ------------------------------------------------------------------ reads
    async def history(self, user: str, chat_id: str, before_seq: int, limit: int) -> list[StoredMessage]:
        membership = await self._chats.require_member(chat_id, user)
        return await self._store.read_history(chat_id, before_seq, membership.joined_seq, limit)

    async def mark_read(self, user: str, chat_id: str, seq: int) -> int:
        await self._chats.require_member(chat_id, user)
        seq = min(seq, await self._store.head_seq(chat_id))
        try:
            await self.writer.mark_read(chat_id, user, seq)
            return await self._store.read_seq(chat_id, user)
        except StoreError:
            raise DomainError(Code.UNAVAILABLE, "store unavailable",
                              RETRY_AFTER_MS) from None

    def ack(self, user: str, device: str, chat_id: str, seq: int) -> None:
        self.writer.ack_cursor(user, device, chat_id, seq)
