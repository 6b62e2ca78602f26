"""A paused gateway (SIGSTOP: its sockets stay open, nothing answers) and the SDK's liveness
rule (docs/protocol.md 8.8): idle, a client keeps its connection and sends nothing; with sends
awaiting their SendAck, it gives the silent gateway up within liveness_timeout and its sends
are acknowledged through another gateway."""
from __future__ import annotations

import asyncio
import time

from tests.support.cluster import device_client
from tests.support.clients import receive

LIVENESS = 1.0


async def test_pending_sends_leave_a_paused_gateway_and_are_acked_elsewhere(gateways):
    alice = await device_client(gateways, "alice", "phone", 0, liveness_timeout=LIVENESS)
    bob = await device_client(gateways, "bob", "phone", 1)
    chat = (await alice.create_direct("bob")).chat_id
    await alice.send(chat, b"warm-up")
    assert [m.body for m in await receive(bob, 1)] == [b"warm-up"]

    gateways.pause(0)
    try:
        await asyncio.sleep(2.5 * LIVENESS)  # idle: nothing awaited, nothing sent, no drop
        assert alice.url == gateways.url(0) and alice.stats.silent_drops == 0

        paused_at = time.monotonic()
        acks = await asyncio.wait_for(asyncio.gather(
            *(alice.send(chat, b"%d" % i) for i in range(5))), timeout=15)
        took = time.monotonic() - paused_at
    finally:
        gateways.resume(0)
    assert [a.seq for a in acks] == sorted(a.seq for a in acks)
    assert alice.stats.silent_drops == 1 and alice.url != gateways.url(0)
    assert [m.body for m in await receive(bob, 5)] == [b"%d" % i for i in range(5)]
    assert took < 15, took
