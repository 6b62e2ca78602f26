"""Who is in the cluster and who owns which chat: this node's lease in the registry, the
members read back from it, and the ownership ring built from the members this node has an up
mesh link to (docs/cluster.md, "Members", "Ownership and fencing").

A node whose process is gone (crash, kill -9) leaves every ring at once instead of after its
lease lapses, and its chats move to their next owner. A link that merely blips does not move
chats (docs/cluster.md, "Blips do not move chats"): when a link is closed by its peer or by TCP,
the node stays on the ring for link_grace while the mesh redials (or, on the accepting side,
probes its address); it leaves at once when that dial or probe is refused (nothing listens: the
process is gone), when the grace runs out without a link, or when the failure detector declared
it dead (a silence already long past any blip). Nodes may briefly disagree about an owner; the
store fences the seq, so that costs the order of pushes, never correctness.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from switchboard.core.ids import now_ms
from switchboard.core.metrics import Metric, counter, gauge
from switchboard.core.tasks import watch

from .mesh import Link, LinkLoss, Mesh
from .registry import Registry, RegistryUnavailable
from .ring import Ring

log = logging.getLogger(__name__)

SETTLE_MAX = 3.0  # s a starting node waits at most for its links before taking devices


class Membership:
    def __init__(self, node_id: str, mesh: Mesh, registry: Registry, *, lease_ttl: float,
                 link_timeout: float, link_grace: float = 0.0, ring_changed: Callable[[], None],
                 registered_again: Callable[[], Awaitable[None]]) -> None:
        """ring_changed: the ring was rebuilt (cached state may belong to other owners now).
        registered_again: the lease was lost and the node registered under a new epoch; put
        every session again (awaited before the members are polled again)."""
        self.node_id = node_id
        self.epoch = now_ms()
        self.address = ""
        self.registered = False
        self.ring = Ring([node_id], 0)
        self._mesh = mesh
        self._registry = registry
        self._lease_ttl = lease_ttl
        self._settle = min(link_timeout, SETTLE_MAX)
        self._link_grace = link_grace
        self._held: dict[str, asyncio.TimerHandle] = {}  # node -> end of its grace
        self._ring_changed = ring_changed
        self._registered_again = registered_again
        self._members: dict[str, str] = {}    # node id -> mesh address, self excluded
        self._ring_epoch = itertools.count(1)
        self._maintenance: asyncio.Task | None = None
        self._leaving = False
        self.reregistrations = 0
        self.ring_changes = 0
        self.holds = 0           # links that went down and kept their node on the ring
        self.holds_ridden_out = 0  # ... whose link came back within the grace

    async def join(self, address: str) -> None:
        """Register with the mesh listening at `address`, read the members, keep the lease."""
        self.address = address
        await self._register()
        await self._poll_members()
        self._maintenance = watch(asyncio.ensure_future(self._maintain()))
        await self._links_settled()

    async def leave(self) -> None:
        """Stop refreshing the lease (it lapses after lease_ttl, like a crash)."""
        self._leaving = True
        for handle in self._held.values():
            handle.cancel()
        self._held.clear()
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
            self._maintenance = None

    def owner(self, chat_id: str) -> str:
        return self.ring.owner(chat_id)

    def link_down(self, link: Link) -> None:
        """A link went down: its node leaves the ring now if the detector gave up on it,
        else it is held for link_grace (see the module docstring)."""
        node = link.node_id
        if (link.loss is LinkLoss.SILENT or self._link_grace <= 0 or self._leaving
                or node not in self.ring.nodes or node in self._held):
            self.links_changed()
            return
        self.holds += 1
        self._held[node] = asyncio.get_running_loop().call_later(
            self._link_grace, self._release, node, f"no link for {self._link_grace}s")
        log.info("link to %s down (%s): it keeps its chats for up to %.1fs", node,
                 link.loss.value if link.loss else "?", self._link_grace)

    def peer_refused(self, node_id: str) -> None:
        """A dial or probe to `node_id` was refused: its process is gone."""
        if node_id in self._held:
            self._release(node_id, "connection refused")

    def _release(self, node_id: str, why: str) -> None:
        """Also a timer callback (the grace ran out): nothing may raise out of it."""
        handle = self._held.pop(node_id, None)
        if handle is not None:
            handle.cancel()
            log.info("%s leaves the ring: %s", node_id, why)
            try:
                self.links_changed()
            except Exception:
                log.exception("ring change after %s left failed", node_id)

    def links_changed(self) -> None:
        """A link came up or went down: the ring may change."""
        for node in [n for n in self._held if self._mesh.link(n) is not None]:
            self._held.pop(node).cancel()  # back within the grace: nothing moved
            self.holds_ridden_out += 1
            log.info("link to %s back within the grace", node)
        live = [self.node_id] + [n for n in self._members
                                 if self._mesh.link(n) is not None or n in self._held]
        if set(live) != set(self.ring.nodes):
            self.ring = Ring(live, next(self._ring_epoch))
            self.ring_changes += 1
            self._ring_changed()
            log.info("ring %d: %s", self.ring.epoch, ", ".join(self.ring.nodes))

    async def _links_settled(self) -> None:
        """Give the links to the known members up to link_timeout (SETTLE_MAX at most) to
        come up before this node takes devices, so that its first ring already has them: chats
        then do not change owner under the first sends. A member that does not answer joins the
        ring when it does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settle
        while any(self._mesh.link(n) is None for n in self._members) and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def _register(self) -> None:
        self.epoch = await self._registry.register_node(self.node_id, self.address,
                                                        self._lease_ttl)
        self._mesh.epoch = self.epoch
        self.registered = True

    async def _maintain(self) -> None:
        """Refresh the lease and re-read the members every lease_ttl/3; a refresh refused means
        the lease lapsed or Redis may have lost writes: register anew and put every session
        again (docs/cluster.md, "Leases and epochs"). The loop also checks `_leaving` itself,
        so it ends at leave() whatever a registry call does with the cancel."""
        while not self._leaving:
            await asyncio.sleep(self._lease_ttl / 3)
            if self._leaving:
                return
            try:
                if not await self._registry.refresh_node(self.node_id, self.epoch,
                                                         self._lease_ttl):
                    self.reregistrations += 1
                    log.warning("lease of %s lost: registering again and re-putting sessions",
                                self.node_id)
                    self.registered = False
                    await self._register()
                    await self._registered_again()
                await self._poll_members()
            except RegistryUnavailable as exc:
                log.warning("registry unavailable: %s", exc)
            except Exception:
                log.exception("cluster maintenance failed")

    async def _poll_members(self) -> None:
        """Members with a live lease, plus any node whose link is up: a node re-registering
        after a Redis failover has no lease for a moment, and is alive all the same."""
        live = await self._registry.nodes()
        members = {n: info.address for n, info in live.items() if n != self.node_id}
        for node_id, address in self._members.items():
            if node_id not in members and self._mesh.link(node_id) is not None:
                members[node_id] = address
        if members != self._members:
            self._members = members
            self._mesh.set_peers(members)
            self.links_changed()

    def metrics(self) -> list[Metric]:
        return [
            counter("cluster_reregistrations", "lease lost and registered again",
                    self.reregistrations),
            counter("cluster_ring_changes", "ownership rings built", self.ring_changes),
            gauge("cluster_links_up", "mesh links up", len(self._mesh.links)),
            counter("cluster_link_holds", "links that went down while their node kept its "
                    "chats for cluster.link_grace", self.holds),
            counter("cluster_link_holds_ridden_out", "held links that came back within the "
                    "grace (a blip: no chat moved)", self.holds_ridden_out),
            gauge("cluster_ring_nodes", "nodes on this node's ownership ring",
                  len(self.ring.nodes)),
        ]
