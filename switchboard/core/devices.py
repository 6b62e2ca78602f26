"""A user's devices: admission at connect (limit, revocation) with an in-memory fast path."""
from __future__ import annotations

import asyncio
import logging

from .ids import now_ms
from .lru import LRU
from .model import DeviceRow, DeviceStatus
from .store import Store, StoreError

log = logging.getLogger(__name__)


class Devices:
    def __init__(self, store: Store, *, max_devices: int, cache: int = 200_000) -> None:
        self._store = store
        self.max_devices = max_devices
        self._admitted: LRU[tuple[str, str], bool] = LRU(cache)
        self._seen: dict[tuple[str, str], int] = {}  # last-seen times not yet written
        self._written = asyncio.Event()  # set while no write of them is under way
        self._written.set()

    def known(self, user_id: str, device_id: str) -> bool:
        """Admitted before by this process (and not revoked since): no store round trip."""
        return (user_id, device_id) in self._admitted

    async def admit(self, user_id: str, device_id: str) -> DeviceStatus:
        status = await self._store.register_device(user_id, device_id, now_ms(), self.max_devices)
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

    async def seen(self, user_id: str, device_id: str) -> None:
        """The device disconnected now. Coalesced: while one write of last-seen times is under
        way, later ones gather and go together in the next, so a drain's or a storm's
        thousands of disconnects cost a few store transactions, not one each (with several
        processes on one SQLite file, one each queued for seconds behind its lock). A failed
        write raises here (its task is counted, core/tasks.py); its times are lost, the next
        disconnect of those devices writes theirs again."""
        self._seen[(user_id, device_id)] = now_ms()
        if self._written.is_set():
            await self._write_seen()

    async def flush(self) -> None:
        """Until every last-seen time recorded so far is written (the drain, before the store
        closes). A store that fails then costs those times (logged), not the drain."""
        await self._written.wait()
        try:
            await self._write_seen()
        except StoreError as exc:
            log.warning("last-seen times not written at the drain: %s", exc)

    async def _write_seen(self) -> None:
        self._written.clear()
        try:
            while self._seen:
                batch, self._seen = self._seen, {}
                await self._store.touch_devices(
                    [(user, device, seen) for (user, device), seen in batch.items()])
        finally:
            self._written.set()
