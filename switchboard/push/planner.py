"""Which device is owed which push, and when: the PushService's memory, free of I/O.

An entry per (user, device, chat) stands for every message by others that device has not been
pushed yet. When an entry is due:

* a device known to be offline is due at once; one that may be online (connected somewhere,
  or this node cannot tell) after `grace`, by when it has acked if it is alive (the service
  then finds its cursor past the entry and drops it);
* at most one push per (device, chat) per `interval`: messages arriving after a push wait for
  the interval to end and go as one push with their count (100 messages in a burst: two
  pushes, the first message's and the rest's);
* an entry whose provider failed (throttled, down) is due again after a backoff that doubles
  per attempt up to `max_backoff` (or what the provider asked for, if longer).

Silent read syncs ("the user read this chat elsewhere: update the badge") are coalesced per
device the same way, and are not kept durable: a lost one costs a stale badge until the next.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from switchboard.core.model import QueuedPush

Key = tuple[str, str, str]  # (user, device, chat)
BASE_BACKOFF_MS = 1000


@dataclass(slots=True)
class Pending:
    push: QueuedPush
    attempts: int = 0           # failed sends so far
    planned_at: float = 0.0     # monotonic s of its first message's commit (0: restored)
    sent_before: int | None = None  # the key's previous send time, while this one is in flight

    @property
    def key(self) -> Key:
        return (self.push.user_id, self.push.device_id, self.push.chat_id)


@dataclass(slots=True)
class ReadSync:
    user_id: str
    device_id: str
    chat_id: str
    seq: int
    due_ms: int


class Planner:
    def __init__(self, *, grace_ms: int, interval_ms: int, max_backoff_ms: int,
                 max_pending: int) -> None:
        self.grace_ms = grace_ms
        self.interval_ms = interval_ms
        self.max_backoff_ms = max_backoff_ms
        self.max_pending = max_pending
        self._pending: dict[Key, Pending] = {}
        self._last_sent: dict[Key, int] = {}       # when a push for the key last went out
        self._reads: dict[tuple[str, str], ReadSync] = {}
        self._last_read_sync: dict[tuple[str, str], int] = {}
        self._dirty: dict[Key, QueuedPush] = {}    # to write to the durable queue
        self.overflow = 0

    def __len__(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ messages
    def add(self, user: str, device: str, chat: str, *, first_seq: int, last_seq: int,
            count: int, sender: str, preview: str, offline: bool, now_ms: int,
            planned_at: float) -> bool:
        """New messages by others for this device; False when the planner is full (counted)."""
        key = (user, device, chat)
        due = max(now_ms if offline else now_ms + self.grace_ms,
                  self._last_sent.get(key, -self.interval_ms) + self.interval_ms)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.max_pending:
                self.overflow += 1
                return False
            pending = self._pending[key] = Pending(QueuedPush(
                user, device, chat, first_seq, last_seq, count, sender, preview, due),
                planned_at=planned_at)
        else:
            push = pending.push
            push.first_seq = min(push.first_seq, first_seq)
            if last_seq > push.last_seq:
                push.last_seq, push.sender_user, push.preview = last_seq, sender, preview
            push.count += count
            push.due_ms = min(push.due_ms, due)
        self._dirty[key] = pending.push
        return True

    def restore(self, push: QueuedPush) -> None:
        """An entry read back from the durable queue (a start, chats taken over)."""
        key = (push.user_id, push.device_id, push.chat_id)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = Pending(replace(push))
        elif push.last_seq > pending.push.last_seq:
            pending.push = replace(push, first_seq=min(push.first_seq, pending.push.first_seq))

    def take_due(self, now_ms: int, limit: int) -> list[Pending]:
        """Up to `limit` entries due now, out of the planner (in flight: the caller settles each
        with `sent`, `retry` or `not_sent`). New messages meanwhile start a new entry, due an
        interval after this one: an entry in flight counts as sent now."""
        due = [p for p in self._pending.values() if p.push.due_ms <= now_ms]
        due.sort(key=lambda p: p.push.due_ms)
        taken = due[:limit]
        for pending in taken:
            key = pending.key
            del self._pending[key]
            self._dirty.pop(key, None)
            pending.sent_before = self._last_sent.get(key)
            self._last_sent[key] = now_ms
        return taken

    def next_due_ms(self) -> int | None:
        times = [p.push.due_ms for p in self._pending.values()]
        times += [r.due_ms for r in self._reads.values()]
        return min(times, default=None)

    def sent(self, pending: Pending, now_ms: int) -> None:
        self._last_sent[pending.key] = now_ms
        self._prune(now_ms)

    def not_sent(self, pending: Pending) -> None:
        """Settled without a push (acked, read, refused): the interval runs from the last one
        actually sent."""
        if pending.sent_before is None:
            self._last_sent.pop(pending.key, None)
        else:
            self._last_sent[pending.key] = pending.sent_before

    def retry(self, pending: Pending, now_ms: int, retry_after_ms: int) -> QueuedPush:
        """The provider failed for now: due again after a backoff; merged with any entry that
        new messages made meanwhile. Returns the entry to write to the durable queue."""
        self.not_sent(pending)
        pending.attempts += 1
        backoff = min(self.max_backoff_ms, BASE_BACKOFF_MS * 2 ** min(pending.attempts - 1, 20))
        due = now_ms + max(retry_after_ms, int(random.uniform(backoff / 2, backoff)))
        newer = self._pending.get(pending.key)
        if newer is not None:
            push = newer.push
            push.first_seq = min(push.first_seq, pending.push.first_seq)
            push.count += pending.push.count
            push.due_ms = due
            newer.attempts = pending.attempts
            return push
        pending.push.due_ms = due
        self._pending[pending.key] = pending
        return pending.push

    def resolved(self, user: str, chat: str, read_seq: int) -> list[QueuedPush]:
        """The user read the chat up to read_seq on some device: entries it covers are not owed
        any more. Returns them, for the durable queue."""
        done = [p.push for key, p in self._pending.items()
                if key[0] == user and key[2] == chat and p.push.last_seq <= read_seq]
        for push in done:
            key = (push.user_id, push.device_id, push.chat_id)
            del self._pending[key]
            self._dirty.pop(key, None)
        return done

    def keep_only(self, owns) -> int:
        """Drop entries of chats this node does not own any more (their new owner resumes them
        from the durable queue); returns how many."""
        gone = [key for key in self._pending if not owns(key[2])]
        for key in gone:
            del self._pending[key]
            self._dirty.pop(key, None)
        return len(gone)

    def holds(self, key: Key) -> bool:
        return key in self._pending

    def take_dirty(self) -> list[QueuedPush]:
        dirty, self._dirty = self._dirty, {}
        return [replace(push) for push in dirty.values()]

    # ------------------------------------------------------------------ read syncs
    def read(self, user: str, device: str, chat: str, seq: int, now_ms: int) -> None:
        key = (user, device)
        due = max(now_ms, self._last_read_sync.get(key, -self.interval_ms) + self.interval_ms)
        sync = self._reads.get(key)
        if sync is None:
            if len(self._reads) >= self.max_pending:
                self.overflow += 1
                return
            self._reads[key] = ReadSync(user, device, chat, seq, due)
        else:  # one sync names one chat (the latest); its badge covers them all
            seq = max(sync.seq, seq) if sync.chat_id == chat else seq
            sync.chat_id, sync.seq = chat, seq

    def take_due_reads(self, now_ms: int) -> list[ReadSync]:
        due = [key for key, sync in self._reads.items() if sync.due_ms <= now_ms]
        for key in due:
            self._last_read_sync[key] = now_ms
        return [self._reads.pop(key) for key in due]

    def _prune(self, now_ms: int) -> None:
        """Forget send times older than an interval (they constrain nothing): memory follows
        the devices pushed lately."""
        if len(self._last_sent) > 2 * len(self._pending) + 1024:
            horizon = now_ms - self.interval_ms
            self._last_sent = {k: t for k, t in self._last_sent.items() if t > horizon}
            self._last_read_sync = {k: t for k, t in self._last_read_sync.items() if t > horizon}
