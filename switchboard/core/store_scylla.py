"""The store on ScyllaDB (and Cassandra, which the tests run): the Store contract (store.py) kept
with single-partition reads and writes, the seq fenced by the database itself.

Tables, keys and what each query costs are in docs/storage.md; the short version:

* `messages ((chat_id, bucket), seq)`: bucket = seq // BUCKET_SIZE, so a chat with years of
  history is many bounded partitions. Each bucket partition has a static `head`: the highest seq
  written into that bucket. A flush of a chat is one conditional batch per bucket it touches
  (almost always one): `UPDATE ... SET head = :new IF head = :old` plus the INSERTs of its
  messages. Paxos runs once for the batch; two stores committing to one chat at the same moment
  cannot both win, and the loser reads what is above the head it knew and tries again on top, so
  no seq is held twice and none is skipped. The first write into a bucket expects `head = null` there: it carries the head
  across the boundary, and a full bucket's head is its last seq.
* `chat_heads (chat_id)`: the chat's head for readers (sync, chat list), written after the
  conditional batch and before anything of the flush is acknowledged, `USING TIMESTAMP head`
  so that the highest head wins whatever order writes land in.
* `dedup ((chat_id, sender_user), client_msg_id) -> seq`, written after the conditional batch,
  before the hint. Before a store looks sends up and asks for `head = H`, every message up to H
  is either in `dedup` or among rows it has just read: it knows that from its own last flush,
  and otherwise (cold cache, a lost race, a failed write) it reads the messages above the last
  head known to be indexed (the hint, or its own) and matches against those too, then indexes
  them along with its own. So a conditional batch that applied and then timed out, or a store
  killed between its batch and its dedup rows, is found by the next commit of that chat, by any
  store: a retry is a duplicate, never a second copy.
* Watermarks are max-upserts with no read and no Paxos: each cell is written `USING TIMESTAMP`
  equal to its value, and the last-write-wins rule keeps the highest. (Nothing else may write
  those cells with a wall-clock timestamp: it would freeze them.)
* Device admission is a conditional batch on the user's partition, fenced by a static count of
  active devices, so two gateways racing cannot admit one device too many.

* Media: `media (media_id)` with every write conditional (so a claim and an orphan's delete
  exclude each other), `media_by_content ((owner), content_key)` for dedup, and
  `media_sweep ((day), created_at_ms, media_id)`: what the orphan sweep reads, one partition per
  day of creation; an entry goes when its media is referenced or deleted.

Everything goes through `cql.CqlSession` (the driver bridged to asyncio, never blocking the loop,
with a bound on requests in flight); statements are prepared once per session.
"""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Collection, Iterable, Sequence

from .cql import CqlSession, CqlSettings, connect
from .lru import LRU
from .model import (Batch, Chat, ChatKind, CommitOutcome, CommitResult, DeviceRow, DeviceStatus,
                    MediaRecord, MediaState, Membership, NewMessage, Receipt, Role, StoredMessage,
                    UserSettings, Visibility)
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
DAY_MS = 86_400_000         # media_sweep partitions: one per day of creation
SWEEP_LOOKBACK_DAYS = 60    # how far back a store's first orphan sweep looks

MESSAGE_COLUMNS = ("seq, server_id, sender_user, sender_device, client_msg_id, body, media_ids, "
                   "created_at_ms")
MEDIA_COLUMNS = ("media_id, owner, size, content_type, sha256, created_at_ms, part_size, upload_id, "
                 "thumbnail_of, state, thumbnail_id, refs")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {ks}.messages (
        chat_id text, bucket bigint, seq bigint, server_id bigint, sender_user text,
        sender_device text, client_msg_id text, body blob, media_ids list<text>,
        created_at_ms bigint, head bigint STATIC,
        PRIMARY KEY ((chat_id, bucket), seq)) WITH CLUSTERING ORDER BY (seq ASC)""",
    "CREATE TABLE IF NOT EXISTS {ks}.chat_heads (chat_id text PRIMARY KEY, head bigint)",
    """CREATE TABLE IF NOT EXISTS {ks}.dedup (
        chat_id text, sender_user text, client_msg_id text, seq bigint,
        PRIMARY KEY ((chat_id, sender_user), client_msg_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.chats (
        chat_id text PRIMARY KEY, kind int, title text, created_at_ms bigint,
        pending_members map<text, int>)""",
    """CREATE TABLE IF NOT EXISTS {ks}.members (
        chat_id text, user_id text, role int, joined_seq bigint, PRIMARY KEY (chat_id, user_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.user_chats (
        user_id text, chat_id text, joined_seq bigint, PRIMARY KEY (user_id, chat_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.receipts (
        chat_id text, user_id text, delivered_seq bigint, read_seq bigint,
        PRIMARY KEY (chat_id, user_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.device_cursors (
        user_id text, device_id text, chat_id text, acked_seq bigint,
        PRIMARY KEY ((user_id, device_id), chat_id))""",
    """CREATE TABLE IF NOT EXISTS {ks}.users (
        user_id text PRIMARY KEY, read_receipts boolean, last_seen_visibility int)""",
    """CREATE TABLE IF NOT EXISTS {ks}.devices (
        user_id text, device_id text, first_seen_ms bigint, last_seen_ms bigint,
        revoked boolean, active int STATIC, PRIMARY KEY (user_id, device_id))""",
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


async def migrate(session: CqlSession, keyspace: str, replication: str) -> None:
    """Create the keyspace and every table if missing. Idempotent; drops nothing (an existing
    keyspace keeps its replication: ALTER KEYSPACE is the operator's call)."""
    await session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
                          f"{replication}", prepare=False)
    for statement in SCHEMA:
        await session.execute(statement.format(ks=keyspace), prepare=False)


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
    """What this store knows of a chat's log: every message up to `head - len(unindexed)` has
    its dedup row; `unindexed` are the rows above that, read but not yet indexed; `behind`:
    the log may have grown past `head` since (it is scanned before the next attempt)."""
    head: int
    unindexed: list[StoredMessage]
    behind: bool


@dataclass(slots=True)
class _ChatCommit:
    """One chat's share of a commit: its messages (in batch order) and what became of them."""
    messages: list[NewMessage]
    results: list[CommitResult | None] = field(default_factory=list)
    error: Exception | None = None
    sent: dict[str, int] = field(default_factory=dict)  # sender -> seq of their last new message
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
        rows = (await session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (self.keyspace,))).rows
        missing = {_table_name(s) for s in SCHEMA} - {row.table_name for row in rows}
        if missing:
            raise StoreError(f"keyspace {self.keyspace} lacks tables {sorted(missing)}: run "
                             "`switchboard admin store migrate` (or allow store.create_schema)")

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
        for i in pending:
            m = messages[i]
            key = (m.sender_user, m.client_msg_id)
            if key not in in_log and key not in found and key not in planned:
                row = StoredMessage(chat_id, log.head + len(new) + 1, m.server_id,
                                    m.sender_user, m.sender_device, m.client_msg_id, m.body,
                                    m.media_ids, m.created_at_ms)
                planned[key] = (i, row)
                new.append(row)
        start = landed = log.head
        for piece in _pieces(new):
            if not await self._conditional_append(chat_id, landed, piece):
                break
            landed = piece[-1].seq
        if landed > start:
            ours = new[:landed - start]
            chat.sent.update((row.sender_user, row.seq) for row in ours)  # ascending: last wins
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
                                           list(r.media_ids) or None, r.created_at_ms))
                       for r in rows]
        self.stats.conditional += 1
        result = await self.session.batch(statements, logged=False)
        return result.applied

    async def _index(self, chats: dict[str, _ChatCommit], unsaved: Batch) -> None:
        """Dedup rows (and the senders' receipts) of every message the chats' logs hold
        unindexed, then each chat's head hint: after this every message up to a chat's head can
        be found by (sender, client_msg_id) and readers see the head. Both go as unlogged
        batches over many partitions: a few requests per flush, not a few per chat (the client's
        CPU per request is the scarce thing). A chat whose rows did not all land fails."""
        q = self._q
        rows: dict[str, list[tuple[str, Sequence[Any]]]] = {}
        for chat_id, chat in chats.items():
            log = chat.log
            if chat.error is None and log is not None and log.unindexed:
                rows[chat_id] = [(q.insert_dedup, (chat_id, r.sender_user, r.client_msg_id, r.seq))
                                 for r in log.unindexed]
                rows[chat_id] += [(q.raise_read, (seq, seq, seq, chat_id, user))
                                  for user, seq in chat.sent.items()]
        indexed = await self._write_grouped(rows)
        hints = {chat_id: [(q.set_hint, (chats[chat_id].log.head, chats[chat_id].log.head,
                                         chat_id))] for chat_id in indexed}
        hinted = await self._write_grouped(hints)
        for chat_id in rows:
            chat = chats[chat_id]
            if chat_id in hinted:
                chat.log.unindexed = []
                continue
            self._logs.pop(chat_id, None)
            chat.error = StoreError(f"chat {chat_id}: its messages are stored but not indexed "
                                    "(outcome unknown: the retry finds them)")
            for user, seq in chat.sent.items():
                _raise_to(unsaved.reads, (chat_id, user), seq)

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
        """Cursors, delivered and read marks, grouped per partition into a few unlogged
        batches; returns those that did not land."""
        q = self._q
        groups: dict[tuple, list[tuple[str, Sequence[Any]]]] = defaultdict(list)
        keys: dict[tuple, list[tuple[str, tuple, int]]] = defaultdict(list)
        for (user, device, chat_id), seq in batch.cursors.items():
            part = ("cursors", user, device)
            groups[part].append((q.raise_cursor, (seq, seq, user, device, chat_id)))
            keys[part].append(("cursors", (user, device, chat_id), seq))
        for (chat_id, user), seq in batch.delivered.items():
            part = ("receipts", chat_id)
            groups[part].append((q.raise_delivered, (seq, seq, chat_id, user)))
            keys[part].append(("delivered", (chat_id, user), seq))
        for (chat_id, user), seq in batch.reads.items():
            part = ("receipts", chat_id)
            groups[part].append((q.raise_read, (seq, seq, seq, chat_id, user)))
            keys[part].append(("reads", (chat_id, user), seq))
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
        the members, then clears it."""
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
            await self._insert_members(chat.chat_id, {u: Role(r) for u, r in pending.items()}, 0)
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
        return {row.user_id: Membership(Role(row.role), row.joined_seq)
                for row in await self._read_all(self._q.members, (chat_id,))}

    async def member_counts(self, chat_ids: Collection[str]) -> dict[str, int]:
        ids = list(chat_ids)
        counts = await asyncio.gather(*(self._read(self._q.count_members, (chat_id,))
                                        for chat_id in ids))
        return {chat_id: rows[0].count for chat_id, rows in zip(ids, counts) if rows[0].count}

    async def add_members(self, chat_id: str, users: dict[str, Role]) -> dict[str, Membership]:
        head, current = await asyncio.gather(self.head_seq(chat_id), self.members(chat_id))
        new = {user: role for user, role in users.items() if user not in current}
        if new:
            await self._insert_members(chat_id, new, head)
        return await self.members(chat_id)

    async def _insert_members(self, chat_id: str, users: dict[str, Role], joined_seq: int) -> None:
        q = self._q
        await _all([
            self._write_batch([(q.insert_member, (chat_id, user, int(role), joined_seq))
                               for user, role in users.items()]),
            *(self._write(q.insert_user_chat, (user, chat_id, joined_seq)) for user in users)])

    async def remove_members(self, chat_id: str, users: Iterable[str]) -> dict[str, Membership]:
        gone = list(dict.fromkeys(users))
        if gone:
            q = self._q
            await _all([self._write_batch([(q.delete_member, (chat_id, user)) for user in gone]),
                         *(self._write(q.delete_user_chat, (user, chat_id)) for user in gone)])
        return await self.members(chat_id)

    async def user_chats(self, user_id: str) -> dict[str, int]:
        return {row.chat_id: row.joined_seq
                for row in await self._read_all(self._q.user_chats, (user_id,))}

    # ------------------------------------------------------------------ watermarks
    async def cursors(self, user_id: str, device_id: str) -> dict[str, int]:
        return {row.chat_id: row.acked_seq for row in
                await self._read_all(self._q.cursors, (user_id, device_id))
                if row.acked_seq is not None}

    async def receipts(self, chat_id: str) -> dict[str, Receipt]:
        return {row.user_id: Receipt(row.delivered_seq or 0, row.read_seq or 0)
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
                await self._write(q.drop_cursors, (user_id, device_id))
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
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
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
        self.members = f"SELECT user_id, role, joined_seq FROM {ks}.members WHERE chat_id = ?"
        self.count_members = f"SELECT count(*) AS count FROM {ks}.members WHERE chat_id = ?"
        self.insert_member = (f"INSERT INTO {ks}.members (chat_id, user_id, role, joined_seq) "
                              "VALUES (?, ?, ?, ?)")
        self.delete_member = f"DELETE FROM {ks}.members WHERE chat_id = ? AND user_id = ?"
        self.insert_user_chat = (f"INSERT INTO {ks}.user_chats (user_id, chat_id, joined_seq) "
                                 "VALUES (?, ?, ?)")
        self.delete_user_chat = f"DELETE FROM {ks}.user_chats WHERE user_id = ? AND chat_id = ?"
        self.user_chats = f"SELECT chat_id, joined_seq FROM {ks}.user_chats WHERE user_id = ?"
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
        self.receipts = (f"SELECT user_id, delivered_seq, read_seq FROM {ks}.receipts "
                         "WHERE chat_id = ?")
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
    return StoredMessage(chat_id, row.seq, row.server_id, row.sender_user, row.sender_device,
                         row.client_msg_id, row.body or b"", tuple(row.media_ids or ()),
                         row.created_at_ms)


def _media_record(row: Any) -> MediaRecord:
    return MediaRecord(row.media_id, row.owner, row.size, row.content_type, row.sha256,
                       row.created_at_ms, row.part_size, row.upload_id or "",
                       row.thumbnail_of or "", MediaState(row.state), row.thumbnail_id or "",
                       frozenset(row.refs or ()))


def _day(ms: int) -> int:
    return ms // DAY_MS


def _last_seen(row: Any) -> int:
    return max(row.first_seen_ms or 0, row.last_seen_ms or 0)


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
