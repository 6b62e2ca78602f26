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
from .registry import Registry, RegistryUnavailable, nodes_named

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 2.0  # s: a slower lookup would hold up every later fan-out: broadcast
LEAVING_GRACE = 2.0   # s a leaving node waits for its last fan-out lookups


class _Lookup:
    """A commit waiting for the registry to say where its members are."""
    __slots__ = ("lookup", "chat_id", "members", "messages", "timer", "expired")

    def __init__(self, lookup: asyncio.Future, chat_id: str, members: Mapping,
                 messages: list[StoredMessage]) -> None:
        self.lookup = lookup
        self.chat_id = chat_id
        self.members = members
        self.messages = messages
        self.timer: asyncio.TimerHandle
        self.expired = False


def _retrieve(future: asyncio.Future) -> None:
    """A lookup nobody waits for any more: take its outcome so asyncio does not warn."""
    if not future.cancelled():
        future.exception()


class Fanout:
    def __init__(self, mesh: Mesh, node: LocalNode, registry: Registry,
                 tasks: TaskGroup) -> None:
        self._mesh = mesh
        self._node = node
        self._registry = registry
        self._tasks = tasks
        self._lookups: deque[_Lookup] = deque()
        self.deliver_frames = 0
        self.lookup_failures = 0

    # ------------------------------------------------------------------ commits
    def committed(self, chat_id: str, members: Mapping, messages: list[StoredMessage]) -> None:
        """MessageService's fan-out on the owner, right after a commit (one chat, seq order)."""
        self._node.deliver(chat_id, members, messages)
        if not self._mesh.links:
            return
        pending = _Lookup(asyncio.ensure_future(self._registry.locate_many(members)), chat_id,
                          members, messages)
        self._lookups.append(pending)
        pending.lookup.add_done_callback(self._send_delivers)
        pending.timer = asyncio.get_running_loop().call_later(LOOKUP_TIMEOUT, self._expire,
                                                              pending)

    def _expire(self, pending: _Lookup) -> None:
        """The lookup is late: broadcast instead, without cancelling it (a cancel would cost
        the registry nothing, but waiting for it would hold up every later fan-out)."""
        pending.expired = True
        self._send_delivers()

    def _send_delivers(self, _: asyncio.Future | None = None) -> None:
        """Deliver frames leave in commit order whatever order the lookups finish in."""
        while self._lookups and (self._lookups[0].lookup.done() or self._lookups[0].expired):
            pending = self._lookups.popleft()
            pending.timer.cancel()
            lookup, chat_id, members, messages = (pending.lookup, pending.chat_id,
                                                  pending.members, pending.messages)
            if not lookup.done() or lookup.cancelled() or lookup.exception() is not None:
                self.lookup_failures += 1
                if not lookup.done():
                    lookup.add_done_callback(_retrieve)
                self._mesh.broadcast(mesh.MeshFrame(deliver=mesh.Deliver(
                    chat_id=chat_id, user_ids=list(members),
                    messages=[message_to_pb(m) for m in messages])))
                continue
            by_node: dict[str, list[str]] = {}
            for user, nodes in lookup.result().items():
                for node_id in self.nodes_of(nodes):
                    by_node.setdefault(node_id, []).append(user)
            if not by_node:
                continue
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
            await asyncio.wait([pending.lookup for pending in self._lookups],
                               timeout=LEAVING_GRACE)

    def abandon(self) -> None:
        """After the links closed: what is still looked up goes nowhere."""
        for pending in self._lookups:
            pending.timer.cancel()
            pending.lookup.cancel()
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
            located = await self._registry.locate_many(frame.user_ids)
        except RegistryUnavailable as exc:
            log.warning("push lookup failed, sending to every node: %s", exc)
            self._mesh.broadcast(mesh.MeshFrame(push=frame))
            return
        for node_id in self.nodes_of(node for nodes in located.values() for node in nodes):
            link = self._mesh.link(node_id)
            if link is not None:
                link.send(mesh.MeshFrame(push=frame))

    def on_push(self, link: Link, push: mesh.Push) -> None:
        exclude = (push.exclude_user_id, push.exclude_device_id) if push.exclude_user_id else None
        self._node.push(push.user_ids, push.frame, exclude)

    def nodes_of(self, nodes: Iterable[str]) -> set[str]:
        return nodes_named(nodes, self._mesh.links, self._mesh.node_id)

    def metrics(self) -> list[Metric]:
        return [
            counter("cluster_deliver_frames", "Deliver frames sent to other nodes",
                    self.deliver_frames),
            counter("cluster_fanout_lookup_failures",
                    "fan-outs broadcast because the registry failed", self.lookup_failures),
            gauge("cluster_fanouts_pending", "commits awaiting their session lookup for fan-out",
                  len(self._lookups)),
        ]
