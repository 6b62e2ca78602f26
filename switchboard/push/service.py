"""The PushService: wakes a chat member's device that has no connection, through its push
provider, for messages it has not acked (docs/push.md).

Where it runs: on the chat's owner, right after the commit (MessageService's `committed`
hook), so one node decides for each message; a read sync runs where the MarkRead arrived.

1. **Plan** (per commit and chat, off the commit's path: the hook only queues it): the members
   other than each message's sender, their push tokens and mutes (cached per user, dropped on
   any change anywhere through the USER_SETTINGS invalidation), and which of their devices are
   online anywhere. A device of a muted chat, or without a token, gets nothing; the others get
   an entry in the planner (planner.py: coalescing, the ack grace).
2. **Persist**: entries are written to the store's durable queue (`put_pushes`) before they can
   be sent, in the same round that planned them; a node that starts, or takes chats over,
   resumes the entries of the chats it owns (`queued_pushes`), so a push owed survives a crash.
3. **Check** when due: the device's cursor (it acked: it is alive and has the messages) and the
   user's read watermark (read on another device) settle the entry without a push.
4. **Send** with the badge (the user's unread messages), content-free unless the device allowed
   previews and the body was not end-to-end encrypted; success drops the entry from the queue,
   a dead token is removed at once, a provider that failed is retried after a backoff.

Duplicates: an entry is dropped from the queue only after its push was sent, so a node killed
between the two sends it again after the restart; two nodes send the same entry only while a
chat changes owner with that push in flight. Both are rare, and the push carries a collapse id
per chat, so the device shows one notification either way.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from switchboard.core.chats import ChatService
from switchboard.core.errors import Code, DomainError
from switchboard.core.ids import now_ms
from switchboard.core.lru import LRU
from switchboard.core.metrics import Histogram, Metric, counter, gauge, histogram
from switchboard.core.model import PushPlatform, PushToken, QueuedPush, StoredMessage
from switchboard.core.store import Store, StoreError
from switchboard.core.tasks import TaskGroup, watch

from .delivery import Outcome, Result
from .notification import Kind, Notification, preview_of
from .planner import Pending, Planner, ReadSync

log = logging.getLogger(__name__)

Online = Callable[[Collection[str]], Awaitable[Mapping[str, Collection[str]] | None]]
"""online(users): each user's devices connected anywhere in the cluster, or None when this node
cannot tell (static peers record no sessions): then every device gets the ack grace."""

SEND_BATCH = 256          # entries taken per round
MAX_DISPATCHES = 8        # rounds of sends in flight at once
MAX_INCOMING = 100_000    # commits waiting to be planned; beyond, their pushes are dropped
LOAD_SLICE = 256          # users whose tokens are read at once
PROFILES = 100_000        # users whose tokens and mutes are cached
CLOSE_GRACE = 2.0         # s a drain waits for sends in flight (the rest resume after restart)
MAX_REASONS = 32          # distinct failure reasons counted by name; more count as "other"
APNS_TOKEN = re.compile(r"[0-9A-Fa-f]{16,512}")   # hex; 64 today, Apple may make it longer
FCM_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,4096}")
TOPIC = re.compile(r"[A-Za-z0-9._-]{0,255}")
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Provider(Protocol):
    platforms: tuple[PushPlatform, ...]

    async def send(self, token: PushToken, note: Notification) -> Result: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Profile:
    tokens: dict[str, PushToken]
    mutes: dict[str, int]

    def muted(self, chat_id: str, now: int) -> bool:
        return self.mutes.get(chat_id, 0) > now


class PushService:
    def __init__(self, store: Store, chats: ChatService, providers: Collection[Provider], *,
                 online: Online, owns: Callable[[str], bool] = lambda chat_id: True,
                 grace: float = 2.0, interval: float = 10.0, max_backoff: float = 300.0,
                 preview_chars: int = 120, max_pending: int = 200_000) -> None:
        """Sends nothing without providers: then it only keeps the tokens and mutes that
        devices register (push is off)."""
        self._store = store
        self._chats = chats
        self._providers = {platform: p for p in providers for platform in p.platforms}
        self._online = online
        self._owns = owns
        self._preview_chars = preview_chars
        self.planner = Planner(grace_ms=int(grace * 1000), interval_ms=int(interval * 1000),
                               max_backoff_ms=int(max_backoff * 1000), max_pending=max_pending)
        self._profiles: LRU[str, _Profile] = LRU(PROFILES)
        self._incoming: list[tuple[str, list[StoredMessage], frozenset[int], float]] = []
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._sends = TaskGroup()   # dispatch rounds in flight
        self._side = TaskGroup()    # read syncs being planned, resumes
        self._resuming = False
        self._closing = False
        # metrics
        self.sent: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.tokens_removed: dict[str, int] = {}
        self.settled: dict[str, int] = {}  # owed no more without a push: acked, read, muted
        self.read_syncs = 0
        self.dropped = 0
        self.send_seconds = Histogram(SECONDS_BUCKETS)
        self.commit_to_sent_seconds = Histogram(SECONDS_BUCKETS)

    @property
    def enabled(self) -> bool:
        return bool(self._providers)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """After the store and the router are up: resume the durable queue, then run."""
        if not self.enabled:
            return
        self._wake = asyncio.Event()
        await self._resume()
        self._loop_task = watch(asyncio.ensure_future(self._run()))

    async def close(self) -> None:
        """The drain, after the writer's last commit and before the store closes: plan and
        persist what is owed, give sends in flight CLOSE_GRACE, then close the providers.
        Whatever was not sent stays in the durable queue for the next start."""
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            await self._side.cancel()
            try:
                await self._plan_incoming()
                await self._persist()
            except Exception:
                log.exception("push queue not saved at the drain")
            if len(self._sends):
                await asyncio.wait([asyncio.ensure_future(self._sends.wait())],
                                   timeout=CLOSE_GRACE)
            await self._sends.cancel()
        for provider in set(self._providers.values()):
            await provider.close()

    # ------------------------------------------------------------------ hooks
    def committed(self, chat_id: str, messages: list[StoredMessage],
                  e2e: Collection[int]) -> None:
        """MessageService: new messages of a chat this node committed (seq order)."""
        if self._wake is None or self._closing:
            return
        if len(self._incoming) >= MAX_INCOMING:
            self.dropped += len(messages)
            return
        self._incoming.append((chat_id, messages, frozenset(e2e), time.monotonic()))
        self._wake.set()

    def read(self, user: str, device: str, chat_id: str, seq: int) -> None:
        """The user read the chat up to seq on `device`: a silent push to their other devices
        that are offline (their badge), and no message push for what was read."""
        if self._wake is None or self._closing:
            return
        for push in self.planner.resolved(user, chat_id, seq):
            self._count(self.settled, "read")
            self._side.spawn(self._drop((push,)))
        self._side.spawn(self._plan_read(user, device, chat_id, seq))

    def forget(self, user: str) -> None:
        """The user's tokens or mutes changed (on any node): read them again when needed."""
        self._profiles.pop(user, None)

    def ring_changed(self) -> None:
        """Chats may have moved: drop the entries of chats this node no longer owns (their
        owner resumes them from the queue) and resume those of chats it took over."""
        self._profiles.clear()
        if self._wake is None or self._closing:
            return
        self.planner.keep_only(self._owns)
        if not self._resuming:
            self._side.spawn(self._resume())

    # ------------------------------------------------------------------ requests
    async def register(self, user: str, device: str, token: PushToken) -> None:
        """INVALID_ARGUMENT for a token or topic that cannot be one."""
        pattern = FCM_TOKEN if token.platform is PushPlatform.FCM else APNS_TOKEN
        if not pattern.fullmatch(token.token):
            raise DomainError(Code.INVALID_ARGUMENT, "RegisterPush.token: not a "
                              f"{token.platform.value} token")
        if not TOPIC.fullmatch(token.topic):
            raise DomainError(Code.INVALID_ARGUMENT, "RegisterPush.topic: at most 255 of "
                              "A-Z a-z 0-9 . _ -")
        await self._store.set_push_token(user, device, token)
        self.forget(user)

    async def unregister(self, user: str, device: str) -> bool:
        removed = await self._store.drop_push_token(user, device)
        self.forget(user)
        return removed

    async def mute(self, user: str, chat_id: str, until_ms: int) -> int:
        """Returns the mute in force (0: none)."""
        now = now_ms()
        await self._store.set_mute(user, chat_id, until_ms, now)
        self.forget(user)
        return until_ms if until_ms > now else 0

    async def mutes(self, user: str) -> dict[str, int]:
        return await self._store.mutes(user, now_ms())

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                async with asyncio.timeout(self._sleep()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("push round failed")
                await asyncio.sleep(1.0)

    def _sleep(self) -> float:
        if self._incoming:
            return 0.0
        due = self.planner.next_due_ms()
        if due is None:
            return 60.0
        if len(self._sends) >= MAX_DISPATCHES:
            return 0.05  # a dispatch ending wakes the loop earlier
        return max(0.0, (due - now_ms()) / 1000)

    async def _round(self) -> None:
        await self._plan_incoming()
        await self._persist()
        now = now_ms()
        reads = self.planner.take_due_reads(now)
        if reads:
            self._sends.spawn(self._send_reads(reads))
        if len(self._sends) < MAX_DISPATCHES:
            due = self.planner.take_due(now, SEND_BATCH)
            if due:
                self._sends.spawn(self._dispatch(due))

    async def _persist(self) -> None:
        dirty = self.planner.take_dirty()
        if not dirty:
            return
        try:
            await self._store.put_pushes(dirty)
        except StoreError as exc:  # they are still planned here: sent, just not durable
            log.warning("%d pushes not queued durably: %s", len(dirty), exc)

    # ------------------------------------------------------------------ planning
    async def _plan_incoming(self) -> None:
        """Every commit queued since the last round, at once: one read of tokens and mutes per
        user not cached and one presence lookup for all of them, whatever the number of chats."""
        incoming, self._incoming = self._incoming, []
        if not incoming:
            return
        owed: list[tuple[str, dict[str, list[StoredMessage]], frozenset[int], float]] = []
        for chat_id, messages, e2e, planned_at in incoming:
            try:
                owed.append((chat_id, await self._recipients(chat_id, messages), e2e, planned_at))
            except StoreError as exc:
                self.dropped += len(messages)
                log.warning("pushes for %d messages of %s not planned: %s", len(messages),
                            chat_id, exc)
        try:
            profiles = await self._profiles_of({user for _, users, _, _ in owed for user in users})
        except StoreError as exc:
            self.dropped += sum(len(m) for _, m, _, _ in incoming)
            log.warning("pushes for %d commits not planned: %s", len(incoming), exc)
            return
        now = now_ms()
        wanted = [(chat_id, {user: theirs for user, theirs in users.items()
                             if profiles[user].tokens and not profiles[user].muted(chat_id, now)},
                   e2e, planned_at) for chat_id, users, e2e, planned_at in owed]
        online = await self._online_of({user for _, users, _, _ in wanted for user in users})
        for chat_id, users, e2e, planned_at in wanted:
            for user, theirs in users.items():
                self._plan(chat_id, user, theirs, profiles[user], online, e2e, planned_at, now)

    async def _recipients(self, chat_id: str, messages: list[StoredMessage]
                          ) -> dict[str, list[StoredMessage]]:
        """Each member's share of the messages: those by others, since the member joined."""
        members = self._chats.cached_members(chat_id)
        if members is None:
            members = await self._chats.members(chat_id)
        owed = {}
        for user, membership in members.items():
            theirs = [m for m in messages
                      if m.sender_user != user and m.seq > membership.joined_seq]
            if theirs:
                owed[user] = theirs
        return owed

    def _plan(self, chat_id: str, user: str, theirs: list[StoredMessage], profile: _Profile,
              online: Mapping[str, Collection[str]] | None, e2e: frozenset[int],
              planned_at: float, now: int) -> None:
        newest = theirs[-1]
        for device, token in profile.tokens.items():
            if token.platform not in self._providers:
                continue
            preview = (preview_of(newest.body, self._preview_chars)
                       if token.previews and newest.server_id not in e2e else "")
            offline = online is not None and device not in online.get(user, ())
            if not self.planner.add(user, device, chat_id, first_seq=theirs[0].seq,
                                    last_seq=newest.seq, count=len(theirs),
                                    sender=newest.sender_user, preview=preview,
                                    offline=offline, now_ms=now, planned_at=planned_at):
                self.dropped += 1

    async def _plan_read(self, user: str, device: str, chat_id: str, seq: int) -> None:
        try:
            profile = await self._profile(user)
        except StoreError as exc:
            log.warning("read sync of %s not planned: %s", user, exc)
            return
        others = [d for d, token in profile.tokens.items()
                  if d != device and token.platform in self._providers]
        if not others:
            return
        online = await self._online_of((user,))
        now = now_ms()
        for other in others:
            if online is None or other not in online.get(user, ()):
                self.planner.read(user, other, chat_id, seq, now)
        if self._wake is not None:
            self._wake.set()

    async def _profiles_of(self, users: Collection[str]) -> dict[str, _Profile]:
        return await self._profiles.use_many(users, self._load, LOAD_SLICE)

    async def _profile(self, user: str) -> _Profile:
        return (await self._profiles_of((user,)))[user]

    async def _load(self, user: str) -> _Profile:
        tokens, mutes = await asyncio.gather(self._store.push_tokens(user),
                                             self._store.mutes(user, now_ms()))
        profile = _Profile(tokens, mutes)
        if self._profiles.get(user) is None:
            self._profiles.put(user, profile)
        return profile

    async def _online_of(self, users: Collection[str]) -> Mapping[str, Collection[str]] | None:
        try:
            return await self._online(users)
        except Exception as exc:  # the registry did not answer: every device gets the grace
            log.warning("presence of %d users unknown: %s", len(users), exc)
            return None

    # ------------------------------------------------------------------ sending
    async def _dispatch(self, due: list[Pending]) -> None:
        by_user: dict[str, list[Pending]] = {}
        for pending in due:
            by_user.setdefault(pending.push.user_id, []).append(pending)
        outcomes = await asyncio.gather(*(self._send_user(user, entries)
                                          for user, entries in by_user.items()))
        retry = [push for puts, _ in outcomes for push in puts]
        done = [push for _, drops in outcomes for push in drops]
        try:
            if retry:
                await self._store.put_pushes(retry)
        except StoreError as exc:
            log.warning("%d pushes to retry not queued durably: %s", len(retry), exc)
        await self._drop(done)
        if self._wake is not None:
            self._wake.set()

    async def _send_user(self, user: str, entries: list[Pending]
                         ) -> tuple[list[QueuedPush], list[QueuedPush]]:
        """One user's due entries: check, then send what is still owed. Returns (entries to
        retry, entries done) for the durable queue."""
        now = now_ms()
        try:
            profile = await self._profile(user)
            devices = sorted({p.push.device_id for p in entries})
            (badge, reads), *cursors = await asyncio.gather(
                self._unread(user), *(self._store.cursors(user, device) for device in devices))
        except StoreError as exc:
            log.warning("pushes to %s put off: %s", user, exc)
            return [self.planner.retry(p, now, 0) for p in entries], []
        cursor_of = dict(zip(devices, cursors))
        done: list[QueuedPush] = []
        owed: list[tuple[Pending, PushToken]] = []
        for pending in entries:
            push = pending.push
            token = profile.tokens.get(push.device_id)
            settled = ("no_token" if token is None or token.platform not in self._providers
                       else "muted" if profile.muted(push.chat_id, now)
                       else "read" if reads.get(push.chat_id, 0) >= push.last_seq
                       else "acked" if cursor_of[push.device_id].get(push.chat_id, 0) >= push.last_seq
                       else None)
            if settled is None:
                owed.append((pending, token))
            else:
                self._count(self.settled, settled)
                self.planner.not_sent(pending)
                done.append(push)
        if not owed:
            return [], done
        results = await asyncio.gather(*(self._send(token, Notification(
            Kind.MESSAGE, pending.push.chat_id, badge, pending.push.sender_user,
            pending.push.count, pending.push.last_seq, pending.push.preview, token.topic))
            for pending, token in owed))
        retry: list[QueuedPush] = []
        for (pending, token), result in zip(owed, results):
            if result.outcome is Outcome.SENT:
                self.planner.sent(pending, now_ms())
                if pending.planned_at:
                    self.commit_to_sent_seconds.observe(time.monotonic() - pending.planned_at)
                done.append(pending.push)
            elif result.outcome is Outcome.RETRY:
                retry.append(self.planner.retry(pending, now_ms(), int(result.retry_after * 1000)))
            else:
                self.planner.not_sent(pending)
                done.append(pending.push)
            if result.outcome is Outcome.TOKEN_DEAD:
                await self._remove_token(user, pending.push.device_id, token, result.reason)
        return retry, done

    async def _send_reads(self, syncs: list[ReadSync]) -> None:
        for sync in syncs:
            try:
                profile = await self._profile(sync.user_id)
                token = profile.tokens.get(sync.device_id)
                if token is None:
                    continue
                badge, _ = await self._unread(sync.user_id)
            except StoreError as exc:
                log.warning("read sync of %s skipped: %s", sync.user_id, exc)
                continue
            result = await self._send(token, Notification(
                Kind.READ_SYNC, sync.chat_id, badge, seq=sync.seq, topic=token.topic))
            if result.outcome is Outcome.SENT:
                self.read_syncs += 1
            elif result.outcome is Outcome.TOKEN_DEAD:
                await self._remove_token(sync.user_id, sync.device_id, token, result.reason)

    async def _send(self, token: PushToken, note: Notification) -> Result:
        started = time.monotonic()
        try:
            result = await self._providers[token.platform].send(token, note)
        except Exception as exc:  # a client bug or an unexpected transport error: try later
            log.warning("push to %s failed: %r", token.platform.value, exc)
            result = Result(Outcome.RETRY, type(exc).__name__)
        self.send_seconds.observe(time.monotonic() - started)
        if result.outcome is Outcome.SENT:
            self._count(self.sent, token.platform.value)
        else:
            self._count(self.failed, result.reason)
        return result

    async def _remove_token(self, user: str, device: str, token: PushToken, reason: str) -> None:
        """The provider says the token is dead: remove it now (only if it is still the one
        registered), so no later push tries it."""
        self.forget(user)
        try:
            if await self._store.drop_push_token(user, device, token.token):
                self._count(self.tokens_removed, reason)
        except StoreError as exc:
            log.warning("dead push token of %s/%s not removed: %s", user, device, exc)

    async def _drop(self, pushes: Collection[QueuedPush]) -> None:
        if not pushes:
            return
        try:
            await self._store.drop_pushes([(p.user_id, p.device_id, p.chat_id, p.last_seq)
                                           for p in pushes])
        except StoreError as exc:  # they stay queued: a restart may send them again
            log.warning("%d pushes not dropped from the queue: %s", len(pushes), exc)

    async def _unread(self, user: str) -> tuple[int, dict[str, int]]:
        """The badge: the user's unread messages over every chat (since they joined each); and
        the user's read watermark per chat."""
        chats = await self._store.user_chats(user)
        heads, reads = await asyncio.gather(self._store.heads(chats),
                                            self._store.read_seqs(user, chats))
        return sum(max(0, heads.get(chat, 0) - max(reads.get(chat, 0), joined))
                   for chat, joined in chats.items()), reads

    async def _resume(self) -> None:
        """Entries of the chats this node owns from the durable queue (after a start or when
        the ring changed); those it holds already stay as they are."""
        self._resuming = True
        try:
            queued = await self._store.queued_pushes()
        except StoreError as exc:
            log.warning("push queue not read (resumed on the next ring change): %s", exc)
            return
        finally:
            self._resuming = False
        resumed = 0
        for push in queued:
            key = (push.user_id, push.device_id, push.chat_id)
            if self._owns(push.chat_id) and not self.planner.holds(key):
                self.planner.restore(push)
                resumed += 1
        if resumed:
            log.info("resumed %d queued pushes", resumed)
            if self._wake is not None:
                self._wake.set()

    def _count(self, counts: dict[str, int], reason: str) -> None:
        if reason not in counts and len(counts) >= MAX_REASONS:
            reason = "other"
        counts[reason] = counts.get(reason, 0) + 1

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> list[Metric]:
        found = [
            gauge("push_queue_depth", "pushes owed to devices, planned on this node",
                  len(self.planner)),
            counter("push_dropped", "pushes not planned: the planner or its inbox was full, or "
                    "the store failed while planning", self.dropped + self.planner.overflow),
            counter("push_read_syncs", "silent read-sync pushes sent", self.read_syncs),
            histogram("push_send_seconds", "one push at its provider, retries included",
                      self.send_seconds),
            histogram("push_commit_to_sent_seconds", "from a message's commit to its push "
                      "accepted by the provider", self.commit_to_sent_seconds),
        ]
        found += [counter("push_sent", "pushes accepted by a provider", n, platform=platform)
                  for platform, n in self.sent.items()]
        found += [counter("push_failed", "push attempts that failed, by the provider's reason",
                          n, reason=reason) for reason, n in self.failed.items()]
        found += [counter("push_tokens_removed", "push tokens removed because the provider "
                          "said they are dead", n, reason=reason)
                  for reason, n in self.tokens_removed.items()]
        found += [counter("push_settled", "pushes owed no more before they were sent "
                          "(acked, read, muted, token gone)", n, why=why)
                  for why, n in self.settled.items()]
        return found

