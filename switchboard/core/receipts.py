"""Delivered/Read receipts as per-(chat, user) watermarks, pushed coalesced.

A device ack raises the user's delivered watermark, a read frame the read watermark; both are
persisted through the coalescing writer (max semantics, never backwards). Pushes are coalesced:
changes collect in a dirty set and a flush, `flush_interval` after the first change, sends at
most one ReceiptUpdate per chat to each interested user - the senders whose messages the change
covers, plus the changing user's own devices when its read watermark moved (multi-device read
sync; an ack alone is not echoed to its own user: it changes no badge, and in a group of 10,000
it would double the frames of every message).

Read receipts are mutual, as in WhatsApp: a user who turned them off has their reads hidden
from others (reported as 0, left out of "read by" and of the read rollup) and sees no read
information about others. A read made while they are off stays private for good: each user has
a public read watermark, raised only by reads (and sends) made with read receipts on, and that
is all others ever see; the user's own devices see the real one. A user who blocked a viewer is
hidden from that viewer the same way.

The rollups count a member from the point it joined: a member added later counts as holding
(and having read) everything before it joined, which it can never get.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from itertools import islice

from .blocks import Blocks
from .chats import ChatService
from .acks import raise_all
from .lru import LRU
from .model import Membership, Receipt
from .rollup import Rollup, raise_delivered, readers, visible_to
from .settings import Settings
from .store import Store, StoreError
from .tasks import watch
from .writer import CoalescingWriter

log = logging.getLogger(__name__)

FRESH_LOOKBACK = 1000  # messages whose senders hear of a change to receipts not yet cached
RECENT_SENDERS = 64  # per chat: senders of its latest commits, known without a store read

ReceiptPush = Callable[[str, str, dict[str, Receipt], int, int], None]
"""push(user_id, chat_id, changed members' receipts as that user may see them (delivered_seq,
read_seq), delivered_all, read_all): one user's view."""

NoteRoute = Callable[[str, str, int, int, int], None]
"""route(chat_id, user_id, delivered, read, public_read): take a change to the service that
coalesces the chat's pushes (the chat owner's, in cluster mode; this one by default)."""

DeliveredRoute = Callable[[str, dict[str, int]], None]
"""route_delivered(chat_id, {user_id: delivered}): a loop turn's delivered watermarks of a chat,
to the service that coalesces its pushes, as NoteRoute."""


class _Senders:
    """Who sent a chat's latest consecutive seqs, as committed on this node: a flush asks who
    sent what the moved watermarks cover, which under live traffic is the last few messages."""
    __slots__ = ("first", "users")

    def __init__(self, seq: int) -> None:
        self.first = seq  # the seq of users[0]
        self.users: deque[str] = deque(maxlen=RECENT_SENDERS)

    def add(self, seq: int, user: str) -> None:
        users = self.users
        if seq != self.first + len(users):  # not the next seq (committed elsewhere, a gap)
            self.first = seq
            users.clear()
        elif len(users) == RECENT_SENDERS:
            self.first += 1
        users.append(user)

    def between(self, after: int, upto: int) -> set[str] | None:
        """The senders of (after, upto], or None when this does not hold all of them."""
        if after + 1 < self.first or upto >= self.first + len(self.users):
            return None
        return set(islice(self.users, after + 1 - self.first, upto + 1 - self.first))


class _KeptRollup:
    """A chat's rollup and what it was built from: valid while those are the same objects and
    neither member maps nor settings changed since (their `changes` counters)."""
    __slots__ = ("rollup", "members", "receipts", "chats_changes", "settings_changes")

    def __init__(self, rollup: Rollup, members: dict[str, Membership],
                 receipts: dict[str, Receipt], chats_changes: int, settings_changes: int) -> None:
        self.rollup = rollup
        self.members = members
        self.receipts = receipts
        self.chats_changes = chats_changes
        self.settings_changes = settings_changes

    def holds(self, members: dict[str, Membership], receipts: dict[str, Receipt],
              chats_changes: int, settings_changes: int) -> bool:
        return (members is self.members and receipts is self.receipts
                and chats_changes == self.chats_changes
                and settings_changes == self.settings_changes)


class ReceiptService:
    def __init__(self, store: Store, chats: ChatService, settings: Settings, blocks: Blocks,
                 writer: CoalescingWriter, *, push: ReceiptPush, route: NoteRoute | None = None,
                 route_delivered: DeliveredRoute | None = None, flush_interval: float = 0.05,
                 cache_chats: int = 10_000) -> None:
        """route, route_delivered: to the service that coalesces a chat's pushes (None: this
        one)."""
        self._store = store
        self._chats = chats
        self._settings = settings
        self._blocks = blocks
        self._writer = writer
        self._flush_interval = flush_interval
        self._cache: LRU[str, dict[str, Receipt]] = LRU(cache_chats)
        self._senders: LRU[str, _Senders] = LRU(cache_chats)
        self._rollups: LRU[str, _KeptRollup] = LRU(cache_chats)
        self._dirty: dict[str, dict[str, Receipt]] = {}
        self._dirty_delivered: dict[str, dict[str, int]] = {}  # acks: chat -> user -> seq
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task | None = None
        self._push = push
        self._route = route or self.note
        self._route_delivered = route_delivered or self.note_delivered
        self.updates_pushed = 0
        self.not_pushed = 0
        self._closed = False

    async def close(self) -> None:
        """The drain, while the store is still open: push what is pending now, then stop.
        Changes noted afterwards are counted in `not_pushed`, not pushed: their watermarks are
        stored already (the writer), and devices read them when they reconnect."""
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._flush_task is not None:
            await asyncio.gather(self._flush_task, return_exceptions=True)
        if self._dirty or self._dirty_delivered:
            await self._flush(*self._take_dirty())

    def report_unpushed(self) -> None:
        if self.not_pushed:
            log.info("%d receipt changes arrived during the drain and were not pushed "
                     "(stored: devices get them when they reconnect)", self.not_pushed)

    # ------------------------------------------------------------------ changes in
    def acked(self, cursors: dict[tuple[str, str, str], int],
              by_chat: dict[str, dict[str, int]]) -> None:
        """A hand-off of acks (core/acks.py: the dicts are this service's to keep): devices'
        cursors and users' delivered watermarks to the writer, each chat's changes to the
        service that pushes them."""
        self._writer.ack_deliveries(cursors, by_chat)
        for chat_id, users in by_chat.items():
            self._route_delivered(chat_id, users)

    def read(self, chat_id: str, user_id: str, seq: int, public: bool) -> None:
        """The user read up to seq (already persisted by the caller), with read receipts on
        (`public`) or off."""
        self._route(chat_id, user_id, seq, seq, seq if public else 0)

    def sent(self, chat_id: str, user_id: str, seq: int) -> None:
        """The user's own message, committed here: the store moved their watermarks; mirror
        it, no push (the public one moved if their read receipts are on, as the send path saw
        them). Who sent it is kept for the flushes that will tell them of its receipts."""
        senders = self._senders.get(chat_id)
        if senders is None:
            self._senders.put(chat_id, senders := _Senders(seq))
        senders.add(seq, user_id)
        cached = self._cache.get(chat_id)
        if cached is not None:
            mine = cached.setdefault(user_id, Receipt(0, 0))
            mine.delivered_seq = max(mine.delivered_seq, seq)
            mine.read_seq = max(mine.read_seq, seq)
            settings = self._settings.cached(user_id)
            if settings is not None and settings.read_receipts:
                mine.public_read_seq = max(mine.public_read_seq, seq)
            self._raised(chat_id, cached, user_id, mine)

    def note(self, chat_id: str, user_id: str, delivered: int, read: int, public_read: int) -> None:
        """A persisted change, to be pushed with the next flush."""
        if self._closed:
            self.not_pushed += 1
            return
        chat = self._dirty.get(chat_id)
        if chat is None:
            chat = self._dirty[chat_id] = {}
        pending = chat.get(user_id)
        if pending is None:
            chat[user_id] = Receipt(max(delivered, read), read, public_read)
        else:
            if delivered > pending.delivered_seq or read > pending.delivered_seq:
                pending.delivered_seq = max(delivered, read)
            if read > pending.read_seq:
                pending.read_seq = read
            if public_read > pending.public_read_seq:
                pending.public_read_seq = public_read
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                self._flush_interval, self._start_flush)

    def note_delivered(self, chat_id: str, delivered: dict[str, int]) -> None:
        """Persisted delivered watermarks of a chat (user -> seq; the dict is kept), to be
        pushed with the next flush."""
        if self._closed:
            self.not_pushed += len(delivered)
            return
        pending = self._dirty_delivered.get(chat_id)
        if pending is None:
            self._dirty_delivered[chat_id] = delivered
        else:
            raise_all(pending, delivered)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                self._flush_interval, self._start_flush)

    def forget_all(self) -> None:
        """Chats may have changed owner: the watermarks cached here are reloaded on next use."""
        self._cache.clear()
        self._senders.clear()
        self._rollups.clear()

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
        """(delivered to all up to, read by all up to) over the current members (core/rollup.py
        says how they count), kept as the watermarks rise and rebuilt when the members, any
        user's settings or the cached watermarks were replaced."""
        members = await self._chats.members(chat_id)
        kept = self._rollups.use(chat_id)
        if kept is None or not kept.holds(members, receipts, self._chats.changes,
                                          self._settings.changes):
            changes = (self._chats.changes, self._settings.changes)
            # built from the members as they are now: the cached map changes in place (a
            # member added while the settings are read), and then the counters taken here
            # no longer hold, so the next flush builds it again
            snapshot = dict(members)
            shown = {user: settings.read_receipts
                     for user, settings in (await self._settings.get_many(snapshot)).items()}
            kept = _KeptRollup(Rollup(snapshot, receipts, shown), members, receipts, *changes)
            self._rollups.put(chat_id, kept)
        return kept.rollup.totals

    def _raised(self, chat_id: str, receipts: dict[str, Receipt], user: str,
                receipt: Receipt) -> None:
        """A cached watermark rose: the chat's kept rollup follows."""
        kept = self._rollups.get(chat_id)
        if kept is not None and kept.receipts is receipts:
            kept.rollup.raised(user, receipt)

    async def reads_hidden(self, viewer: str, user: str) -> bool:
        """Whether `viewer` sees nothing of `user`'s reads: either has read receipts off, or
        `user` blocked `viewer`."""
        return (not (await self._settings.get(viewer)).read_receipts
                or not (await self._settings.get(user)).read_receipts
                or user in await self._blocks.blockers(viewer))

    # ------------------------------------------------------------------ flushing
    def _start_flush(self) -> None:
        self._flush_handle = None
        self._flush_task = watch(asyncio.ensure_future(self._flush(*self._take_dirty())))

    def _take_dirty(self) -> tuple[dict[str, dict[str, Receipt]], dict[str, dict[str, int]]]:
        dirty, self._dirty = self._dirty, {}
        delivered, self._dirty_delivered = self._dirty_delivered, {}
        return dirty, delivered

    async def _flush(self, dirty: dict[str, dict[str, Receipt]],
                     delivered: dict[str, dict[str, int]]) -> None:
        skipped: list[str] = []
        problem = None
        for chat_id in dirty.keys() | delivered.keys():
            try:
                await self._flush_chat(chat_id, dirty.get(chat_id, {}),
                                       delivered.get(chat_id, {}))
            except StoreError as exc:
                skipped.append(chat_id)
                problem = exc
            except Exception:
                log.exception("receipt push for %s failed", chat_id)
        if skipped:  # one line per flush, not one per chat: a store outage spans them all
            log.warning("receipt pushes for %d chats skipped (first %s): %s", len(skipped),
                        skipped[0], problem)

    async def _flush_chat(self, chat_id: str, changes: dict[str, Receipt],
                          delivered: dict[str, int]) -> None:
        """Push a chat's changes: `changes` from note (reads, and delivered acks routed one by
        one), `delivered` from note_delivered (a large group's acks, plain seqs, walked in a
        loop of their own: in a group of 10,000 they are nearly all of a flush's changes)."""
        # Loaded now, the stored watermarks may already include these changes (the writer
        # persists them independently): then every change is pushed, over a bounded look-back.
        fresh = chat_id not in self._cache
        receipts = await self._of_chat(chat_id)
        kept = self._rollups.get(chat_id)
        rollup = kept.rollup if kept is not None and kept.receipts is receipts else None
        changed: dict[str, Receipt] = {}
        delivered_moved: set[str] = set()
        public_moved: set[str] = set()
        read_moved: set[str] = set()  # told to their own devices
        covered_from = covered_to = None
        for user, new in changes.items():
            seq = delivered.pop(user, 0)
            if seq > new.delivered_seq:
                new.delivered_seq = seq
            old = receipts.get(user)
            if old is None:
                old = receipts[user] = Receipt(0, 0)
            spans = []  # (old, new] of each watermark others see that moved
            if new.delivered_seq > old.delivered_seq or fresh:
                delivered_moved.add(user)
                spans.append((old.delivered_seq, new.delivered_seq))
            if new.public_read_seq > old.public_read_seq:
                public_moved.add(user)
                spans.append((old.public_read_seq, new.public_read_seq))
            if spans:
                # the senders told are those of what the moved watermarks now cover (a member
                # that never read must not make every flush read the chat from its start)
                top = max(upto for _, upto in spans)
                before = (max(0, top - FRESH_LOOKBACK) if fresh
                          else min(after for after, _ in spans))
                covered_from = before if covered_from is None else min(covered_from, before)
                covered_to = top if covered_to is None else max(covered_to, top)
            if new.read_seq > old.read_seq or (fresh and new.read_seq):
                read_moved.add(user)
            moved = user in delivered_moved or user in public_moved or user in read_moved
            old.delivered_seq = max(old.delivered_seq, new.delivered_seq)
            old.read_seq = max(old.read_seq, new.read_seq)
            old.public_read_seq = max(old.public_read_seq, new.public_read_seq)
            if moved:
                changed[user] = Receipt(old.delivered_seq, old.read_seq, old.public_read_seq)
                if rollup is not None:
                    rollup.raised(user, old)
        span = raise_delivered(receipts, delivered, rollup, fresh, FRESH_LOOKBACK, changed,
                               delivered_moved)  # the acks' plain seqs, natively
        if span is not None:
            low, high = span
            covered_from = low if covered_from is None else min(covered_from, low)
            covered_to = high if covered_to is None else max(covered_to, high)
        if not changed:
            return
        senders = set() if covered_from is None else await self._senders_between(
            chat_id, covered_from, covered_to)
        delivered_all, read_all = await self.rollup(chat_id, receipts)
        members = await self._chats.members(chat_id)
        for target in senders | read_moved:
            if target not in senders:  # only its own read moved: only its own entry
                mine = changed[target]
                visible = {target: Receipt(mine.delivered_seq, mine.read_seq)}
            else:
                visible = await self._visible_to(target, changed, delivered_moved, public_moved)
            if visible:
                self._push(target, chat_id, visible, delivered_all,
                           await self._read_all_for(target, members, read_all))
                self.updates_pushed += 1

    async def _senders_between(self, chat_id: str, after: int, upto: int) -> set[str]:
        recent = self._senders.get(chat_id)
        known = recent.between(after, upto) if recent is not None else None
        if known is not None:
            return known
        return await self._store.senders_between(chat_id, after, upto)

    async def _visible_to(self, target: str, changed: dict[str, Receipt],
                          delivered_moved: set[str], public_moved: set[str]) -> dict[str, Receipt]:
        """The changes a sender is told of, as it may see them (natively: a large group's
        acks are 10,000 of them per message). Whether a read is hidden from the target is asked
        only where there is a read to show."""
        hidden = {user for user in readers(target, changed, delivered_moved, public_moved)
                  if await self.reads_hidden(target, user)}
        return visible_to(target, changed, delivered_moved, public_moved, hidden)

    async def _read_all_for(self, target: str, members, read_all: int) -> int:
        """The read rollup as `target` may see it: 0 with its read receipts off, or while a
        member who blocked it is in the chat (the minimum could be that member's)."""
        if not (await self._settings.get(target)).read_receipts:
            return 0
        blockers = await self._blocks.blockers(target)
        if any(user in members for user in blockers):
            return 0
        return read_all
