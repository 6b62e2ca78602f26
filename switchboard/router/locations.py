"""Which users have a connection on which node, told over the mesh: what fan-out and pushes
use to pick the nodes a frame goes to, with no registry round trip per message
(docs/cluster.md, "Fan-out").

Each node tells every peer the users connected to it: a snapshot when a link comes up, then
the changes batched per event-loop turn (`Located`), or, while an earlier frame of arrivals
awaits its acknowledgements, batched until they are in: one such frame in flight. And at most
one frame every `interval` (INTERVAL): a change after a quiet interval leaves at the end of its
turn, one within it waits until `interval` after the last frame. So a reconnect storm costs one
frame and one acknowledgement per peer per round trip or interval, whichever is longer, not
per connect, and a quiet node adds no wait to a connect. A node that has not yet had a peer's
snapshot sends that peer everything (every member of every chat), so the map is never
trusted before it is complete.

Why a fan-out cannot miss a device that just connected: before a connecting device's first
sync reads the store, its node sends the user's arrival to every peer it has a link to and
waits until each has applied it and said so (`LocatedAck`), or its link went down. An owner
that commits after its ack sees the user in its map and sends the Deliver; one that committed
before it did so before the sync's read, which returns the message. A peer whose link comes up
later gets the snapshot, and until it has read it, sends this node everything.

The same frame carries the kicks of replaced devices (a device that connected here closes its
older connections elsewhere, 4010), to the peers whose map entry names the user when the frame
is written; a peer whose snapshot has not arrived is named for every user. No other peer can
hold a connection the kick would close: a peer adds a connection to its hub only after every
linked peer acknowledged its arrival, and says `gone` only after the user's last connection
there left; one it is adding meanwhile joins its hub after this node's acknowledgement, which
leaves after this frame, too late for a kick in it. A peer of an older release (no
FEATURE_LOCATED_REPLACED in its Hello) gets a Kick frame per device instead.

Cost: one small frame to every peer per turn with connects or last disconnects of users on a
node (at most one per round trip or interval while arrivals keep coming), one acknowledgement
round trip before a device's first sync (two at most: the one in flight, then its own), up to
`interval` more on a node that sent a frame less than `interval` before, and, on every node, an
entry per user connected anywhere else in the cluster (its node's name, shared, in the entry
presence keeps for the user too: core/remote_users.py): the same order as the presence gossip
(O(nodes) per change, right for tens of nodes).
"""
from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable, Iterable

from switchboard.core.metrics import Metric, counter, gauge
from switchboard.core.remote_users import RemoteUsers
from switchboard.proto.codes import Close
from switchboard.proto.v1 import mesh_pb2 as mesh

from .broadcasts import kick_frame
from .mesh import Link, Mesh

REPLACED_REASON = "replaced by a newer connection"

#: Seconds between two Located frames to the peers, at least. Each frame costs a write to every
#: peer, a wake-up of each to read it and an acknowledgement back: with 10 workers on a 2-core
#: host, a reconnect storm told one or two arrivals per frame spent a third of the workers' CPU
#: on those. 50 ms, as presence (gossip.py), so the two leave in the same writes; a storm's
#: devices wait seconds for a core anyway, a quiet node's connect not at all.
INTERVAL = 0.05

Kick = Callable[[str, str, int, str, int], None]
"""kick(user, device, code, reason, before_ms): LocalNode.kick, what a replaced device does here."""


class Locations:
    def __init__(self, mesh_: Mesh, kick: Kick, remote: RemoteUsers | None = None,
                 ride_along: Callable[[], None] = lambda: None,
                 interval: float = INTERVAL) -> None:
        """remote: where other nodes' users are, shared with presence (one entry per user);
        ride_along(): called when a frame goes to every peer, so that what else waits to go to
        all of them (presence) leaves in the same writes; interval: seconds between two frames,
        at least."""
        self._mesh = mesh_
        self._kick = kick
        self._ride_along = ride_along
        self.interval = interval
        self._last = -math.inf                     # loop time the last frame left
        self._here: dict[str, int] = {}            # user -> connections on this node
        self.connections = 0                       # all of them
        self._remote = remote if remote is not None else RemoteUsers()
        self._known: set[str] = set()              # peers whose snapshot arrived
        self._arrived: set[str] = set()            # to tell at the end of this turn
        self._left: set[str] = set()
        self._replaced: list[tuple[mesh.Replaced, Iterable[str]]] = []  # kick, nodes named
        self._waiters: list[asyncio.Future] = []   # arrivals in the next frame
        self._flush: asyncio.Handle | None = None
        self._barriers = itertools.count(1)
        self._unacked: dict[int, tuple[set[str], asyncio.Future]] = {}
        self._in_flight = False                    # a barrier awaits acknowledgements
        self._stopped = False
        self.replaced_sent = 0  # kicks of replaced devices sent, one per (device, peer)
        self.frames_sent = 0    # Located frames written (one per turn with changes, per peer)
        self.arrivals_sent = 0  # users in their `here` lists, so arrivals per frame shows
        self.held = 0           # frames held for the interval (connects coming quickly)

    # ------------------------------------------------------------------ this node's users
    def arrived(self, user: str) -> asyncio.Future[None]:
        """A connection of `user` opened here; the future resolves once every peer linked now
        knows it (acknowledged, or its link went down)."""
        count = self._here.get(user, 0)
        self._here[user] = count + 1
        self.connections += 1
        self._left.discard(user)
        self._arrived.add(user)
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._schedule()
        return future

    def left(self, user: str) -> None:
        """A connection of `user` here closed (or was refused after `arrived`)."""
        self.connections -= 1
        count = self._here.get(user, 0) - 1
        if count > 0:
            self._here[user] = count
            return
        self._here.pop(user, None)
        self._arrived.discard(user)
        self._left.add(user)
        self._schedule()

    def _schedule(self) -> None:
        """At the end of this turn, or, while an earlier barrier awaits its acknowledgements,
        once they are in, and not before `interval` after the last frame: one barrier in
        flight and one frame per interval, so the arrivals of a reconnect storm leave in one
        frame per peer per round trip or interval instead of one per turn (docs/cluster.md,
        "Fan-out")."""
        if self._flush is not None or self._in_flight or self._stopped:
            return
        loop = asyncio.get_running_loop()
        wait = self._last + self.interval - loop.time()
        if wait > 0:
            self.held += 1
            self._flush = loop.call_later(wait, self._send)
        else:
            self._flush = loop.call_soon(self._send)

    def replaced(self, user: str, device: str, opened_ms: int, nodes: Iterable[str]) -> None:
        """The device connected here at opened_ms: its older connections on `nodes` close
        (4010); told in this turn's frame to those the map names for the user then."""
        self._replaced.append(
            (mesh.Replaced(user_id=user, device_id=device, before_ms=opened_ms), nodes))
        self._schedule()

    def _send(self) -> None:
        self._flush = None
        arrived, self._arrived = self._arrived, set()
        left, self._left = self._left, set()
        replaced = self._kicks(self._replaced)
        self._replaced = []
        waiters, self._waiters = self._waiters, []
        links = self._mesh.links
        barrier = next(self._barriers) if waiters and links else 0
        if arrived or left or replaced:
            if links:  # a node without peers has nothing to pace
                self._last = asyncio.get_running_loop().time()
            common = mesh.MeshFrame(located=mesh.Located(
                here=sorted(arrived), gone=sorted(left), barrier=barrier))
            payload = common.SerializeToString() if arrived or left else None  # once for all
            self.arrivals_sent += len(arrived)
            for node_id, link in links.items():
                kicks = replaced.get(node_id)
                if kicks is None:
                    if payload is not None:
                        link.send_encoded(payload)
                        self.frames_sent += 1
                    continue
                self.frames_sent += 1
                self.replaced_sent += len(kicks)
                if link.features & mesh.FEATURE_LOCATED_REPLACED:
                    frame = mesh.MeshFrame()
                    frame.CopyFrom(common)
                    frame.located.replaced.extend(kicks)
                    link.send(frame)
                else:  # an older release: the kicks as Kick frames of their own
                    if payload is not None:
                        link.send_encoded(payload)
                    for kick in kicks:
                        link.send(kick_frame(kick.user_id, kick.device_id, Close.REPLACED,
                                             REPLACED_REASON, kick.before_ms))
            if payload is not None:
                self._ride_along()
        if barrier:
            done = asyncio.get_running_loop().create_future()
            self._unacked[barrier] = (set(links), done)
            self._in_flight = True
            done.add_done_callback(lambda _: self._barrier_done(waiters))
        else:
            _release(waiters)

    def _barrier_done(self, waiters: list[asyncio.Future]) -> None:
        """Every peer acknowledged (or its link went down): these arrivals may sync, and what
        gathered meanwhile goes out."""
        self._in_flight = False
        _release(waiters)
        if self._waiters or self._arrived or self._left or self._replaced:
            self._schedule()

    def _kicks(self, replaced: list[tuple[mesh.Replaced, Iterable[str]]]
               ) -> dict[str, list[mesh.Replaced]]:
        """peer -> the kicks for it: those of `replaced` naming it, where the map names their
        user on it (or it has not sent its snapshot yet)."""
        kicks: dict[str, list[mesh.Replaced]] = {}
        for kick, nodes in replaced:
            there = self._remote.connected_on(kick.user_id)
            for node_id in nodes:
                if node_id in there or node_id not in self._known:
                    kicks.setdefault(node_id, []).append(kick)
        return kicks

    # ------------------------------------------------------------------ where others' users are
    def nodes_for(self, users: Iterable[str]) -> dict[str, list[str]]:
        """node id -> the users among `users` connected there (as far as its snapshot and
        changes say), for every peer with an up link; a peer whose snapshot has not arrived
        gets every user."""
        users = list(users)
        by_node = self._remote.by_node(users)
        for node_id in self._mesh.linked():
            if node_id not in self._known:
                by_node[node_id] = users
        return by_node

    def on_located(self, link: Link, located: mesh.Located) -> None:
        node_id = link.node_id
        remote = self._remote
        if located.snapshot:
            remote.forget_connections(node_id)
            self._known.add(node_id)
        for user in located.here:
            remote.connect(user, node_id)
        for user in located.gone:
            remote.disconnect(user, node_id)
        for kick in located.replaced:
            self._kick(kick.user_id, kick.device_id, Close.REPLACED, REPLACED_REASON,
                       kick.before_ms)
        if located.barrier:
            link.send(mesh.MeshFrame(located_ack=mesh.LocatedAck(barrier=located.barrier)))

    def on_located_ack(self, link: Link, ack: mesh.LocatedAck) -> None:
        self._acked(ack.barrier, link.node_id)

    def _acked(self, barrier: int, node_id: str) -> None:
        pending = self._unacked.get(barrier)
        if pending is None:
            return
        peers, done = pending
        peers.discard(node_id)
        if not peers:
            del self._unacked[barrier]
            done.set_result(None)

    # ------------------------------------------------------------------ links
    def link_up(self, link: Link) -> None:
        """The snapshot goes first: the peer sends this node everything until it has it."""
        link.send(mesh.MeshFrame(located=mesh.Located(snapshot=True, here=sorted(self._here))))

    def link_down(self, node_id: str) -> None:
        """What the peer said no longer holds, and its acknowledgements will not come."""
        self._remote.forget_connections(node_id)
        self._known.discard(node_id)
        for barrier in list(self._unacked):
            self._acked(barrier, node_id)

    def stop(self) -> None:
        """Leaving: nobody waits for an acknowledgement any more."""
        self._stopped = True
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        _release(self._waiters)
        self._waiters = []
        for _, done in self._unacked.values():
            if not done.done():
                done.set_result(None)
        self._unacked.clear()

    def metrics(self) -> list[Metric]:
        return [
            gauge("cluster_located_here", "users with a connection on this node",
                  len(self._here)),
            gauge("cluster_located_elsewhere",
                  "users this node knows to have a connection on a peer",
                  self._remote.connected_users),
            counter("cluster_replaced_kicks", "kicks sent to peers for a device that connected "
                    "here, one per peer whose location map entry could hold the device",
                    self.replaced_sent),
            gauge("cluster_location_barriers",
                  "connect announcements waiting for peers' acknowledgements",
                  len(self._unacked)),
            counter("cluster_located_frames", "Located frames sent to peers (one per peer "
                    "per batch of connects and last disconnects)", self.frames_sent),
            counter("cluster_located_arrivals", "users told to peers as arrived, once per "
                    "batch (arrivals over frames over peers is the coalescing)",
                    self.arrivals_sent),
            counter("cluster_located_held", "batches of connects and last disconnects held "
                    "until the interval after the previous one (a node busy with connects)",
                    self.held),
        ]


def _release(waiters: list[asyncio.Future]) -> None:
    for future in waiters:
        if not future.done():
            future.set_result(None)
