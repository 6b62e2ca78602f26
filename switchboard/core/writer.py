"""The coalescing writer: group commit in front of a Store.

While one `store.commit` is in flight, new messages, cursor acks, delivered acks and read marks
accumulate; when it returns, everything accumulated goes into the next commit (up to `max_rows`
messages and `max_bytes` of bodies; the rest waits for the commit after). Two commits start at
least `commit_floor` apart unless a full batch waits: under load commits take longer than that
and run back to back, while at light load, where every message would otherwise pay for a commit
of its own (a transaction, an fsync, a hand-off to the store's thread), the messages of a
floor's time share one, at the cost of waiting up to the floor. A message after a quiet spell is
committed at once. One background task does the flushing; it exists only while there is work,
so an idle writer costs nothing.

Cursor and delivered acks alone wait up to `ack_delay` for company: every device acks what it
receives, and committing each ack on its own made most commits ack-only (and, with several
processes on one SQLite file, each one a turn at the file's write lock that the next message
waited for). A message or a read mark commits at once and takes the waiting acks along. Acks
are watermarks nobody waits for (receipts are pushed before they are stored), so a delay costs
at most that a device reconnecting within it is offered its last messages again. A commit that
carries messages takes at most `max_acks` cursor acks and as many delivered acks, and the rest
go in the next commit: a group of 10,000 acks every message, and taking 20,000 upserts along
(tens of ms) would make the next message's commit, and its SendAck, wait for them. A commit of
acks alone takes them all: split into several, 10,000 acks cost twice the CPU and I/O (each
commit rewrites most pages of the cursor and receipt tables).

A message's completion (core/futures.py) is called only once it is durable. The completions of
a commit are called directly, in submission order, in the turn the commit returns and before
its fan-out: one batch settles without a future or a scheduled callback per message. A commit
is atomic per chat, not across chats (store.py), so outcomes are per chat: the messages of a
chat that failed fail with its error (outcome unknown: the sender retries with the same
client_msg_id, which the store deduplicates), and every other chat's messages succeed. A
commit that raises fails them all.
Cursor acks, delivered acks and read marks are watermarks, so they are coalesced to the max per
key; those that did not land (the store's `unsaved`, or all of them when the commit raised) are
merged back and go out with the next flush (a failure alone does not trigger a retry, so a
broken store is not hammered in a loop). A read mark's future fails only when its own
(chat, user) watermark did not land.

A message whose sender went away is still committed and fanned out: it was accepted, and a
retry from the sender is deduplicated.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from itertools import islice
from typing import Callable

from .acks import raise_all, raise_by_chat
from .futures import Done
from .model import Batch, CommitOutcome, CommitResult, NewMessage
from .store import Store, StoreError
from .tasks import watch

log = logging.getLogger(__name__)

MIN_RETRY_AFTER_MS = 10
MAX_RETRY_AFTER_MS = 5000
ASSUMED_FLUSH_SECONDS = 0.005


class Backpressure(Exception):
    """Too many messages wait for the store; the caller should retry after `retry_after_ms`."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"writer queue full, retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class CoalescingWriter:
    """Group commit for one Store. Use from one event loop; no method blocks it.

    Stats: `batches` committed, `rows` (messages in them), `last_batch_rows`, `failures`
    (commits that raised or failed a chat), `failed_chats` (chats failed, summed over commits)
    and `flush_seconds_total` (time spent in commit, failed ones included).
    `on_commit(results)` sees each committed batch's results right after their completions
    were called. `on_flush(batch, seconds)`, when given, sees every committed batch and its
    commit time right after the commit (metrics histograms); it must not raise.
    """

    def __init__(self, store: Store, *, max_rows: int = 1024, max_bytes: int = 1 << 20,
                 max_pending: int = 20000, commit_floor: float = 0.0, ack_delay: float = 0.0,
                 max_acks: int = 250,
                 on_commit: Callable[[list[CommitResult]], None] | None = None,
                 on_flush: Callable[[Batch, float], None] | None = None) -> None:
        self._store = store
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.commit_floor = commit_floor
        self._last_start = -math.inf
        self._floor: asyncio.Future[None] | None = None  # the wait for the floor to pass
        self.ack_delay = ack_delay
        self.max_acks = max_acks
        self._ack_timer: asyncio.TimerHandle | None = None
        self._on_commit = on_commit
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it is used from
        self._queue: deque[tuple[NewMessage, Done]] = deque()
        self._in_flight = 0
        self._cursors: dict[tuple[str, str, str], int] = {}
        self._delivered: dict[tuple[str, str], int] = {}
        self._reads: dict[tuple[str, str], int] = {}
        self._public_reads: dict[tuple[str, str], int] = {}
        self._read_waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}
        self._updates_due = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        self.rows = 0
        self.last_batch_rows = 0
        self.failures = 0
        self.failed_chats = 0
        self.flush_seconds_total = 0.0
        self.on_flush = on_flush

    @property
    def pending(self) -> int:
        """Messages accepted and not yet committed (queued or in the commit in flight)."""
        return len(self._queue) + self._in_flight

    # ------------------------------------------------------------------ producers
    def submit(self, msg: NewMessage, done: Done) -> None:
        """Queue a message; `done(result, None)` is called once it is durable, or
        `done(None, error)`. The completions of one commit are called in the order the messages
        were submitted, so the SendAcks they write keep that order. Raises Backpressure when
        the queue is full (RuntimeError once closed); `done` is then never called."""
        if self._closed:
            raise RuntimeError("writer is closed")
        if self.pending >= self.max_pending:
            raise Backpressure(self._retry_after_ms())
        self._queue.append((msg, done))
        if len(self._queue) >= self.max_rows:
            self._floor_passed()
        if self._task is None:
            self._kick()

    def ack_cursor(self, user: str, device: str, chat: str, seq: int) -> None:
        """Record a device's delivery cursor; written with the next batch. Dropped after close:
        cursors are soft, the device acks again after it reconnects."""
        if self._closed:
            return
        _raise_to(self._cursors, (user, device, chat), seq)
        self._acks_pending()

    def ack_deliveries(self, cursors: dict[tuple[str, str, str], int],
                       by_chat: dict[str, dict[str, int]]) -> None:
        """A hand-off of acks (core/acks.py): devices' cursors {(user, device, chat): seq}
        (the writer may keep the dict) and users' delivered watermarks per chat {chat: {user:
        seq}} (copied: the receipts keep those dicts), merged whole. Dropped after close, like
        ack_cursor."""
        if self._closed:
            return
        if self._cursors:
            raise_all(self._cursors, cursors)
        else:
            self._cursors = cursors
        raise_by_chat(self._delivered, by_chat)
        self._acks_pending()

    def _acks_pending(self) -> None:
        if not self.ack_delay:
            self._updates_due = True
            self._kick()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(self.ack_delay,
                                                                    self._acks_due)

    def _acks_due(self) -> None:
        """ack_delay passed: commit the acks unless a flush took them along meanwhile."""
        self._ack_timer = None
        if self._cursors or self._delivered:
            self._updates_due = True
            self._kick()

    def mark_read(self, chat: str, user: str, seq: int, *,
                  public: bool = False) -> asyncio.Future[None]:
        """Raise the user's read watermark (and the public one too when `public`: the user's
        read receipts are on); the future resolves once it is durable."""
        if self._closed:
            raise RuntimeError("writer is closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        _raise_to(self._public_reads if public else self._reads, (chat, user), seq)
        self._read_waiters.setdefault((chat, user), []).append(future)
        self._updates_due = True
        self._kick()
        return future

    async def close(self) -> None:
        """Refuse new work, flush everything queued (merged-back updates included), stop."""
        self._closed = True
        self._floor_passed()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._cursors or self._delivered or self._reads or self._public_reads:
            self._updates_due = True
        if self._queue or self._updates_due:
            self._kick()
        if self._task is not None:
            await asyncio.shield(self._task)

    # ------------------------------------------------------------------ flushing
    def _kick(self) -> None:
        if self._task is None:
            self._task = watch(self._running_loop().create_task(self._run()))

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, asked for once: in CPython 3.11 every asyncio.get_running_loop() makes a
        getpid() system call (~0.8 us here)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue or self._updates_due:
                wait = self._last_start + self.commit_floor - loop.time()
                if wait > 0 and len(self._queue) < self.max_rows and not self._closed:
                    self._floor = loop.create_future()
                    timer = loop.call_later(wait, self._floor_passed)
                    try:
                        await self._floor
                    finally:
                        timer.cancel()
                        self._floor = None
                self._last_start = loop.time()
                await self._flush()
        finally:
            self._task = None

    def _floor_passed(self) -> None:
        """Commit now: the floor passed, a full batch waits, or the writer closes."""
        if self._floor is not None and not self._floor.done():
            self._floor.set_result(None)

    async def _flush(self) -> None:
        batch, completions = self._take()
        read_waiters, self._read_waiters = self._read_waiters, {}
        self._in_flight = len(completions)
        started = time.perf_counter()
        try:
            outcome = await self._store.commit(batch)
        except BaseException as exc:
            self.failures += 1
            self._merge_back(batch)
            # A cancelled flush may still land in the store: to its senders it is a failure
            # with unknown outcome, like any other.
            error = exc if isinstance(exc, Exception) else StoreError("writer stopped mid-commit")
            for message, done in zip(batch.messages, completions):
                _complete(done, message.chat_id, None, error)
            for future in (f for waiting in read_waiters.values() for f in waiting):
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            log.warning("commit of %d messages failed: %r", len(completions), exc)
            return
        finally:
            self._in_flight = 0
            elapsed = time.perf_counter() - started
            self.flush_seconds_total += elapsed
        if self.on_flush is not None:
            self.on_flush(batch, elapsed)
        self._settle(batch, completions, read_waiters, outcome)

    def _settle(self, batch: Batch, completions: list[Done],
                read_waiters: dict[tuple[str, str], list[asyncio.Future[None]]],
                outcome: CommitOutcome) -> None:
        """Fan out and resolve what landed; fail what did not, chat by chat and key by key."""
        if outcome.failed:
            self.failures += 1
            self.failed_chats += len(outcome.failed)
            log.warning("commit failed for %d of its chats: %s", len(outcome.failed),
                        "; ".join(f"{chat}: {exc!r}" for chat, exc in
                                  list(outcome.failed.items())[:3]))
        self._merge_back(outcome.unsaved)
        committed = [result for result in outcome.results if result is not None]
        self.batches += 1
        self.rows += len(committed)
        self.last_batch_rows = len(committed)
        # completions first: the SendAcks they write are queued before whatever the fan-out
        # queues, so an ack never waits behind a large group's deliveries
        for message, done, result in zip(batch.messages, completions, outcome.results):
            if result is not None:
                _complete(done, message.chat_id, result, None)
            else:
                _complete(done, message.chat_id, None, outcome.failed.get(message.chat_id)
                          or StoreError(f"chat {message.chat_id} not committed"))
        if self._on_commit is not None and committed:
            try:
                self._on_commit(committed)
            except Exception:
                log.exception("on_commit failed for a batch of %d", len(committed))
        unsaved = outcome.unsaved
        for key, waiting in read_waiters.items():
            for future in waiting:
                if future.done():
                    continue
                if key in unsaved.reads or key in unsaved.public_reads:
                    future.set_exception(StoreError(f"read watermark of {key} not saved"))
                else:
                    future.set_result(None)

    def _take(self) -> tuple[Batch, list[Done]]:
        """Everything accumulated, capped by max_rows messages and max_bytes of bodies (the
        first message always goes, however large)."""
        queue = self._queue
        messages: list[NewMessage] = []
        completions: list[Done] = []
        size = 0
        while queue and len(messages) < self.max_rows:
            msg, done = queue[0]
            size += len(msg.body)
            if size > self.max_bytes and messages:
                break
            queue.popleft()
            messages.append(msg)
            completions.append(done)
        if messages:
            cursors, self._cursors = _split(self._cursors, self.max_acks)
            delivered, self._delivered = _split(self._delivered, self.max_acks)
        else:
            cursors, delivered, self._cursors, self._delivered = (self._cursors, self._delivered,
                                                                  {}, {})
        batch = Batch(messages, cursors, self._reads, delivered, self._public_reads)
        self._reads, self._public_reads = {}, {}
        self._updates_due = bool(self._cursors or self._delivered)  # the rest: next commit
        return batch, completions

    def _merge_back(self, batch: Batch) -> None:
        for pending, failed in ((self._cursors, batch.cursors), (self._delivered, batch.delivered),
                                (self._reads, batch.reads),
                                (self._public_reads, batch.public_reads)):
            for key, seq in failed.items():
                _raise_to(pending, key, seq)

    def _retry_after_ms(self) -> int:
        """About how long the queue in front of a new message takes to drain."""
        per_flush = self.flush_seconds_total / self.batches if self.batches else ASSUMED_FLUSH_SECONDS
        flushes = self.pending / self.max_rows + 1
        return int(min(MAX_RETRY_AFTER_MS, max(MIN_RETRY_AFTER_MS, flushes * per_flush * 1000)))


def _complete(done: Done, chat_id: str, result: CommitResult | None,
              error: BaseException | None) -> None:
    """Call a message's completion; one that raises is logged and the others still run."""
    try:
        done(result, error)
    except Exception:
        log.exception("completion of a message of %s failed", chat_id)


def _split(pending: dict, limit: int) -> tuple[dict, dict]:
    """The first `limit` entries, and the rest (`pending` itself, less those: no copy of a
    large group's acks per message)."""
    if len(pending) <= limit:
        return pending, {}
    taken = dict(islice(pending.items(), limit))
    for key in taken:
        del pending[key]
    return taken, pending


def _raise_to(pending: dict, key: tuple, seq: int) -> None:
    """Coalesce a watermark: keep the max per key."""
    if seq > pending.get(key, -1):
        pending[key] = seq
