"""The ownership ring over real mesh links on 127.0.0.1 (router/membership.py with mesh.py): a
link that is reset while both processes live and comes back within cluster.link_grace moves no
chat (the ring and ring_changes untouched on both sides), while a node whose process is gone
(its listener refuses the redial and the probe) leaves the ring at once, well within the grace.

The link between a and b runs through a TCP proxy the test can reset (RST to both ends), the way
a middlebox or a NIC reset drops a connection while both processes keep running."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import time

import pytest
import uvloop

from switchboard.router.membership import Membership
from switchboard.router.mesh import Link, LinkLoss, Mesh
from switchboard.router.registry_static import StaticRegistry
from tests.support.faultproxy import FaultProxy
from tests.support.waiting import wait_for

GRACE = 5.0  # long, so "within the grace" never depends on the machine's speed
TIMERS = dict(heartbeat_interval=0.05, link_timeout=2.0, backoff_min=0.01, backoff_max=0.1)


class Wiring:
    """What MeshRouter does with the mesh's events, for the membership alone."""

    def __init__(self) -> None:
        self.membership: Membership | None = None

    def link_up(self, link: Link) -> None:
        self.membership.links_changed()

    def link_down(self, link: Link) -> None:
        self.membership.link_down(link)

    def peer_refused(self, node_id: str) -> None:
        self.membership.peer_refused(node_id)

    def frame(self, link, frame) -> None:
        pass


class Member:
    def __init__(self, node_id: str, grace: float) -> None:
        self.node_id = node_id
        self.grace = grace
        self.wiring = Wiring()
        self.mesh = Mesh(node_id, 1, self.wiring, **TIMERS)
        self.port = 0
        self.membership: Membership | None = None

    async def listen(self) -> None:
        self.port = await self.mesh.listen("127.0.0.1", 0)

    def know(self, members: dict[str, str]) -> None:
        """Before any member joins: a link may come up as soon as the first one dials."""
        self.membership = self.wiring.membership = Membership(
            self.node_id, self.mesh, StaticRegistry(members), lease_ttl=60.0,
            link_timeout=TIMERS["link_timeout"], link_grace=self.grace, ring_changed=lambda: None,
            registered_again=_nothing)

    def ring(self) -> set[str]:
        return set(self.membership.ring.nodes)

    async def close(self) -> None:
        if self.membership is not None:
            await self.membership.leave()
        await self.mesh.close()


async def _nothing() -> None:
    pass


@contextlib.asynccontextmanager
async def three_members(grace: float = GRACE):
    """a, b and c linked, every ring full; a dials b through a proxy (a sorts lower)."""
    members = {name: Member(name, grace) for name in "abc"}
    proxy = None
    try:
        for member in members.values():
            await member.listen()
        proxy = await FaultProxy(members["b"].port).start()
        real = {name: f"127.0.0.1:{m.port}" for name, m in members.items()}
        for name, member in members.items():
            view = dict(real)
            if name == "a":
                view["b"] = proxy.address
            member.know(view)
        for name, member in members.items():
            await member.membership.join(real[name])
        await wait_for(lambda: all(m.ring() == set("abc") for m in members.values()),
                       message="every ring has a, b and c")
        yield members, proxy
    finally:
        for member in members.values():
            await member.close()
        if proxy is not None:
            await proxy.stop()


async def test_a_link_reset_and_back_within_the_grace_moves_no_chat():
    async with three_members() as (members, proxy):
        a, b = members["a"], members["b"]
        changes = {name: m.membership.ring_changes for name, m in members.items()}
        old_a, old_b = a.mesh.link("b"), b.mesh.link("a")
        assert proxy.reset() == 1
        # the reset reaches both ends; the link comes back as a new connection through the proxy
        await wait_for(lambda: old_a.loss is not None and old_b.loss is not None,
                       message="both ends saw the reset")
        assert old_a.loss is old_b.loss is LinkLoss.CLOSED
        await wait_for(lambda: a.mesh.link("b") not in (None, old_a)
                       and b.mesh.link("a") not in (None, old_b), message="the link back")
        assert a.membership.holds == b.membership.holds == 1
        assert a.membership.holds_ridden_out == b.membership.holds_ridden_out == 1
        assert all(m.ring() == set("abc") for m in members.values())
        assert {name: m.membership.ring_changes for name, m in members.items()} == changes


async def test_a_link_that_stays_down_leaves_the_ring_when_the_grace_runs_out():
    """Both processes live but the link cannot come back (the proxy now swallows everything):
    no refusal, no link, so each side drops the other once link_grace has passed, not before."""
    grace = 1.0
    async with three_members(grace) as (members, proxy):
        a, b = members["a"], members["b"]
        changes = a.membership.ring_changes, b.membership.ring_changes
        proxy.partition()
        started = time.monotonic()
        proxy.reset()
        await wait_for(lambda: a.ring() == {"a", "c"} and b.ring() == {"b", "c"},
                       timeout=10 * grace, message="a and b off each other's rings")
        assert time.monotonic() - started >= grace * 0.9
        assert (a.membership.ring_changes, b.membership.ring_changes) == \
            (changes[0] + 1, changes[1] + 1)
        assert members["c"].ring() == set("abc")


async def test_a_node_whose_process_is_gone_leaves_the_ring_at_once():
    async with three_members() as (members, proxy):
        a, b, c = members["a"], members["b"], members["c"]
        changes = a.membership.ring_changes, c.membership.ring_changes
        started = time.monotonic()
        # b's listener and links close (a dead process's kernel does the same: FIN or RST,
        # then refuses connections; the proxy stands for b's address): a redials and is
        # refused, c (which b dialled) probes b's address and is refused
        await proxy.stop()
        await b.close()
        await wait_for(lambda: a.ring() == c.ring() == {"a", "c"}, timeout=GRACE,
                       message="b off both rings")
        assert time.monotonic() - started < GRACE / 2  # refused: no waiting out the grace
        assert (a.membership.ring_changes, c.membership.ring_changes) == \
            (changes[0] + 1, changes[1] + 1)


SCENARIOS = [f for name, f in sorted(globals().items())
             if name.startswith("test_") and inspect.iscoroutinefunction(f)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__[5:])
def test_on_uvloop(scenario):
    """Production runs uvloop: the same scenarios on it."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), 60))
