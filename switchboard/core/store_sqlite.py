"""The embedded store: one SQLite file in WAL mode (see store.py for the guarantees).

Durability: `synchronous=FULL` makes every COMMIT fsync the WAL, so a batch the writer acks
survives kill -9 and power loss - the durability claim matches what is synced. No COMMIT runs a
checkpoint (`wal_autocheckpoint = 0`): the store's Checkpointer copies the WAL into the database
on a thread and connection of its own, restarts the WAL once it holds 4,096 pages, and empties
it after 5 s without a commit (core/checkpointer.py).

Threads: SQLite calls block, so none runs on the event loop. One writer thread owns the
write connections (commit, create_chat, settings, devices, blocks); reads go to a pool of two
threads, each with its own connection. WAL lets those readers run while the writer commits, and
every read is its own autocommit statement, so it sees every batch committed before it started.

Receipts: one row per (chat, user) holds the three watermarks (delivered, read, public read),
each raised with max: one upsert per (chat, user) per batch, whatever raised it - except an
ack's delivered raise that a cursor of the same batch carries. A device's cursor is its user's
delivered watermark already (store.py), so a read takes the max of the row and the user's
cursors in the chat, and an ack costs one upsert (its cursor) instead of two. A revoked device's
cursors are folded into the rows before they are dropped, so no watermark moves back.

Membership: `members` and `user_chats` hold the current members; `member_periods` every period
of every user who ever was a member (by chat: the primary key; by user: an index). A membership
event changes all three inside the commit transaction that stores it.

Migration: a file from an older version is upgraded at open (`_migrate`): new columns by ALTER
TABLE, new tables by CREATE TABLE IF NOT EXISTS, backfilled where the old data allows; a table
whose key changed (device_cursors, once keyed by user) is copied into the new one.

Devices: admission (register_device) counts and inserts inside one BEGIN IMMEDIATE on the writer
thread, so two connects of the same user cannot both take the last free slot. A revoked row is
kept (revoked = 1) so that its device id stays refused forever.

Several processes may share the file: writes take the lock up front (BEGIN IMMEDIATE, waiting
up to the busy timeout) and read the chat head inside that transaction, so seq stays gap-free
whoever wrote last. The (chat_id, seq) primary key refuses a second row for a taken seq. Before
BEGIN IMMEDIATE the writer takes an flock on `<file>-writelock`: processes that would otherwise
poll SQLite's busy handler (sleeps growing to 100 ms, so a waiting writer could sleep through
many free moments) queue in the kernel instead and go the moment the lock is released.

No `bucket` column: ScyllaDB needs it to cap partition size, because a partition lives on one
replica set and is read and compacted as a unit. A SQLite table is one B-tree whose pages are
allocated independently, so a huge chat is just a long key range of (chat_id, seq); the
clustered WITHOUT ROWID key keeps that range contiguous for replay and history scans.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Callable, Collection, Iterator, Sequence, TypeVar

import orjson

from ._native import native
from .checkpointer import Checkpointer
from .lane import Lane
from .model import (Batch, Chat, ChatKind, CommitOutcome, CommitResult, DeviceRow, DeviceStatus,
                    MediaRecord, MediaState, MemberAction, MembershipEvent, Membership, Period,
                    PushPlatform, PushToken, QueuedPush, Receipt, Role, StoredMessage,
                    UserSettings, Visibility)
from .store import Store, StoreError, SyncReads

BatchCommitter = native("sqlitebatch").BatchCommitter

T = TypeVar("T")

BUSY_TIMEOUT_S = 10.0
READ_THREADS = 2
CACHED_STATEMENTS = 256
CACHE_KIB = 32 * 1024
NO_UPPER_BOUND = (1 << 63) - 1

MEMBER_PERIODS_TABLE = """CREATE TABLE IF NOT EXISTS member_periods (
    chat_id TEXT NOT NULL, user_id TEXT NOT NULL, joined_seq INTEGER NOT NULL, left_seq INTEGER,
    PRIMARY KEY (chat_id, user_id, joined_seq)) WITHOUT ROWID"""

# Keyed by chat first: a group's acks of one message are one contiguous key range (the pages a
# commit dirties), next to each other per user (the delivered watermark is their max). The index
# by device holds no seq, so raising a cursor never writes it: only a device's first ack in a chat.
DEVICE_CURSORS_TABLE = """CREATE TABLE IF NOT EXISTS device_cursors (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, chat_id TEXT NOT NULL,
    acked_seq INTEGER NOT NULL, PRIMARY KEY (chat_id, user_id, device_id)) WITHOUT ROWID"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS messages (
    chat_id TEXT NOT NULL, seq INTEGER NOT NULL, server_id INTEGER NOT NULL,
    sender_user TEXT NOT NULL, sender_device TEXT NOT NULL, client_msg_id TEXT NOT NULL,
    body BLOB NOT NULL, media_ids BLOB, created_at_ms INTEGER NOT NULL, event BLOB,
    PRIMARY KEY (chat_id, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedup ON messages (chat_id, sender_user, client_msg_id);
CREATE TABLE IF NOT EXISTS chats (
    chat_id TEXT PRIMARY KEY, kind INTEGER NOT NULL, title TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (
    chat_id TEXT NOT NULL, user_id TEXT NOT NULL, role INTEGER NOT NULL,
    joined_seq INTEGER NOT NULL, PRIMARY KEY (chat_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_chats (
    user_id TEXT NOT NULL, chat_id TEXT NOT NULL, PRIMARY KEY (user_id, chat_id)) WITHOUT ROWID;
{MEMBER_PERIODS_TABLE};
CREATE INDEX IF NOT EXISTS member_periods_by_user ON member_periods (user_id, chat_id);
CREATE TABLE IF NOT EXISTS chat_heads (
    chat_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    chat_id TEXT NOT NULL, user_id TEXT NOT NULL, delivered_seq INTEGER NOT NULL DEFAULT 0,
    read_seq INTEGER NOT NULL DEFAULT 0, public_read_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (chat_id, user_id)) WITHOUT ROWID;
{DEVICE_CURSORS_TABLE};
CREATE INDEX IF NOT EXISTS device_cursors_by_device ON device_cursors (user_id, device_id);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY, read_receipts INTEGER NOT NULL,
    last_seen_visibility INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    user_id TEXT NOT NULL, blocked_id TEXT NOT NULL,
    PRIMARY KEY (user_id, blocked_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_blocked ON blocks (blocked_id, user_id);
CREATE TABLE IF NOT EXISTS push_tokens (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, platform TEXT NOT NULL, token TEXT NOT NULL,
    topic TEXT NOT NULL, previews INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chat_mutes (
    user_id TEXT NOT NULL, chat_id TEXT NOT NULL, until_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, chat_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS push_queue (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL, chat_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, count INTEGER NOT NULL,
    sender_user TEXT NOT NULL, preview TEXT NOT NULL, due_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, chat_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS media (
    media_id TEXT PRIMARY KEY, owner TEXT NOT NULL, content_key TEXT NOT NULL,
    size INTEGER NOT NULL, content_type TEXT NOT NULL, sha256 BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL, part_size INTEGER NOT NULL, upload_id TEXT NOT NULL,
    thumbnail_of TEXT NOT NULL, state INTEGER NOT NULL, thumbnail_id TEXT NOT NULL,
    referenced INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS media_content ON media (owner, content_key);
CREATE INDEX IF NOT EXISTS media_unreferenced ON media (created_at_ms) WHERE referenced = 0;
CREATE TABLE IF NOT EXISTS media_refs (
    media_id TEXT NOT NULL, chat_id TEXT NOT NULL, PRIMARY KEY (media_id, chat_id)) WITHOUT ROWID;
"""

MESSAGE_COLUMNS = ("seq, server_id, sender_user, sender_device, client_msg_id, body, media_ids, "
                   "created_at_ms, event")
SQL_HEAD = "SELECT last_seq FROM chat_heads WHERE chat_id = ?"
# Only the dedup index may absorb a conflict: a clash on (chat_id, seq) still raises.
SQL_INSERT_MESSAGE = (
    "INSERT INTO messages (chat_id, seq, server_id, sender_user, sender_device, client_msg_id, "
    "body, media_ids, created_at_ms, event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (chat_id, sender_user, client_msg_id) DO NOTHING")
SQL_DEDUP = (f"SELECT {MESSAGE_COLUMNS} FROM messages "
             "WHERE chat_id = ? AND sender_user = ? AND client_msg_id = ?")
SQL_SET_HEAD = ("INSERT INTO chat_heads (chat_id, last_seq) VALUES (?, ?) ON CONFLICT (chat_id) "
                "DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)")
SQL_CURSOR = ("INSERT INTO device_cursors (user_id, device_id, chat_id, acked_seq) "
              "VALUES (?, ?, ?, ?) ON CONFLICT (chat_id, user_id, device_id) "
              "DO UPDATE SET acked_seq = max(acked_seq, excluded.acked_seq)")
# Every watermark change is one max-upsert of the three: a delivery (d, 0, 0), a private read
# (s, s, 0: what was read was delivered), a public one (s, s, s), a sender's own message
# (s, s, s or 0: you have read what you wrote).
SQL_RAISE = ("INSERT INTO receipts (chat_id, user_id, delivered_seq, read_seq, public_read_seq) "
             "VALUES (?, ?, ?, ?, ?) ON CONFLICT (chat_id, user_id) DO UPDATE SET "
             "delivered_seq = max(delivered_seq, excluded.delivered_seq), "
             "read_seq = max(read_seq, excluded.read_seq), "
             "public_read_seq = max(public_read_seq, excluded.public_read_seq)")
# A user's delivered watermark is the max of the stored one and the user's devices' cursors:
# an ack's delivered raise is stored in its cursor alone (the commit skips it in receipts).
SQL_RECEIPTS = ("SELECT user_id, max(delivered), max(read), max(public) FROM ("
                "SELECT user_id, delivered_seq AS delivered, read_seq AS read, "
                "public_read_seq AS public FROM receipts WHERE chat_id = ?1 UNION ALL "
                "SELECT user_id, acked_seq, 0, 0 FROM device_cursors WHERE chat_id = ?1) "
                "GROUP BY user_id")
# A bare DISTINCT makes the planner scan the whole chat in messages_dedup (chat_id is its only
# usable term there); the ordered subquery pins the (chat_id, seq) primary-key range.
SQL_SENDERS = ("SELECT DISTINCT sender_user FROM (SELECT sender_user FROM messages "
               "WHERE chat_id = ? AND seq > ? AND seq <= ? ORDER BY seq)")
SQL_SETTINGS = "SELECT read_receipts, last_seen_visibility FROM users WHERE user_id = ?"
SQL_UPDATE_SETTINGS = (
    "INSERT INTO users (user_id, read_receipts, last_seen_visibility) "
    "VALUES (:user, coalesce(:read_receipts, :default_read_receipts), "
    "coalesce(:last_seen, :default_last_seen)) ON CONFLICT (user_id) DO UPDATE SET "
    "read_receipts = coalesce(:read_receipts, read_receipts), "
    "last_seen_visibility = coalesce(:last_seen, last_seen_visibility)")
SQL_DEVICE_REVOKED = "SELECT revoked FROM devices WHERE user_id = ? AND device_id = ?"
SQL_COUNT_DEVICES = "SELECT count(*) FROM devices WHERE user_id = ? AND revoked = 0"
SQL_INSERT_DEVICE = ("INSERT INTO devices (user_id, device_id, first_seen_ms, last_seen_ms, "
                     "revoked) VALUES (?, ?, ?, ?, 0)")
SQL_LIST_DEVICES = ("SELECT device_id, first_seen_ms, last_seen_ms FROM devices "
                    "WHERE user_id = ? AND revoked = 0 ORDER BY first_seen_ms, device_id")
SQL_REVOKE_DEVICE = ("UPDATE devices SET revoked = 1 "
                     "WHERE user_id = ? AND device_id = ? AND revoked = 0")
SQL_DROP_CURSORS = "DELETE FROM device_cursors WHERE user_id = ? AND device_id = ?"
# Before a revoked device's cursors go, what they said of delivery moves into receipts.
SQL_KEEP_DELIVERED = ("INSERT INTO receipts (chat_id, user_id, delivered_seq) "
                      "SELECT chat_id, user_id, acked_seq FROM device_cursors "
                      "WHERE user_id = ? AND device_id = ? ON CONFLICT (chat_id, user_id) "
                      "DO UPDATE SET delivered_seq = max(delivered_seq, excluded.delivered_seq)")
SQL_TOUCH_DEVICE = ("UPDATE devices SET last_seen_ms = max(last_seen_ms, ?) "
                    "WHERE user_id = ? AND device_id = ?")
SQL_LAST_SEEN = "SELECT coalesce(max(last_seen_ms), 0) FROM devices WHERE user_id = ?"
SQL_READ_MESSAGES = (f"SELECT {MESSAGE_COLUMNS} FROM messages "
                     "WHERE chat_id = ? AND seq > ? ORDER BY seq LIMIT ?")
SQL_HISTORY = (f"SELECT {MESSAGE_COLUMNS} FROM messages "
               "WHERE chat_id = ? AND seq > ? AND seq < ? ORDER BY seq DESC LIMIT ?")
SQL_MEMBERS = "SELECT user_id, role, joined_seq FROM members WHERE chat_id = ?"
SQL_CHAT = "SELECT chat_id, kind, title, created_at_ms FROM chats WHERE chat_id = ?"
# Multi-chat reads take the ids as one JSON array: any number of them, one cached statement.
IN_IDS = "(SELECT value FROM json_each(?))"
SQL_HEADS = f"SELECT chat_id, last_seq FROM chat_heads WHERE chat_id IN {IN_IDS}"
SQL_CHATS = f"SELECT chat_id, kind, title, created_at_ms FROM chats WHERE chat_id IN {IN_IDS}"
SQL_MEMBER_COUNTS = (f"SELECT chat_id, count(*) FROM members WHERE chat_id IN {IN_IDS} "
                     "GROUP BY chat_id")
SQL_USER_CHATS = ("SELECT uc.chat_id, m.joined_seq FROM user_chats AS uc JOIN members AS m "
                  "ON m.chat_id = uc.chat_id AND m.user_id = uc.user_id WHERE uc.user_id = ?")
SQL_CURSORS = "SELECT chat_id, acked_seq FROM device_cursors WHERE user_id = ? AND device_id = ?"
SQL_READ_SEQ = "SELECT read_seq FROM receipts WHERE chat_id = ? AND user_id = ?"
SQL_READ_SEQS = f"SELECT chat_id, read_seq FROM receipts WHERE user_id = ? AND chat_id IN {IN_IDS}"
SQL_INSERT_MEMBER = ("INSERT OR IGNORE INTO members (chat_id, user_id, role, joined_seq) "
                     "VALUES (?, ?, ?, ?)")
SQL_INSERT_USER_CHAT = "INSERT OR IGNORE INTO user_chats (user_id, chat_id) VALUES (?, ?)"
SQL_OPEN_PERIOD = ("INSERT OR IGNORE INTO member_periods (chat_id, user_id, joined_seq, left_seq) "
                   "VALUES (?, ?, ?, NULL)")
SQL_IS_MEMBER = "SELECT 1 FROM members WHERE chat_id = ? AND user_id = ?"
SQL_DELETE_MEMBER = "DELETE FROM members WHERE chat_id = ? AND user_id = ?"
SQL_DELETE_USER_CHAT = "DELETE FROM user_chats WHERE user_id = ? AND chat_id = ?"
SQL_CLOSE_PERIOD = ("UPDATE member_periods SET left_seq = ? "
                    "WHERE chat_id = ? AND user_id = ? AND left_seq IS NULL")
SQL_CHAT_PERIODS = ("SELECT user_id, joined_seq, left_seq FROM member_periods WHERE chat_id = ? "
                    "ORDER BY user_id, joined_seq")
SQL_MEMBER_PERIODS = ("SELECT user_id, joined_seq, left_seq FROM member_periods "
                      "WHERE chat_id = ? AND user_id = ? ORDER BY joined_seq")
SQL_USER_PERIODS = ("SELECT chat_id, joined_seq, left_seq FROM member_periods WHERE user_id = ? "
                    "ORDER BY chat_id, joined_seq")
SQL_BLOCK = "INSERT OR IGNORE INTO blocks (user_id, blocked_id) VALUES (?, ?)"
SQL_UNBLOCK = "DELETE FROM blocks WHERE user_id = ? AND blocked_id = ?"
SQL_BLOCKED = "SELECT blocked_id FROM blocks WHERE user_id = ? ORDER BY blocked_id"
SQL_BLOCKERS = "SELECT user_id FROM blocks WHERE blocked_id = ?"
SQL_SET_PUSH_TOKEN = ("INSERT OR REPLACE INTO push_tokens (user_id, device_id, platform, token, "
                      "topic, previews, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)")
SQL_DROP_PUSH_TOKEN = "DELETE FROM push_tokens WHERE user_id = ? AND device_id = ?"
SQL_DROP_PUSH_TOKEN_IF = SQL_DROP_PUSH_TOKEN + " AND token = ?"
SQL_PUSH_TOKENS = ("SELECT device_id, platform, token, topic, previews, updated_ms "
                   "FROM push_tokens WHERE user_id = ?")
SQL_SET_MUTE = "INSERT OR REPLACE INTO chat_mutes (user_id, chat_id, until_ms) VALUES (?, ?, ?)"
SQL_UNMUTE = "DELETE FROM chat_mutes WHERE user_id = ? AND chat_id = ?"
SQL_MUTES = "SELECT chat_id, until_ms FROM chat_mutes WHERE user_id = ? AND until_ms > ?"
PUSH_COLUMNS = ("user_id, device_id, chat_id, first_seq, last_seq, count, sender_user, preview, "
                "due_ms")
SQL_PUT_PUSH = (f"INSERT INTO push_queue ({PUSH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (user_id, device_id, chat_id) DO UPDATE SET "
                "first_seq = excluded.first_seq, last_seq = excluded.last_seq, "
                "count = excluded.count, sender_user = excluded.sender_user, "
                "preview = excluded.preview, due_ms = excluded.due_ms "
                "WHERE excluded.last_seq >= push_queue.last_seq")
SQL_DROP_PUSH = ("DELETE FROM push_queue WHERE user_id = ? AND device_id = ? AND chat_id = ? "
                 "AND last_seq <= ?")
SQL_QUEUED_PUSHES = f"SELECT {PUSH_COLUMNS} FROM push_queue"
MEDIA_COLUMNS = ("media_id, owner, size, content_type, sha256, created_at_ms, part_size, upload_id, "
                 "thumbnail_of, state, thumbnail_id")
SQL_MEDIA = f"SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = ?"
SQL_MEDIA_BY_CONTENT = f"SELECT {MEDIA_COLUMNS} FROM media WHERE owner = ? AND content_key = ?"
SQL_INSERT_MEDIA = (f"INSERT INTO media ({MEDIA_COLUMNS}, content_key) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
SQL_MEDIA_REFS = "SELECT chat_id FROM media_refs WHERE media_id = ?"
SQL_ADD_MEDIA_REF = "INSERT OR IGNORE INTO media_refs (media_id, chat_id) VALUES (?, ?)"
SQL_UNREFERENCED_MEDIA = (f"SELECT {MEDIA_COLUMNS} FROM media WHERE referenced = 0 "
                          "AND created_at_ms < ? ORDER BY created_at_ms, media_id LIMIT ?")


# The native batch commit (core/_native/sqlitebatch.pyx): its statements, in its order, and the
# settings of its connection.
BATCH_SQL = ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", SQL_HEAD, SQL_INSERT_MESSAGE, SQL_SET_HEAD,
             SQL_CURSOR, SQL_RAISE)
# wal_autocheckpoint = 0: no COMMIT runs a checkpoint; the store's Checkpointer does, on a thread
# of its own (core/checkpointer.py).
PRAGMAS = ("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY; "
           f"PRAGMA cache_size = -{CACHE_KIB}; PRAGMA wal_autocheckpoint = 0;")


class _Connection(sqlite3.Connection):
    write_lock = -1
    """The writer's descriptor of <file>-writelock (flock), -1 on readers."""


def _connect(path: str, *, check_same_thread: bool = True) -> _Connection:
    # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE themselves and
    # each read is its own autocommit snapshot.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                           cached_statements=CACHED_STATEMENTS,
                           check_same_thread=check_same_thread, factory=_Connection)
    conn.executescript(PRAGMAS)
    return conn


@contextmanager
def _write_locked(write_lock: int) -> Iterator[None]:
    """The file's writers queue here, in the kernel, before their BEGIN IMMEDIATE (the Python
    transactions and the native batch commit alike); `write_lock` is the descriptor of the
    file's `-writelock`."""
    fcntl.flock(write_lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(write_lock, fcntl.LOCK_UN)


@contextmanager
def _immediate(conn: _Connection) -> Iterator[None]:
    """One write transaction, its lock taken up front; rolled back if the block raises. The
    caller holds the file's write lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


@contextmanager
def _transaction(conn: _Connection) -> Iterator[None]:
    with _write_locked(conn.write_lock), _immediate(conn):
        yield


def _message(chat_id: str, row: tuple) -> StoredMessage:
    seq, server_id, user, device, client_msg_id, body, media, created, event = row
    return StoredMessage(chat_id, seq, server_id, user, device, client_msg_id, body,
                         tuple(orjson.loads(media)) if media else (), created,
                         None if event is None else _decode_event(event))


def _encode_event(event: MembershipEvent) -> bytes:
    return orjson.dumps({"action": int(event.action), "actor": event.actor,
                         "users": list(event.users)})


def _decode_event(data: bytes) -> MembershipEvent:
    fields = orjson.loads(data)
    return MembershipEvent(MemberAction(fields["action"]), fields["actor"], tuple(fields["users"]))


def _periods(rows) -> dict[str, list[Period]]:
    """(key, joined_seq, left_seq) rows, ordered by key then joined_seq -> key -> periods."""
    out: dict[str, list[Period]] = {}
    for key, joined, left in rows:
        out.setdefault(key, []).append(Period(joined, left))
    return out


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _key(conn: sqlite3.Connection, table: str) -> list[str]:
    """The table's primary key columns, in key order."""
    return [name for _, name in sorted((row[5], row[1]) for row in
                                       conn.execute(f"PRAGMA table_info({table})") if row[5])]


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file made by an older version up to SCHEMA; in the caller's write transaction.
    What cannot be recovered is made conservative: membership before this version is the
    current period only; reads recorded before it count as public only for users whose read
    receipts are on now."""
    tables = {name for name, in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "messages" in tables and "event" not in _columns(conn, "messages"):
        conn.execute("ALTER TABLE messages ADD COLUMN event BLOB")
    if "receipts" in tables and "public_read_seq" not in _columns(conn, "receipts"):
        conn.execute("ALTER TABLE receipts ADD COLUMN public_read_seq INTEGER NOT NULL "
                     "DEFAULT 0")
        hidden = ("WHERE user_id NOT IN (SELECT user_id FROM users WHERE read_receipts = 0)"
                  if "users" in tables else "")
        conn.execute(f"UPDATE receipts SET public_read_seq = read_seq {hidden}")
    if "device_cursors" in tables and _key(conn, "device_cursors")[0] != "chat_id":
        conn.execute("ALTER TABLE device_cursors RENAME TO device_cursors_by_user")
        conn.execute(DEVICE_CURSORS_TABLE)
        conn.execute("INSERT INTO device_cursors (user_id, device_id, chat_id, acked_seq) "
                     "SELECT user_id, device_id, chat_id, acked_seq FROM device_cursors_by_user")
        conn.execute("DROP TABLE device_cursors_by_user")
    if "members" in tables and "member_periods" not in tables:
        conn.execute(MEMBER_PERIODS_TABLE)
        conn.execute("INSERT INTO member_periods (chat_id, user_id, joined_seq, left_seq) "
                     "SELECT chat_id, user_id, joined_seq, NULL FROM members")


def _media(conn: sqlite3.Connection, row: tuple | None) -> MediaRecord | None:
    if row is None:
        return None
    media_id, owner, size, content_type, sha256, created, part_size, upload_id, thumbnail_of, \
        state, thumbnail_id = row
    refs = frozenset(chat_id for chat_id, in conn.execute(SQL_MEDIA_REFS, (media_id,)))
    return MediaRecord(media_id, owner, size, content_type, sha256, created, part_size, upload_id,
                       thumbnail_of, MediaState(state), thumbnail_id, refs)


def _members(conn: sqlite3.Connection, chat_id: str) -> dict[str, Membership]:
    return {user: Membership(Role(role), joined)
            for user, role, joined in conn.execute(SQL_MEMBERS, (chat_id,))}


def _chat(conn: sqlite3.Connection, chat_id: str) -> Chat | None:
    row = conn.execute(SQL_CHAT, (chat_id,)).fetchone()
    return None if row is None else Chat(row[0], ChatKind(row[1]), row[2], row[3])


def _head(conn: sqlite3.Connection, chat_id: str) -> int:
    row = conn.execute(SQL_HEAD, (chat_id,)).fetchone()
    return 0 if row is None else row[0]


def _raise(raises: dict[tuple[str, str], tuple[int, int, int]], key: tuple[str, str],
           delivered: int, read: int, public: int) -> None:
    now = raises.get(key)
    raises[key] = ((delivered, read, public) if now is None else
                   (max(now[0], delivered), max(now[1], read), max(now[2], public)))


def _settings(conn: sqlite3.Connection, user_id: str) -> UserSettings:
    row = conn.execute(SQL_SETTINGS, (user_id,)).fetchone()
    return UserSettings() if row is None else UserSettings(bool(row[0]), Visibility(row[1]))


class SQLiteStore(Store):
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._writer: Lane | None = None
        self._readers: Lane | None = None
        self._write_conn: _Connection | None = None
        self._batch: BatchCommitter | None = None
        self._checkpointer: Checkpointer | None = None
        self._read_conns: list[sqlite3.Connection] = []
        self._local = threading.local()

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        if self._writer is not None:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._writer = Lane("sqlite-writer")
        self._readers = Lane("sqlite-reader", READ_THREADS, initializer=self._open_reader)
        await self._write(self._open_writer)

    async def close(self) -> None:
        if self._writer is None:
            return
        writer, readers = self._writer, self._readers
        self._writer = self._readers = None
        await writer.run(self._close_writer)
        await writer.stop()
        await readers.stop()
        await asyncio.to_thread(self._close_readers)

    def _open_writer(self) -> None:
        """The processes opening one file at once (`serve --workers`) go one after the other
        through the switch to WAL, the migration and the schema, under the write lock, in one
        transaction. Without it, a second process's CREATE statements could meet the first
        one's commit and fail at once with "database is locked" (a snapshot that went stale
        waits for no busy timeout)."""
        write_lock = os.open(f"{self.path}-writelock", os.O_RDWR | os.O_CREAT, 0o600)
        with _write_locked(write_lock):
            conn = _connect(self.path)
            conn.write_lock = write_lock
            with _immediate(conn):
                _migrate(conn)
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        self._write_conn = conn
        self._batch = BatchCommitter(self.path, BATCH_SQL, PRAGMAS, int(BUSY_TIMEOUT_S * 1000))
        self._checkpointer = Checkpointer(self.path, lambda: _write_locked(write_lock), PRAGMAS)

    def _open_reader(self) -> None:
        # Closed by _close_readers from another thread once these threads have stopped.
        conn = _connect(self.path, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        self._local.conn = conn
        self._read_conns.append(conn)

    def _close_readers(self) -> None:
        """After the reader threads stopped (off the event loop: the last close checkpoints)."""
        for conn in self._read_conns:
            conn.close()
        self._read_conns.clear()

    def _close_writer(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        if self._write_conn is not None:
            os.close(self._write_conn.write_lock)
            self._write_conn.close()
            self._write_conn = None

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn on the writer thread; any failure becomes StoreError (the transaction, if
        any, was rolled back)."""
        if self._writer is None:
            raise StoreError("the store is not open")
        try:
            return await self._writer.run(fn, *args)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{fn.__name__}: {exc}") from exc
        finally:
            if self._checkpointer is not None:
                self._checkpointer.committed()

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._readers is None:
            raise StoreError("the store is not open")
        try:
            return await self._readers.run(fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"{fn.__name__}: {exc}") from exc

    # ------------------------------------------------------------------ write path
    async def commit(self, batch: Batch) -> CommitOutcome:
        """One transaction for the whole batch: every chat commits, or StoreError."""
        return CommitOutcome(await self._write(self._commit, batch))

    def _commit(self, batch: Batch) -> list[CommitResult]:
        """The batch through the native committer, which releases the GIL for SQLite's work;
        a duplicate's original row is read back after it. A batch with a membership event takes
        the Python path (rare: the event's effects are written in the same transaction)."""
        messages = batch.messages
        if any(m.event is not None for m in messages):
            return self._commit_in_python(batch)
        media = [orjson.dumps(m.media_ids) if m.media_ids else None for m in messages]
        with _write_locked(self._write_conn.write_lock):
            seqs = self._batch.commit(messages, media, batch.cursors, batch.delivered,
                                      batch.reads, batch.public_reads)
        results: list[CommitResult] = []
        append = results.append
        for m, seq in zip(messages, seqs):
            if seq:
                append(CommitResult(StoredMessage(
                    m.chat_id, seq, m.server_id, m.sender_user, m.sender_device, m.client_msg_id,
                    m.body, m.media_ids, m.created_at_ms), False))
            else:
                row = self._write_conn.execute(
                    SQL_DEDUP, (m.chat_id, m.sender_user, m.client_msg_id)).fetchone()
                append(CommitResult(_message(m.chat_id, row), True))
        return results

    def _commit_in_python(self, batch: Batch) -> list[CommitResult]:
        """The whole batch through Python's sqlite3 module: a batch with membership events
        (applied in the same transaction), and the twin the native commit is tested against."""
        conn = self._write_conn
        execute = conn.execute
        results: list[CommitResult] = []
        append = results.append
        heads: dict[str, int] = {}
        moved: set[str] = set()
        # (chat, user) -> (delivered, read, public read) raised to the max
        raises: dict[tuple[str, str], tuple[int, int, int]] = {}
        with _transaction(conn):
            for m in batch.messages:
                chat_id = m.chat_id
                head = heads.get(chat_id)
                if head is None:
                    head = _head(conn, chat_id)
                seq = head + 1
                media = orjson.dumps(m.media_ids) if m.media_ids else None
                event = None if m.event is None else _encode_event(m.event)
                if execute(SQL_INSERT_MESSAGE, (chat_id, seq, m.server_id, m.sender_user,
                                                m.sender_device, m.client_msg_id, m.body, media,
                                                m.created_at_ms, event)).rowcount:
                    heads[chat_id] = seq
                    moved.add(chat_id)
                    if m.event is not None:
                        self._apply(conn, chat_id, m.event, seq)
                    if m.sender_user:
                        _raise(raises, (chat_id, m.sender_user), seq, seq,
                               seq if m.public_read else 0)
                    append(CommitResult(StoredMessage(
                        chat_id, seq, m.server_id, m.sender_user, m.sender_device,
                        m.client_msg_id, m.body, m.media_ids, m.created_at_ms, m.event), False))
                else:
                    heads[chat_id] = head
                    row = execute(SQL_DEDUP, (chat_id, m.sender_user, m.client_msg_id)).fetchone()
                    append(CommitResult(_message(chat_id, row), True))
            if moved:
                conn.executemany(SQL_SET_HEAD, [(chat_id, heads[chat_id]) for chat_id in moved])
            carried: dict[tuple[str, str], int] = {}  # (chat, user) -> its highest cursor here
            if batch.cursors:
                conn.executemany(SQL_CURSOR, [(user, device, chat_id, seq) for
                                              (user, device, chat_id), seq in batch.cursors.items()])
                for (user, _, chat_id), seq in batch.cursors.items():
                    if seq > carried.get((chat_id, user), -1):
                        carried[chat_id, user] = seq
            for key, seq in batch.delivered.items():
                if seq > carried.get(key, -1):
                    _raise(raises, key, seq, 0, 0)
            for key, seq in batch.reads.items():
                _raise(raises, key, seq, seq, 0)
            for key, seq in batch.public_reads.items():
                _raise(raises, key, seq, seq, seq)
            if raises:
                conn.executemany(SQL_RAISE, [(chat_id, user, *seqs) for
                                             (chat_id, user), seqs in raises.items()])
        return results

    def _apply(self, conn: sqlite3.Connection, chat_id: str, event: MembershipEvent,
               seq: int) -> None:
        """A membership event at `seq`, inside the commit's transaction (store.py)."""
        if event.action is MemberAction.ADDED:
            self._insert_members(conn, chat_id, dict.fromkeys(event.users, Role.MEMBER), seq - 1)
            return
        for user in event.users:
            if conn.execute(SQL_IS_MEMBER, (chat_id, user)).fetchone() is not None:
                conn.execute(SQL_DELETE_MEMBER, (chat_id, user))
                conn.execute(SQL_DELETE_USER_CHAT, (user, chat_id))
                conn.execute(SQL_CLOSE_PERIOD, (seq, chat_id, user))

    # ------------------------------------------------------------------ messages
    async def read_messages(self, chat_id: str, after_seq: int, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        return await self._read(self._messages, SQL_READ_MESSAGES, chat_id,
                                (chat_id, after_seq, limit))

    async def read_history(self, chat_id: str, before_seq: int, floor_seq: int,
                           limit: int) -> list[StoredMessage]:
        """before_seq == 0 means from the newest message down."""
        if limit <= 0:
            return []
        before = before_seq if before_seq > 0 else NO_UPPER_BOUND
        return await self._read(self._messages, SQL_HISTORY, chat_id,
                                (chat_id, floor_seq, before, limit))

    def _messages(self, sql: str, chat_id: str, params: tuple) -> list[StoredMessage]:
        return [_message(chat_id, row) for row in self._local.conn.execute(sql, params)]

    async def head_seq(self, chat_id: str) -> int:
        return await self._read(self._head_seq, chat_id)

    def _head_seq(self, chat_id: str) -> int:
        return _head(self._local.conn, chat_id)

    async def heads(self, chat_ids: Collection[str]) -> dict[str, int]:
        return await self._read_by_ids(SQL_HEADS, chat_ids)

    async def _read_by_ids(self, sql: str, chat_ids: Collection[str],
                           *params: Any) -> dict[str, Any]:
        """{chat_id: value} of a two-column query over a JSON array of ids."""
        if not chat_ids:
            return {}
        return await self._read(self._pairs, sql, (*params, orjson.dumps(list(chat_ids))))

    def _pairs(self, sql: str, params: tuple) -> dict[str, Any]:
        return dict(self._local.conn.execute(sql, params))

    # ------------------------------------------------------------------ chats
    async def create_chat(self, chat: Chat, members: dict[str, Role]) -> Chat:
        return await self._write(self._create_chat, chat, members)

    def _create_chat(self, chat: Chat, members: dict[str, Role]) -> Chat:
        conn = self._write_conn
        with _transaction(conn):
            created = conn.execute(
                "INSERT OR IGNORE INTO chats (chat_id, kind, title, created_at_ms) "
                "VALUES (?, ?, ?, ?)",
                (chat.chat_id, int(chat.kind), chat.title, chat.created_at_ms)).rowcount
            if created:
                self._insert_members(conn, chat.chat_id, members, 0)
            stored = _chat(conn, chat.chat_id)
        return stored

    async def get_chat(self, chat_id: str) -> Chat | None:
        return await self._read(self._get_chat, chat_id)

    def _get_chat(self, chat_id: str) -> Chat | None:
        return _chat(self._local.conn, chat_id)

    async def chats(self, chat_ids: Collection[str]) -> dict[str, Chat]:
        if not chat_ids:
            return {}
        return await self._read(self._chats, orjson.dumps(list(chat_ids)))

    def _chats(self, ids: bytes) -> dict[str, Chat]:
        return {chat_id: Chat(chat_id, ChatKind(kind), title, created) for chat_id, kind, title,
                created in self._local.conn.execute(SQL_CHATS, (ids,))}

    async def members(self, chat_id: str) -> dict[str, Membership]:
        return await self._read(self._get_members, chat_id)

    def _get_members(self, chat_id: str) -> dict[str, Membership]:
        return _members(self._local.conn, chat_id)

    async def member_counts(self, chat_ids: Collection[str]) -> dict[str, int]:
        return await self._read_by_ids(SQL_MEMBER_COUNTS, chat_ids)

    @staticmethod
    def _insert_members(conn: sqlite3.Connection, chat_id: str, users: dict[str, Role],
                        joined_seq: int) -> None:
        """Users not yet members join with a new open period; members are left alone."""
        for user, role in users.items():
            if conn.execute(SQL_INSERT_MEMBER, (chat_id, user, int(role), joined_seq)).rowcount:
                conn.execute(SQL_INSERT_USER_CHAT, (user, chat_id))
                conn.execute(SQL_OPEN_PERIOD, (chat_id, user, joined_seq))

    async def user_chats(self, user_id: str) -> dict[str, int]:
        return await self._read(self._pairs, SQL_USER_CHATS, (user_id,))

    async def member_periods(self, chat_id: str,
                             user_id: str | None = None) -> dict[str, list[Period]]:
        if user_id is None:
            return await self._read(self._period_rows, SQL_CHAT_PERIODS, (chat_id,))
        return await self._read(self._period_rows, SQL_MEMBER_PERIODS, (chat_id, user_id))

    async def user_periods(self, user_id: str) -> dict[str, list[Period]]:
        return await self._read(self._period_rows, SQL_USER_PERIODS, (user_id,))

    def _period_rows(self, sql: str, params: tuple) -> dict[str, list[Period]]:
        return _periods(self._local.conn.execute(sql, params))

    # ------------------------------------------------------------------ watermarks
    async def cursors(self, user_id: str, device_id: str) -> dict[str, int]:
        return await self._read(self._pairs, SQL_CURSORS, (user_id, device_id))

    async def sync_reads(self, devices: Sequence[tuple[str, str]]) -> list[SyncReads]:
        """Every device's three reads in one call on a reader thread: one hand-off for a
        whole loop turn of handshakes instead of three per device."""
        return await self._read(self._sync_reads_of, devices)

    def _sync_reads_of(self, devices: Sequence[tuple[str, str]]) -> list[SyncReads]:
        out = []
        for user_id, device_id in devices:
            periods = self._period_rows(SQL_USER_PERIODS, (user_id,))
            cursors = self._pairs(SQL_CURSORS, (user_id, device_id))
            heads = self._pairs(SQL_HEADS, (orjson.dumps(list(periods)),)) if periods else {}
            out.append(SyncReads(periods, cursors, heads))
        return out

    async def read_seq(self, chat_id: str, user_id: str) -> int:
        return await self._read(self._read_seq, chat_id, user_id)

    def _read_seq(self, chat_id: str, user_id: str) -> int:
        row = self._local.conn.execute(SQL_READ_SEQ, (chat_id, user_id)).fetchone()
        return 0 if row is None else row[0]

    async def read_seqs(self, user_id: str, chat_ids: Collection[str]) -> dict[str, int]:
        return await self._read_by_ids(SQL_READ_SEQS, chat_ids, user_id)

    # ------------------------------------------------------------------ receipts
    async def receipts(self, chat_id: str) -> dict[str, Receipt]:
        return await self._read(self._receipts, chat_id)

    def _receipts(self, chat_id: str) -> dict[str, Receipt]:
        return {user: Receipt(delivered, read, public) for user, delivered, read, public
                in self._local.conn.execute(SQL_RECEIPTS, (chat_id,))}

    async def senders_between(self, chat_id: str, after_seq: int, upto_seq: int) -> set[str]:
        if upto_seq <= after_seq:
            return set()
        return await self._read(self._senders_between, chat_id, after_seq, upto_seq)

    def _senders_between(self, chat_id: str, after_seq: int, upto_seq: int) -> set[str]:
        return {user for user, in self._local.conn.execute(SQL_SENDERS,
                                                           (chat_id, after_seq, upto_seq))}

    # ------------------------------------------------------------------ blocks
    async def block(self, user_id: str, blocked_id: str) -> None:
        await self._write(self._write_one, SQL_BLOCK, (user_id, blocked_id))

    async def unblock(self, user_id: str, blocked_id: str) -> None:
        await self._write(self._write_one, SQL_UNBLOCK, (user_id, blocked_id))

    def _write_one(self, sql: str, params: tuple) -> None:
        conn = self._write_conn
        with _transaction(conn):
            conn.execute(sql, params)

    async def blocked(self, user_id: str) -> list[str]:
        return await self._read(self._column, SQL_BLOCKED, (user_id,))

    async def blockers(self, user_id: str) -> set[str]:
        return set(await self._read(self._column, SQL_BLOCKERS, (user_id,)))

    def _column(self, sql: str, params: tuple) -> list:
        return [value for value, in self._local.conn.execute(sql, params)]

    # ------------------------------------------------------------------ users and devices
    async def get_settings(self, user_id: str) -> UserSettings:
        return await self._read(self._get_settings, user_id)

    def _get_settings(self, user_id: str) -> UserSettings:
        return _settings(self._local.conn, user_id)

    async def update_settings(self, user_id: str, read_receipts: bool | None,
                              last_seen: Visibility | None) -> UserSettings:
        return await self._write(self._update_settings, user_id, read_receipts, last_seen)

    def _update_settings(self, user_id: str, read_receipts: bool | None,
                         last_seen: Visibility | None) -> UserSettings:
        conn = self._write_conn
        defaults = UserSettings()
        with _transaction(conn):
            conn.execute(SQL_UPDATE_SETTINGS, {
                "user": user_id,
                "read_receipts": None if read_receipts is None else int(read_receipts),
                "last_seen": None if last_seen is None else int(last_seen),
                "default_read_receipts": int(defaults.read_receipts),
                "default_last_seen": int(defaults.last_seen)})
            settings = _settings(conn, user_id)
        return settings

    async def register_device(self, user_id: str, device_id: str, now_ms: int,
                              max_devices: int) -> DeviceStatus:
        """A new device starts with first_seen_ms = last_seen_ms = now_ms; a known one is left
        as it is (touch_device records when it goes away)."""
        return await self._write(self._register_device, user_id, device_id, now_ms, max_devices)

    def _register_device(self, user_id: str, device_id: str, now_ms: int,
                         max_devices: int) -> DeviceStatus:
        conn = self._write_conn
        with _transaction(conn):
            row = conn.execute(SQL_DEVICE_REVOKED, (user_id, device_id)).fetchone()
            if row is not None:
                return DeviceStatus.REVOKED if row[0] else DeviceStatus.OK
            if conn.execute(SQL_COUNT_DEVICES, (user_id,)).fetchone()[0] >= max_devices:
                return DeviceStatus.TOO_MANY
            conn.execute(SQL_INSERT_DEVICE, (user_id, device_id, now_ms, now_ms))
        return DeviceStatus.OK

    async def list_devices(self, user_id: str) -> list[DeviceRow]:
        return await self._read(self._list_devices, user_id)

    def _list_devices(self, user_id: str) -> list[DeviceRow]:
        return [DeviceRow(device_id, first, last) for device_id, first, last
                in self._local.conn.execute(SQL_LIST_DEVICES, (user_id,))]

    async def list_devices_of(self, user_ids: Sequence[str]) -> list[list[DeviceRow]]:
        """One reader-thread call for the whole batch (a storm's admissions of one turn)."""
        return await self._read(self._list_devices_of, user_ids)

    def _list_devices_of(self, user_ids: Sequence[str]) -> list[list[DeviceRow]]:
        return [self._list_devices(user_id) for user_id in user_ids]

    async def revoke_device(self, user_id: str, device_id: str) -> bool:
        return await self._write(self._revoke_device, user_id, device_id)

    def _revoke_device(self, user_id: str, device_id: str) -> bool:
        conn = self._write_conn
        with _transaction(conn):
            revoked = conn.execute(SQL_REVOKE_DEVICE, (user_id, device_id)).rowcount > 0
            if revoked:
                conn.execute(SQL_KEEP_DELIVERED, (user_id, device_id))
                conn.execute(SQL_DROP_CURSORS, (user_id, device_id))
                conn.execute(SQL_DROP_PUSH_TOKEN, (user_id, device_id))
        return revoked

    async def touch_device(self, user_id: str, device_id: str, now_ms: int) -> None:
        """Keeps the max (clocks of several processes may disagree); an unknown device is
        ignored, a revoked one still updated (it counts for last_seen)."""
        await self._write(self._touch_device, user_id, device_id, now_ms)

    def _touch_device(self, user_id: str, device_id: str, now_ms: int) -> None:
        conn = self._write_conn
        with _transaction(conn):
            conn.execute(SQL_TOUCH_DEVICE, (now_ms, user_id, device_id))

    async def touch_devices(self, seen: Sequence[tuple[str, str, int]]) -> None:
        """One transaction for the whole batch."""
        await self._write(self._run_many, SQL_TOUCH_DEVICE,
                          [(now_ms, user_id, device_id) for user_id, device_id, now_ms in seen])

    async def last_seen(self, user_id: str) -> int:
        """Revoked devices count too: when the user was last seen does not change by revoking
        the device they were seen on."""
        return await self._read(self._last_seen, user_id)

    def _last_seen(self, user_id: str) -> int:
        return self._local.conn.execute(SQL_LAST_SEEN, (user_id,)).fetchone()[0]

    # ------------------------------------------------------------------ push
    async def set_push_token(self, user_id: str, device_id: str, token: PushToken) -> None:
        await self._write(self._run, SQL_SET_PUSH_TOKEN, (
            user_id, device_id, token.platform.value, token.token, token.topic,
            int(token.previews), token.updated_ms))

    async def drop_push_token(self, user_id: str, device_id: str, token: str | None = None) -> bool:
        if token is None:
            return await self._write(self._run, SQL_DROP_PUSH_TOKEN, (user_id, device_id)) > 0
        return await self._write(self._run, SQL_DROP_PUSH_TOKEN_IF,
                                 (user_id, device_id, token)) > 0

    async def push_tokens(self, user_id: str) -> dict[str, PushToken]:
        return await self._read(self._push_tokens, user_id)

    def _push_tokens(self, user_id: str) -> dict[str, PushToken]:
        return {device: PushToken(PushPlatform(platform), token, topic, bool(previews), updated)
                for device, platform, token, topic, previews, updated
                in self._local.conn.execute(SQL_PUSH_TOKENS, (user_id,))}

    async def set_mute(self, user_id: str, chat_id: str, until_ms: int, now_ms: int) -> None:
        if until_ms > now_ms:
            await self._write(self._run, SQL_SET_MUTE, (user_id, chat_id, until_ms))
        else:
            await self._write(self._run, SQL_UNMUTE, (user_id, chat_id))

    async def mutes(self, user_id: str, now_ms: int) -> dict[str, int]:
        return await self._read(self._pairs, SQL_MUTES, (user_id, now_ms))

    async def put_pushes(self, pushes: list[QueuedPush]) -> None:
        await self._write(self._run_many, SQL_PUT_PUSH, [
            (p.user_id, p.device_id, p.chat_id, p.first_seq, p.last_seq, p.count, p.sender_user,
             p.preview, p.due_ms) for p in pushes])

    async def drop_pushes(self, done: list[tuple[str, str, str, int]]) -> None:
        await self._write(self._run_many, SQL_DROP_PUSH, done)

    async def queued_pushes(self) -> list[QueuedPush]:
        return await self._read(self._queued_pushes)

    def _queued_pushes(self) -> list[QueuedPush]:
        return [QueuedPush(*row) for row in self._local.conn.execute(SQL_QUEUED_PUSHES)]

    def _run(self, sql: str, params: tuple) -> int:
        """One write statement in its own transaction; the rows it changed."""
        conn = self._write_conn
        with _transaction(conn):
            return conn.execute(sql, params).rowcount

    def _run_many(self, sql: str, rows: list[tuple]) -> None:
        conn = self._write_conn
        with _transaction(conn):
            conn.executemany(sql, rows)

    # ------------------------------------------------------------------ media
    async def create_media(self, record: MediaRecord) -> MediaRecord:
        return await self._write(self._create_media, record)

    def _create_media(self, r: MediaRecord) -> MediaRecord:
        conn = self._write_conn
        with _transaction(conn):
            conn.execute(SQL_INSERT_MEDIA, (
                r.media_id, r.owner, r.size, r.content_type, r.sha256, r.created_at_ms,
                r.part_size, r.upload_id, r.thumbnail_of, int(MediaState.PENDING), "",
                r.content_key))
            stored = _media(conn, conn.execute(SQL_MEDIA_BY_CONTENT,
                                               (r.owner, r.content_key)).fetchone())
        return stored

    async def get_media(self, media_id: str) -> MediaRecord | None:
        return await self._read(self._get_media, media_id)

    def _get_media(self, media_id: str) -> MediaRecord | None:
        conn = self._local.conn
        return _media(conn, conn.execute(SQL_MEDIA, (media_id,)).fetchone())

    async def complete_media(self, media_id: str) -> MediaRecord | None:
        return await self._write(self._complete_media, media_id)

    def _complete_media(self, media_id: str) -> MediaRecord | None:
        conn = self._write_conn
        with _transaction(conn):
            if not conn.execute("UPDATE media SET state = ? WHERE media_id = ?",
                                (int(MediaState.COMPLETE), media_id)).rowcount:
                return None
            record = _media(conn, conn.execute(SQL_MEDIA, (media_id,)).fetchone())
            parent = _media(conn, conn.execute(SQL_MEDIA, (record.thumbnail_of,)).fetchone())
            if parent is not None:
                conn.execute("UPDATE media SET thumbnail_id = ? WHERE media_id = ?",
                             (media_id, parent.media_id))
                self._add_refs(conn, media_id, parent.refs)
                record = _media(conn, conn.execute(SQL_MEDIA, (media_id,)).fetchone())
        return record

    @staticmethod
    def _add_refs(conn: sqlite3.Connection, media_id: str, chat_ids: Collection[str]) -> None:
        if chat_ids:
            conn.executemany(SQL_ADD_MEDIA_REF, [(media_id, chat_id) for chat_id in chat_ids])
            conn.execute("UPDATE media SET referenced = 1 WHERE media_id = ?", (media_id,))

    async def claim_media(self, owner: str, chat_id: str,
                          media_ids: Collection[str]) -> dict[str, MediaRecord]:
        return await self._write(self._claim_media, owner, chat_id, list(media_ids))

    def _claim_media(self, owner: str, chat_id: str, media_ids: list[str]) -> dict[str, MediaRecord]:
        conn = self._write_conn
        with _transaction(conn):
            for media_id in media_ids:
                record = _media(conn, conn.execute(SQL_MEDIA, (media_id,)).fetchone())
                if (record is not None and record.owner == owner and not record.thumbnail_of
                        and record.state is MediaState.COMPLETE):
                    self._add_refs(conn, media_id, (chat_id,))
                    if record.thumbnail_id:
                        self._add_refs(conn, record.thumbnail_id, (chat_id,))
            found = {media_id: _media(conn, conn.execute(SQL_MEDIA, (media_id,)).fetchone())
                     for media_id in media_ids}
        return {media_id: record for media_id, record in found.items() if record is not None}

    async def unreferenced_media(self, created_before_ms: int, limit: int) -> list[MediaRecord]:
        if limit <= 0:
            return []
        return await self._read(self._unreferenced_media, created_before_ms, limit)

    def _unreferenced_media(self, created_before_ms: int, limit: int) -> list[MediaRecord]:
        conn = self._local.conn
        return [_media(conn, row) for row in
                conn.execute(SQL_UNREFERENCED_MEDIA, (created_before_ms, limit)).fetchall()]

    async def delete_media(self, media_id: str) -> bool:
        return await self._write(self._delete_media, media_id)

    def _delete_media(self, media_id: str) -> bool:
        conn = self._write_conn
        with _transaction(conn):
            deleted = conn.execute("DELETE FROM media WHERE media_id = ? AND referenced = 0",
                                   (media_id,)).rowcount > 0
        return deleted
