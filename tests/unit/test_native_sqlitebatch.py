"""The native SQLite batch commit against its twin (the same commit through Python's sqlite3
module): random histories of batches, with duplicates within and across batches, several chats
and senders, media and every kind of watermark, give the same seqs and the same tables, on
real SQLite files. And a batch that fails leaves nothing of itself behind."""
from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core._native.sqlitebatch import BatchCommitter, BatchError
from switchboard.core.model import NewMessage
from switchboard.core.store_sqlite import BATCH_SQL, PRAGMAS, SCHEMA
from tests.reference import sqlitebatch_model

TABLES = ("messages", "chat_heads", "receipts", "device_cursors")
# what is compared here does not depend on fsync, and the runs are many: memory-backed files
UNSYNCED = PRAGMAS.replace("synchronous = FULL", "synchronous = OFF")
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None
CHATS, USERS = ["c1", "c2", "c3"], ["u1", "u2", "é"]


def open_db(directory: Path, committer_class, name: str):
    path = str(directory / f"{name}.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    return path, committer_class(path, BATCH_SQL, UNSYNCED, 1000)


def tables(path: str) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}


messages = st.builds(
    NewMessage, chat_id=st.sampled_from(CHATS), sender_user=st.sampled_from(USERS),
    sender_device=st.sampled_from(["phone", "laptop"]),
    client_msg_id=st.sampled_from([f"m{i}" for i in range(6)]), body=st.binary(max_size=30),
    media_ids=st.lists(st.sampled_from(["a", "b"]), max_size=2).map(tuple),
    server_id=st.integers(1, 2 ** 62), created_at_ms=st.integers(0, 2 ** 50))
seqs = st.integers(0, 50)
batches = st.fixed_dictionaries({
    "messages": st.lists(messages, max_size=8),
    "cursors": st.dictionaries(st.tuples(st.sampled_from(USERS), st.just("phone"),
                                         st.sampled_from(CHATS)), seqs, max_size=3),
    "delivered": st.dictionaries(st.tuples(st.sampled_from(CHATS), st.sampled_from(USERS)),
                                 seqs, max_size=3),
    "reads": st.dictionaries(st.tuples(st.sampled_from(CHATS), st.sampled_from(USERS)), seqs,
                             max_size=3),
})


def media_of(batch) -> list[bytes | None]:
    return [",".join(m.media_ids).encode() or None for m in batch["messages"]]


@settings(max_examples=60, deadline=None)
@given(history=st.lists(batches, min_size=1, max_size=6))
def test_native_commit_writes_what_the_python_commit_writes(history):
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        native_path, native = open_db(Path(tmp), BatchCommitter, "native")
        model_path, model = open_db(Path(tmp), sqlitebatch_model.BatchCommitter, "model")
        try:
            for batch in history:
                args = (batch["messages"], media_of(batch), batch["cursors"],
                        batch["delivered"], batch["reads"])
                assert native.commit(*args) == model.commit(*args)
            assert tables(native_path) == tables(model_path)
        finally:
            native.close()
            model.close()


def test_seqs_are_gap_free_per_chat_and_duplicates_get_zero(tmp_path):
    _, native = open_db(tmp_path, BatchCommitter, "native")
    batch = [NewMessage("c1", "u1", "d", "a", b"1", (), 1, 0),
             NewMessage("c2", "u1", "d", "a", b"2", (), 2, 0),
             NewMessage("c1", "u1", "d", "b", b"3", (), 3, 0),
             NewMessage("c1", "u1", "d", "a", b"again", (), 4, 0)]
    assert native.commit(batch, [None] * 4, {}, {}, {}) == [1, 1, 2, 0]
    assert native.commit(batch[:1], [None], {}, {}, {}) == [0]
    native.close()


def test_a_failed_batch_stores_none_of_it(tmp_path):
    """A row already at the seq a chat's stale head points to refuses the insert (only dedup
    conflicts are absorbed): the batch rolls back, the other chat's message included."""
    path, native = open_db(tmp_path, BatchCommitter, "native")
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO messages VALUES ('c1', 1, 9, 'x', 'd', 'old', x'', NULL, 0)")
    batch = [NewMessage("c2", "u1", "d", "a", b"x", (), 1, 0),
             NewMessage("c1", "u1", "d", "b", b"y", (), 2, 0)]
    with pytest.raises(BatchError, match="commit: .*UNIQUE"):
        native.commit(batch, [None, None], {("u1", "d", "c2"): 1}, {}, {})
    assert tables(path)["messages"] == [("c1", 1, 9, "x", "d", "old", b"", None, 0)]
    assert tables(path)["device_cursors"] == []
    assert native.commit(batch[:1], [None], {}, {}, {}) == [1]  # usable again
    native.close()


def test_a_locked_database_fails_the_batch_after_the_busy_timeout(tmp_path):
    path = str(tmp_path / "locked.db")
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
    native = BatchCommitter(path, BATCH_SQL, PRAGMAS, 50)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(BatchError, match="locked"):
        native.commit([NewMessage("c1", "u1", "d", "a", b"x", (), 1, 0)], [None], {}, {}, {})
    holder.execute("ROLLBACK")
    assert native.commit([NewMessage("c1", "u1", "d", "a", b"x", (), 1, 0)], [None], {}, {}, {}) == [1]
    holder.close()
    native.close()
    with pytest.raises(BatchError, match="closed"):
        native.commit([], [], {}, {}, {})
