"""The Registry for a single process: plain dicts, the same semantics as Redis Cluster.

It is the twin the contract suite checks the Redis Cluster implementation against, and what
tests give a MeshRouter that needs leases and sessions without a Redis Cluster (a single node
needs no registry: it routes with LocalRouter). Leases are judged against an injectable monotonic
clock, so tests move time instead of sleeping. Nothing here can be lost, so `refresh_node`
returns False only for a lapsed lease or a stale epoch.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from .registry import NodeInfo, Registry, SessionEntry, visible_sessions


class MemoryRegistry(Registry):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._leases: dict[str, tuple[NodeInfo, float]] = {}  # node -> (info, expires at)
        self._epochs: dict[str, int] = {}
        self._sessions: dict[str, dict[str, SessionEntry]] = {}
        self._last_seen: dict[str, int] = {}
        self._usage: dict[tuple[str, str], tuple[int, float]] = {}  # -> (total, expires at)

    async def register_node(self, node_id: str, address: str, ttl: float) -> int:
        epoch = self._epochs.get(node_id, 0) + 1
        self._epochs[node_id] = epoch
        self._leases[node_id] = (NodeInfo(address, epoch), self._clock() + ttl)
        return epoch

    async def refresh_node(self, node_id: str, epoch: int, ttl: float) -> bool:
        info = self._live().get(node_id)
        if info is None or info.epoch != epoch:
            return False
        self._leases[node_id] = (info, self._clock() + ttl)
        return True

    async def nodes(self) -> dict[str, NodeInfo]:
        return self._live()

    def _live(self) -> dict[str, NodeInfo]:
        now = self._clock()
        return {node: info for node, (info, expires) in self._leases.items() if now < expires}

    async def put_session(self, user: str, device: str, node_id: str,
                          node_epoch: int) -> SessionEntry | None:
        devices = self._sessions.setdefault(user, {})
        previous = devices.get(device)
        devices[device] = SessionEntry(node_id, node_epoch)
        return previous

    async def drop_session(self, user: str, device: str, node_id: str) -> bool:
        devices = self._sessions.get(user)
        if devices is None or device not in devices or devices[device].node_id != node_id:
            return False
        del devices[device]
        if not devices:
            del self._sessions[user]
        return True

    async def sessions(self, user: str) -> dict[str, SessionEntry]:
        return visible_sessions(self._sessions.get(user, {}), self._live())

    async def sessions_many(self, users: Iterable[str]) -> dict[str, dict[str, SessionEntry]]:
        live = self._live()
        return {user: visible_sessions(self._sessions.get(user, {}), live) for user in users}

    async def set_last_seen(self, user: str, ms: int) -> None:
        if ms > self._last_seen.get(user, -1):
            self._last_seen[user] = ms

    async def last_seen(self, user: str) -> int | None:
        return self._last_seen.get(user)

    async def add_usage(self, usage: Mapping[tuple[str, str], int],
                        ttl: float) -> dict[tuple[str, str], int]:
        now = self._clock()
        totals = {}
        for key, count in usage.items():
            total, expires = self._usage.get(key, (0, 0.0))
            total = (total if expires > now else 0) + count
            self._usage[key] = (total, now + ttl)
            totals[key] = total
        if len(self._usage) > 2 * len(usage) + 1024:  # forget the lapsed ones now and then
            self._usage = {k: v for k, v in self._usage.items() if v[1] > now}
        return totals

    async def close(self) -> None:
        """Nothing to release: the state is the process's own."""
