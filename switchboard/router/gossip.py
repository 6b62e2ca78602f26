"""Presence between nodes: each node tells every peer which users are online through it, a
snapshot when a link comes up, then changes batched per event-loop turn; a peer whose link
drops takes its users' presence with it. This costs O(nodes) per presence flip: right for tens
of nodes, and the piece to replace with per-subject subscriptions at the seeds' full scale."""
from __future__ import annotations

import asyncio

from switchboard.proto.v1 import mesh_pb2 as mesh

from .base import LocalNode
from .mesh import Link, Mesh


class PresenceGossip:
    def __init__(self, mesh: Mesh, node: LocalNode) -> None:
        self._mesh = mesh
        self._node = node
        self._out: dict[str, tuple[bool, int]] = {}
        self._flush: asyncio.Handle | None = None

    def changed(self, user: str, online: bool, last_seen_ms: int) -> None:
        """Batched: one PresenceStates frame per event-loop turn to every peer."""
        self._out[user] = (online, last_seen_ms)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._flush = None
        states, self._out = self._out, {}
        self._mesh.broadcast(mesh.MeshFrame(presence=mesh.PresenceStates(users=[
            mesh.UserPresence(user_id=u, online=on, last_seen_ms=seen)
            for u, (on, seen) in states.items()])))

    def link_up(self, link: Link) -> None:
        link.send(mesh.MeshFrame(presence=mesh.PresenceStates(snapshot=True, users=[
            mesh.UserPresence(user_id=u, online=on, last_seen_ms=seen)
            for u, on, seen in self._node.presence_snapshot()])))

    def on_presence(self, link: Link, states: mesh.PresenceStates) -> None:
        self._node.remote_presence(link.node_id, [(s.user_id, s.online, s.last_seen_ms)
                                                  for s in states.users], states.snapshot)

    def stop(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
