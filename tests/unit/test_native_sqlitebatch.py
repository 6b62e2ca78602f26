"""The native SQLite batch commit against its twin, the store's commit through Python's sqlite3
module (SQLiteStore._commit_in_python, which also takes every batch with a membership event):
random histories of batches, with duplicates within and across batches, several chats and
senders, media, membership events and every kind of watermark, give the same results and the
same tables, on real SQLite files. And a batch that fails leaves nothing of itself behind."""
from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core._native.sqlitebatch import BatchCommitter, BatchError
from switchboard.core.model import Batch, MemberAction, MembershipEvent, NewMessage
from switchboard.core.store_sqlite import BATCH_SQL, PRAGMAS, SCHEMA, SQLiteStore

TABLES = ("messages", "chat_heads", "receipts", "device_cursors", "members", "user_chats",
          "member_periods")
# what is compared here does not depend on fsync, and the runs are many: memory-backed files
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
CHATS, USERS = ["c1", "c2", "c3"], ["u1", "u2", "é"]

events = st.builds(MembershipEvent, action=st.sampled_from(MemberAction), actor=st.just("u1"),
                   users=st.lists(st.sampled_from(USERS), min_size=1, max_size=2).map(tuple))
sends = st.builds(
    NewMessage, chat_id=st.sampled_from(CHATS), sender_user=st.sampled_from(USERS),
    sender_device=st.sampled_from(["phone", "laptop"]),
    client_msg_id=st.sampled_from([f"m{i}" for i in range(6)]), body=st.binary(max_size=30),
    media_ids=st.lists(st.sampled_from(["a", "b"]), max_size=2).map(tuple),
    server_id=st.integers(1, 2 ** 62), created_at_ms=st.integers(0, 2 ** 50),
    public_read=st.booleans())
membership = st.builds(
    NewMessage, chat_id=st.sampled_from(CHATS), sender_user=st.sampled_from(["u1", ""]),
    sender_device=st.just(""), client_msg_id=st.sampled_from([f"e{i}" for i in range(4)]),
    body=st.just(b""), media_ids=st.just(()), server_id=st.integers(1, 2 ** 62),
    created_at_ms=st.integers(0, 2 ** 50), event=events)
seqs = st.integers(0, 50)
watermarks = st.dictionaries(st.tuples(st.sampled_from(CHATS), st.sampled_from(USERS)), seqs,
                             max_size=3)


def batches(with_events: bool):
    return st.builds(
        Batch, messages=st.lists(sends | membership if with_events else sends, max_size=8),
        cursors=st.dictionaries(st.tuples(st.sampled_from(USERS), st.just("phone"),
                                          st.sampled_from(CHATS)), seqs, max_size=3),
        reads=watermarks, delivered=watermarks, public_reads=watermarks)


def tables(path: str) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}


async def both_ways(directory: Path, history: list[Batch]) -> None:
    """Each batch through the store's commit (native unless it holds an event) and through the
    Python commit of another store: the same results, then the same tables."""
    native, python = SQLiteStore(directory / "native.db"), SQLiteStore(directory / "python.db")
    await native.open()
    await python.open()
    try:
        for batch in history:
            assert (await native._write(native._commit, batch)
                    == await python._write(python._commit_in_python, batch))
    finally:
        await native.close()
        await python.close()
    assert tables(native.path) == tables(python.path)


@settings(max_examples=40, deadline=None)
@given(history=st.lists(batches(with_events=False), min_size=1, max_size=6))
def test_native_commit_writes_what_the_python_commit_writes(history):
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        asyncio.run(both_ways(Path(tmp), history))


@settings(max_examples=25, deadline=None)
@given(history=st.lists(batches(with_events=True), min_size=1, max_size=6))
def test_batches_with_membership_events_mixed_in_store_what_the_python_commit_stores(history):
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        asyncio.run(both_ways(Path(tmp), history))


def open_committer(directory: Path, busy_timeout_ms: int = 1000) -> tuple[str, BatchCommitter]:
    path = str(directory / "native.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    return path, BatchCommitter(path, BATCH_SQL, PRAGMAS, busy_timeout_ms)


def plain(chat_id: str, client_msg_id: str, body: bytes, server_id: int) -> NewMessage:
    return NewMessage(chat_id, "u1", "d", client_msg_id, body, (), server_id, 0)


def test_seqs_are_gap_free_per_chat_and_duplicates_get_zero(tmp_path):
    _, native = open_committer(tmp_path)
    batch = [plain("c1", "a", b"1", 1), plain("c2", "a", b"2", 2), plain("c1", "b", b"3", 3),
             plain("c1", "a", b"again", 4)]
    assert native.commit(batch, [None] * 4, {}, {}, {}, {}) == [1, 1, 2, 0]
    assert native.commit(batch[:1], [None], {}, {}, {}, {}) == [0]
    native.close()


def test_a_failed_batch_stores_none_of_it(tmp_path):
    """A row already at the seq a chat's stale head points to refuses the insert (only dedup
    conflicts are absorbed): the batch rolls back, the other chat's message included."""
    path, native = open_committer(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO messages VALUES ('c1', 1, 9, 'x', 'd', 'old', x'', NULL, 0, NULL)")
    batch = [plain("c2", "a", b"x", 1), plain("c1", "b", b"y", 2)]
    with pytest.raises(BatchError, match="commit: .*UNIQUE"):
        native.commit(batch, [None, None], {("u1", "d", "c2"): 1}, {}, {}, {})
    assert tables(path)["messages"] == [("c1", 1, 9, "x", "d", "old", b"", None, 0, None)]
    assert tables(path)["device_cursors"] == []
    assert native.commit(batch[:1], [None], {}, {}, {}, {}) == [1]  # usable again
    native.close()


def test_a_locked_database_fails_the_batch_after_the_busy_timeout(tmp_path):
    path, native = open_committer(tmp_path, busy_timeout_ms=50)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(BatchError, match="locked"):
        native.commit([plain("c1", "a", b"x", 1)], [None], {}, {}, {}, {})
    holder.execute("ROLLBACK")
    assert native.commit([plain("c1", "a", b"x", 1)], [None], {}, {}, {}, {}) == [1]
    holder.close()
    native.close()
    with pytest.raises(BatchError, match="closed"):
        native.commit([], [], {}, {}, {}, {})
