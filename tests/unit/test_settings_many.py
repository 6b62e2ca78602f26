"""Many users' settings at once (Settings.get_many, what a large group's receipt rollup reads)
over a real SQLite file: each user's stored settings, defaults for those never set, every one
cached afterwards; a store that fails fails the call with its StoreError."""
from __future__ import annotations

import pytest

from switchboard.core.model import UserSettings, Visibility
from switchboard.core.settings import MANY_AT_ONCE, Settings
from switchboard.core.store import StoreError
from switchboard.core.store_sqlite import SQLiteStore


async def test_get_many_reads_each_users_settings_and_caches_them(tmp_path):
    store = SQLiteStore(tmp_path / "settings.db")
    await store.open()
    try:
        users = [f"u{i}" for i in range(MANY_AT_ONCE * 2 + 7)]  # more than one round of reads
        hidden = set(users[::5])
        for user in hidden:
            await store.update_settings(user, False, Visibility.NOBODY)
        settings = Settings(store)
        await settings.get(users[1])  # one cached before: taken from the cache
        many = await settings.get_many(users)
        assert set(many) == set(users)
        for user in users:
            expected = (UserSettings(False, Visibility.NOBODY) if user in hidden
                        else UserSettings())
            assert many[user] == expected, user
            assert settings.cached(user) == expected, user
    finally:
        await store.close()


async def test_get_many_fails_with_the_stores_error(tmp_path):
    store = SQLiteStore(tmp_path / "settings.db")
    await store.open()
    await store.close()  # a closed store refuses every read
    with pytest.raises(StoreError):
        await Settings(store).get_many(["ann", "bob"])
