"""The one place a Store is built from configuration: the gateway, `switchboard admin` and the
bench (through the server it starts) all get theirs here, so `[store]` means the same to each.
Drivers are imported only for the kind asked for."""
from __future__ import annotations

import ssl

from switchboard.config import Config, ConfigError, StoreConfig, parse_datacenters

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
    if kind == "scylla":
        from .store_scylla import ScyllaStore
        store = config.store
        return ScyllaStore(cql_settings(store), keyspace=store.keyspace,
                           replication=replication(store), create_schema=store.create_schema)
    raise ValueError(f"store.kind {kind!r} is not a store this build has")


def cql_settings(store: StoreConfig):
    """The driver session's settings for `[store]` (no keyspace: statements name it)."""
    from .cql import CqlSettings
    return CqlSettings(
        hosts=tuple(host.strip() for host in store.hosts.split(",") if host.strip()),
        port=store.port, keyspace=None, username=store.username, password=store.password,
        local_dc=store.local_dc, consistency=store.consistency,
        serial_consistency=store.serial_consistency, request_timeout=store.request_timeout,
        max_in_flight=store.max_in_flight, ssl_context=tls_context(store))


def replication(store: StoreConfig) -> str:
    from .store_scylla import replication_map
    return replication_map(store.replication_strategy, store.replication_factor,
                           parse_datacenters(store.replication_dcs))


def tls_context(store: StoreConfig) -> ssl.SSLContext | None:
    """TLS to the cluster when a CA or a client certificate is configured: the nodes'
    certificates must chain to `tls_ca` (or the system's CAs). Host names are not checked: the
    driver dials the addresses the cluster reports, which certificates rarely name."""
    if not store.tls_ca and not store.tls_cert:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=store.tls_ca or None)
        context.check_hostname = False
        if store.tls_cert:
            context.load_cert_chain(store.tls_cert, store.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"store.tls_ca/tls_cert/tls_key: cannot load: {exc}") from None
    return context
