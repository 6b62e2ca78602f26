"""The SQLite store's group commit (core/_native/sqlitebatch.pyx) against its twin, the same
batch through Python's sqlite3 module (SQLiteStore._commit_in_python): one message, and 64
messages of 32 chats with their senders' watermarks, through the writer's Lane as the server
commits them. And a group's acks: one message of a group of 1,000 with every member's ack of
the one before (its device's cursor and its delivered watermark, as the writer hands them on),
and the read of that group's receipts. On a memory-backed file, so what is measured is the
commit's CPU (statements, the hand-off), not the disk's fsync."""
from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest
import uvloop

from switchboard.core.model import Batch, NewMessage, Receipt
from switchboard.core.store_sqlite import SQLiteStore

SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


@pytest.fixture
def store():
    loop = uvloop.new_event_loop()
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        store = SQLiteStore(Path(tmp) / "micro.db")
        loop.run_until_complete(store.open())
        yield store, loop
        loop.run_until_complete(store.close())
    loop.close()


def _batches(size: int):
    """Batches of fresh messages (no duplicates), `size` each, spread over size // 2 chats."""
    chats = max(1, size // 2)
    for n in itertools.count():
        yield Batch([NewMessage(f"d:u{i % chats}:v{i % chats}", f"u{i % chats}", "phone",
                                f"m{n}-{i}", b"x" * 64, (), (n << 20) + i, 1_760_000_000_000)
                     for i in range(size)], {}, {}, {}, {})


@pytest.mark.parametrize("size", [1, 64])
@pytest.mark.parametrize("path", ["native", "python"])
def test_batch_commit(benchmark, store, path, size):
    store, loop = store
    commit = store._commit if path == "native" else store._commit_in_python
    batches = _batches(size)

    def one_commit():
        return loop.run_until_complete(store._write(commit, next(batches)))

    results = benchmark(one_commit)
    assert len(results) == size and not any(r.duplicate for r in results)


MEMBERS = 1_000


def _group_batches():
    """Message n of group "g" with every member's ack of message n - 1."""
    members = [f"u{i}" for i in range(MEMBERS)]
    for n in itertools.count(1):
        yield Batch([NewMessage("g", "u0", "phone", f"m{n}", b"x" * 64, (), n, 1_760_000_000_000)],
                    {(user, "phone", "g"): n - 1 for user in members[1:]}, {},
                    {("g", user): n - 1 for user in members[1:]}, {})


@pytest.mark.parametrize("path", ["native", "python"])
def test_group_acks_commit(benchmark, store, path):
    store, loop = store
    commit = store._commit if path == "native" else store._commit_in_python
    batches = _group_batches()

    def one_commit():
        return loop.run_until_complete(store._write(commit, next(batches)))

    results = benchmark(one_commit)
    assert len(results) == 1 and not results[0].duplicate


def test_group_receipts_read(benchmark, store):
    store, loop = store
    batches = _group_batches()
    for _ in range(3):
        loop.run_until_complete(store.commit(next(batches)))
    receipts = benchmark(lambda: loop.run_until_complete(store.receipts("g")))
    assert len(receipts) == MEMBERS and receipts["u1"] == Receipt(2, 0, 0)
