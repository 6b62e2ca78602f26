"""Fan-out to other nodes: committed messages (Deliver) and pushes (Push) go to the nodes the
registry names for the users, one frame per node (docs/cluster.md, "Fan-out").

After a commit the owner offers the messages to its own devices at once, looks up the members'
sessions (one batched read per commit and chat) and sends one Deliver per destination node, in
commit order. Why the lookup cannot miss a device: a connecting device's session is written
*before* its first sync reads the store, and the lookup happens *after* the commit; so either
the sync sees the message or the lookup sees the session. A registry that does not answer makes
the fan-out go to every peer (correct, costlier), as does one that records no sessions.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Collection, Iterable, Mapping

from switchboard.core.metrics import Metric, counter, gauge
from switchboard.core.model import StoredMessage
from switchboard.core.tasks import TaskGroup
from switchboard.proto.codec import message_from_pb, message_to_pb
from switchboard.proto.v1 import mesh_pb2 as mesh

from .base import LocalNode
from .mesh import Link, Mesh
from .registry import Registry, SessionEntry, nodes_named

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 2.0  # s: a slower lookup would hold up every later fan-out: broadcast
LEAVING_GRACE = 2.0   # s a leaving node waits for its last fan-out lookups


class Fanout:
    def __init__(self, mesh: Mesh, node: LocalNode, registry: Registry,
                 tasks: TaskGroup) -> None:
        self._mesh = mesh
        self._node = node
        self._registry = registry
        self._tasks = tasks
        self._lookups: deque[tuple[asyncio.Future, str, Mapping, list[StoredMessage]]] = deque()
        self.deliver_frames = 0
        self.lookup_failures = 0

    # ------------------------------------------------------------------ commits
    def committed(self, chat_id: str, members: Mapping, messages: list[StoredMessage]) -> None:
        """MessageService's fan-out on the owner, right after a commit (one chat, seq order)."""
        self._node.deliver(chat_id, members, messages)
        if not self._mesh.links:
            return
        lookup = asyncio.ensure_future(
            asyncio.wait_for(self._registry.sessions_many(members), LOOKUP_TIMEOUT))
        self._lookups.append((lookup, chat_id, members, messages))
        lookup.add_done_callback(self._send_delivers)

    def _send_delivers(self, _: asyncio.Future) -> None:
        """Deliver frames leave in commit order whatever order the lookups finish in."""
        while self._lookups and self._lookups[0][0].done():
            lookup, chat_id, members, messages = self._lookups.popleft()
            if lookup.cancelled() or lookup.exception() is not None:
                self.lookup_failures += 1
                self._mesh.broadcast(mesh.MeshFrame(deliver=mesh.Deliver(
                    chat_id=chat_id, user_ids=list(members),
                    messages=[message_to_pb(m) for m in messages])))
                continue
            by_node: dict[str, list[str]] = {}
            for user, devices in lookup.result().items():
                for node_id in self.nodes_of(devices.values()):
                    by_node.setdefault(node_id, []).append(user)
            encoded = [message_to_pb(m) for m in messages]
            for node_id, users in by_node.items():
                link = self._mesh.link(node_id)
                if link is not None:
                    link.send(mesh.MeshFrame(deliver=mesh.Deliver(
                        chat_id=chat_id, user_ids=users, messages=encoded)))
                    self.deliver_frames += 1

    def on_deliver(self, link: Link, deliver: mesh.Deliver) -> None:
        self._node.deliver(deliver.chat_id, dict.fromkeys(deliver.user_ids),
                           [message_from_pb(m) for m in deliver.messages])

    async def leave(self) -> None:
        """Before the links close: the last commits' lookups get LEAVING_GRACE to finish."""
        if self._lookups:
            await asyncio.wait([lookup for lookup, *_ in self._lookups], timeout=LEAVING_GRACE)

    def abandon(self) -> None:
        """After the links closed: what is still looked up goes nowhere."""
        for lookup, *_ in self._lookups:
            lookup.cancel()
        self._lookups.clear()

    # ------------------------------------------------------------------ pushes
    def push(self, users: Collection[str], data: bytes, exclude: tuple[str, str] | None) -> None:
        self._node.push(users, data, exclude)
        if not self._mesh.links:
            return
        frame = mesh.Push(user_ids=list(users), frame=data)
        if exclude is not None:
            frame.exclude_user_id, frame.exclude_device_id = exclude
        self._tasks.spawn(self._push_located(frame))

    async def _push_located(self, frame: mesh.Push) -> None:
        try:
            sessions = await self._registry.sessions_many(frame.user_ids)
        except Exception as exc:  # RegistryUnavailable, or the client failing mid-failover
            log.warning("push lookup failed, sending to every node: %s", exc)
            self._mesh.broadcast(mesh.MeshFrame(push=frame))
            return
        for node_id in self.nodes_of(entry for devices in sessions.values()
                                     for entry in devices.values()):
            link = self._mesh.link(node_id)
            if link is not None:
                link.send(mesh.MeshFrame(push=frame))

    def on_push(self, link: Link, push: mesh.Push) -> None:
        exclude = (push.exclude_user_id, push.exclude_device_id) if push.exclude_user_id else None
        self._node.push(push.user_ids, push.frame, exclude)

    def nodes_of(self, entries: Iterable[SessionEntry]) -> set[str]:
        return nodes_named(entries, self._mesh.links, self._mesh.node_id)

    def metrics(self) -> list[Metric]:
        return [
            counter("cluster_deliver_frames", "Deliver frames sent to other nodes",
                    self.deliver_frames),
            counter("cluster_fanout_lookup_failures",
                    "fan-outs broadcast because the registry failed", self.lookup_failures),
            gauge("cluster_fanouts_pending", "commits awaiting their session lookup for fan-out",
                  len(self._lookups)),
        ]
