"""Delivered/Read receipts as per-(chat, user) watermarks, pushed coalesced.

A device ack raises the user's delivered watermark, a read frame the read watermark; both are
persisted through the coalescing writer (max semantics, never backwards). Pushes are coalesced:
changes collect in a dirty set and a flush, `flush_interval` after the first change, sends at
most one ReceiptUpdate per chat to each interested user - the senders whose messages the change
covers, plus the changing user's own devices (multi-device read sync).

Read receipts are mutual, as in WhatsApp: a user who turned them off has their read watermark
hidden from others (reported as 0, left out of "read by" and of the read rollup) and sees no
read information about others.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .chats import ChatService
from .lru import LRU
from .model import Receipt
from .settings import Settings
from .store import Store, StoreError
from .writer import CoalescingWriter

log = logging.getLogger(__name__)

FRESH_LOOKBACK = 1000  # messages whose senders hear of a change to receipts not yet cached

ReceiptPush = Callable[[str, str, dict[str, Receipt], int, int], None]
"""push(user_id, chat_id, changed members' receipts, delivered_all, read_all): one user's view."""

NoteRoute = Callable[[str, str, int, int], None]
"""route(chat_id, user_id, delivered, read): take a change to the service that coalesces the
chat's pushes (the chat owner's, in cluster mode; this one by default)."""


class ReceiptService:
    def __init__(self, store: Store, chats: ChatService, settings: Settings,
                 writer: CoalescingWriter, *, push: ReceiptPush, route: NoteRoute | None = None,
                 flush_interval: float = 0.05, cache_chats: int = 10_000) -> None:
        """route: to the service that coalesces a chat's pushes (None: this one)."""
        self._store = store
        self._chats = chats
        self._settings = settings
        self._writer = writer
        self._flush_interval = flush_interval
        self._cache: LRU[str, dict[str, Receipt]] = LRU(cache_chats)
        self._dirty: dict[str, dict[str, Receipt]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task | None = None
        self._push = push
        self._route = route or self.note
        self.updates_pushed = 0

    def close(self) -> None:
        """Stop pushing (the watermarks themselves are already with the writer)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._flush_task is not None:
            self._flush_task.cancel()

    # ------------------------------------------------------------------ changes in
    def delivered(self, chat_id: str, user_id: str, seq: int) -> None:
        """A device of the user acked up to seq."""
        self._writer.ack_delivered(chat_id, user_id, seq)
        self._route(chat_id, user_id, seq, 0)

    def read(self, chat_id: str, user_id: str, seq: int) -> None:
        """The user read up to seq (already persisted by the caller)."""
        self._route(chat_id, user_id, seq, seq)

    def sent(self, chat_id: str, user_id: str, seq: int) -> None:
        """The user's own message: the store moved their watermarks; mirror it, no push."""
        cached = self._cache.get(chat_id)
        if cached is not None:
            mine = cached.setdefault(user_id, Receipt(0, 0))
            mine.delivered_seq = max(mine.delivered_seq, seq)
            mine.read_seq = max(mine.read_seq, seq)

    def note(self, chat_id: str, user_id: str, delivered: int, read: int) -> None:
        """A persisted change, to be pushed with the next flush."""
        pending = self._dirty.setdefault(chat_id, {}).setdefault(user_id, Receipt(0, 0))
        pending.delivered_seq = max(pending.delivered_seq, delivered, read)
        pending.read_seq = max(pending.read_seq, read)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                self._flush_interval, self._start_flush)

    def forget_all(self) -> None:
        """Chats may have changed owner: the watermarks cached here are reloaded on next use."""
        self._cache.clear()

    # ------------------------------------------------------------------ queries
    async def _of_chat(self, chat_id: str) -> dict[str, Receipt]:
        cached = self._cache.use(chat_id)
        if cached is None:
            loaded = await self._store.receipts(chat_id)
            cached = self._cache.use(chat_id)  # loaded meanwhile by another caller: keep theirs
            if cached is None:
                cached = loaded
                self._cache.put(chat_id, cached)
        return cached

    async def rollup(self, chat_id: str, receipts: dict[str, Receipt]) -> tuple[int, int]:
        """(delivered to all up to, read by all up to) over the current members. A member with
        read receipts off counts as having read nothing, so nobody is "read by all" past 0."""
        delivered_all = read_all = None
        settings = self._settings
        for user in await self._chats.members(chat_id):
            receipt = receipts.get(user) or Receipt(0, 0)
            shown = (settings.cached(user) or await settings.get(user)).read_receipts
            read = receipt.read_seq if shown else 0
            delivered_all = receipt.delivered_seq if delivered_all is None else min(
                delivered_all, receipt.delivered_seq)
            read_all = read if read_all is None else min(read_all, read)
        return delivered_all or 0, read_all or 0

    # ------------------------------------------------------------------ flushing
    def _start_flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, {}
        self._flush_task = asyncio.ensure_future(self._flush(dirty))

    async def _flush(self, dirty: dict[str, dict[str, Receipt]]) -> None:
        for chat_id, changes in dirty.items():
            try:
                await self._flush_chat(chat_id, changes)
            except StoreError as exc:
                log.warning("receipt push for %s skipped: %s", chat_id, exc)
            except Exception:
                log.exception("receipt push for %s failed", chat_id)

    async def _flush_chat(self, chat_id: str, changes: dict[str, Receipt]) -> None:
        # Loaded now, the stored watermarks may already include these changes (the writer
        # persists them independently): then every change is pushed, over a bounded look-back.
        fresh = chat_id not in self._cache
        receipts = await self._of_chat(chat_id)
        changed: dict[str, Receipt] = {}
        delivered_moved: set[str] = set()
        covered_from = covered_to = None
        for user, new in changes.items():
            old = receipts.setdefault(user, Receipt(0, 0))
            top = max(new.delivered_seq, new.read_seq)
            before = max(0, top - FRESH_LOOKBACK) if fresh else min(old.delivered_seq, old.read_seq)
            moved = fresh
            if new.delivered_seq > old.delivered_seq or fresh:
                old.delivered_seq = max(old.delivered_seq, new.delivered_seq)
                delivered_moved.add(user)
                moved = True
            if new.read_seq > old.read_seq:
                old.read_seq = new.read_seq
                moved = True
            if moved:
                changed[user] = Receipt(old.delivered_seq, old.read_seq)
                covered_from = before if covered_from is None else min(covered_from, before)
                covered_to = top if covered_to is None else max(covered_to, top)
        if not changed:
            return
        senders = await self._store.senders_between(chat_id, covered_from, covered_to)
        delivered_all, read_all = await self.rollup(chat_id, receipts)
        hidden = {user for user in changed if not (await self._settings.get(user)).read_receipts}
        for target in senders | set(changed):
            show_read = (await self._settings.get(target)).read_receipts
            if target not in senders:  # not a sender: only your own watermarks concern you
                visible = {target: changed[target]}
            else:
                visible = {}
                for user, receipt in changed.items():
                    if user == target:  # your own devices always see your own watermarks
                        visible[user] = receipt
                    elif show_read and user not in hidden:
                        visible[user] = receipt
                    elif user in delivered_moved:  # a hidden read alone would tell when they read
                        visible[user] = Receipt(receipt.delivered_seq, 0)
            if visible:
                self._push(target, chat_id, visible, delivered_all, read_all if show_read else 0)
                self.updates_pushed += 1
