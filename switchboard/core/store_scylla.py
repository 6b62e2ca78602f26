"""The store on ScyllaDB (and Cassandra, which the tests run): the Store contract (store.py) kept
with single-partition reads and writes, the seq fenced by the database itself.

Tables, keys and what each query costs are in docs/storage.md; the short version:

* `messages ((chat_id, bucket), seq)`: bucket = seq // BUCKET_SIZE, so a chat with years of
  history is many bounded partitions. Each bucket partition has a static `head`: the highest seq
  written into that bucket. A flush of a chat is one conditional batch per bucket it touches
  (almost always one): `UPDATE ... SET head = :new IF head = :old` plus the INSERTs of its
  messages. Paxos runs once for the batch; two stores committing to one chat at the same moment
  cannot both win, and the loser reads what is above the head it knew and tries again on top, so
  no seq is held twice and none is skipped. The first write into a bucket expects `head = null`
  there: it carries the head across the boundary, and a full bucket's head is its last seq.
* `chat_heads (chat_id)`: the chat's head for readers (sync, chat list), written after the
  conditional batch and before anything of the flush is acknowledged, `USING TIMESTAMP head`
  so that the highest head wins whatever order writes land in.
* `dedup ((chat_id, sender_user), client_msg_id) -> seq`, written after the conditional batch,
  before the hint. Before a store looks sends up and asks for `head = H`, every message up to H
  is either indexed or among rows it has just read: it knows that from its own last flush,
  and otherwise (cold cache, a lost race, a failed write) it reads the messages above the last
  head known to be indexed (the hint, or its own) and matches against those too, then indexes
  them along with its own. So a conditional batch that applied and then timed out, or a store
  killed between its batch and its dedup rows, is found by the next commit of that chat, by any
  store: a retry is a duplicate, never a second copy.
* Membership events are part of that index: the message row carries the event (written by the
  conditional batch), and indexing it writes its effects on `member_periods` (by chat) and
  `user_periods` (by user). Members are the open periods. Each effect is decided by `Roster`
  from the periods alone, as of the seq before the event, and every cell it writes has one
  value it can ever take (a period's role, its left_seq), or is written `USING TIMESTAMP` seq
  (the member count): replaying an event, in any order with other stores' replays of it or of
  later events, writes the same cells again, so the state converges to exactly the log's.
* Watermarks are max-upserts with no read and no Paxos: each cell is written `USING TIMESTAMP`
  equal to its value, and the last-write-wins rule keeps the highest. (Nothing else may write
  those cells with a wall-clock timestamp: it would freeze them.)
* Device admission is a conditional batch on the user's partition, fenced by a static count of
  active devices, so two gateways racing cannot admit one device too many.
* Blocks are two tables, by blocker and by blocked user, written by one logged batch.
* Push: tokens and mutes by user (a mute with a TTL to its expiry); the queue of pushes owed in
  PUSH_QUEUE_SHARDS partitions, its cells written `USING TIMESTAMP` last_seq.
* Media: `media (media_id)` with every write conditional (so a claim and an orphan's delete
  exclude each other), `media_by_content ((owner), content_key)` for dedup, and
  `media_sweep ((day), created_at_ms, media_id)`: what the orphan sweep reads, one partition per
  day of creation; an entry goes when its media is referenced or deleted.

Everything goes through `cql.CqlSession` (the driver bridged to asyncio, never blocking the loop,
with a bound on requests in flight); statements are prepared once per session. The schema is
created and upgraded by `migrate`: tables in SCHEMA, columns a table gained since in
ADDED_COLUMNS, and a keyspace made before membership periods filled in once (`_upgrade`).
"""
from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Awaitable, Collection, Iterable, Sequence

from .cql import CqlRejected, CqlSession, CqlSettings, connect
from .lru import LRU
from .model import (MUTE_FOREVER, Batch, Chat, ChatKind, CommitOutcome, CommitResult, DeviceRow,
                    DeviceStatus, MediaRecord, MediaState, MemberAction, MembershipEvent,
                    Membership, NewMessage, Period, PushPlatform, PushToken, QueuedPush, Receipt,
                    Role, StoredMessage, UserSettings, Visibility)
from .store import Store, StoreError

BUCKET_SIZE = 1000          # messages per partition of a chat: part of the schema, never change
MAX_PIECE_BYTES = 256 * 1024  # message bytes per conditional batch (ScyllaDB fails at 1 MiB)
MAX_PIECE_ROWS = 200        # messages per conditional batch
MAX_BATCH_STATEMENTS = 250  # statements per unlogged batch of index rows or watermarks
MAX_LOOKUP_KEYS = 100       # senders x client_msg_ids in one dedup read
MAX_ATTEMPTS = 10           # conditional batches lost to another writer before a chat fails
CONTENTION_PAUSE = 0.002    # s, times the attempt: the longest random pause after a lost batch
READ_PAGE = 500             # rows per page when a read spans buckets
CACHED_CHATS = 200_000      # chats whose indexed head this store remembers
UPGRADE_BATCHES = 16        # unlogged batches in flight while an upgrade fills tables in
PUSH_QUEUE_SHARDS = 16      # partitions of the push queue: part of the schema, never change
MAX_TTL = 630_720_000       # s: the longest TTL CQL takes (20 years); longer mutes keep none
DAY_MS = 86_400_000         # media_sweep partitions: one per day of creation
SWEEP_LOOKBACK_DAYS = 60    # how far back a store's first orphan sweep looks

MESSAGE_COLUMNS = ("seq, server_id, sender_user, sender_device, client_msg_id, body, media_ids, "
                   "created_at_ms, event_action, event_actor, event_users")
MEDIA_COLUMNS = ("media_id, owner, size, content_type, sha256, created_at_ms, part_size, upload_id, "
                 "thumbnail_of, state, thumbnail_id, refs")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {ks}.messages (
        chat_id text, bucket bigint, seq bigint, server_id bigint, sender_user text,
        sender_device text, client_msg_id text, body blob, media_ids list<text>,
        created_at_ms bigint, event_action int, event_actor text, event_users list<text>,
        head bigint STATIC,
        PRIMARY KEY ((chat_id, bucket), seq)) WITH CLUSTERING ORDER BY (seq ASC)""",
    "CREATE TABLE IF NOT EXISTS {ks}.chat_heads (chat_id text PRIMARY KEY, head bigint)",
    """CREATE TABLE IF NOT EXISTS {ks}.dedup (
        chat_id text, sender_user text, client_msg_id text, seq bigint,
        PRIMARY KEY ((chat_id, sender_user), client_msg_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.chats (
        chat_id text PRIMARY KEY, kind int, title text, created_at_ms bigint,
        pending_members map<text, int>)""",
    """CREATE TABLE IF NOT EXISTS {ks}.member_periods (
        chat_id text, user_id text, joined_seq bigint, role int, left_seq bigint,
        member_count int STATIC, PRIMARY KEY (chat_id, user_id, joined_seq))""",
    """CREATE TABLE IF NOT EXISTS {ks}.user_periods (
        user_id text, chat_id text, joined_seq bigint, left_seq bigint,
        PRIMARY KEY (user_id, chat_id, joined_seq))""",
    """CREATE TABLE IF NOT EXISTS {ks}.receipts (
        chat_id text, user_id text, delivered_seq bigint, read_seq bigint, public_read_seq bigint,
        PRIMARY KEY (chat_id, user_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.device_cursors (
        user_id text, device_id text, chat_id text, acked_seq bigint,
        PRIMARY KEY ((user_id, device_id), chat_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.users (
        user_id text PRIMARY KEY, read_receipts boolean, last_seen_visibility int)""",
    """CREATE TABLE IF NOT EXISTS {ks}.devices (
        user_id text, device_id text, first_seen_ms bigint, last_seen_ms bigint,
        revoked boolean, active int STATIC, PRIMARY KEY (user_id, device_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.blocks (
        user_id text, blocked_id text, PRIMARY KEY (user_id, blocked_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.blockers (
        blocked_id text, user_id text, PRIMARY KEY (blocked_id, user_id))""",
    "CREATE TABLE IF NOT EXISTS {ks}.upgrades (step text PRIMARY KEY, done_at_ms bigint)",
    """CREATE TABLE IF NOT EXISTS {ks}.push_tokens (
        user_id text, device_id text, platform text, push_token text, topic text, previews boolean,
        updated_ms bigint, PRIMARY KEY (user_id, device_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.chat_mutes (
        user_id text, chat_id text, until_ms bigint, PRIMARY KEY (user_id, chat_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.push_queue (
        shard int, user_id text, device_id text, chat_id text, first_seq bigint, last_seq bigint,
        coalesced int, sender_user text, preview text, due_ms bigint,
        PRIMARY KEY (shard, user_id, device_id, chat_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.media (
        media_id text PRIMARY KEY, owner text, content_key text, size bigint, content_type text,
        sha256 blob, created_at_ms bigint, part_size bigint, upload_id text, thumbnail_of text,
        state int, thumbnail_id text, refs set<text>, referenced boolean)""",
    """CREATE TABLE IF NOT EXISTS {ks}.media_by_content (
        owner text, content_key text, media_id text, PRIMARY KEY (owner, content_key))""",
    """CREATE TABLE IF NOT EXISTS {ks}.media_sweep (
        day bigint, created_at_ms bigint, media_id text,
        PRIMARY KEY (day, created_at_ms, media_id))""",
)

# Columns tables gained after they were first created: (table, column, type), added by migrate
# where missing (CREATE TABLE IF NOT EXISTS leaves an existing table as it is).
ADDED_COLUMNS = (
    ("messages", "event_action", "int"),
    ("messages", "event_actor", "text"),
    ("messages", "event_users", "list<text>"),
    ("receipts", "public_read_seq", "bigint"),
)

# A keyspace made before membership periods kept current members only, in `members` (and
# `user_chats`); `_upgrade` turns each into its current period, once (the `upgrades` row).
LEGACY_MEMBERS = "members"
PERIODS_STEP = "periods"


class StoreContention(StoreError):
    """A chat's conditional batch lost to other writers too many times in a row."""


def bucket_of(seq: int) -> int:
    return seq // BUCKET_SIZE


def replication_map(strategy: str, factor: int, datacenters: dict[str, int]) -> str:
    """The keyspace's replication as CQL: per datacenter when given, else `factor` everywhere."""
    if strategy == "SimpleStrategy":
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}"
    if datacenters:
        per_dc = ", ".join(f"'{dc}': {n}" for dc, n in sorted(datacenters.items()))
        return f"{{'class': 'NetworkTopologyStrategy', {per_dc}}}"
    return f"{{'class': 'NetworkTopologyStrategy', 'replication_factor': {factor}}}"


# ---------------------------------------------------------------------------- schema
async def migrate(session: CqlSession, keyspace: str, replication: str) -> None:
    """Create the keyspace, every table and every added column where missing, and upgrade a
    keyspace of the version before membership periods. Idempotent, and harmless beside other
    processes doing the same; drops nothing (an existing keyspace keeps its replication: ALTER
    KEYSPACE is the operator's call)."""
    await session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
                          f"{replication}", prepare=False)
    for statement in SCHEMA:
        await session.execute(statement.format(ks=keyspace), prepare=False)
    columns = await schema_columns(session, keyspace)
    for table, column, kind in ADDED_COLUMNS:
        if column in columns[table]:
            continue
        try:
            await session.execute(f"ALTER TABLE {keyspace}.{table} ADD {column} {kind}",
                                  prepare=False)
        except CqlRejected:  # another process added it first
            if column not in (await schema_columns(session, keyspace))[table]:
                raise
    if await upgrade_pending(session, keyspace, columns):
        await _upgrade(session, keyspace)


async def schema_columns(session: CqlSession, keyspace: str) -> dict[str, set[str]]:
    """table -> its columns, as the keyspace has them now."""
    rows = (await session.execute(
        "SELECT table_name, column_name FROM system_schema.columns WHERE keyspace_name = ?",
        (keyspace,))).rows
    columns: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        columns[row.table_name].add(row.column_name)
    return columns


async def upgrade_pending(session: CqlSession, keyspace: str,
                          columns: dict[str, set[str]]) -> bool:
    """Whether the keyspace holds members of the version before periods not yet upgraded."""
    if LEGACY_MEMBERS not in columns or "upgrades" not in columns:
        return False
    rows = (await session.execute(f"SELECT step FROM {keyspace}.upgrades WHERE step = ?",
                                  (PERIODS_STEP,))).rows
    return not rows


async def _upgrade(session: CqlSession, keyspace: str) -> None:
    """Fill a keyspace of the version before membership periods in, the way the SQLite store
    upgrades its file: each current member's period is its current one (joined_seq, open), the
    history before it being unknown; reads recorded before count as public for users whose read
    receipts are on now. Every write is one an event or a reader could make too (a period row's
    role, a count at timestamp 0, a max-upsert), so running it twice, or beside processes that
    already serve, changes nothing. Full scans of members, users and receipts, with memory
    bounded: run by `switchboard admin store migrate` once, before the new version serves (the
    version before does not know these tables: what it changes after this is not carried over)."""
    q = _Queries(keyspace)
    pending: list[tuple[str, Sequence[Any]]] = []

    async def write(statements: list[tuple[str, Sequence[Any]]], *, flush: bool = False) -> None:
        pending.extend(statements)
        if flush or len(pending) >= MAX_BATCH_STATEMENTS * UPGRADE_BATCHES:
            chunks = _chunks(pending, MAX_BATCH_STATEMENTS)
            pending.clear()
            await asyncio.gather(*(session.batch(chunk, logged=False, idempotent=True)
                                   for chunk in chunks))

    # a scan returns a partition's rows together, so a chat's count is complete at the next chat
    chat_id, count = None, 0
    async for row in _scan(session, f"SELECT chat_id, user_id, role, joined_seq FROM "
                                    f"{keyspace}.{LEGACY_MEMBERS}"):
        if row.chat_id != chat_id:
            if chat_id is not None:
                await write([(q.set_member_count, (0, count, chat_id))])
            chat_id, count = row.chat_id, 0
        count += 1
        await write(_open_period(q, row.chat_id, row.user_id, row.joined_seq or 0,
                                 Role(row.role or Role.MEMBER)))
    if chat_id is not None:
        await write([(q.set_member_count, (0, count, chat_id))])
    private = {row.user_id async for row in _scan(
        session, f"SELECT user_id, read_receipts FROM {keyspace}.users")
        if row.read_receipts is False}
    async for row in _scan(session, f"SELECT chat_id, user_id, read_seq FROM {keyspace}.receipts"):
        if row.read_seq and row.user_id not in private:
            await write([(q.raise_public_only, (row.read_seq, row.read_seq, row.chat_id,
                                                row.user_id))])
    await write([], flush=True)
    await session.execute(f"INSERT INTO {keyspace}.upgrades (step, done_at_ms) VALUES (?, ?)",
                          (PERIODS_STEP, int(time.time() * 1000)), idempotent=True)


async def _scan(session: CqlSession, cql: str) -> AsyncIterator[Any]:
    """Every row of a whole table, page by page (the upgrade's full scans)."""
    async for rows in session.pages(cql, page_size=1000):
        for row in rows:
            yield row


# ---------------------------------------------------------------------------- membership
class Roster:
    """A chat's membership periods (user -> joined_seq -> left_seq) as read from its partition,
    with membership events replayed on top in seq order: what each event changes.

    The decision is taken from the periods alone, as of the seq before the event: a period with
    joined_seq j was opened by the event at j + 1 (or by the chat's creation, when j is 0), one
    with left_seq l was closed by the event at l. So what the read holds of later events (a
    racing store may have applied them already) does not change the answer, nor does what it
    holds of these events themselves: a replay writes what the first application wrote. What
    it needs is every event below the first replayed one applied, which the index guarantees."""

    def __init__(self, rows: Iterable[tuple[str, int, int | None]] = ()) -> None:
        self.periods: dict[str, dict[int, int | None]] = {}
        for user, joined, left in rows:
            self.periods.setdefault(user, {})[joined] = left

    def covering(self, user: str, seq: int) -> int | None:
        """The joined_seq of the user's period once the event at `seq` is applied (None: not a
        member then)."""
        for joined, left in self.periods.get(user, {}).items():
            if (joined < seq or joined == 0) and (left is None or left > seq):
                return joined
        return None

    def apply(self, seq: int, event: MembershipEvent) -> tuple[list[str], list[tuple[str, int]]]:
        """Replay the event committed at `seq`: the users whose period opens (at seq - 1) and
        the (user, joined_seq) of the periods it closes (at seq)."""
        opened: list[str] = []
        closed: list[tuple[str, int]] = []
        for user in dict.fromkeys(event.users):
            joined = self.covering(user, seq - 1)
            if event.action is MemberAction.ADDED:
                if joined is None:
                    self.periods.setdefault(user, {}).setdefault(seq - 1, None)
                    opened.append(user)
            elif joined is not None:
                self.periods[user][joined] = seq
                closed.append((user, joined))
        return opened, closed

    def count(self, seq: int) -> int:
        """How many members the chat has once the event at `seq` is applied."""
        return sum(self.covering(user, seq) is not None for user in self.periods)


def _open_period(q: _Queries, chat_id: str, user: str, joined_seq: int,
                 role: Role) -> list[tuple[str, Sequence[Any]]]:
    """The writes that make `user` a member from `joined_seq` on: its period, by chat and by
    user (neither touches left_seq, so it never reopens a period a later event closed)."""
    return [(q.open_period, (chat_id, user, joined_seq, int(role))),
            (q.open_user_period, (user, chat_id, joined_seq))]


def membership_writes(q: _Queries, chat_id: str, roster: Roster,
                      events: list[tuple[int, MembershipEvent]]) -> list[tuple[str, Sequence[Any]]]:
    """The writes that apply `events` (ascending seqs, each above every event `roster` was read
    complete with): periods opened and closed, and the member count after the last one, written
    `USING TIMESTAMP` its seq so that the count of the highest event applied stays."""
    statements: list[tuple[str, Sequence[Any]]] = []
    for seq, event in events:
        opened, closed = roster.apply(seq, event)
        for user in opened:
            statements += _open_period(q, chat_id, user, seq - 1, Role.MEMBER)
        for user, joined in closed:
            statements += [(q.close_period, (seq, chat_id, user, joined)),
                           (q.close_user_period, (seq, user, chat_id, joined))]
    last = events[-1][0]
    statements.append((q.set_member_count, (last, roster.count(last), chat_id)))
    return statements


# ---------------------------------------------------------------------------- bookkeeping
@dataclass(slots=True)
class Stats:
    """Requests by kind (a conditional one is a Paxos round: several round trips inside the
    database), conditional batches lost to another writer, catch-ups, commits."""
    reads: int = 0
    writes: int = 0
    conditional: int = 0
    conditional_lost: int = 0
    catch_ups: int = 0
    flushes: int = 0


@dataclass(slots=True)
class _Log:
    """What this store knows of a chat's log: every message up to `head - len(unindexed)` is
    indexed (its dedup row, its event's effects); `unindexed` are the rows above that, read but
    not yet indexed; `behind`: the log may have grown past `head` since (it is scanned before
    the next attempt)."""
    head: int
    unindexed: list[StoredMessage]
    behind: bool


@dataclass(slots=True)
class _ChatCommit:
    """One chat's share of a commit: its messages (in batch order) and what became of them."""
    messages: list[NewMessage]
    results: list[CommitResult | None] = field(default_factory=list)
    error: Exception | None = None
    # sender -> seq of their last new message, and of their last one with public_read set
    sent: dict[str, int] = field(default_factory=dict)
    sent_public: dict[str, int] = field(default_factory=dict)
    log: _Log | None = None  # once its messages landed: the log holding them unindexed


class ScyllaStore(Store):
    def __init__(self, settings: CqlSettings, *, keyspace: str, replication: str,
                 create_schema: bool = True) -> None:
        self.settings = settings
        self.keyspace = keyspace
        self.replication = replication
        self.create_schema = create_schema
        self.stats = Stats()
        self._session: CqlSession | None = None
        self._logs: LRU[str, _Log] = LRU(CACHED_CHATS)
        self._q = _Queries(keyspace)
        self._sweep_floor: int | None = None  # the oldest media_sweep day that had candidates

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        if self._session is not None:
            return
        session = await connect(self.settings)
        try:
            if self.create_schema:
                await migrate(session, self.keyspace, self.replication)
            await self._check_schema(session)
        except BaseException:
            await session.close()
            raise
        self._session = session

    async def _check_schema(self, session: CqlSession) -> None:
        columns = await schema_columns(session, self.keyspace)
        missing = sorted({_table_name(s) for s in SCHEMA} - set(columns))
        missing += [f"{table}.{column}" for table, column, _ in ADDED_COLUMNS
                    if table in columns and column not in columns[table]]
        if missing:
            raise StoreError(f"keyspace {self.keyspace} lacks {', '.join(missing)}: run "
                             "`switchboard admin store migrate` (or allow store.create_schema)")
        if await upgrade_pending(session, self.keyspace, columns):
            raise StoreError(f"keyspace {self.keyspace} holds members of the version before "
                             "membership periods: run `switchboard admin store migrate`")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def session(self) -> CqlSession:
        if self._session is None:
            raise StoreError("the store is not open")
        return self._session

    async def _read(self, cql: str, params: Sequence[Any]) -> list[Any]:
        self.stats.reads += 1
        return (await self.session.execute(cql, params)).rows

    async def _read_all(self, cql: str, params: Sequence[Any]) -> list[Any]:
        """Every row of a single-partition query, page after page."""
        rows: list[Any] = []
        async for page in self.session.pages(cql, params, page_size=READ_PAGE):
            self.stats.reads += 1
            rows += page
        return rows

    async def _write(self, cql: str, params: Sequence[Any]) -> None:
        self.stats.writes += 1
        await self.session.execute(cql, params, idempotent=True)

    async def _write_batch(self, statements: list[tuple[str, Sequence[Any]]]) -> None:
        """Idempotent writes as one unlogged batch: one request, to one partition or to several
        that the coordinator writes in turn."""
        self.stats.writes += 1
        if len(statements) == 1:
            await self.session.execute(*statements[0], idempotent=True)
        else:
            await self.session.batch(statements, logged=False, idempotent=True)

    # ------------------------------------------------------------------ write path
    async def commit(self, batch: Batch) -> CommitOutcome:
        """Each chat's conditional batch concurrently (with the batch's watermarks beside
        them), then the dedup rows and senders' receipts of every chat that landed in a few
        unlogged batches, then their head hints: nothing is reported stored before that."""
        if self._session is None:
            raise StoreError("the store is not open")
        chats: dict[str, _ChatCommit] = {}
        for m in batch.messages:
            chat = chats.get(m.chat_id)
            if chat is None:
                chat = chats[m.chat_id] = _ChatCommit([])
            chat.messages.append(m)
        self.stats.flushes += 1
        unsaved, *_ = await asyncio.gather(
            self._write_watermarks(batch),
            *(self._commit_chat(chat_id, chat) for chat_id, chat in chats.items()))
        await self._index(chats, unsaved)
        results: list[CommitResult | None] = []
        taken = dict.fromkeys(chats, 0)
        for m in batch.messages:
            chat = chats[m.chat_id]
            results.append(None if chat.error is not None else chat.results[taken[m.chat_id]])
            taken[m.chat_id] += 1
        return CommitOutcome(results, {chat_id: chat.error for chat_id, chat in chats.items()
                                       if chat.error is not None}, unsaved)

    async def _commit_chat(self, chat_id: str, chat: _ChatCommit) -> None:
        """Write one chat's messages in order (not yet indexed); on failure `chat.error` is set
        and none of its messages is reported (what landed is found by the retry)."""
        chat.results = [None] * len(chat.messages)
        log = self._logs.use(chat_id)
        try:
            if log is None:
                log = _Log(await self._hint(chat_id), [], behind=True)
            for attempt in range(MAX_ATTEMPTS):
                if await self._attempt(chat_id, log, chat):
                    self._logs.put(chat_id, log)
                    chat.log = log
                    return
                self.stats.conditional_lost += 1
                # the winner is often about to write again: a random pause breaks the tie
                await asyncio.sleep(random.uniform(0, CONTENTION_PAUSE * (attempt + 1)))
            raise StoreContention(f"chat {chat_id}: lost {MAX_ATTEMPTS} conditional batches "
                                  "in a row to other writers")
        except StoreError as exc:
            self._logs.pop(chat_id, None)
            chat.error = exc

    async def _attempt(self, chat_id: str, log: _Log, chat: _ChatCommit) -> bool:
        """One try at the chat's unresolved messages: find the duplicates, write the new ones in
        conditional batches from `log.head`, index what landed. False when a batch lost to
        another writer: what landed before it is resolved, `log` is marked behind, and the
        caller tries the rest again."""
        messages, results = chat.messages, chat.results
        pending = [i for i, result in enumerate(results) if result is None]
        lookup = self._lookup(chat_id, [messages[i] for i in pending])
        if log.behind:
            above, found = await asyncio.gather(self._scan(chat_id, log.head), lookup)
            if above:
                self.stats.catch_ups += 1
                log.unindexed += above
                log.head = above[-1].seq
            log.behind = False
        else:
            found = await lookup
        in_log = {(r.sender_user, r.client_msg_id): r for r in log.unindexed}
        planned: dict[tuple[str, str], tuple[int, StoredMessage]] = {}  # key -> (index, row)
        new: list[StoredMessage] = []
        public: set[int] = set()  # seqs of the new messages that raise the public read too
        for i in pending:
            m = messages[i]
            key = (m.sender_user, m.client_msg_id)
            if key not in in_log and key not in found and key not in planned:
                row = StoredMessage(chat_id, log.head + len(new) + 1, m.server_id,
                                    m.sender_user, m.sender_device, m.client_msg_id, m.body,
                                    m.media_ids, m.created_at_ms, m.event)
                planned[key] = (i, row)
                new.append(row)
                if m.public_read:
                    public.add(row.seq)
        start = landed = log.head
        for piece in _pieces(new):
            if not await self._conditional_append(chat_id, landed, piece):
                break
            landed = piece[-1].seq
        if landed > start:
            ours = new[:landed - start]
            for row in ours:  # ascending: a sender's last message wins
                if row.sender_user:  # "": an operator's event raises nothing
                    chat.sent[row.sender_user] = row.seq
                    if row.seq in public:
                        chat.sent_public[row.sender_user] = row.seq
            log.unindexed += ours
            log.head = landed
        complete = landed == start + len(new)
        log.behind = not complete
        originals = await self._messages_by_seq(
            chat_id, {seq for key, seq in found.items() if key not in in_log})
        for i in pending:
            m = messages[i]
            key = (m.sender_user, m.client_msg_id)
            if key in in_log:
                results[i] = CommitResult(in_log[key], True)
            elif key in found:
                results[i] = CommitResult(originals[found[key]], True)
            else:
                first, row = planned[key]
                if row.seq <= landed:
                    results[i] = CommitResult(row, first != i)
        return complete

    async def _conditional_append(self, chat_id: str, head: int,
                                  rows: list[StoredMessage]) -> bool:
        """One conditional batch on one bucket partition: the head moves from `head` to the last
        row's seq and the rows are inserted, or nothing happens (False: another writer moved
        the head)."""
        bucket = bucket_of(rows[0].seq)
        expected = head if head > 0 and bucket_of(head) == bucket else None
        q = self._q
        statements: list[tuple[str, Sequence[Any]]] = [
            (q.set_head, (rows[-1].seq, chat_id, bucket, expected))]
        statements += [(q.insert_message, (chat_id, bucket, r.seq, r.server_id, r.sender_user,
                                           r.sender_device, r.client_msg_id, r.body,
                                           list(r.media_ids) or None, r.created_at_ms,
                                           *_event_columns(r.event)))
                       for r in rows]
        self.stats.conditional += 1
        result = await self.session.batch(statements, logged=False)
        return result.applied

    async def _index(self, chats: dict[str, _ChatCommit], unsaved: Batch) -> None:
        """Index every message the chats' logs hold unindexed: dedup rows, the effects of
        membership events (`_event_effects`), the senders' receipts; then each chat's head
        hint. After this every message up to a chat's head can be found by (sender,
        client_msg_id), its events are applied, and readers see the head. Both go as unlogged
        batches over many partitions: a few requests per flush, not a few per chat (the client's
        CPU per request is the scarce thing). A chat whose rows did not all land fails."""
        q = self._q
        landed = {chat_id: chat for chat_id, chat in chats.items()
                  if chat.error is None and chat.log is not None and chat.log.unindexed}
        effects = await asyncio.gather(*(self._event_effects(chat_id, chat.log.unindexed)
                                         for chat_id, chat in landed.items()),
                                       return_exceptions=True)
        rows: dict[str, list[tuple[str, Sequence[Any]]]] = {}
        for (chat_id, chat), writes in zip(landed.items(), effects):
            if isinstance(writes, BaseException):
                if not isinstance(writes, Exception):
                    raise writes
                continue  # not indexed: fails below
            rows[chat_id] = [(q.insert_dedup, (chat_id, r.sender_user, r.client_msg_id, r.seq))
                             for r in chat.log.unindexed]
            rows[chat_id] += writes
            rows[chat_id] += [(q.raise_read, (seq, seq, seq, chat_id, user))
                              for user, seq in chat.sent.items()]
            rows[chat_id] += [(q.raise_public, (seq, seq, seq, seq, chat_id, user))
                              for user, seq in chat.sent_public.items()]
        indexed = await self._write_grouped(rows)
        hints = {chat_id: [(q.set_hint, (chats[chat_id].log.head, chats[chat_id].log.head,
                                         chat_id))] for chat_id in indexed}
        hinted = await self._write_grouped(hints)
        for chat_id, chat in landed.items():
            if chat_id in hinted:
                chat.log.unindexed = []
                continue
            self._logs.pop(chat_id, None)
            chat.error = StoreError(f"chat {chat_id}: its messages are stored but not indexed "
                                    "(outcome unknown: the retry finds them)")
            for user, seq in chat.sent.items():
                _raise_to(unsaved.reads, (chat_id, user), seq)
            for user, seq in chat.sent_public.items():
                _raise_to(unsaved.public_reads, (chat_id, user), seq)

    async def _event_effects(self, chat_id: str,
                             rows: list[StoredMessage]) -> list[tuple[str, Sequence[Any]]]:
        """The writes that apply the membership events among `rows` (the chat's unindexed
        messages, ascending): one read of the chat's periods, then `Roster` decides. Every
        event below the first of them is applied already (the index's invariant), which is all
        the decisions need (see Roster)."""
        events = [(r.seq, r.event) for r in rows if r.event is not None]
        if not events:
            return []
        periods = await self._read_all(self._q.chat_periods, (chat_id,))
        roster = Roster((row.user_id, row.joined_seq, row.left_seq) for row in periods
                        if row.user_id is not None)
        return membership_writes(self._q, chat_id, roster, events)

    async def _write_grouped(self, groups: dict[Any, list[tuple[str, Sequence[Any]]]]) -> set:
        """Write each group's statements in unlogged batches of up to MAX_BATCH_STATEMENTS (a
        group is never split unless it alone is larger), concurrently; the groups whose
        statements all landed."""
        batches: list[tuple[list[Any], list[tuple[str, Sequence[Any]]]]] = []
        for key, statements in groups.items():
            for chunk in _chunks(statements, MAX_BATCH_STATEMENTS):
                if not batches or len(batches[-1][1]) + len(chunk) > MAX_BATCH_STATEMENTS:
                    batches.append(([], []))
                batches[-1][0].append(key)
                batches[-1][1].extend(chunk)
        outcomes = await asyncio.gather(*(self._write_batch(statements)
                                          for _, statements in batches), return_exceptions=True)
        failed = set()
        for (keys, _), outcome in zip(batches, outcomes):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                failed.update(keys)
        return set(groups) - failed

    async def _hint(self, chat_id: str) -> int:
        rows = await self._read(self._q.get_hint, (chat_id,))
        return rows[0].head if rows and rows[0].head is not None else 0

    async def _lookup(self, chat_id: str, messages: list[NewMessage]) -> dict[tuple[str, str], int]:
        """(sender, client_msg_id) -> seq of those already stored. Senders go together into
        one read (`sender_user IN`, a few partitions the coordinator reads) as long as senders
        x client_msg_ids stays within MAX_LOOKUP_KEYS (ScyllaDB caps that product at 100); a
        1:1 chat's flush is one read. Rows for pairs nobody asked about are left out."""
        by_sender: dict[str, set[str]] = defaultdict(set)
        for m in messages:
            by_sender[m.sender_user].add(m.client_msg_id)
        groups: list[tuple[list[str], set[str]]] = []
        for sender, cmids in by_sender.items():
            if groups:
                senders, wanted = groups[-1]
                if (len(senders) + 1) * len(wanted | cmids) <= MAX_LOOKUP_KEYS:
                    senders.append(sender)
                    wanted |= cmids
                    continue
            for chunk in _chunks(sorted(cmids), MAX_LOOKUP_KEYS):
                groups.append(([sender], set(chunk)))
        pages = await asyncio.gather(*(self._read(self._q.find_dedup,
                                                  (chat_id, senders, sorted(wanted)))
                                       for senders, wanted in groups))
        return {(row.sender_user, row.client_msg_id): row.seq for rows in pages for row in rows
                if row.client_msg_id in by_sender[row.sender_user]}

    async def _messages_by_seq(self, chat_id: str, seqs: set[int]) -> dict[int, StoredMessage]:
        if not seqs:
            return {}
        by_bucket: dict[int, list[int]] = defaultdict(list)
        for seq in seqs:
            by_bucket[bucket_of(seq)].append(seq)
        pages = await asyncio.gather(*(self._read(self._q.messages_by_seq,
                                                  (chat_id, bucket, sorted(wanted)))
                                       for bucket, wanted in by_bucket.items()))
        return {row.seq: _message(chat_id, row) for rows in pages for row in rows}

    async def _write_watermarks(self, batch: Batch) -> Batch:
        """Cursors, delivered, read and public read marks, grouped per partition into a few unlogged
        batches; returns those that did not land."""
        q = self._q
        groups: dict[tuple, list[tuple[str, Sequence[Any]]]] = defaultdict(list)
        keys: dict[tuple, list[tuple[str, tuple, int]]] = defaultdict(list)
        delivered = dict(batch.delivered)
        for (user, device, chat_id), seq in batch.cursors.items():
            part = ("cursors", user, device)
            groups[part].append((q.raise_cursor, (seq, seq, user, device, chat_id)))
            keys[part].append(("cursors", (user, device, chat_id), seq))
            if seq > delivered.get((chat_id, user), -1):  # the device holds what it acked
                delivered[chat_id, user] = seq
        for (chat_id, user), seq in delivered.items():
            part = ("receipts", chat_id)
            groups[part].append((q.raise_delivered, (seq, seq, chat_id, user)))
            keys[part].append(("delivered", (chat_id, user), seq))
        for (chat_id, user), seq in batch.reads.items():
            part = ("receipts", chat_id)
            groups[part].append((q.raise_read, (seq, seq, seq, chat_id, user)))
            keys[part].append(("reads", (chat_id, user), seq))
        for (chat_id, user), seq in batch.public_reads.items():
            part = ("receipts", chat_id)
            groups[part].append((q.raise_public, (seq, seq, seq, seq, chat_id, user)))
            keys[part].append(("public_reads", (chat_id, user), seq))
        landed = await self._write_grouped(groups)
        unsaved = Batch()
        for part in set(groups) - landed:
            for name, key, seq in keys[part]:
                getattr(unsaved, name)[key] = seq
        return unsaved

    # ------------------------------------------------------------------ messages
    async def read_messages(self, chat_id: str, after_seq: int, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        after = max(after_seq, 0)
        found: list[StoredMessage] = []
        while len(found) < limit:
            bucket = bucket_of(after + 1)
            rows = await self._read(self._q.read_forward,
                                    (chat_id, bucket, after, limit - len(found)))
            found += (_message(chat_id, r) for r in rows)
            if not rows:
                break
            after = rows[-1].seq
            if bucket_of(after + 1) == bucket:  # the bucket ended before its end: so did the chat
                break
        return found

    async def read_history(self, chat_id: str, before_seq: int, floor_seq: int,
                           limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        upper = before_seq - 1 if before_seq > 0 else await self.head_seq(chat_id)
        found: list[StoredMessage] = []
        while len(found) < limit and upper > floor_seq:
            bucket = bucket_of(upper)
            rows = await self._read(self._q.read_backward,
                                    (chat_id, bucket, floor_seq, upper, limit - len(found)))
            found += (_message(chat_id, r) for r in rows)
            upper = bucket * BUCKET_SIZE - 1
        return found

    async def _scan(self, chat_id: str, after: int) -> list[StoredMessage]:
        """Every message above `after`, ascending, bucket by bucket (a bucket that ends before
        its last seq is the chat's last)."""
        rows: list[StoredMessage] = []
        bucket = bucket_of(after + 1)
        while True:
            page = await self._read_all(self._q.scan_from, (chat_id, bucket, after))
            rows += (_message(chat_id, r) for r in page)
            if not page or bucket_of(page[-1].seq + 1) == bucket:
                return rows
            after, bucket = page[-1].seq, bucket + 1

    async def head_seq(self, chat_id: str) -> int:
        return await self._hint(chat_id)

    async def heads(self, chat_ids: Collection[str]) -> dict[str, int]:
        ids = list(chat_ids)
        heads = await asyncio.gather(*(self._hint(chat_id) for chat_id in ids))
        return {chat_id: head for chat_id, head in zip(ids, heads) if head}

    async def senders_between(self, chat_id: str, after_seq: int, upto_seq: int) -> set[str]:
        if upto_seq <= after_seq:
            return set()
        senders: set[str] = set()
        for bucket in range(bucket_of(max(after_seq, 0) + 1), bucket_of(upto_seq) + 1):
            senders.update(row.sender_user for row in await self._read_all(
                self._q.senders, (chat_id, bucket, after_seq, upto_seq)))
        return senders

    # ------------------------------------------------------------------ chats
    async def create_chat(self, chat: Chat, members: dict[str, Role]) -> Chat:
        """The chat row is created by a conditional insert carrying the member list; whoever
        finds that list still pending (this call, or a retry after a crash in between) writes
        the members' first periods (0, open) and the count, then clears it."""
        q = self._q
        pending = {user: int(role) for user, role in members.items()}
        self.stats.conditional += 1
        result = await self.session.execute(
            q.create_chat, (chat.chat_id, int(chat.kind), chat.title, chat.created_at_ms,
                            pending or None))
        if result.applied:
            stored = chat
        else:
            row = result.rows[0]
            stored = Chat(row.chat_id, ChatKind(row.kind), row.title, row.created_at_ms)
            pending = dict(row.pending_members or {})
        if pending:
            statements = [(q.set_member_count, (0, len(pending), chat.chat_id))]
            for user, role in pending.items():
                statements += _open_period(q, chat.chat_id, user, 0, Role(role))
            await _all(self._write_batch(chunk)
                       for chunk in _chunks(statements, MAX_BATCH_STATEMENTS))
            await self._write(q.clear_pending, (chat.chat_id,))
        return stored

    async def get_chat(self, chat_id: str) -> Chat | None:
        rows = await self._read(self._q.get_chat, (chat_id,))
        return _chat(rows[0]) if rows else None

    async def chats(self, chat_ids: Collection[str]) -> dict[str, Chat]:
        ids = list(chat_ids)
        found = await asyncio.gather(*(self.get_chat(chat_id) for chat_id in ids))
        return {chat_id: chat for chat_id, chat in zip(ids, found) if chat is not None}

    async def members(self, chat_id: str) -> dict[str, Membership]:
        """The open periods of the chat's partition (a user has one; were a close of an event
        whose commit failed still missing, the latest wins until the chat's next commit)."""
        return {row.user_id: Membership(Role(row.role or Role.MEMBER), row.joined_seq)
                for row in await self._period_rows(self._q.chat_periods, (chat_id,))
                if row.left_seq is None}

    async def member_counts(self, chat_ids: Collection[str]) -> dict[str, int]:
        ids = list(chat_ids)
        counts = await asyncio.gather(*(self._read(self._q.member_count, (chat_id,))
                                        for chat_id in ids))
        return {chat_id: rows[0].member_count for chat_id, rows in zip(ids, counts)
                if rows and rows[0].member_count}

    async def user_chats(self, user_id: str) -> dict[str, int]:
        return {row.chat_id: row.joined_seq
                for row in await self._period_rows(self._q.user_periods, (user_id,))
                if row.left_seq is None}

    async def member_periods(self, chat_id: str,
                             user_id: str | None = None) -> dict[str, list[Period]]:
        if user_id is None:
            rows = await self._period_rows(self._q.chat_periods, (chat_id,))
        else:
            rows = await self._period_rows(self._q.member_periods, (chat_id, user_id))
        return _periods((row.user_id, row) for row in rows)

    async def user_periods(self, user_id: str) -> dict[str, list[Period]]:
        return _periods((row.chat_id, row) for row in
                        await self._period_rows(self._q.user_periods, (user_id,)))

    async def _period_rows(self, cql: str, params: Sequence[Any]) -> list[Any]:
        """Period rows of one partition in key order; a row that is only the partition's static
        member count (no period in it) is left out."""
        return [row for row in await self._read_all(cql, params) if row.joined_seq is not None]

    # ------------------------------------------------------------------ watermarks
    async def cursors(self, user_id: str, device_id: str) -> dict[str, int]:
        return {row.chat_id: row.acked_seq for row in
                await self._read_all(self._q.cursors, (user_id, device_id))
                if row.acked_seq is not None}

    async def receipts(self, chat_id: str) -> dict[str, Receipt]:
        return {row.user_id: Receipt(row.delivered_seq or 0, row.read_seq or 0,
                                     row.public_read_seq or 0)
                for row in await self._read_all(self._q.receipts, (chat_id,))}

    async def read_seq(self, chat_id: str, user_id: str) -> int:
        rows = await self._read(self._q.read_seq, (chat_id, user_id))
        return rows[0].read_seq or 0 if rows else 0

    async def read_seqs(self, user_id: str, chat_ids: Collection[str]) -> dict[str, int]:
        ids = list(chat_ids)
        reads = await asyncio.gather(*(self.read_seq(chat_id, user_id) for chat_id in ids))
        return {chat_id: seq for chat_id, seq in zip(ids, reads) if seq}

    # ------------------------------------------------------------------ settings
    async def get_settings(self, user_id: str) -> UserSettings:
        rows = await self._read(self._q.get_settings, (user_id,))
        defaults = UserSettings()
        if not rows:
            return defaults
        row = rows[0]
        return UserSettings(
            defaults.read_receipts if row.read_receipts is None else row.read_receipts,
            defaults.last_seen if row.last_seen_visibility is None
            else Visibility(row.last_seen_visibility))

    async def update_settings(self, user_id: str, read_receipts: bool | None,
                              last_seen: Visibility | None) -> UserSettings:
        q = self._q
        writes = []
        if read_receipts is not None:
            writes.append(self._write(q.set_read_receipts, (bool(read_receipts), user_id)))
        if last_seen is not None:
            writes.append(self._write(q.set_last_seen_visibility, (int(last_seen), user_id)))
        await _all(writes)
        return await self.get_settings(user_id)

    # ------------------------------------------------------------------ devices
    async def register_device(self, user_id: str, device_id: str, now_ms: int,
                              max_devices: int) -> DeviceStatus:
        """A conditional batch on the user's partition: the static count of active devices
        moves from n to n + 1 together with the new row, or nothing happens and the state is
        read again."""
        q = self._q
        for _ in range(MAX_ATTEMPTS * 2):
            rows = await self._read_all(q.devices, (user_id,))
            active = rows[0].active if rows else None
            for row in rows:
                if row.device_id == device_id and row.first_seen_ms is not None:
                    return DeviceStatus.REVOKED if row.revoked else DeviceStatus.OK
            if (active or 0) >= max_devices:
                return DeviceStatus.TOO_MANY
            self.stats.conditional += 1
            result = await self.session.batch([
                (q.set_active, ((active or 0) + 1, user_id, active)),
                (q.insert_device, (user_id, device_id, now_ms))], logged=False)
            if result.applied:
                return DeviceStatus.OK
        raise StoreContention(f"devices of {user_id}: too many concurrent admissions")

    async def list_devices(self, user_id: str) -> list[DeviceRow]:
        rows = [DeviceRow(row.device_id, row.first_seen_ms, _last_seen(row))
                for row in await self._read_all(self._q.devices, (user_id,))
                if row.first_seen_ms is not None and not row.revoked]
        return sorted(rows, key=lambda d: (d.first_seen_ms, d.device_id))

    async def revoke_device(self, user_id: str, device_id: str) -> bool:
        q = self._q
        for _ in range(MAX_ATTEMPTS * 2):
            rows = await self._read_all(q.devices, (user_id,))
            device = next((row for row in rows if row.device_id == device_id
                           and row.first_seen_ms is not None), None)
            if device is None or device.revoked:
                return False
            active = rows[0].active
            self.stats.conditional += 1
            result = await self.session.batch([
                (q.set_active, (max((active or 0) - 1, 0), user_id, active)),
                (q.revoke_device, (user_id, device_id))], logged=False)
            if result.applied:
                # Its cursors go for good: later cursor writes carry timestamps (seqs) far
                # below this delete's, so none comes back.
                await _all((self._write(q.drop_cursors, (user_id, device_id)),
                            self._write(q.drop_push_token, (user_id, device_id))))
                return True
        raise StoreContention(f"devices of {user_id}: too many concurrent changes")

    async def touch_device(self, user_id: str, device_id: str, now_ms: int) -> None:
        """`USING TIMESTAMP` now in microseconds: the latest touch wins, whichever lands last.
        (A conditional batch takes no timestamp of its own, so admission writes first_seen_ms
        alone and last seen is the later of the two.) Touching an unknown device leaves a row
        without first_seen_ms, which reads ignore."""
        await self._write(self._q.touch_device, (now_ms * 1000, now_ms, user_id, device_id))

    async def last_seen(self, user_id: str) -> int:
        return max((_last_seen(row) for row in await self._read_all(self._q.devices, (user_id,))
                    if row.first_seen_ms is not None), default=0)

    # ------------------------------------------------------------------ blocks
    async def block(self, user_id: str, blocked_id: str) -> None:
        await self._write_logged([(self._q.block, (user_id, blocked_id)),
                                  (self._q.add_blocker, (blocked_id, user_id))])

    async def unblock(self, user_id: str, blocked_id: str) -> None:
        await self._write_logged([(self._q.unblock, (user_id, blocked_id)),
                                  (self._q.drop_blocker, (blocked_id, user_id))])

    async def _write_logged(self, statements: list[tuple[str, Sequence[Any]]]) -> None:
        """Idempotent writes to several partitions as one logged batch: once it is accepted,
        every one of them lands (the batch log replays them), so the two views of a block
        never disagree for good."""
        self.stats.writes += 1
        await self.session.batch(statements, logged=True, idempotent=True)

    async def blocked(self, user_id: str) -> list[str]:
        return sorted(row.blocked_id for row in await self._read_all(self._q.blocked, (user_id,)))

    async def blockers(self, user_id: str) -> set[str]:
        return {row.user_id for row in await self._read_all(self._q.blockers, (user_id,))}

    # ------------------------------------------------------------------ push
    # The queue's cells are written and deleted `USING TIMESTAMP last_seq`, the watermarks'
    # rule: a put for newer messages outlives the drop of an older entry whatever order they
    # land in, with no read and no Paxos. Only the token's removal on a provider's word is
    # conditional (rare: a dead token).
    async def set_push_token(self, user_id: str, device_id: str, token: PushToken) -> None:
        await self._write(self._q.set_push_token, (
            user_id, device_id, token.platform.value, token.token, token.topic, token.previews,
            token.updated_ms))

    async def drop_push_token(self, user_id: str, device_id: str, token: str | None = None) -> bool:
        q = self._q
        if token is None:
            had = await self._read(q.push_token, (user_id, device_id))
            await self._write(q.drop_push_token, (user_id, device_id))
            return bool(had)
        self.stats.conditional += 1
        result = await self.session.execute(q.drop_push_token_if, (user_id, device_id, token))
        return result.applied

    async def push_tokens(self, user_id: str) -> dict[str, PushToken]:
        return {row.device_id: PushToken(PushPlatform(row.platform), row.push_token, row.topic or "",
                                         bool(row.previews), row.updated_ms or 0)
                for row in await self._read_all(self._q.push_tokens, (user_id,))}

    async def set_mute(self, user_id: str, chat_id: str, until_ms: int, now_ms: int) -> None:
        """Written with a TTL to its expiry, so expired mutes leave by themselves."""
        if until_ms <= now_ms:
            await self._write(self._q.unmute, (user_id, chat_id))
            return
        ttl = -(-(until_ms - now_ms) // 1000)
        forever = until_ms == MUTE_FOREVER or ttl > MAX_TTL
        await self._write(self._q.set_mute, (user_id, chat_id, until_ms, 0 if forever else ttl))

    async def mutes(self, user_id: str, now_ms: int) -> dict[str, int]:
        return {row.chat_id: row.until_ms
                for row in await self._read_all(self._q.mutes, (user_id,))
                if row.until_ms is not None and row.until_ms > now_ms}

    async def put_pushes(self, pushes: list[QueuedPush]) -> None:
        await self._write_per_shard([(p.chat_id, self._q.put_push, (
            p.last_seq, p.first_seq, p.last_seq, p.count, p.sender_user, p.preview, p.due_ms,
            _push_shard(p.chat_id), p.user_id, p.device_id, p.chat_id)) for p in pushes])

    async def drop_pushes(self, done: list[tuple[str, str, str, int]]) -> None:
        await self._write_per_shard([(chat_id, self._q.drop_push, (
            last_seq, _push_shard(chat_id), user_id, device_id, chat_id))
            for user_id, device_id, chat_id, last_seq in done])

    async def _write_per_shard(self, writes: list[tuple[str, str, Sequence[Any]]]) -> None:
        """(chat, statement, params): one unlogged batch per queue partition (and per
        MAX_BATCH_STATEMENTS statements)."""
        by_shard: dict[int, list[tuple[str, Sequence[Any]]]] = defaultdict(list)
        for chat_id, cql, params in writes:
            by_shard[_push_shard(chat_id)].append((cql, params))
        await _all(self._write_batch(chunk) for group in by_shard.values()
                   for chunk in _chunks(group, MAX_BATCH_STATEMENTS))

    async def queued_pushes(self) -> list[QueuedPush]:
        shards = await asyncio.gather(*(self._read_all(self._q.queued_pushes, (shard,))
                                        for shard in range(PUSH_QUEUE_SHARDS)))
        return [QueuedPush(row.user_id, row.device_id, row.chat_id, row.first_seq, row.last_seq,
                           row.coalesced, row.sender_user or "", row.preview or "", row.due_ms)
                for rows in shards for row in rows if row.last_seq is not None]

    # ------------------------------------------------------------------ media
    # Every write to a media row is conditional (Paxos), so claim_media and delete_media are
    # linearizable per media: a claimed media is never deleted, a deleted one never claimed.
    async def _conditional(self, cql: str, params: Sequence[Any]) -> bool:
        self.stats.conditional += 1
        return (await self.session.execute(cql, params)).applied

    async def create_media(self, record: MediaRecord) -> MediaRecord:
        """The sweep entry first (harmless without a record), then the record, then the dedup
        entry IF NOT EXISTS: a loser drops its own record and returns the winner's. A dedup
        entry whose record was deleted is taken over conditionally."""
        q, r = self._q, record
        inserted = False
        for _ in range(MAX_ATTEMPTS):
            rows = await self._read(q.media_by_content, (r.owner, r.content_key))
            known = await self.get_media(rows[0].media_id) if rows else None
            if known is not None:
                if inserted:
                    await self._conditional(q.delete_media_row, (r.media_id,))
                return known
            if not inserted:
                await self._write(q.insert_media_sweep, (_day(r.created_at_ms), r.created_at_ms,
                                                         r.media_id))
                await self._conditional(q.insert_media, (
                    r.media_id, r.owner, r.content_key, r.size, r.content_type, r.sha256,
                    r.created_at_ms, r.part_size, r.upload_id, r.thumbnail_of,
                    int(MediaState.PENDING), "", False))
                inserted = True
            if rows:
                won = await self._conditional(q.replace_media_by_content, (
                    r.media_id, r.owner, r.content_key, rows[0].media_id))
            else:
                won = await self._conditional(q.insert_media_by_content, (
                    r.owner, r.content_key, r.media_id))
            if won:
                return replace(r, state=MediaState.PENDING, thumbnail_id="", refs=frozenset())
        raise StoreContention(f"media of {r.owner}: too many concurrent uploads of one file")

    async def get_media(self, media_id: str) -> MediaRecord | None:
        if not media_id:
            return None
        rows = await self._read(self._q.get_media, (media_id,))
        return _media_record(rows[0]) if rows and rows[0].owner is not None else None

    async def complete_media(self, media_id: str) -> MediaRecord | None:
        q = self._q
        if not await self._conditional(q.complete_media, (int(MediaState.COMPLETE), media_id)):
            return None
        record = await self.get_media(media_id)
        parent = await self.get_media(record.thumbnail_of) if record else None
        if parent is not None:
            await self._conditional(q.link_thumbnail, (media_id, parent.media_id))
            if parent.refs:
                await self._conditional(q.add_media_refs, (set(parent.refs), media_id))
            record = await self.get_media(media_id)
        return record

    async def claim_media(self, owner: str, chat_id: str,
                          media_ids: Collection[str]) -> dict[str, MediaRecord]:
        q = self._q
        ids = list(dict.fromkeys(media_ids))

        async def claim(media_id: str) -> None:
            if not await self._conditional(q.claim_media, ({chat_id}, media_id, owner,
                                                           int(MediaState.COMPLETE))):
                return
            record = await self.get_media(media_id)
            claimed = [record]
            if record.thumbnail_id and await self._conditional(
                    q.add_media_refs, ({chat_id}, record.thumbnail_id)):
                claimed.append(await self.get_media(record.thumbnail_id))
            await _all(self._write(q.delete_media_sweep, (_day(c.created_at_ms), c.created_at_ms,
                                                          c.media_id))
                       for c in claimed if c is not None)

        await _all(claim(media_id) for media_id in ids)
        found = await asyncio.gather(*(self.get_media(media_id) for media_id in ids))
        return {record.media_id: record for record in found if record is not None}

    async def unreferenced_media(self, created_before_ms: int, limit: int) -> list[MediaRecord]:
        """Days of media_sweep from the oldest that had candidates; entries whose record is
        gone or referenced are dropped on the way."""
        q = self._q
        last = _day(created_before_ms)
        first = self._sweep_floor if self._sweep_floor is not None else last - SWEEP_LOOKBACK_DAYS
        found: list[MediaRecord] = []
        floor = None
        for day in range(first, last + 1):
            for row in await self._read_all(q.media_sweep, (day, created_before_ms)):
                record = await self.get_media(row.media_id)
                if record is None or record.refs:
                    await self._write(q.delete_media_sweep, (day, row.created_at_ms,
                                                             row.media_id))
                    continue
                floor = day if floor is None else floor
                found.append(record)
                if len(found) >= limit:
                    self._sweep_floor = floor
                    return found
        self._sweep_floor = last if floor is None else floor
        return found

    async def delete_media(self, media_id: str) -> bool:
        q = self._q
        record = await self.get_media(media_id)
        if record is None or record.refs or not await self._conditional(q.delete_media,
                                                                         (media_id,)):
            return False
        await _all([self._conditional(q.delete_media_by_content, (record.owner,
                                                                  record.content_key, media_id)),
                     self._write(q.delete_media_sweep, (_day(record.created_at_ms),
                                                        record.created_at_ms, media_id))])
        return True


class _Queries:
    """Every statement, with the keyspace filled in (prepared by the session on first use)."""

    def __init__(self, ks: str) -> None:
        cols = MESSAGE_COLUMNS
        self.set_head = (f"UPDATE {ks}.messages SET head = ? WHERE chat_id = ? AND bucket = ? "
                         "IF head = ?")
        self.insert_message = (f"INSERT INTO {ks}.messages (chat_id, bucket, {cols}) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        self.read_forward = (f"SELECT {cols} FROM {ks}.messages WHERE chat_id = ? AND bucket = ? "
                             "AND seq > ? LIMIT ?")
        self.read_backward = (f"SELECT {cols} FROM {ks}.messages WHERE chat_id = ? AND bucket = ? "
                              "AND seq > ? AND seq <= ? ORDER BY seq DESC LIMIT ?")
        self.messages_by_seq = (f"SELECT {cols} FROM {ks}.messages WHERE chat_id = ? "
                                "AND bucket = ? AND seq IN ?")
        self.scan_from = (f"SELECT {cols} FROM {ks}.messages WHERE chat_id = ? AND bucket = ? "
                          "AND seq > ?")
        self.senders = (f"SELECT sender_user FROM {ks}.messages WHERE chat_id = ? AND bucket = ? "
                        "AND seq > ? AND seq <= ?")
        self.get_hint = f"SELECT head FROM {ks}.chat_heads WHERE chat_id = ?"
        self.set_hint = f"UPDATE {ks}.chat_heads USING TIMESTAMP ? SET head = ? WHERE chat_id = ?"
        self.find_dedup = (f"SELECT sender_user, client_msg_id, seq FROM {ks}.dedup "
                           "WHERE chat_id = ? AND sender_user IN ? AND client_msg_id IN ?")
        self.insert_dedup = (f"INSERT INTO {ks}.dedup (chat_id, sender_user, client_msg_id, seq) "
                             "VALUES (?, ?, ?, ?)")
        self.create_chat = (f"INSERT INTO {ks}.chats (chat_id, kind, title, created_at_ms, "
                            "pending_members) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS")
        self.clear_pending = f"UPDATE {ks}.chats SET pending_members = null WHERE chat_id = ?"
        self.get_chat = (f"SELECT chat_id, kind, title, created_at_ms FROM {ks}.chats "
                         "WHERE chat_id = ?")
        periods = f"SELECT user_id, joined_seq, role, left_seq FROM {ks}.member_periods"
        self.chat_periods = f"{periods} WHERE chat_id = ?"
        self.member_periods = f"{periods} WHERE chat_id = ? AND user_id = ?"
        self.user_periods = (f"SELECT chat_id, joined_seq, left_seq FROM {ks}.user_periods "
                             "WHERE user_id = ?")
        self.member_count = (f"SELECT member_count FROM {ks}.member_periods WHERE chat_id = ? "
                             "LIMIT 1")
        self.open_period = (f"INSERT INTO {ks}.member_periods (chat_id, user_id, joined_seq, "
                            "role) VALUES (?, ?, ?, ?)")
        self.open_user_period = (f"INSERT INTO {ks}.user_periods (user_id, chat_id, joined_seq) "
                                 "VALUES (?, ?, ?)")
        self.close_period = (f"UPDATE {ks}.member_periods SET left_seq = ? WHERE chat_id = ? "
                             "AND user_id = ? AND joined_seq = ?")
        self.close_user_period = (f"UPDATE {ks}.user_periods SET left_seq = ? WHERE user_id = ? "
                                  "AND chat_id = ? AND joined_seq = ?")
        # the count after an event, at timestamp = its seq: the highest event's count stays
        self.set_member_count = (f"UPDATE {ks}.member_periods USING TIMESTAMP ? "
                                 "SET member_count = ? WHERE chat_id = ?")
        self.raise_cursor = (f"UPDATE {ks}.device_cursors USING TIMESTAMP ? SET acked_seq = ? "
                             "WHERE user_id = ? AND device_id = ? AND chat_id = ?")
        self.cursors = (f"SELECT chat_id, acked_seq FROM {ks}.device_cursors "
                        "WHERE user_id = ? AND device_id = ?")
        self.drop_cursors = (f"DELETE FROM {ks}.device_cursors WHERE user_id = ? "
                             "AND device_id = ?")
        self.raise_delivered = (f"UPDATE {ks}.receipts USING TIMESTAMP ? SET delivered_seq = ? "
                                "WHERE chat_id = ? AND user_id = ?")
        # what was read was delivered: both cells, each keeping its own max
        self.raise_read = (f"UPDATE {ks}.receipts USING TIMESTAMP ? SET delivered_seq = ?, "
                           "read_seq = ? WHERE chat_id = ? AND user_id = ?")
        # a public read is a read and a delivery too
        self.raise_public = (f"UPDATE {ks}.receipts USING TIMESTAMP ? SET delivered_seq = ?, "
                             "read_seq = ?, public_read_seq = ? WHERE chat_id = ? AND user_id = ?")
        self.raise_public_only = (f"UPDATE {ks}.receipts USING TIMESTAMP ? SET "
                                  "public_read_seq = ? WHERE chat_id = ? AND user_id = ?")
        self.receipts = (f"SELECT user_id, delivered_seq, read_seq, public_read_seq "
                         f"FROM {ks}.receipts WHERE chat_id = ?")
        self.read_seq = (f"SELECT read_seq FROM {ks}.receipts WHERE chat_id = ? "
                         "AND user_id = ?")
        self.get_settings = (f"SELECT read_receipts, last_seen_visibility FROM {ks}.users "
                             "WHERE user_id = ?")
        self.set_read_receipts = f"UPDATE {ks}.users SET read_receipts = ? WHERE user_id = ?"
        self.set_last_seen_visibility = (f"UPDATE {ks}.users SET last_seen_visibility = ? "
                                         "WHERE user_id = ?")
        self.devices = (f"SELECT device_id, first_seen_ms, last_seen_ms, revoked, active "
                        f"FROM {ks}.devices WHERE user_id = ?")
        self.set_active = f"UPDATE {ks}.devices SET active = ? WHERE user_id = ? IF active = ?"
        self.insert_device = (f"INSERT INTO {ks}.devices (user_id, device_id, first_seen_ms, "
                              "revoked) VALUES (?, ?, ?, false)")
        self.revoke_device = (f"UPDATE {ks}.devices SET revoked = true WHERE user_id = ? "
                              "AND device_id = ? IF revoked = false")
        self.touch_device = (f"UPDATE {ks}.devices USING TIMESTAMP ? SET last_seen_ms = ? "
                             "WHERE user_id = ? AND device_id = ?")
        self.block = f"INSERT INTO {ks}.blocks (user_id, blocked_id) VALUES (?, ?)"
        self.unblock = f"DELETE FROM {ks}.blocks WHERE user_id = ? AND blocked_id = ?"
        self.add_blocker = f"INSERT INTO {ks}.blockers (blocked_id, user_id) VALUES (?, ?)"
        self.drop_blocker = f"DELETE FROM {ks}.blockers WHERE blocked_id = ? AND user_id = ?"
        self.blocked = f"SELECT blocked_id FROM {ks}.blocks WHERE user_id = ?"
        self.blockers = f"SELECT user_id FROM {ks}.blockers WHERE blocked_id = ?"
        self.set_push_token = (f"INSERT INTO {ks}.push_tokens (user_id, device_id, platform, "
                               "push_token, topic, previews, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)")
        self.push_token = (f"SELECT push_token FROM {ks}.push_tokens WHERE user_id = ? "
                           "AND device_id = ?")
        self.push_tokens = (f"SELECT device_id, platform, push_token, topic, previews, updated_ms "
                            f"FROM {ks}.push_tokens WHERE user_id = ?")
        self.drop_push_token = (f"DELETE FROM {ks}.push_tokens WHERE user_id = ? "
                                "AND device_id = ?")
        self.drop_push_token_if = self.drop_push_token + " IF push_token = ?"
        self.set_mute = (f"INSERT INTO {ks}.chat_mutes (user_id, chat_id, until_ms) "
                         "VALUES (?, ?, ?) USING TTL ?")
        self.unmute = f"DELETE FROM {ks}.chat_mutes WHERE user_id = ? AND chat_id = ?"
        self.mutes = f"SELECT chat_id, until_ms FROM {ks}.chat_mutes WHERE user_id = ?"
        self.put_push = (f"UPDATE {ks}.push_queue USING TIMESTAMP ? SET first_seq = ?, "
                         "last_seq = ?, coalesced = ?, sender_user = ?, preview = ?, due_ms = ? "
                         "WHERE shard = ? AND user_id = ? AND device_id = ? AND chat_id = ?")
        self.drop_push = (f"DELETE FROM {ks}.push_queue USING TIMESTAMP ? WHERE shard = ? "
                          "AND user_id = ? AND device_id = ? AND chat_id = ?")
        self.queued_pushes = (f"SELECT user_id, device_id, chat_id, first_seq, last_seq, coalesced, "
                              f"sender_user, preview, due_ms FROM {ks}.push_queue "
                              "WHERE shard = ?")
        self.get_media = (f"SELECT {MEDIA_COLUMNS} FROM {ks}.media WHERE media_id = ?")
        self.insert_media = (f"INSERT INTO {ks}.media (media_id, owner, content_key, size, "
                             "content_type, sha256, created_at_ms, part_size, upload_id, "
                             "thumbnail_of, state, thumbnail_id, referenced) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS")
        self.delete_media_row = f"DELETE FROM {ks}.media WHERE media_id = ? IF EXISTS"
        self.complete_media = f"UPDATE {ks}.media SET state = ? WHERE media_id = ? IF EXISTS"
        self.link_thumbnail = (f"UPDATE {ks}.media SET thumbnail_id = ? WHERE media_id = ? "
                               "IF EXISTS")
        self.add_media_refs = (f"UPDATE {ks}.media SET refs = refs + ?, referenced = true "
                               "WHERE media_id = ? IF EXISTS")
        self.claim_media = (f"UPDATE {ks}.media SET refs = refs + ?, referenced = true "
                            "WHERE media_id = ? IF owner = ? AND state = ? AND thumbnail_of = ''")
        self.delete_media = f"DELETE FROM {ks}.media WHERE media_id = ? IF referenced = false"
        self.media_by_content = (f"SELECT media_id FROM {ks}.media_by_content "
                                 "WHERE owner = ? AND content_key = ?")
        self.insert_media_by_content = (f"INSERT INTO {ks}.media_by_content (owner, content_key, "
                                        "media_id) VALUES (?, ?, ?) IF NOT EXISTS")
        self.replace_media_by_content = (f"UPDATE {ks}.media_by_content SET media_id = ? "
                                         "WHERE owner = ? AND content_key = ? IF media_id = ?")
        self.delete_media_by_content = (f"DELETE FROM {ks}.media_by_content WHERE owner = ? "
                                        "AND content_key = ? IF media_id = ?")
        self.insert_media_sweep = (f"INSERT INTO {ks}.media_sweep (day, created_at_ms, media_id) "
                                   "VALUES (?, ?, ?)")
        self.delete_media_sweep = (f"DELETE FROM {ks}.media_sweep WHERE day = ? "
                                   "AND created_at_ms = ? AND media_id = ?")
        self.media_sweep = (f"SELECT created_at_ms, media_id FROM {ks}.media_sweep "
                            "WHERE day = ? AND created_at_ms < ?")


def _table_name(statement: str) -> str:
    return statement.split("{ks}.", 1)[1].split(None, 1)[0].split("(", 1)[0]


def _message(chat_id: str, row: Any) -> StoredMessage:
    event = None if row.event_action is None else MembershipEvent(
        MemberAction(row.event_action), row.event_actor or "", tuple(row.event_users or ()))
    return StoredMessage(chat_id, row.seq, row.server_id, row.sender_user, row.sender_device,
                         row.client_msg_id, row.body or b"", tuple(row.media_ids or ()),
                         row.created_at_ms, event)


def _event_columns(event: MembershipEvent | None) -> tuple[Any, Any, Any]:
    """event_action, event_actor, event_users of a message row (all null: no event)."""
    if event is None:
        return None, None, None
    return int(event.action), event.actor, list(event.users) or None


def _periods(rows: Iterable[tuple[str, Any]]) -> dict[str, list[Period]]:
    """(key, period row) in key then joined_seq order -> key -> periods, oldest first."""
    out: dict[str, list[Period]] = {}
    for key, row in rows:
        out.setdefault(key, []).append(Period(row.joined_seq, row.left_seq))
    return out


def _media_record(row: Any) -> MediaRecord:
    return MediaRecord(row.media_id, row.owner, row.size, row.content_type, row.sha256,
                       row.created_at_ms, row.part_size, row.upload_id or "",
                       row.thumbnail_of or "", MediaState(row.state), row.thumbnail_id or "",
                       frozenset(row.refs or ()))


def _day(ms: int) -> int:
    return ms // DAY_MS


def _last_seen(row: Any) -> int:
    return max(row.first_seen_ms or 0, row.last_seen_ms or 0)


def _push_shard(chat_id: str) -> int:
    return zlib.crc32(chat_id.encode()) % PUSH_QUEUE_SHARDS


def _chat(row: Any) -> Chat:
    return Chat(row.chat_id, ChatKind(row.kind), row.title, row.created_at_ms)


def _pieces(rows: list[StoredMessage]) -> list[list[StoredMessage]]:
    """Rows split into conditional batches: one bucket each, bounded in rows and bytes."""
    pieces: list[list[StoredMessage]] = []
    size = 0
    for row in rows:
        piece = pieces[-1] if pieces else None
        if (piece is None or bucket_of(row.seq) != bucket_of(piece[0].seq)
                or len(piece) >= MAX_PIECE_ROWS or size + len(row.body) > MAX_PIECE_BYTES):
            pieces.append([row])
            size = len(row.body)
        else:
            piece.append(row)
            size += len(row.body)
    return pieces


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def _all(awaitables: Iterable[Awaitable[Any]]) -> None:
    """Run concurrently; raise the first failure once all are done (none left running)."""
    outcomes = await asyncio.gather(*awaitables, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _raise_to(pending: dict, key: tuple, seq: int) -> None:
    if seq > pending.get(key, -1):
        pending[key] = seq
