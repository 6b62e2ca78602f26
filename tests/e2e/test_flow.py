"""Delivery window, retransmission, heartbeats and slow readers (docs/guarantees.md: I6; F14)."""
from __future__ import annotations

import asyncio
import gc

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.raw import RawClient
from tests.support.rawflow import authed, direct, request
from tests.support.waiting import wait_for


async def send_many(client: RawClient, chat: str, count: int, body: bytes = b"x", prefix: str = "m"):
    rids = [client.send(send=pb.Send(client_msg_id=f"{prefix}{i}", chat_id=chat, body=body))
            for i in range(count)]
    return [(await client.reply(rid, timeout=20)).send_ack for rid in rids]


async def test_unacked_deliveries_are_retransmitted_until_acked(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    await send_many(alice, chat, 3)
    first = [m.seq for m in (await bob.recv("deliver")).deliver.messages]
    while len(first) < 3:
        first += [m.seq for m in (await bob.recv("deliver")).deliver.messages]
    assert first == [1, 2, 3]
    again = (await bob.recv("deliver", timeout=5)).deliver.messages  # no ack: resent
    assert [m.seq for m in again][0] == 1
    assert server.gateway.session_stats.retransmits >= 3
    bob.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=3)]))
    [conn] = server.gateway.hub.devices_of("bob")
    await wait_for(lambda: conn.session.streams[chat].acked == 3, message="bob's ack taken")
    # a retransmit the server sent before it took the ack may still be on its way: anything
    # sent before the reply to a later request arrives before that reply
    await request(bob, history=pb.History(chat_id=chat, limit=1))
    bob.drain()
    before = server.gateway.session_stats.retransmits
    await asyncio.sleep(2.5)  # > retransmit_after: acked messages are not resent
    assert server.gateway.session_stats.retransmits == before
    later = bob.stash + [bob.listener.frames.get_nowait()
                         for _ in range(bob.listener.frames.qsize())]
    # bob's own Delivered watermark may be pushed to him meanwhile; no message comes again
    assert [f for f in later if f.WhichOneof("body") == "deliver"] == []


async def test_window_bounds_messages_in_flight(make_server):
    server = await make_server(limits__delivery_window=10, limits__sends_per_second=1000.0,
                               limits__send_burst=1000.0)
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    await send_many(alice, chat, 50)
    seqs = []
    while len(seqs) < 10:
        seqs += [m.seq for m in (await bob.recv("deliver")).deliver.messages]
    await asyncio.sleep(0.3)
    assert not bob.pending() and seqs == list(range(1, 11))  # window full: waits for acks
    while seqs[-1] < 50:
        bob.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=seqs[-1])]))
        seqs += [m.seq for m in (await bob.recv("deliver")).deliver.messages]
    assert seqs == list(range(1, 51))


async def test_silent_peer_is_pinged_then_closed_4009(server):
    client = await authed(server, "alice", auto_pong=False)
    code, _ = await client.closed(timeout=10)
    assert code == 4009
    assert client.listener.pings >= 1


async def test_ws_pong_keeps_a_quiet_connection_alive(server):
    client = await authed(server, "alice")  # picows answers the server's pings
    await asyncio.sleep(6)  # > idle_timeout (5 s) with no frames of our own
    rid = client.send(ping=pb.Ping(client_time_ms=5))
    assert (await client.reply(rid)).pong.client_time_ms == 5


async def test_after_answering_a_ping_the_next_is_due_within_one_interval(server):
    """A quiet device that answers is pinged every heartbeat_interval (protocol.md 8.8a: it
    reconnects after heartbeat_interval plus a few seconds without anything from the server);
    the server writes an idle connection's ping straight to its socket."""
    client = await authed(server, "alice")  # answers the server's pings
    [conn] = server.gateway.hub.devices_of("alice")
    interval = server.gateway.session_config.heartbeat_interval
    stats = server.gateway.session_stats
    frames_out = stats.frames_out
    await wait_for(lambda: client.listener.pings >= 1, timeout=20, message="first ping")
    await wait_for(lambda: not conn.session.pinged, timeout=20, message="its answer taken")
    assert conn.session.timer_due <= conn.session.last_rx + interval
    assert stats.frames_out > frames_out and conn.session.pending_output == 0
    await wait_for(lambda: client.listener.pings >= 3, timeout=30, message="two more pings")
    assert conn.session.state == 2  # OPEN


async def test_a_device_ws_ping_is_answered_and_counts_as_activity(make_server):
    """protocol.md 8.8: any frame from the device, its WebSocket pings included, counts as
    activity, so a device that pings on its own is not pinged as well; the answer carries the
    ping's payload. (picows used to answer such pings without telling the session.)"""
    server = await make_server(timers__heartbeat_interval=1.0, timers__idle_timeout=120.0)
    client = await authed(server, "alice", auto_pong=False)  # answers none of the server's pings
    [conn] = server.gateway.hub.devices_of("alice")
    await wait_for(lambda: conn.session.pinged, timeout=20, message="the server's ping")
    sent_at = server.gateway.timers.now()
    client.transport.send_ping(b"rtt-1")
    assert await asyncio.wait_for(client.listener.pongs.get(), 15) == b"rtt-1"
    assert conn.session.last_rx >= sent_at
    client.transport.send_ping(b"")
    assert await asyncio.wait_for(client.listener.pongs.get(), 15) == b""
    assert conn.session.state == 2  # OPEN


async def test_reader_that_stops_reading_is_cut_off_and_loses_nothing(make_server):
    # no retransmit rewind and no idle deadline while the 400 sends take their time on a busy
    # machine: either would move bob's messages to the pump, which waits for the socket
    # instead of filling the buffer, and the buffer limit would never be what cuts him off
    server = await make_server(limits__delivery_window=2000, limits__outbound_buffer_bytes=512 * 1024,
                               limits__sends_per_second=10000.0, limits__send_burst=10000.0,
                               timers__retransmit_after=120.0, timers__heartbeat_interval=60.0,
                               timers__idle_timeout=120.0)
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    bob.transport.underlying_transport.pause_reading()
    body = b"y" * 60_000
    acks = await send_many(alice, chat, 400, body)
    await wait_for(lambda: server.gateway.session_stats.slow_consumers == 1, timeout=10)
    await wait_for(lambda: not server.gateway.hub.devices_of("bob"), timeout=10)
    assert [a.seq for a in acks] == list(range(1, 401))  # the sender was never held up
    bob.close()
    again = await RawClient.connect(server.url, server.token("bob"))
    seqs = []
    while True:
        frame = await again.recv(timeout=10)
        if frame.WhichOneof("body") == "deliver":
            seqs += [m.seq for m in frame.deliver.messages]
            again.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=seqs[-1])]))
        elif frame.WhichOneof("body") == "sync_complete":
            break
    assert seqs == list(range(1, 401))


async def test_a_backlog_of_large_messages_is_replayed_whole_without_acks(make_server):
    """A reconnecting device's backlog is more than a frame's worth (two 60 KB messages per
    Deliver): the replay goes on each time the output has been written, not only when the
    socket pushed back, and ends with SyncComplete within the delivery window, unacked."""
    server = await make_server(limits__sends_per_second=1000.0, limits__send_burst=1000.0)
    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    for i in range(40):
        assert (await request(alice, send=pb.Send(client_msg_id=f"m{i}", chat_id=chat,
                                                  body=bytes([i]) * 60_000))).HasField("send_ack")
    bob = await RawClient.connect(server.url, server.token("bob", "phone"))
    await bob.recv("welcome")
    seqs = []
    while True:
        frame = await bob.recv(timeout=15)
        kind = frame.WhichOneof("body")
        if kind == "sync_complete":
            break
        if kind == "deliver":
            seqs += [m.seq for m in frame.deliver.messages]
    assert seqs == list(range(1, 41))
    assert frame.sync_complete.messages == 40


def futures_of(obj) -> list[asyncio.Future]:
    return [ref for ref in gc.get_referents(obj) if isinstance(ref, asyncio.Future)]


async def test_an_open_connection_keeps_nothing_of_its_handshake_and_still_closes(server):
    """What picows keeps of the upgrade (the request with its headers, the 101 response with
    its header map, the listener proxy its own pings use) is dropped once the session is up,
    and every transport shares one completed future for its disconnect: ~0.85 KiB per idle
    connection. Frames and the close handshake do not need them."""
    bob = await authed(server, "bob")
    alice = await authed(server, "alice")
    [conn] = server.gateway.hub.devices_of("bob")
    [other] = server.gateway.hub.devices_of("alice")
    transport = conn.transport
    assert (transport.request, transport.response) == (None, None)
    [future] = futures_of(transport)  # picows's disconnected_future, not readable from Python
    assert future.done() and futures_of(other.transport) == [future]
    await direct(bob, "alice")  # a request answered: frames go both ways as before
    conn.close(4009, "idle")
    assert await bob.closed() == (4009, "idle")
    alice.close()  # dropped by the client, without a close handshake
    await wait_for(lambda: server.gateway.hub.connections == 0, message="both left the hub")
