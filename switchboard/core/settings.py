"""Per-user settings (read receipts, last-seen visibility) with an in-memory cache: receipts
and presence read them on every push."""
from __future__ import annotations

from collections.abc import Iterable

from .lru import LRU
from .model import UserSettings
from .store import Store


MANY_AT_ONCE = 256  # reads in flight for get_many


class Settings:
    """Per-user settings with an in-memory cache (read on every receipt and presence push)."""

    def __init__(self, store: Store, cache_users: int = 100_000) -> None:
        self._store = store
        self._cache: LRU[str, UserSettings] = LRU(cache_users)
        self.changes = 0  # settings changed or forgotten (what is kept from them is stale)

    def cached(self, user_id: str) -> UserSettings | None:
        """The user's settings if this process holds them: no await for the send path, nor for
        a group's receipts, which read every member's on each push."""
        return self._cache.use(user_id)

    async def get(self, user_id: str) -> UserSettings:
        settings = self._cache.use(user_id)
        if settings is None:
            settings = await self._store.get_settings(user_id)
            self._cache.put(user_id, settings)
        return settings

    async def get_many(self, user_ids: Iterable[str]) -> dict[str, UserSettings]:
        """Many users' settings (a large group's, for its receipt rollup): those not cached are
        read MANY_AT_ONCE at a time, so the store's readers take them back to back. One await
        per user made the first rollup of a group of 10,000 wait for 10,000 store round trips
        in a row, seconds during which the group's next messages were being fanned out."""
        return await self._cache.use_many(user_ids, self.get, MANY_AT_ONCE)

    def forget(self, user_id: str) -> None:
        """Another node changed the user's settings: reload on next use."""
        self._cache.pop(user_id, None)
        self.changes += 1

    def forget_all(self) -> None:
        self._cache.clear()
        self.changes += 1

    async def update(self, user_id: str, **changes) -> UserSettings:
        settings = await self._store.update_settings(user_id, changes.get("read_receipts"),
                                                     changes.get("last_seen"))
        self._cache.put(user_id, settings)
        self.changes += 1
        return settings
