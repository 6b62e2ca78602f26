"""A closed connection is freed by reference counting, whichever side closed it: the server
freezes long-lived objects and collects cycles among them only when the frozen heap has
doubled (switchboard/collector.py), so a connection that left a reference cycle behind would
stay in memory until then. Each test runs with the cyclic collector off, over real sockets,
and waits until neither the device's Connection nor its Session exists any more.

Neither class takes weak references (a slot per idle connection for the tests' sake), so the
objects are looked for among those the collector tracks: every Connection and Session is one
of them, from its creation until reference counting frees it."""
from __future__ import annotations

import asyncio
import gc

import pytest
from picows import WSCloseCode

from switchboard.core.session import Session
from switchboard.gateway.connection import Connection
from switchboard.proto.v1 import client_pb2 as pb
from tests.e2e.test_flow import send_many
from tests.support.inprocess_cluster import start_nodes
from tests.support.raw import RawClient
from tests.support.rawflow import authed, direct, receive_and_ack, request, send
from tests.support.waiting import wait_for


@pytest.fixture
def no_cyclic_collector():
    gc.collect()  # what earlier tests left
    gc.disable()
    yield
    gc.enable()


def alive(user: str, device: str) -> int:
    """How many Connection and Session objects of user/device exist."""
    return sum(1 for obj in gc.get_objects()
               if type(obj) in (Connection, Session) and obj.user == user
               and obj.device == device)


async def freed(user: str, device: str = "phone", remaining: int = 0) -> None:
    """Until the device's closed connection and session are gone (the timer wheel lets go of
    a session when its pending deadlines come: a heartbeat, the close grace)."""
    await wait_for(lambda: alive(user, device) == remaining, timeout=20, interval=0.1,
                   message=f"the closed connection of {user}/{device} freed without the collector")


async def talking(server, user: str, peer_server=None) -> RawClient:
    """`user`'s phone, after a message each way with a peer (streams, acks, a commit), who is
    on `peer_server` if given."""
    client = await authed(server, user)
    peer = await authed(peer_server or server, f"{user}-peer")
    chat = await direct(client, f"{user}-peer")
    await send(client, chat)
    await receive_and_ack(peer, 1)
    await send(peer, chat)
    await receive_and_ack(client, 1)
    await request(client, history=pb.History(chat_id=chat, limit=10))
    assert alive(user, "phone") == 2
    return client


async def test_a_connection_the_device_drops_is_freed(server, no_cyclic_collector):
    client = await talking(server, "alice")
    chat = await direct(client, "alice-peer")
    client.send(send=pb.Send(client_msg_id="late", chat_id=chat, body=b"z"))
    client.close()  # the socket goes at once, the send's commit settles after it
    await freed("alice")


async def test_a_connection_to_a_cluster_node_is_freed(request, make_server,
                                                       no_cyclic_collector):
    a, b, _ = await start_nodes(request, make_server, "static")
    client = await talking(a, "alice", peer_server=b)
    client.close()
    await freed("alice")


async def test_a_connection_the_device_closes_is_freed(server, no_cyclic_collector):
    client = await talking(server, "alice")
    client.transport.send_close(WSCloseCode.OK)
    await client.closed()
    await freed("alice")


async def test_a_revoked_device_is_freed(server, no_cyclic_collector):
    client = await talking(server, "alice")
    laptop = await authed(server, "alice", "laptop")
    assert (await request(laptop, revoke_device=pb.RevokeDevice(device_id="phone"))).HasField("ok")
    assert (await client.closed())[0] == 4011
    await freed("alice")


async def test_a_replaced_connection_is_freed(server, no_cyclic_collector):
    client = await talking(server, "alice")
    newer = await authed(server, "alice")
    assert (await client.closed())[0] == 4010
    await freed("alice", remaining=2)  # the newer one's
    await request(newer, ping=pb.Ping(client_time_ms=1))


async def test_an_idle_connection_is_freed(make_server, no_cyclic_collector):
    server = await make_server(timers__heartbeat_interval=1.0, timers__idle_timeout=3.0)
    client = await talking(server, "alice")
    client.listener.answer_pings = False
    assert (await client.closed())[0] == 4009
    await freed("alice")


async def test_a_socket_that_never_authenticates_is_freed(server, no_cyclic_collector):
    client = await RawClient.connect(server.url)
    assert (await client.closed())[0] == 4002
    await freed("", "")


async def test_a_slow_consumer_is_freed(make_server, no_cyclic_collector):
    # as test_flow's slow reader: nothing but the outbound buffer's cap may cut bob off (no
    # retransmit rewind); bob stops reading but pings, so no idle deadline comes meanwhile and
    # the timer wheel's last entry for his session is a heartbeat's away
    server = await make_server(limits__delivery_window=2000,
                               limits__outbound_buffer_bytes=512 * 1024,
                               limits__sends_per_second=10000.0, limits__send_burst=10000.0,
                               timers__retransmit_after=120.0)
    alice = await authed(server, "alice")
    bob = await talking(server, "bob")
    chat = await direct(alice, "bob")
    bob.transport.underlying_transport.pause_reading()
    sending = asyncio.ensure_future(send_many(alice, chat, 400, b"y" * 60_000))

    def cut_off() -> bool:
        bob.transport.send_ping(b"")
        return server.gateway.session_stats.slow_consumers == 1

    await wait_for(cut_off, timeout=30, interval=0.2)
    await sending
    bob.close()
    await freed("bob")
