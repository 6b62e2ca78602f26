"""Devices back to a node that returns (docs/cluster.md, "Rebalancing").

Devices stay where they are until something moves them: after a gateway restarts, the others
keep the devices that fled to them, and the newcomer would hold a fraction of its share for
good. So every `interval` each node tells its peers how many connections it holds (`Load`), and
a node holding clearly more than the mean while some node holds clearly less asks part of its
excess to reconnect: a Goaway with a short jittered delay and close 1001, as a drain does,
spread over the next interval. The devices reconnect to another endpoint (the SDK moves on to
its next one; a load balancer picks one), so one round fills the newcomer only in part; the
rounds repeat until no node is more than `tolerance` below the mean.

Why it cannot stampede: a round moves at most half of this node's excess and at most `rate`
devices per second, spread evenly over the interval; nothing moves while every node is within
`tolerance` of the mean; a device connected for less than two intervals is never asked, so no
device bounces between nodes; and the reconnects land over the interval, not at once.
Simulated (tests/unit/test_rebalance.py): two nodes of 3,000 devices and a returning empty one
are within 10 % of the mean after 9 rounds, having moved 3,700 devices in all: at least 2,000
must move to fill it, and a moved device lands on it only half the time (it picks among the
others); "every device reconnect" would move 6,000 at once.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping

from switchboard.core.metrics import Metric, counter
from switchboard.core.tasks import watch
from switchboard.proto.v1 import mesh_pb2 as mesh

from .base import LocalNode
from .mesh import Link, Mesh

log = logging.getLogger(__name__)

FRACTION = 0.5         # of this node's excess asked to move per round
STEP = 0.1             # s between two batches of Goaways within a round
RECONNECT_SPREAD_MS = 1000  # a moved device's reconnect delay: uniform in [0, this]


def to_move(mine: int, peers: Mapping[str, int], *, tolerance: float, cap: int) -> int:
    """How many of this node's `mine` devices to ask to move this round, given the peers'
    counts: half of its excess over the mean, at most `cap`, and none unless some node is below
    the mean by more than `tolerance` (a fraction of the mean). Every node above the mean
    gives, so a lone returning node is filled by all the others."""
    if not peers:
        return 0
    loads = [mine, *peers.values()]
    mean = sum(loads) / len(loads)
    excess = mine - mean
    if excess < 1 or min(loads) >= mean * (1 - tolerance):
        return 0
    return min(cap, math.ceil(excess * FRACTION))


class Rebalancer:
    def __init__(self, mesh_: Mesh, node: LocalNode, connections, *, interval: float,
                 rate: float, tolerance: float) -> None:
        """connections(): how many devices this node holds now. interval 0 turns moving off
        (the counts are still told, so peers see this node)."""
        self._mesh = mesh_
        self._node = node
        self._connections = connections
        self._interval = interval
        self._rate = rate
        self._tolerance = tolerance
        self._peers: dict[str, int] = {}
        self._task: asyncio.Task | None = None
        self.moved = 0

    def start(self) -> None:
        if self._interval > 0:
            self._task = watch(asyncio.ensure_future(self._run()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # ------------------------------------------------------------------ counts
    def link_up(self, link: Link) -> None:
        link.send(self._load())

    def link_down(self, node_id: str) -> None:
        self._peers.pop(node_id, None)

    def on_load(self, link: Link, load: mesh.Load) -> None:
        self._peers[link.node_id] = load.connections

    def _load(self) -> mesh.MeshFrame:
        return mesh.MeshFrame(load=mesh.Load(connections=self._connections()))

    # ------------------------------------------------------------------ rounds
    async def _run(self) -> None:
        """Tell the count, then spend the interval moving devices or waiting."""
        while True:
            self._mesh.broadcast(self._load())
            peers = {n: c for n, c in self._peers.items() if self._mesh.link(n) is not None}
            count = to_move(self._connections(), peers, tolerance=self._tolerance,
                            cap=int(self._rate * self._interval))
            if not count:
                await asyncio.sleep(self._interval)
                continue
            log.info("rebalancing: asking %d of %d devices to reconnect elsewhere (peers "
                     "hold %s)", count, self._connections(),
                     ", ".join(f"{n} {c}" for n, c in sorted(peers.items())))
            await self._move(count)

    async def _move(self, count: int) -> None:
        """`count` devices over one interval, in even batches every STEP."""
        batches = max(1, int(self._interval / STEP))
        settled_ms = int(2 * self._interval * 1000)
        moved = 0
        for batch in range(batches):
            due = math.ceil(count * (batch + 1) / batches) - moved
            if due > 0:
                moved += self._node.move_devices(due, RECONNECT_SPREAD_MS, settled_ms)
            await asyncio.sleep(STEP)
        self.moved += moved

    def metrics(self) -> list[Metric]:
        return [counter("cluster_rebalanced_devices",
                        "devices asked to reconnect elsewhere to even the nodes' loads",
                        self.moved)]
