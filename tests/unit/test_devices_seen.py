"""Last-seen times of disconnecting devices (core/devices.py) over a real SQLite file: thousands
of disconnects at once (a drain, a reconnect storm) are written in one transaction, not one
each, every device's time is kept, and a store that refuses the batch (a file locked by other
processes past the busy timeout) neither loses the times nor stops the drain."""
from __future__ import annotations

import asyncio

from switchboard.core.devices import Devices
from switchboard.core.store import StoreError
from switchboard.core.store_sqlite import SQLiteStore

DEVICES = 2000


class CountingStore(SQLiteStore):
    """The real SQLite store, counting its last-seen transactions; `locked` makes them fail."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.touch_transactions = 0
        self.locked = False

    async def touch_devices(self, seen) -> None:
        self.touch_transactions += 1
        if self.locked:
            await asyncio.sleep(0)
            raise StoreError("touch_devices: database is locked")
        await super().touch_devices(seen)


async def _admitted(store, users) -> Devices:
    devices = Devices(store, max_devices=5, seen_flush=3600)
    for user in users:
        await devices.admit(user, "phone")
    return devices


async def test_a_burst_of_disconnects_is_written_in_one_transaction(tmp_path):
    store = CountingStore(tmp_path / "switchboard.db")
    await store.open()
    try:
        users = [f"u{i}" for i in range(DEVICES)]
        devices = await _admitted(store, users)
        for user in users:
            devices.seen(user, "phone")
        assert store.touch_transactions == 0  # nothing written on the disconnect itself
        await devices.close()
        assert store.touch_transactions == 1
        assert all([await store.last_seen(user) > 0 for user in users])
    finally:
        await store.close()


async def test_a_refused_batch_is_kept_for_the_next_and_close_returns(tmp_path, caplog):
    store = CountingStore(tmp_path / "switchboard.db")
    await store.open()
    try:
        devices = await _admitted(store, ("a", "b"))
        devices.seen("a", "phone")
        store.locked = True
        await devices.flush_seen()
        assert "last seen of 1 devices not written yet" in caplog.text
        devices.seen("b", "phone")
        await devices.close()  # refused again: the drain goes on
        assert store.touch_transactions == 2
        store.locked = False
        await devices.flush_seen()  # both kept, one transaction
        assert store.touch_transactions == 3
        assert [await store.last_seen(user) > 0 for user in ("a", "b")] == [True, True]
    finally:
        await store.close()
