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
from functools import partial
from typing import Callable

from .chats import ChatService
from .errors import Code, DomainError
from .futures import settle
from .ids import ServerIds, now_ms, valid_id
from .model import CommitResult, Membership, NewMessage, StoredMessage
from .store import Store, StoreError
from .writer import Backpressure, CoalescingWriter

log = logging.getLogger(__name__)

Fanout = Callable[[str, Mapping[str, Membership], list[StoredMessage]], None]
"""fanout(chat_id, members, messages): deliver freshly committed messages (one chat, seq order)."""

RETRY_AFTER_STORE_ERROR_MS = 200
DRAIN_RETRY_AFTER_MS = 1000
MAX_CLIENT_MSG_ID = 64
MAX_MEDIA_ID = 128


class MessageService:
    def __init__(self, store: Store, chats: ChatService, ids: ServerIds, *,
                 max_body_bytes: int, max_media_ids: int, writer_options: dict | None = None) -> None:
        self._store = store
        self._chats = chats
        self._ids = ids
        self._fanout: Fanout | None = None
        self.on_sent: Callable[[str, str, int], None] | None = None  # (chat, sender, seq)
        self.max_body_bytes = max_body_bytes
        self.max_media_ids = max_media_ids
        self.writer = CoalescingWriter(store, on_commit=self._on_commit, **(writer_options or {}))
        self._waiting: dict[str, list[tuple[asyncio.Future, tuple]]] = {}  # chat -> sends
        self._loads: set[asyncio.Task] = set()
        self._closing = False

    def set_fanout(self, fanout: Fanout) -> None:
        self._fanout = fanout

    async def close(self) -> None:
        """Drain: sends waiting for a member map still reach the writer (they were accepted),
        then the writer makes everything durable. A send submitted after this is UNAVAILABLE."""
        self._closing = True
        while self._loads:
            await asyncio.gather(*self._loads, return_exceptions=True)
        await self.writer.close()

    # ------------------------------------------------------------------ send
    def submit_send(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                    media_ids: list[str]) -> asyncio.Future[CommitResult]:
        """Validate and queue a send; the future resolves once the row is durable.

        Raises DomainError at once for what can be told without waiting. With the chat's
        members cached (the common case) no task is created: the writer's future is returned.
        The future fails with StoreError when the batch failed (outcome unknown: retry).
        """
        self._validate(chat_id, client_msg_id, body, media_ids)
        if self._closing:
            raise DomainError(Code.UNAVAILABLE, "server draining: reconnect", DRAIN_RETRY_AFTER_MS)
        waiting = self._waiting.get(chat_id)
        members = self._chats.cached_members(chat_id) if waiting is None else None
        if members is None:
            # behind the member map's load, and behind the chat's sends already waiting for it:
            # a later send must not reach the writer first when the map arrives meanwhile
            future = asyncio.get_running_loop().create_future()
            send = (user, device, chat_id, client_msg_id, body, media_ids)
            if waiting is None:
                self._waiting[chat_id] = [(future, send)]
                task = asyncio.ensure_future(self._submit_after_load(chat_id))
                self._loads.add(task)
                task.add_done_callback(self._loads.discard)
            else:
                waiting.append((future, send))
            return future
        if user not in members:
            raise DomainError(Code.NOT_MEMBER, f"not a member of {chat_id}")
        return self._submit(user, device, chat_id, client_msg_id, body, media_ids)

    async def send(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                   media_ids: list[str]) -> CommitResult:
        try:
            return await self.submit_send(user, device, chat_id, client_msg_id, body, media_ids)
        except StoreError:
            raise DomainError(Code.UNAVAILABLE, "store unavailable",
                              RETRY_AFTER_STORE_ERROR_MS) from None

    async def _submit_after_load(self, chat_id: str) -> None:
        try:
            members = await self._chats.members(chat_id)
        except Exception as exc:
            for future, _ in self._waiting.pop(chat_id, ()):
                if not future.done():
                    future.set_exception(exc)
            return
        for future, send in self._waiting.pop(chat_id, ()):
            if future.done():
                continue
            try:
                if send[0] not in members:
                    raise DomainError(Code.NOT_MEMBER, f"not a member of {chat_id}")
                self._submit(*send).add_done_callback(partial(settle, future))
            except DomainError as exc:
                future.set_exception(exc)

    def _submit(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                media_ids: list[str]) -> asyncio.Future[CommitResult]:
        row = NewMessage(chat_id, user, device, client_msg_id, body, tuple(media_ids),
                         self._ids.next(), now_ms())
        try:
            return self.writer.submit(row)
        except Backpressure as exc:
            raise DomainError(Code.UNAVAILABLE, "server busy", exc.retry_after_ms) from None

    def _validate(self, chat_id: str, client_msg_id: str, body: bytes, media_ids: list[str]) -> None:
        if not 0 < len(client_msg_id) <= MAX_CLIENT_MSG_ID or not client_msg_id.isprintable():
            raise DomainError(Code.INVALID_ARGUMENT, "client_msg_id must be 1..64 printable chars")
        if not valid_id(chat_id):
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
        (already in seq order) and fan each group out once."""
        if self._fanout is None:
            return
        by_chat: dict[str, list[StoredMessage]] = {}
        for result in results:
            if not result.duplicate:
                message = result.message
                by_chat.setdefault(message.chat_id, []).append(message)
                if self.on_sent is not None:
                    self.on_sent(message.chat_id, message.sender_user, message.seq)
        for chat_id, messages in by_chat.items():
            members = self._chats.cached_members(chat_id)
            if members is not None:
                self._fanout(chat_id, members, messages)
            else:
                asyncio.get_running_loop().create_task(self._fanout_after_load(chat_id, messages))

    async def _fanout_after_load(self, chat_id: str, messages: list[StoredMessage]) -> None:
        """The member map was evicted between the check and the commit (rare): load it; the
        receiving connections fill any ordering gap from the store."""
        try:
            members = await self._chats.members(chat_id)
        except StoreError:
            log.warning("fan-out of %s skipped: members unavailable; devices get it on sync", chat_id)
            return
        if self._fanout is not None:
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
                              RETRY_AFTER_STORE_ERROR_MS) from None

    def ack(self, user: str, device: str, chat_id: str, seq: int) -> None:
        self.writer.ack_cursor(user, device, chat_id, seq)
