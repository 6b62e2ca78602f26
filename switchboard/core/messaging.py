"""The send path on the chat's owner: validate, check who may send, hand the row to the
coalescing writer, and fan out what the store committed.

Sequencing and dedup happen inside the store's commit (see store.py): the seq is taken from
the chat head in the same transaction that stores the row, so it is gap-free and a retry of
the same (chat, sender, client_msg_id) - even after a restart - returns the original.

Who may send is decided from memory when everything is cached (the member map, the sender's
settings, and in a direct chat who blocked the sender): then no task is created. Otherwise the
send waits in its chat's queue while those load, and every later send of that chat waits
behind it, so a chat's sends reach the writer in the order they came. Membership events go
through the same queue and later sends wait until the event is committed: a member removed
by it cannot slip a message in after it, an added one sends only once it is in.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from functools import partial
from typing import Callable

from .blocks import Blocks
from .chats import ChatService, is_direct, membership_message
from .errors import Code, DomainError
from .futures import settle
from .ids import ServerIds, now_ms, valid_id
from .model import CommitResult, Membership, MembershipEvent, NewMessage, Period, StoredMessage
from .settings import Settings
from .store import Store, StoreError
from .writer import Backpressure, CoalescingWriter

log = logging.getLogger(__name__)

Fanout = Callable[[str, Mapping[str, Membership], list[StoredMessage]], None]
"""fanout(chat_id, members, messages): deliver freshly committed messages (one chat, seq order)."""

RETRY_AFTER_STORE_ERROR_MS = 200
DRAIN_RETRY_AFTER_MS = 1000
MAX_CLIENT_MSG_ID = 64
MAX_MEDIA_ID = 128

Send = tuple[str, str, str, str, bytes, list[str]]  # user, device, chat, client_msg_id, body, media


class MessageService:
    def __init__(self, store: Store, chats: ChatService, ids: ServerIds, *, settings: Settings,
                 blocks: Blocks, max_body_bytes: int, max_media_ids: int,
                 writer_options: dict | None = None) -> None:
        self._store = store
        self._chats = chats
        self._ids = ids
        self._settings = settings
        self._blocks = blocks
        self._fanout: Fanout | None = None
        self.on_sent: Callable[[str, str, int], None] | None = None  # (chat, sender, seq)
        self.max_body_bytes = max_body_bytes
        self.max_media_ids = max_media_ids
        self.writer = CoalescingWriter(store, on_commit=self._on_commit, **(writer_options or {}))
        # chat -> sends and membership events waiting for what they need, in arrival order
        self._waiting: dict[str, deque[tuple[asyncio.Future, Send | MembershipEvent]]] = {}
        self._loads: set[asyncio.Task] = set()
        self._closing = False

    def set_fanout(self, fanout: Fanout) -> None:
        self._fanout = fanout

    async def close(self) -> None:
        """Drain: sends waiting in a chat's queue still reach the writer (they were accepted),
        then the writer makes everything durable. A send submitted after this is UNAVAILABLE."""
        self._closing = True
        while self._loads:
            await asyncio.gather(*self._loads, return_exceptions=True)
        await self.writer.close()

    # ------------------------------------------------------------------ send
    def submit_send(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                    media_ids: list[str]) -> asyncio.Future[CommitResult]:
        """Validate and queue a send; the future resolves once the row is durable.

        Raises DomainError at once for what can be told without waiting. With what the check
        needs cached (the common case) no task is created: the writer's future is returned.
        The future fails with StoreError when the batch failed (outcome unknown: retry).
        """
        self._validate(chat_id, client_msg_id, body, media_ids)
        if self._closing:
            raise DomainError(Code.UNAVAILABLE, "server draining: reconnect", DRAIN_RETRY_AFTER_MS)
        send = (user, device, chat_id, client_msg_id, body, media_ids)
        if chat_id not in self._waiting:
            public = self._cached_check(user, chat_id)
            if public is not None:
                return self._submit(send, public)
        return self._enqueue(chat_id, send)

    def submit_event(self, chat_id: str, event: MembershipEvent) -> asyncio.Future[CommitResult]:
        """Commit a membership event as the chat's next entry; the chat's sends that come
        after it wait until it is committed (the member map they are checked against changes)."""
        if self._closing:
            raise DomainError(Code.UNAVAILABLE, "server draining: reconnect", DRAIN_RETRY_AFTER_MS)
        return self._enqueue(chat_id, event)

    async def send(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                   media_ids: list[str]) -> CommitResult:
        try:
            return await self.submit_send(user, device, chat_id, client_msg_id, body, media_ids)
        except StoreError:
            raise DomainError(Code.UNAVAILABLE, "store unavailable",
                              RETRY_AFTER_STORE_ERROR_MS) from None

    def _cached_check(self, user: str, chat_id: str) -> bool | None:
        """May `user` send to the chat, from memory alone: whether the message makes their read
        position public (read receipts on), or None when something must be loaded first.
        Raises DomainError when they may not."""
        members = self._chats.cached_members(chat_id)
        if members is None:
            return None
        if user not in members:
            raise DomainError(Code.NOT_MEMBER, f"not a member of {chat_id}")
        settings = self._settings.cached(user)
        if settings is None:
            return None
        if is_direct(chat_id):
            blockers = self._blocks.cached_blockers(user)
            if blockers is None:
                return None
            _check_blocked(user, members, blockers)
        return settings.read_receipts

    async def _loaded_check(self, user: str, chat_id: str) -> bool:
        """_cached_check, loading what is not cached."""
        members = await self._chats.members(chat_id)
        if user not in members:
            raise DomainError(Code.NOT_MEMBER, f"not a member of {chat_id}")
        settings = await self._settings.get(user)
        if is_direct(chat_id):
            _check_blocked(user, members, await self._blocks.blockers(user))
        return settings.read_receipts

    def _enqueue(self, chat_id: str, item: Send | MembershipEvent) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(chat_id)
        if queue is None:
            queue = self._waiting[chat_id] = deque()
            task = asyncio.ensure_future(self._drain(chat_id, queue))
            self._loads.add(task)
            task.add_done_callback(self._loads.discard)
        queue.append((future, item))
        return future

    async def _drain(self, chat_id: str, queue: deque) -> None:
        """Hand a chat's waiting sends and events to the writer in order; new ones that arrive
        meanwhile join the queue, so nothing overtakes them."""
        try:
            while queue:
                future, item = queue[0]
                if not future.done():
                    if isinstance(item, MembershipEvent):
                        await self._release_event(chat_id, future, item)
                    else:
                        await self._release_send(future, item)
                queue.popleft()
        finally:
            del self._waiting[chat_id]

    async def _release_send(self, future: asyncio.Future, send: Send) -> None:
        try:
            public = await self._loaded_check(send[0], send[2])
            inner = self._submit(send, public)
        except Exception as exc:  # DomainError, or StoreError while loading
            if not future.done():
                future.set_exception(exc)
            return
        inner.add_done_callback(partial(settle, future))

    async def _release_event(self, chat_id: str, future: asyncio.Future,
                             event: MembershipEvent) -> None:
        """Submit the event and wait for its commit (on_commit updates the member map)."""
        try:
            await self._chats.members(chat_id)  # cached at commit: the fan-out splits on it
            public = bool(event.actor) and (await self._settings.get(event.actor)).read_receipts
            row = membership_message(chat_id, event, self._ids.next(), public_read=public)
            inner = self.writer.submit(row)
        except Exception as exc:
            if not future.done():
                future.set_exception(_unavailable(exc))
            return
        inner.add_done_callback(partial(settle, future))
        await asyncio.wait([inner])
        if inner.cancelled() or inner.exception() is not None:
            self._chats.forget(chat_id)  # outcome unknown: reload the members from the store

    def _submit(self, send: Send, public: bool) -> asyncio.Future[CommitResult]:
        user, device, chat_id, client_msg_id, body, media_ids = send
        row = NewMessage(chat_id, user, device, client_msg_id, body, tuple(media_ids),
                         self._ids.next(), now_ms(), public)
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

    # ------------------------------------------------------------------ fan-out
    def _on_commit(self, results: list[CommitResult]) -> None:
        """Runs right after a batch is durable, before any SendAck: group new rows per chat
        (already in seq order) and fan each group out once, split where a membership event
        changes who gets what."""
        by_chat: dict[str, list[StoredMessage]] = {}
        for result in results:
            if not result.duplicate:
                message = result.message
                by_chat.setdefault(message.chat_id, []).append(message)
                if self.on_sent is not None and message.sender_user:
                    self.on_sent(message.chat_id, message.sender_user, message.seq)
        for chat_id, messages in by_chat.items():
            members = self._chats.cached_members(chat_id)
            if members is None:
                asyncio.get_running_loop().create_task(self._fanout_after_load(chat_id, messages))
            elif any(message.event is not None for message in messages):
                self._fanout_events(chat_id, members, messages)
            elif self._fanout is not None:
                self._fanout(chat_id, members, messages)

    def _fanout_events(self, chat_id: str, members: dict[str, Membership],
                       messages: list[StoredMessage]) -> None:
        """Messages before an event go to the members before it, the event to both the members
        before and after it (whoever it adds or removes sees it), the rest to those after."""
        before = dict(members)
        segment: list[StoredMessage] = []
        for message in messages:
            if message.event is None:
                segment.append(message)
                continue
            if segment:
                self._fan(chat_id, before, segment)
                segment = []
            self._chats.applied(chat_id, message.event, message.seq)
            after = dict(self._chats.cached_members(chat_id) or {})
            self._fan(chat_id, {**before, **after}, [message])
            before = after
        if segment:
            self._fan(chat_id, before, segment)

    def _fan(self, chat_id: str, members: Mapping[str, Membership],
             messages: list[StoredMessage]) -> None:
        if self._fanout is not None:
            self._fanout(chat_id, members, messages)

    async def _fanout_after_load(self, chat_id: str, messages: list[StoredMessage]) -> None:
        """The member map was evicted between the check and the commit (rare): load it (it is
        the map after the batch) and fan out from the batch's last membership event on, to the
        users it names too; the receiving connections fill any ordering gap from the store, and
        members before an event get what precedes it when they next sync."""
        try:
            members = await self._chats.members(chat_id)
        except StoreError:
            log.warning("fan-out of %s skipped: members unavailable; devices get it on sync", chat_id)
            return
        events = [i for i, message in enumerate(messages) if message.event is not None]
        if events:
            messages = messages[events[-1]:]
            members = {**dict.fromkeys(messages[0].event.users), **members}
        self._fan(chat_id, members, messages)

    # ------------------------------------------------------------------ reads
    async def visible_periods(self, user: str, chat_id: str) -> list[Period]:
        """The periods of the chat the user may read (NOT_MEMBER unless a member now)."""
        membership = await self._chats.require_member(chat_id, user)
        periods = (await self._store.member_periods(chat_id, user)).get(user)
        return periods or [Period(membership.joined_seq)]

    async def read_history(self, chat_id: str, periods: list[Period], before_seq: int,
                           limit: int) -> list[StoredMessage]:
        """Up to `limit` messages below before_seq (0: from the newest), newest first, from
        the periods only: the ranges between them are skipped."""
        rows: list[StoredMessage] = []
        for period in reversed(periods):
            if len(rows) >= limit:
                break
            below = 0 if period.left_seq is None else period.left_seq + 1
            if before_seq:
                below = before_seq if below == 0 else min(below, before_seq)
            if below and below <= period.joined_seq + 1:
                continue
            rows += await self._store.read_history(chat_id, below, period.joined_seq,
                                                   limit - len(rows))
        return rows

    async def mark_read(self, user: str, chat_id: str, seq: int) -> tuple[int, bool]:
        """(the user's read watermark after the update, whether this read is public: made with
        read receipts on)."""
        await self._chats.require_member(chat_id, user)
        seq = min(seq, await self._store.head_seq(chat_id))
        try:
            public = (await self._settings.get(user)).read_receipts
            await self.writer.mark_read(chat_id, user, seq, public=public)
            return await self._store.read_seq(chat_id, user), public
        except StoreError:
            raise DomainError(Code.UNAVAILABLE, "store unavailable",
                              RETRY_AFTER_STORE_ERROR_MS) from None

    def ack(self, user: str, device: str, chat_id: str, seq: int) -> None:
        self.writer.ack_cursor(user, device, chat_id, seq)


def _check_blocked(user: str, members: Mapping[str, Membership], blockers: frozenset[str]) -> None:
    """In a direct chat: refused when the other user blocked the sender (and no more said)."""
    if any(other in blockers for other in members if other != user):
        raise DomainError(Code.BLOCKED, "refused")


def _unavailable(exc: Exception) -> Exception:
    if isinstance(exc, (DomainError, StoreError)):
        return exc
    return DomainError(Code.UNAVAILABLE, str(exc), RETRY_AFTER_STORE_ERROR_MS)
