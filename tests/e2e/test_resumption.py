"""A known device's reconnect is cheap: its token is remembered after the first check (expiry
still checked every time), its admission is a read (no store write on the connect path), its
sync snapshot is read with those of the other handshakes of the same loop turn, and when it was
last seen is written in batches, not at each disconnect. Cheap and still right: expired and
revoked are refused, each device resumes from its own cursor, bad input gets its close code."""
from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from picows import WSError, WSMsgType

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.raw import RawClient
from tests.support.rawflow import arrived_messages, authed, direct, receive_and_ack, request, send
from tests.support.waiting import wait_for


async def _writes_during(server, action) -> list[str]:
    """The statements the store's write connection ran while `action` was awaited."""
    store = server.gateway.services.store
    statements: list[str] = []
    await store._write(store._write_conn.set_trace_callback, statements.append)
    try:
        await action()
    finally:
        await store._write(store._write_conn.set_trace_callback, None)
    return statements


async def test_known_device_reconnect_writes_nothing_to_the_store(make_server):
    first = await make_server()
    (await authed(first, "alice", "phone")).close()
    await wait_for(lambda: first.gateway.hub.connections == 0)
    await first.stop()  # the next server knows alice/phone only from the store
    server = await make_server()
    token = server.token("alice", "phone")
    clients = []

    async def reconnect() -> None:
        client = await RawClient.connect(server.url, token)
        await client.recv("welcome")
        await client.recv("sync_complete")
        clients.append(client)

    assert await _writes_during(server, reconnect) == []
    assert server.gateway.services.devices.admitted_by_read == 1
    clients[0].close()
    await wait_for(lambda: server.gateway.hub.connections == 0)
    gone = await _writes_during(server, lambda: wait_for(lambda: True))
    assert gone == []  # the disconnect's last-seen time waits for the batch

    new = await _writes_during(server, lambda: authed(server, "alice", "laptop"))
    assert any("INSERT INTO devices" in s for s in new)  # a new device is admitted by a write


async def test_last_seen_times_are_written_in_one_batch(server):
    for device in ("phone", "laptop", "tablet"):
        (await authed(server, "alice", device)).close()
    await wait_for(lambda: server.gateway.hub.connections == 0)
    batch = await _writes_during(server, server.gateway.services.devices.flush_seen)
    assert sum("UPDATE devices SET last_seen_ms" in s for s in batch) == 3
    assert sum(s.startswith("BEGIN") for s in batch) == 1
    rows = await server.gateway.services.store.list_devices("alice")
    # a device may come and go within one millisecond: its last seen is then its first seen
    assert len(rows) == 3 and all(row.last_seen_ms >= row.first_seen_ms for row in rows)


async def _connect(server, token: str) -> RawClient:
    client = await RawClient.connect(server.url, token)
    await client.recv("welcome")
    return client


async def test_cached_token_is_refused_once_expired(server):
    token = server.token("alice", "phone", ttl=1)
    (await _connect(server, token)).close()
    tokens = server.gateway.tokens
    assert len(tokens.verified) == 1
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    await wait_for(lambda: time.time() > expires + tokens.leeway, timeout=15)
    with pytest.raises(WSError) as info:
        await RawClient.connect(server.url, token)
    assert info.value.response.status == 401
    assert b"token expired" in info.value.raw_body
    assert len(tokens.verified) == 0


async def test_cached_token_of_a_revoked_device_is_refused(server):
    phone = await authed(server, "alice", "phone")
    token = server.token("alice", "stolen")
    stolen = await _connect(server, token)
    hits = server.gateway.tokens.verified.hits
    assert (await request(phone, revoke_device=pb.RevokeDevice(device_id="stolen"))
            ).WhichOneof("body") == "ok"
    assert (await stolen.closed())[0] == 4011
    again = await RawClient.connect(server.url, token)  # the same token: a cache hit
    assert (await again.closed())[0] == 4011
    assert server.gateway.tokens.verified.hits == hits + 1


RECEIVERS = 12


async def test_concurrent_reconnects_each_resume_from_their_own_cursor(server):
    """Receivers ri acked i of their chat's messages, went away, got two more, and all come
    back at once: their snapshots are read together (one store call per loop turn), and each
    gets exactly the messages above its own cursor, in order, then SyncComplete."""
    sender = await authed(server, "s")
    receivers = [await authed(server, f"r{i}") for i in range(RECEIVERS)]
    chats = [await direct(sender, f"r{i}") for i in range(RECEIVERS)]
    for i, chat in enumerate(chats):
        for k in range(i + 1):
            await send(sender, chat, f"r{i}:{k}".encode())
    store = server.gateway.services.store
    for i, receiver in enumerate(receivers):
        got = await receive_and_ack(receiver, i + 1)
        assert [m.body for m in got] == [f"r{i}:{k}".encode() for k in range(i + 1)]
    for receiver in receivers:
        receiver.close()
    await wait_for(lambda: server.gateway.hub.connections == 1)

    async def cursors_stored() -> bool:
        cursors = await asyncio.gather(*(store.cursors(f"r{i}", "phone")
                                         for i in range(RECEIVERS)))
        return all(c == {chats[i]: i + 1} for i, c in enumerate(cursors))
    await wait_for(cursors_stored)
    for i, chat in enumerate(chats):
        for k in range(i + 1, i + 3):
            await send(sender, chat, f"r{i}:{k}".encode())
    reads = server.gateway.backlogs.reads
    back = await asyncio.gather(*(RawClient.connect(server.url, server.token(f"r{i}", "phone"))
                                  for i in range(RECEIVERS)))
    for i, receiver in enumerate(back):
        await receiver.recv("welcome")
        got = await receive_and_ack(receiver, 2)
        assert [(m.seq, m.body) for m in got] == [(k + 1, f"r{i}:{k}".encode())
                                                  for k in range(i + 1, i + 3)]
        done = (await receiver.recv("sync_complete")).sync_complete
        assert (done.chats, done.messages) == (1, 2)
        assert arrived_messages(receiver) == []
    assert server.gateway.backlogs.reads == reads + RECEIVERS


async def test_garbage_right_after_the_upgrade_closes_malformed(server):
    (await authed(server, "alice")).close()  # known from now on
    await wait_for(lambda: server.gateway.hub.connections == 0)
    client = await RawClient.connect(server.url, server.token("alice", "phone"))
    client.send_bytes(b"\xff\xff\xff\xff")  # before the Welcome has arrived
    assert (await client.closed())[0] == 4000
    text = await RawClient.connect(server.url, server.token("alice", "phone"))
    text.send_bytes(b"hello", WSMsgType.TEXT)
    assert (await text.closed())[0] == 1003
    await wait_for(lambda: server.gateway.hub.connections == 0)
    again = await authed(server, "alice")  # the device is still fine
    again.close()


async def test_a_store_failure_during_the_snapshot_read_closes_1011(make_server):
    server = await make_server()
    (await authed(server, "alice")).close()
    await wait_for(lambda: server.gateway.hub.connections == 0)
    store = server.gateway.services.store
    readers, store._readers = store._readers, None  # reads fail as with a closed store
    try:
        client = await RawClient.connect(server.url, server.token("alice", "phone"))
        assert await client.closed() == (1011, "store unavailable, reconnect later")
    finally:
        store._readers = readers
    (await authed(server, "alice")).close()


async def test_welcome_carries_the_device_and_the_live_limits(server):
    """The Welcome is encoded from bytes shared by every connection plus the device's own
    fields: ids of the longest allowed length (a body over 127 bytes: a two-byte length)."""
    user, device = "u" * 128, "d" * 128
    before = int(time.time() * 1000)
    client = await RawClient.connect(server.url, server.token(user, device))
    welcome = (await client.recv("welcome")).welcome
    config = server.gateway.config
    assert (welcome.user_id, welcome.device_id) == (user, device)
    assert before <= welcome.server_time_ms <= int(time.time() * 1000)
    assert welcome.heartbeat_interval_ms == int(config.timers.heartbeat_interval * 1000)
    assert welcome.idle_timeout_ms == int(config.timers.idle_timeout * 1000)
    assert (welcome.max_frame_bytes, welcome.max_body_bytes, welcome.delivery_window) == (
        config.limits.max_frame_bytes, config.limits.max_body_bytes,
        config.limits.delivery_window)
    await client.recv("sync_complete")
    client.close()
