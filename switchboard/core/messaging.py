"""The send path on the chat's owner: validate, check who may send, hand the row to the
coalescing writer, and fan out what the store committed.

Sequencing and dedup happen inside the store's commit (see store.py): the seq is taken from
the chat head in the same transaction that stores the row, so it is gap-free and a retry of
the same (chat, sender, client_msg_id) - even after a restart - returns the original.

Who may send is decided from memory when everything is cached (the member map, the sender's
settings, and in a direct chat who blocked the sender): then no task is created. Otherwise the
send waits in its chat's FIFO gate while those load, and every later send of that chat waits
behind it, so a chat's sends reach the writer in the order they came. Membership events go
through the same gate and later sends wait until the event is committed: a member removed by
it cannot slip a message in after it, an added one sends only once it is in.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import Awaitable, Callable

from .blocks import Blocks
from .chats import ChatService, is_direct, membership_message
from .errors import DRAIN_RETRY_AFTER_MS, RETRY_AFTER_MS, Code, DomainError
from .futures import Done
from .gate import ChatGate
from .ids import ServerIds, now_ms, valid_id
from .model import CommitResult, Membership, NewMessage, Period, SendRequest, StoredMessage
from .settings import Settings
from .store import Store, StoreError
from .tasks import TaskGroup
from .writer import Backpressure, CoalescingWriter

log = logging.getLogger(__name__)

Fanout = Callable[[str, Mapping[str, Membership], list[StoredMessage]], None]
"""fanout(chat_id, members, messages): deliver freshly committed messages (one chat, seq order)."""

Sent = Callable[[str, str, int], None]
"""sent(chat_id, sender, seq): a new message was committed (the sender's own watermarks moved)."""

Committed = Callable[[str, list[StoredMessage], Collection[int]], None]
"""committed(chat_id, messages, e2e): new messages of one chat (seq order, no duplicates, no
membership events: those are never pushed) after their fan-out, with the server_ids of those
the sender marked end-to-end encrypted."""

ClaimMedia = Callable[[SendRequest], Awaitable[None]]
"""claim_media(send): record that the send's chat references its media, or raise DomainError."""

MAX_CLIENT_MSG_ID = 64
MAX_MEDIA_ID = 128


class MessageService:
    def __init__(self, store: Store, chats: ChatService, ids: ServerIds, *, settings: Settings,
                 blocks: Blocks, fanout: Fanout, sent: Sent | None = None,
                 committed: Committed | None = None, max_body_bytes: int, max_media_ids: int,
                 writer_options: dict | None = None, on_flush=None,
                 claim_media: ClaimMedia | None = None) -> None:
        """`claim_media` checks and records a send's media before it goes to the writer
        (core/media.py); without it media ids are taken as they are."""
        self._store = store
        self._chats = chats
        self._ids = ids
        self._settings = settings
        self._blocks = blocks
        self._fanout = fanout
        self._sent = sent
        self._committed = committed
        self._claim_media = claim_media
        self._e2e: set[int] = set()  # server_ids of e2e sends until their batch is settled
        self.max_body_bytes = max_body_bytes
        self.max_media_ids = max_media_ids
        self.writer = CoalescingWriter(store, on_commit=self._on_commit, on_flush=on_flush,
                                       **(writer_options or {}))
        self._waiting = ChatGate()  # sends and events of a chat waiting for what they need
        self._draining: set[str] = set()  # chats whose waiting ones a task hands on
        self._tasks = TaskGroup()   # those tasks, and fan-outs waiting for a member map
        self._closing = False

    async def close(self) -> None:
        """Drain: sends waiting in a chat's gate still reach the writer (they were accepted),
        then the writer makes everything durable, and fan-outs waiting for a member map end. A
        send submitted after this is UNAVAILABLE."""
        self._closing = True
        await self._tasks.wait()
        await self.writer.close()
        await self._tasks.wait()

    # ------------------------------------------------------------------ send
    def submit_send(self, send: SendRequest, done: Done) -> None:
        """Validate and queue a send, or a membership event (`send.event`): `done` is called
        once the row is durable (core/futures.py).

        Raises DomainError at once for what can be told without waiting. With what the check
        needs cached (the common case) no task is created: `done` goes to the writer as it is.
        It gets StoreError when the batch failed (outcome unknown: retry). The chat's sends
        after an event wait until it is committed (the member map they are checked against
        changes), and those after a send naming media wait until its media are claimed.
        """
        chat_id = send.chat_id
        if send.event is None:
            self._validate(send)
        if self._closing:
            raise DomainError(Code.UNAVAILABLE, "server draining: reconnect", DRAIN_RETRY_AFTER_MS)
        if chat_id not in self._draining:
            if send.event is None and not self._claims(send):
                public = self._cached_check(send.user, chat_id)
                if public is not None:
                    self._submit(send, public, done)
                    return
            # behind what its check needs, and behind the chat's sends already waiting: a later
            # send must not reach the writer first when what they wait for arrives meanwhile
            self._draining.add(chat_id)
            self._tasks.spawn(self._drain(chat_id))
        self._waiting.hold(send, done)

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

    async def _drain(self, chat_id: str) -> None:
        """Hand a chat's waiting sends and events to the writer one at a time, in order; new
        ones that arrive meanwhile join the gate, so nothing overtakes them."""
        try:
            while (entry := self._waiting.take(chat_id)) is not None:
                done, send = entry
                if send.event is None:
                    await self._release_send(done, send)
                else:
                    await self._release_event(done, send)
        finally:
            self._draining.discard(chat_id)

    def _claims(self, send: SendRequest) -> bool:
        """The send names media to claim before it may go to the writer."""
        return bool(send.media_ids) and self._claim_media is not None

    async def _release_send(self, done: Done, send: SendRequest) -> None:
        """Check the send (and claim its media) while the chat's later sends wait behind it."""
        try:
            public = await self._loaded_check(send.user, send.chat_id)
            if self._claims(send):
                await self._claim_media(send)
            self._submit(send, public, done)
        except Exception as exc:  # DomainError, or StoreError while loading
            done(None, _unavailable(exc))

    async def _release_event(self, done: Done, send: SendRequest) -> None:
        """Submit the event and wait for its commit (on_commit updates the member map)."""
        chat_id, event = send.chat_id, send.event
        landed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def settled(result: CommitResult | None, error: BaseException | None) -> None:
            if not landed.done():  # not cancelled with the drain
                landed.set_result(error is None)
            done(result, error)

        try:
            await self._chats.members(chat_id)  # cached at commit: the fan-out splits on it
            public = bool(event.actor) and (await self._settings.get(event.actor)).read_receipts
            row = membership_message(chat_id, event, self._ids.next(), public_read=public)
            self.writer.submit(row, settled)
        except Exception as exc:
            done(None, _unavailable(exc))
            return
        if not await landed:
            self._chats.forget(chat_id)  # outcome unknown: reload the members from the store

    def _submit(self, send: SendRequest, public: bool, done: Done) -> None:
        """The row to the writer, its outcome to `done`."""
        row = NewMessage(send.chat_id, send.user, send.device, send.client_msg_id, send.body,
                         tuple(send.media_ids), self._ids.next(), now_ms(), public)
        if send.e2e and self._committed is not None:
            done = self._e2e_done(row.server_id, done)
        try:
            self.writer.submit(row, done)
        except Backpressure as exc:
            raise DomainError(Code.UNAVAILABLE, "server busy", exc.retry_after_ms) from None
        if send.e2e and self._committed is not None:
            self._e2e.add(row.server_id)  # on_commit takes it out when the row is committed

    def _e2e_done(self, server_id: int, done: Done) -> Done:
        """`done`, forgetting the e2e mark of a row that failed or was a duplicate (stored
        before under another server_id): on_commit never sees it as a new row."""
        def e2e_done(result: CommitResult | None, error: BaseException | None) -> None:
            if error is not None or result.duplicate:
                self._e2e.discard(server_id)
            done(result, error)
        return e2e_done

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

    # ------------------------------------------------------------------ fan-out
    def _on_commit(self, results: list[CommitResult]) -> None:
        """Runs right after a batch is durable (its SendAcks are queued already): group new rows
        per chat (already in seq order) and fan each group out once, split where a membership
        event changes who gets what. A duplicate is offered again, on its own: its original may
        have been stored by a commit whose outcome was unknown and never fanned out (a store
        timeout, an owner that died); devices that have it drop it. A duplicate membership event
        may never have reached the member cache either: the chat's map is reloaded for it."""
        by_chat: dict[str, list[StoredMessage]] = {}
        again: dict[tuple[str, int], StoredMessage] = {}
        for result in results:
            message = result.message
            if result.duplicate:
                again[(message.chat_id, message.seq)] = message
                continue
            by_chat.setdefault(message.chat_id, []).append(message)
            if self._sent is not None and message.sender_user:
                self._sent(message.chat_id, message.sender_user, message.seq)
        for (chat_id, seq), message in sorted(again.items()):
            if not any(m.seq == seq for m in by_chat.get(chat_id, ())):
                if message.event is not None:
                    self._chats.forget(chat_id)
                self._fanout_group(chat_id, [message])
        for chat_id, messages in by_chat.items():
            self._fanout_group(chat_id, messages)
            sends = [m for m in messages if m.event is None]  # membership events never push
            if self._committed is not None and sends:
                e2e = [m.server_id for m in sends if m.server_id in self._e2e]
                self._e2e.difference_update(e2e)
                self._committed(chat_id, sends, e2e)

    def _fanout_group(self, chat_id: str, messages: list[StoredMessage]) -> None:
        members = self._chats.cached_members(chat_id)
        if members is None:
            self._tasks.spawn(self._fanout_after_load(chat_id, messages))
        elif any(message.event is not None for message in messages):
            self._fanout_events(chat_id, members, messages)
        else:
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
                self._fanout(chat_id, before, segment)
                segment = []
            self._chats.applied(chat_id, message.event, message.seq)
            after = dict(self._chats.cached_members(chat_id) or {})
            self._fanout(chat_id, {**before, **after}, [message])
            before = after
        if segment:
            self._fanout(chat_id, before, segment)

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
        self._fanout(chat_id, members, messages)

    # ------------------------------------------------------------------ reads
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
            raise DomainError(Code.UNAVAILABLE, "store unavailable", RETRY_AFTER_MS) from None

    def ack(self, user: str, device: str, chat_id: str, seq: int) -> None:
        self.writer.ack_cursor(user, device, chat_id, seq)


def _check_blocked(user: str, members: Mapping[str, Membership], blockers: frozenset[str]) -> None:
    """In a direct chat: refused when the other user blocked the sender (and no more said)."""
    if blockers and any(other in blockers for other in members if other != user):
        raise DomainError(Code.BLOCKED, "refused")


def _unavailable(exc: Exception) -> Exception:
    if isinstance(exc, (DomainError, StoreError)):
        return exc
    return DomainError(Code.UNAVAILABLE, str(exc), RETRY_AFTER_MS)
