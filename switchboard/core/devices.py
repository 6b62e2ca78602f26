"""A user's devices: admission at connect (limit, revocation) with an in-memory fast path.

A known device's reconnect must not cost a store write: that is what a reconnect storm is made
of. So admission first reads (a device listed as not revoked is admitted with no write; only a
new or revoked one goes to the conditional write; the reads of one loop turn's admissions are
one store call, core/batched.py), and when a device was last seen is not
written at each disconnect but kept here and written in batches every `seen_flush` seconds
(one transaction for all of them), and on close.
"""
from __future__ import annotations

import asyncio
import logging

from .batched import BatchedReads
from .ids import now_ms
from .lru import LRU
from .model import DeviceRow, DeviceStatus
from .store import Store, StoreError
from .tasks import TaskGroup, watch

log = logging.getLogger(__name__)

#: Seconds between batched writes of last-seen times.
SEEN_FLUSH = 5.0
#: Users whose device lists one store read returns at most (admissions of one loop turn).
MAX_LISTED = 128


class Devices:
    def __init__(self, store: Store, *, max_devices: int, cache: int = 200_000,
                 seen_flush: float = SEEN_FLUSH) -> None:
        self._store = store
        self.max_devices = max_devices
        self._admitted: LRU[tuple[str, str], bool] = LRU(cache)
        self._unseen: dict[tuple[str, str], int] = {}
        self._seen_flush = seen_flush
        self._flusher: asyncio.Task | None = None
        self._reads = TaskGroup()
        self._listed = BatchedReads(store.list_devices_of, self._reads, MAX_LISTED)
        self.admitted_by_read = 0   # admissions that found the device and wrote nothing
        self.seen_writes = 0        # batches of last-seen times written

    def known(self, user_id: str, device_id: str) -> bool:
        """Admitted before by this process (and not revoked since): no store round trip."""
        return (user_id, device_id) in self._admitted

    async def admit(self, user_id: str, device_id: str) -> DeviceStatus:
        """A device the store lists (not revoked) is admitted by that read alone; a new one,
        or one not listed, takes the conditional write (limit, revocation)."""
        listed = await self._listed.read(user_id)
        if any(row.device_id == device_id for row in listed):
            self.admitted_by_read += 1
            status = DeviceStatus.OK
        else:
            status = await self._store.register_device(user_id, device_id, now_ms(),
                                                       self.max_devices)
        if status is DeviceStatus.OK:
            self._admitted.put((user_id, device_id), True)
        return status

    def forget(self, user_id: str, device_id: str) -> None:
        """Revoked elsewhere (another node, the admin CLI): the next connect asks the store."""
        self._admitted.pop((user_id, device_id), None)

    def forget_all(self) -> None:
        self._admitted.clear()

    async def revoke(self, user_id: str, device_id: str) -> bool:
        self.forget(user_id, device_id)
        return await self._store.revoke_device(user_id, device_id)

    async def list(self, user_id: str) -> list[DeviceRow]:
        return await self._store.list_devices(user_id)

    def seen(self, user_id: str, device_id: str) -> None:
        """The device went away now: written with the next batch."""
        self._unseen[(user_id, device_id)] = now_ms()

    def start(self) -> None:
        self._flusher = watch(asyncio.ensure_future(self._flush_every()))

    async def close(self) -> None:
        """Stop the batches and write what is left (the store is still open)."""
        await self._reads.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self.flush_seen()

    async def flush_seen(self) -> None:
        """Write the last-seen times gathered since the last batch; on a store failure they
        are kept for the next one (a later time of the same device replaces them)."""
        if not self._unseen:
            return
        batch, self._unseen = self._unseen, {}
        try:
            await self._store.touch_devices([(u, d, ms) for (u, d), ms in batch.items()])
        except StoreError as exc:
            log.warning("last seen of %d devices not written yet: %s", len(batch), exc)
            for key, ms in batch.items():
                self._unseen.setdefault(key, ms)
            return
        self.seen_writes += 1

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self._seen_flush)
            await self.flush_seen()
