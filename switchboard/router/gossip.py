"""Presence between nodes: each node tells every peer which users are online through it, a
snapshot when a link comes up, then its changes in one frame at most every `interval`; a peer
whose link drops takes its users' presence with it. This costs O(nodes) per frame: right for
tens of nodes, and the piece to replace with per-subject subscriptions at the seeds' full scale.

Why at most every `interval` rather than every loop turn: every connect and last disconnect of a
user is a change, so in a reconnect storm a frame per turn was a write to every peer per
handshake, and a wake-up of every peer to read it (with 10 workers on a host, a third of the
mesh writes of a known device's reconnect). A change after a quiet `interval` still goes at the
end of its turn; within one, changes wait for the next frame, so a peer learns of them at most
`interval` later (well inside `timers.presence_interval`, which paces what subscribers see), and
a flap in between (online, then invisible) is told as its last state only.

Changes waiting for the interval also leave whenever the location map's frame of arrivals goes
to every peer (`ride_along`): the mesh writes what one turn queued for a link in one write, so
in a reconnect storm, where arrivals leave once per acknowledgement round trip, presence costs
no writes or wake-ups of its own."""
from __future__ import annotations

import asyncio
import math

from switchboard.proto.v1 import mesh_pb2 as mesh

from .base import LocalNode
from .mesh import Link, Mesh

#: Seconds between two presence frames to the peers, at least.
INTERVAL = 0.05


class PresenceGossip:
    def __init__(self, mesh: Mesh, node: LocalNode, interval: float = INTERVAL) -> None:
        self._mesh = mesh
        self._node = node
        self.interval = interval
        self.frames = 0  # PresenceStates frames sent to the peers on their own (each to all)
        self.rode = 0    # and along with a frame of arrivals (in its writes)
        self._out: dict[str, tuple[bool, int]] = {}
        self._flush: asyncio.Handle | None = None
        self._last = -math.inf  # loop time of the last frame

    def changed(self, user: str, online: bool, last_seen_ms: int) -> None:
        """Batched: one PresenceStates frame to every peer, at the end of this turn, or
        `interval` after the last one when that was sent less than `interval` ago."""
        self._out[user] = (online, last_seen_ms)
        if self._flush is None:
            loop = asyncio.get_running_loop()
            wait = self._last + self.interval - loop.time()
            self._flush = loop.call_later(wait, self._send) if wait > 0 else \
                loop.call_soon(self._send)

    def _send(self) -> None:
        self._flush = None
        self.frames += 1
        self._broadcast()

    def _broadcast(self) -> None:
        self._last = asyncio.get_running_loop().time()
        states, self._out = self._out, {}
        self._mesh.broadcast(mesh.MeshFrame(presence=mesh.PresenceStates(users=[
            mesh.UserPresence(user_id=u, online=on, last_seen_ms=seen)
            for u, (on, seen) in states.items()])))

    def ride_along(self) -> None:
        """A frame to every peer leaves in this turn (locations.py's arrivals): the changes
        waiting for the interval go now, in the same write to each link, at no write (and no
        wake-up of a peer) of their own."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
            self.rode += 1
            self._broadcast()

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
