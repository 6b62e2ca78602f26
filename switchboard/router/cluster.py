"""Cluster routing (docs/cluster.md): the Router of a node in a cluster, put together from parts
with one job each, over one mesh of TCP links and one registry:

* membership.py: this node's lease, the members and the ownership ring;
* forwarding.py: sends forwarded to the chat's owner and their answers, receipt notes to it;
* send_order.py: a chat's sends in their order across an owner change;
* locations.py: which users are connected to which node, told between the nodes;
* fanout.py: committed messages and pushes to the nodes that hold the users' devices;
* rebalance.py: devices asked to move when one node holds far more than another;
* broadcasts.py: invalidations and kicks to every node;
* sessions.py: where this node's devices are recorded, what the registry knows about users;
* gossip.py: presence between nodes.

This module only wires them and routes each mesh frame to the part that handles it.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection, Mapping, Sequence

from switchboard.core.futures import Done, awaited
from switchboard.core.messaging import MessageService
from switchboard.core.metrics import Metric, counter
from switchboard.core.model import CommitResult, MembershipEvent, SendRequest, StoredMessage
from switchboard.core.remote_users import RemoteUsers
from switchboard.core.tasks import TaskGroup
from switchboard.proto.codec import BadRecord
from switchboard.proto.v1 import mesh_pb2 as mesh

from .base import Invalidation, LocalNode
from .broadcasts import Broadcasts
from .fanout import Fanout
from .forwarding import Forwarding
from .gossip import PresenceGossip
from .locations import Locations
from .rebalance import Rebalancer
from .membership import Membership
from .mesh import Link, Mesh
from .mesh_auth import MeshTls
from .registry import Registry
from .send_order import SendOrder
from .sessions import Sessions

log = logging.getLogger(__name__)


class MeshRouter:
    sees_every_commit = False  # a push can be missed: a chat's first offer reads cursors

    def __init__(self, messages: MessageService, node: LocalNode, *, node_id: str,
                 mesh_host: str, mesh_port: int, registry: Registry, lease_ttl: float,
                 heartbeat_interval: float, link_timeout: float, forward_timeout: float,
                 phi_threshold: float = 8.0, acceptable_pause: float = 2.0,
                 link_grace: float = 1.0, rebalance_interval: float = 0.0,
                 rebalance_rate: float = 0.0, rebalance_tolerance: float = 0.1, mesh_secret: bytes = b"",
                 mesh_tls: MeshTls | None = None, remote: RemoteUsers | None = None) -> None:
        """`messages` fans its commits out through `committed` (the caller passes it in);
        `remote`: the other nodes' users, shared with the node's presence registry."""
        self.node_id = node_id
        self.registry = registry
        self._messages = messages
        self._node = node
        self._mesh_host = mesh_host
        self._mesh_port = mesh_port
        self._tasks = TaskGroup()
        self._linked_before: set[str] = set()
        self._stopped = False
        self.mesh = Mesh(node_id, 0, self, heartbeat_interval=heartbeat_interval,
                         link_timeout=link_timeout, phi_threshold=phi_threshold,
                         acceptable_pause=acceptable_pause, secret=mesh_secret, tls=mesh_tls)
        self.membership = Membership(node_id, self.mesh, registry, lease_ttl=lease_ttl,
                                     link_timeout=link_timeout, link_grace=link_grace,
                                     ring_changed=node.cluster_changed,
                                     registered_again=self._registered_again)
        self.mesh.epoch = self.membership.epoch
        self.forwarding = Forwarding(self.mesh, node, messages.submit_send,
                                     forward_timeout=forward_timeout)
        self.send_order = SendOrder(self.membership.owner, self.forwarding.submit)
        self.gossip = PresenceGossip(self.mesh, node)
        self.locations = Locations(self.mesh, node.kick, remote, self.gossip.ride_along)
        self.fanout = Fanout(self.mesh, node, self.locations)
        self.broadcasts = Broadcasts(self.mesh, node)
        self.sessions = Sessions(self.mesh, node, registry, self.locations, self._tasks,
                                 lambda: self.membership.epoch)
        self.rebalancer = Rebalancer(self.mesh, node, lambda: self.locations.connections,
                                     interval=rebalance_interval, rate=rebalance_rate,
                                     tolerance=rebalance_tolerance)
        self._handlers = {
            "forward_send": self.forwarding.on_forward_send,
            "send_result": self.forwarding.on_send_result,
            "receipt_note": self.forwarding.on_receipt_note,
            "deliver": self.fanout.on_deliver,
            "push": self.fanout.on_push,
            "invalidate": self.broadcasts.on_invalidate,
            "kick": self.broadcasts.on_kick,
            "presence": self.gossip.on_presence,
            "located": self.locations.on_located,
            "located_ack": self.locations.on_located_ack,
            "load": self.rebalancer.on_load,
        }

    @property
    def ring(self):
        return self.membership.ring

    @property
    def epoch(self) -> int:
        return self.membership.epoch

    def owner(self, chat_id: str) -> str:
        return self.membership.owner(chat_id)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        port = await self.mesh.listen(self._mesh_host, self._mesh_port)
        await self.membership.join(f"{self._mesh_host}:{port}")
        self.rebalancer.start()
        log.info("mesh node %s (epoch %d) on %s, ring %s", self.node_id, self.epoch,
                 self.membership.address, ", ".join(self.ring.nodes))

    async def stop(self) -> None:
        """Leave after the writer's last commits went out (the gateway closes the writer first):
        their Deliver frames leave, then the links close, peers re-ring at once and fail (so
        devices retry) whatever they forwarded here since."""
        if self._stopped:
            return
        self._stopped = True
        await self.rebalancer.stop()
        await self.membership.leave()
        await asyncio.sleep(0)  # the links write what this turn queued
        await self.mesh.close()
        self.forwarding.fail_pending(None, "node leaving the cluster")
        self.locations.stop()
        await self._tasks.cancel()
        self.gossip.stop()

    async def close(self) -> None:
        """After the last session was dropped (the gateway's drain)."""
        await self.registry.close()

    def readiness(self) -> dict[str, bool]:
        """Not ready while this life of the node is not registered (sessions put now would
        be invisible)."""
        return {"cluster_registered": self.membership.registered}

    async def _registered_again(self) -> None:
        await self.sessions.put_again()

    # ------------------------------------------------------------------ mesh events
    def link_up(self, link: Link) -> None:
        self.locations.link_up(link)  # first: the peer sends this node everything until then
        self.membership.links_changed()
        if link.node_id in self._linked_before:
            # Deliver frames sent while the link was down are lost: fill from the store
            self._tasks.spawn(self._node.catch_up())
        self._linked_before.add(link.node_id)
        self.gossip.link_up(link)
        self.rebalancer.link_up(link)

    def link_down(self, link: Link) -> None:
        self.locations.link_down(link.node_id)
        self.rebalancer.link_down(link.node_id)
        self.membership.link_down(link)
        self.forwarding.fail_pending(link.node_id, f"owner {link.node_id} unreachable")
        self._node.node_gone(link.node_id)

    def peer_refused(self, node_id: str) -> None:
        self.membership.peer_refused(node_id)

    def frame(self, link: Link, frame: mesh.MeshFrame) -> None:
        kind = frame.WhichOneof("body")
        handler = self._handlers.get(kind)
        if handler is None:
            log.warning("unexpected mesh frame %s from %s", kind, link.node_id)
            return
        try:
            handler(link, getattr(frame, kind))
        except BadRecord as exc:  # a peer that knows more than this node: drop the record
            log.warning("mesh frame %s from %s refused: %s", kind, link.node_id, exc)
        except Exception:
            log.exception("mesh frame %s from %s failed", kind, link.node_id)

    # ------------------------------------------------------------------ Router
    def submit_send(self, send: SendRequest, done: Done) -> None:
        self.send_order.submit(send, done)

    def submit_event(self, chat_id: str, event: MembershipEvent) -> asyncio.Future[CommitResult]:
        """In order with the chat's sends (whose membership check it changes)."""
        return awaited(self.send_order.submit, SendRequest.membership(chat_id, event))

    def committed(self, chat_id: str, members: Mapping, messages: list[StoredMessage]) -> None:
        """The fan-out of this node's MessageService."""
        self.fanout.committed(chat_id, members, messages)

    def note_receipt(self, chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        self.forwarding.note_receipt(self.owner(chat_id), chat_id, user, delivered, read,
                                     public_read)

    def note_delivered(self, chat_id: str, delivered: dict[str, int]) -> None:
        self.forwarding.note_delivered(self.owner(chat_id), chat_id, delivered)

    def push(self, users: Collection[str], data: bytes,
             exclude: tuple[str, str] | None = None) -> None:
        self.fanout.push(users, data, exclude)

    def invalidate(self, kind: Invalidation, key: str, removed: Sequence[str] = ()) -> None:
        self.broadcasts.invalidate(kind, key, removed)

    def kick(self, user: str, device: str, code: int, reason: str) -> None:
        self.broadcasts.kick(user, device, code, reason)

    def session_opened(self, user: str, device: str, opened_ms: int) -> Awaitable[bool]:
        return self.sessions.opened(user, device, opened_ms)

    def session_closed(self, user: str, device: str) -> None:
        self.sessions.closed(user, device)

    def presence_changed(self, user: str, online: bool, last_seen_ms: int) -> None:
        self.gossip.changed(user, online, last_seen_ms)
        if not online and last_seen_ms:
            self.sessions.left(user, last_seen_ms)

    async def online_devices(self, user: str) -> set[str]:
        return await self.sessions.online_devices(user)

    async def last_seen(self, user: str) -> int | None:
        return await self.sessions.last_seen(user)

    async def share_usage(self, usage: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        return await self.sessions.share_usage(usage)

    def metrics(self) -> list[Metric]:
        return [counter("cluster_mesh_refused",
                        "mesh connections refused at the handshake (secret, TLS, garbage)",
                        self.mesh.refused),
                counter("cluster_mesh_writes", "writes to mesh links (one per link per "
                        "event-loop turn with output)", self.mesh.writes),
                counter("cluster_mesh_reads", "reads from mesh links: each a wake-up for the "
                        "frames of one or more writes of a peer", self.mesh.reads),
                *(counter("cluster_links_lost", "up mesh links that went down, by why "
                          "(silent: the failure detector's verdict; closed: by the peer or "
                          "TCP; local: by this node)", count, cause=loss.value)
                  for loss, count in self.mesh.lost.items()),
                *self.membership.metrics(), *self.forwarding.metrics(),
                *self.send_order.metrics(), *self.fanout.metrics(),
                *self.locations.metrics(), *self.rebalancer.metrics(),
                *self.registry.metrics()]
