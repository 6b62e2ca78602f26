"""A user's devices: admission at connect (limit, revocation) with an in-memory fast path."""
from __future__ import annotations

from .ids import now_ms
from .lru import LRU
from .model import DeviceRow, DeviceStatus
from .store import Store


class Devices:
    def __init__(self, store: Store, *, max_devices: int, cache: int = 200_000) -> None:
        self._store = store
        self.max_devices = max_devices
        self._admitted: LRU[tuple[str, str], bool] = LRU(cache)

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
        await self._store.touch_device(user_id, device_id, now_ms())
