"""Pushes in a cluster of three in-process gateways (static peers, or sessions in a real Redis
Cluster): the chat's owner alone pushes a message, a device online on another node is not
pushed, and a push owed when the owner leaves is sent by the chat's next owner, once."""
from __future__ import annotations

import pytest

from tests.support.clients import connect, receive
from tests.support.inprocess_cluster import start_nodes
from tests.support.push_servers import Scripted
from tests.support.waiting import wait_for

PHONE = "e5" * 32
TABLET = "f6" * 32


@pytest.fixture(params=["static", "redis"])
async def nodes(request, push_servers, make_server):
    push = {key.replace(".", "__"): value for key, value in push_servers.settings().items()}
    # an online device's grace outlasts its ack's way to the store on a busy machine: the
    # tablet must be found acked, not pushed, when its grace ends
    return await start_nodes(request, make_server, request.param, push__grace=5.0,
                             push__interval=1.0, push__max_backoff=2.0, **push)


def sent(server) -> int:
    return sum(server.gateway.services.push.sent.values())


async def test_the_owner_alone_pushes_and_online_devices_elsewhere_are_not(push_servers, nodes):
    a, b, c = nodes
    phone = await connect(c, "bob", "phone")
    await phone.register_push("apns", PHONE)
    await phone.close()
    tablet = await connect(c, "bob", "tablet")
    await tablet.register_push("apns", TABLET)
    alice = await connect(a, "alice")
    chat = (await alice.create_direct("bob")).chat_id
    owner = next(s for s in nodes if s.gateway.router.node_id == a.gateway.router.owner(chat))
    for i in range(3):
        await alice.send(chat, b"m%d" % i)
    await receive(tablet, 3)
    await wait_for(lambda: sum(p.payload["sb"]["count"] for p in push_servers.apns.to(PHONE)) == 3)
    await wait_for(lambda: owner.gateway.services.push.settled.get("acked", 0) >= 1,
                   timeout=30, message="the tablet's entry settled by its ack")
    assert push_servers.apns.to(TABLET) == []
    pushed = len(push_servers.apns.to(PHONE))
    await wait_for(lambda: [sent(s) for s in nodes] == [pushed if s is owner else 0
                                                        for s in nodes],
                   message="the owner alone counted the pushes")


async def test_a_push_owed_by_a_leaving_owner_is_sent_by_the_next_owner_once(push_servers,
                                                                              nodes):
    a, b, c = nodes
    phone = await connect(a, "bob", "phone")
    await phone.register_push("apns", PHONE)
    await phone.close()
    alice = await connect(a, "alice")
    chat = (await alice.create_direct("bob")).chat_id
    owner = next(s for s in nodes if s.gateway.router.node_id == a.gateway.router.owner(chat))
    if owner is a:  # alice's node must outlive the owner: reconnect her elsewhere
        await alice.close()
        alice = await connect(b, "alice")
    push_servers.apns.down = Scripted(503, "ServiceUnavailable")
    await alice.send(chat, b"while the provider is down")
    await wait_for(lambda: push_servers.apns.attempts >= 3)
    await owner.stop()  # its drain leaves the push in the durable queue
    push_servers.apns.down = None
    [push] = await wait_for(lambda: push_servers.apns.to(PHONE), timeout=30)
    assert push.payload["sb"]["seq"] == 1
    store = next(s for s in nodes if s is not owner).gateway.services.store

    async def queue_empty() -> bool:
        return await store.queued_pushes() == []
    await wait_for(queue_empty, message="the push dropped from the queue once sent")
    assert len(push_servers.apns.to(PHONE)) == 1
    await wait_for(lambda: sum(sent(s) for s in nodes if s is not owner) == 1)
