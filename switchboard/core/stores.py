"""The one place a Store is built from configuration: the gateway, `switchboard admin` and the
bench (through the server it starts) all get theirs here, so `[store]` means the same to each.
Drivers are imported only for the kind asked for."""
from __future__ import annotations

from switchboard.config import Config

from .store import Store


def make_store(config: Config) -> Store:
    """The store `[store] kind` names, not yet opened (the caller opens and closes it)."""
    kind = config.store.kind
    if kind == "sqlite":
        from .store_sqlite import SQLiteStore
        return SQLiteStore(config.database)
    if kind == "memory":
        from .store_memory import MemoryStore
        return MemoryStore()
    raise ValueError(f"store.kind {kind!r} is not a store this build has")
