"""Where this node's devices are recorded, and what the registry knows about users: sessions
put before a device's first sync and dropped when it goes, their re-put after a re-registration,
the devices and last seen of users on other nodes, and per-user rate-limit totals. Every
registry error ends here: the caller gets an answer (False, this node's view, None, {})."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from switchboard.core.tasks import TaskGroup

from .base import LocalNode
from .locations import Locations
from .registry import Registry, RegistryUnavailable, nodes_named
from .mesh import Mesh

log = logging.getLogger(__name__)

REPUT_SLICE = 256  # session writes in flight at once after a re-registration
USAGE_TTL = 120.0  # s a user's shared rate-limit totals outlive their last change


class Sessions:
    def __init__(self, mesh: Mesh, node: LocalNode, registry: Registry, locations: Locations,
                 tasks: TaskGroup, epoch: Callable[[], int]) -> None:
        """epoch(): this node's current life (it changes when the node registers anew)."""
        self._mesh = mesh
        self._node = node
        self._registry = registry
        self._locations = locations
        self._tasks = tasks
        self._epoch = epoch

    async def opened(self, user: str, device: str, opened_ms: int) -> bool:
        """Recorded in the registry (False when it did not answer: the device would not be
        kicked when it connects elsewhere), and known to every peer: the device's first sync
        may start when this returns True (locations.py says why)."""
        node_id = self._mesh.node_id
        epoch = self._epoch()
        known = self._locations.arrived(user)
        try:
            previous = await self._registry.put_session(user, device, node_id, epoch)
            while epoch != self._epoch():
                # the node registered anew meanwhile and re-put the sessions it held, which did
                # not include this one yet: put it under the new epoch too
                epoch = self._epoch()
                await self._registry.put_session(user, device, node_id, epoch)
        except RegistryUnavailable as exc:
            log.warning("session of %s/%s not recorded: %s", user, device, exc)
            self._locations.left(user)
            return False
        if previous is not None:
            self._locations.replaced(user, device, opened_ms,
                                     nodes_named((previous.node_id,), self._mesh.linked(), node_id))
        await known
        return True

    def closed(self, user: str, device: str) -> None:
        self._locations.left(user)
        self._tasks.spawn(self._drop(user, device))

    async def _drop(self, user: str, device: str) -> None:
        try:
            await self._registry.drop_session(user, device, self._mesh.node_id)
        except RegistryUnavailable as exc:
            # the entry stays; it names this node, which no longer holds the device: a push
            # for it is offered here and finds nobody, until the device connects again
            log.warning("session of %s/%s not dropped: %s", user, device, exc)

    async def put_again(self) -> None:
        """Every session this node holds, under the new epoch, REPUT_SLICE writes at a time;
        then every connection fills from the store what owners' lookups missed meanwhile."""
        sessions = self._node.sessions()
        for start in range(0, len(sessions), REPUT_SLICE):
            await asyncio.gather(*(
                self._registry.put_session(user, device, self._mesh.node_id, self._epoch())
                for user, device in sessions[start:start + REPUT_SLICE]))
        await self._node.catch_up()

    async def online_devices(self, user: str) -> set[str]:
        """This node's devices and those the registry knows (none with static peers)."""
        here = self._node.online_devices(user)
        try:
            return here | set(await self._registry.sessions(user))
        except RegistryUnavailable:
            return here

    def left(self, user: str, last_seen_ms: int) -> None:
        """The user's last device here went: other nodes may ask the registry when."""
        self._tasks.spawn(self._record_last_seen(user, last_seen_ms))

    async def _record_last_seen(self, user: str, last_seen_ms: int) -> None:
        try:
            await self._registry.set_last_seen(user, last_seen_ms)
        except Exception as exc:  # the store has it too (devices.seen): a lost write costs a read
            log.warning("last seen of %s not recorded: %s", user, exc)

    async def last_seen(self, user: str) -> int | None:
        try:
            return await self._registry.last_seen(user)
        except RegistryUnavailable:
            return None

    async def share_usage(self, usage: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        """Through the registry, one batch per sync interval; {} when it does not answer (each
        node on its own until it does) and with static peers, which share nothing: each node
        then enforces the limits on its own (docs/cluster.md)."""
        if not usage:
            return {}
        try:
            return await self._registry.add_usage(usage, USAGE_TTL)
        except RegistryUnavailable as exc:
            log.warning("usage not shared: %s", exc)
            return {}
