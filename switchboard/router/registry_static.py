"""The Registry of a static member list (`cluster.peers`, `serve --workers N`): membership is
the configuration and nothing else is shared, so no session is recorded anywhere.

Every lookup of where a user is answers EVERYWHERE (registry.py), so fan-out, pushes and kicks
go to every node; `sessions` knows no device, `last_seen` is None (ask the store) and
`add_usage` shares nothing (each node enforces the per-user limits on its own). A lease never
lapses: a member is in the ring while its mesh link is up.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from switchboard.core.ids import now_ms

from .registry import EVERYWHERE, NodeInfo, Registry, SessionEntry


class StaticRegistry(Registry):
    def __init__(self, members: Mapping[str, str]) -> None:
        """members: node id -> mesh address "host:port" (this node may be among them)."""
        self._members = {node: NodeInfo(address, 0) for node, address in members.items()}
        self._epoch = 0

    async def register_node(self, node_id: str, address: str, ttl: float) -> int:
        """A new life: the wall clock in ms, so a restarted node's epoch is higher."""
        self._epoch = max(now_ms(), self._epoch + 1)
        return self._epoch

    async def refresh_node(self, node_id: str, epoch: int, ttl: float) -> bool:
        return epoch == self._epoch

    async def nodes(self) -> dict[str, NodeInfo]:
        return dict(self._members)

    async def put_session(self, user: str, device: str, node_id: str,
                          node_epoch: int) -> SessionEntry | None:
        return EVERYWHERE  # an older connection of the device may be on any node

    async def drop_session(self, user: str, device: str, node_id: str) -> bool:
        return False

    async def sessions(self, user: str) -> dict[str, SessionEntry]:
        return {}

    async def sessions_many(self, users: Iterable[str]) -> dict[str, dict[str, SessionEntry]]:
        return {user: {"": EVERYWHERE} for user in users}

    async def set_last_seen(self, user: str, ms: int) -> None:
        return None  # the store has it (devices.seen)

    async def last_seen(self, user: str) -> int | None:
        return None

    async def add_usage(self, usage: Mapping[tuple[str, str], int],
                        ttl: float) -> dict[tuple[str, str], int]:
        return {}

    async def close(self) -> None:
        return None
