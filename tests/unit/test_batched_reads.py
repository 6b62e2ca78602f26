"""Handshake reads batched per loop turn (core/batched.py) over a real SQLite file: the reads
of one turn are one store call, each key gets its own answer (never a neighbour's), a batch
larger than max_batch is split, and a store failure reaches every waiter of its batch as a
StoreError while the next turn's reads work again."""
from __future__ import annotations

import asyncio

import pytest

from switchboard.core.backlog import backlog_reader, read_backlog
from switchboard.core.batched import BatchedReads
from switchboard.core.devices import Devices
from switchboard.core.model import Batch, Chat, ChatKind, NewMessage, Role
from switchboard.core.store import StoreError
from switchboard.core.store_sqlite import SQLiteStore
from switchboard.core.tasks import TaskGroup

USERS = 40


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the batched calls and the keys they carried."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.calls: list[int] = []
        self.failing = False

    async def list_devices_of(self, user_ids):
        self.calls.append(len(user_ids))
        if self.failing:
            raise StoreError("list_devices_of: database is locked")
        return await super().list_devices_of(user_ids)

    async def sync_reads(self, devices):
        self.calls.append(len(devices))
        return await super().sync_reads(devices)


@pytest.fixture
async def store(tmp_path):
    store = CountingStore(tmp_path / "switchboard.db")
    await store.open()
    yield store
    await store.close()


async def test_one_turn_of_device_listings_is_one_call_and_each_user_gets_its_own(store):
    for i in range(USERS):
        for d in range(i % 4):  # user i has i % 4 devices
            await store.register_device(f"u{i}", f"d{d}", 1000 + d, 10)
    tasks = TaskGroup()
    reads = BatchedReads(store.list_devices_of, tasks, max_batch=128)
    store.calls.clear()
    futures = [reads.read(f"u{i}") for i in range(USERS)] + [reads.read("nobody")]
    answers = await asyncio.gather(*futures)
    assert store.calls == [USERS + 1]
    for i in range(USERS):
        assert [row.device_id for row in answers[i]] == [f"d{d}" for d in range(i % 4)]
    assert answers[-1] == []
    assert (reads.batches, reads.reads) == (1, USERS + 1)


async def test_a_turn_larger_than_max_batch_is_split(store):
    tasks = TaskGroup()
    reads = BatchedReads(store.list_devices_of, tasks, max_batch=16)
    store.calls.clear()
    await asyncio.gather(*(reads.read(f"u{i}") for i in range(USERS)))
    assert store.calls == [16, 16, 8]


async def test_a_failed_batch_fails_each_waiter_and_the_next_turn_reads_again(store):
    await store.register_device("alice", "phone", 1, 10)
    tasks = TaskGroup()
    reads = BatchedReads(store.list_devices_of, tasks, max_batch=128)
    store.failing = True
    results = await asyncio.gather(reads.read("alice"), reads.read("bob"),
                                   return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    store.failing = False
    assert [row.device_id for row in await reads.read("alice")] == ["phone"]
    await tasks.wait()  # nothing left running, nothing logged as a task failure


async def test_sync_snapshots_of_one_turn_each_get_their_own_cursor(store):
    """Receivers r0..r9 each in a chat with s; ri acked i of its 10 messages. Read in one
    turn, each backlog starts at its own cursor."""
    for i in range(10):
        chat = f"c{i}"
        await store.create_chat(Chat(chat, ChatKind.GROUP, "t", 1), {"s": Role.ADMIN,
                                                                     f"r{i}": Role.MEMBER})
        await store.commit(Batch([NewMessage(chat, "s", "phone", f"m{k}", b"x", (),
                                             i * 100 + k + 1, 1) for k in range(10)]))
        await store.commit(Batch(cursors={(f"r{i}", "phone", chat): i}))
    tasks = TaskGroup()
    reader = backlog_reader(store, tasks)
    store.calls.clear()
    backlogs = await asyncio.gather(*(reader.read((f"r{i}", "phone")) for i in range(10)),
                                    reader.read(("stranger", "phone")))
    assert store.calls == [11]
    for i in range(10):
        [row] = backlogs[i]
        assert (row.cursor, row.head) == (i, 10)
        assert backlogs[i] == await read_backlog(store, f"r{i}", "phone")
    assert backlogs[-1] == []


async def test_devices_admit_a_turn_of_known_devices_with_one_read(store):
    for i in range(USERS):
        await store.register_device(f"u{i}", "phone", 1, 10)
    devices = Devices(store, max_devices=10, seen_flush=3600)
    store.calls.clear()
    statuses = await asyncio.gather(*(devices.admit(f"u{i}", "phone") for i in range(USERS)))
    assert all(status.name == "OK" for status in statuses)
    assert store.calls == [USERS]
    assert devices.admitted_by_read == USERS
    await devices.close()
