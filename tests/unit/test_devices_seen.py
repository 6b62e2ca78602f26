"""Last-seen times of disconnecting devices (core/devices.py) over a real SQLite file: thousands
of disconnects at once (a drain, a reconnect storm) are written in a few transactions, not one
each, every device's time is kept, and flush() writes what is pending before the store closes."""
from __future__ import annotations

import asyncio

from switchboard.core.devices import Devices
from switchboard.core.store import StoreError
from switchboard.core.store_sqlite import SQLiteStore

DEVICES = 2000


class CountingStore(SQLiteStore):
    """The real SQLite store, counting its last-seen transactions; `locked` makes them fail
    as a file locked by other processes past the busy timeout does."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.touch_transactions = 0
        self.locked = False

    async def touch_devices(self, touches) -> None:
        self.touch_transactions += 1
        if self.locked:
            await asyncio.sleep(0)
            raise StoreError("touch_devices: database is locked")
        await super().touch_devices(touches)


async def test_a_burst_of_disconnects_is_written_in_a_few_transactions(tmp_path):
    store = CountingStore(tmp_path / "switchboard.db")
    await store.open()
    try:
        devices = Devices(store, max_devices=5)
        for i in range(DEVICES):
            await devices.admit(f"u{i}", "phone")
        await asyncio.gather(*(devices.seen(f"u{i}", "phone") for i in range(DEVICES)))
        assert store.touch_transactions <= 3
        assert all([await store.last_seen(f"u{i}") > 0 for i in range(DEVICES)])
    finally:
        await store.close()


async def test_flush_writes_what_is_pending(tmp_path):
    store = CountingStore(tmp_path / "switchboard.db")
    await store.open()
    try:
        devices = Devices(store, max_devices=5)
        for user in ("a", "b", "c"):
            await devices.admit(user, "phone")
        writing = asyncio.ensure_future(devices.seen("a", "phone"))
        await asyncio.sleep(0)   # a's write is under way: b and c wait for the next one
        later = [asyncio.ensure_future(devices.seen(user, "phone")) for user in ("b", "c")]
        await asyncio.sleep(0)
        assert all(task.done() for task in later)  # they did not wait for the store
        await devices.flush()
        await writing
        assert [await store.last_seen(user) > 0 for user in ("a", "b", "c")] == [True] * 3
        assert store.touch_transactions == 2
    finally:
        await store.close()


async def test_flush_on_a_failing_store_logs_and_returns(tmp_path, caplog):
    store = CountingStore(tmp_path / "switchboard.db")
    await store.open()
    devices = Devices(store, max_devices=5)
    try:
        for user in ("a", "b"):
            await devices.admit(user, "phone")
        store.locked = True
        first = asyncio.ensure_future(devices.seen("a", "phone"))
        await asyncio.sleep(0)  # a's write is under way (and fails): b waits for the next one
        await devices.seen("b", "phone")
        await asyncio.wait([first])
        assert isinstance(first.exception(), StoreError)  # counted where it was spawned
        await devices.flush()  # b's write fails too, and the drain goes on
        assert store.touch_transactions == 2
        assert "last-seen times not written at the drain" in caplog.text
    finally:
        await store.close()
