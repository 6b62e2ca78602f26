"""Unauthenticated sockets (Auth-frame mode) cannot lock a class of clients out: one source
address holds a bounded share of the slots (429), a full table gives the oldest silent socket's
slot to a newcomer (4002 to the squatter), and only a table of young sockets answers 503; both
refusals carry Retry-After (docs/protocol.md 7)."""
from __future__ import annotations

import pytest
from picows import WSError

from switchboard.proto.v1 import client_pb2 as pb
from tests.e2e.test_hostile import assert_still_serving
from tests.support.raw import RawClient
from tests.support.waiting import wait_for


async def silent(server, address: str) -> RawClient:
    return await RawClient.connect(server.url, local_addr=(address, 0))


async def refused(server, address: str) -> tuple[int, str | None]:
    with pytest.raises(WSError) as info:
        await silent(server, address)
    return info.value.response.status, info.value.response.headers.get("Retry-After")


async def auth_frame_client(server, address: str, user: str) -> RawClient:
    client = await silent(server, address)
    client.send(auth=pb.Auth(token=server.token(user)))
    assert (await client.recv("welcome")).welcome.user_id == user
    return client


async def test_one_host_of_silent_sockets_leaves_room_for_everyone_else(make_server):
    server = await make_server(auth__timeout=30.0, auth__max_pending=40,
                               auth__max_pending_per_address=10)
    squatters = [await silent(server, "127.0.0.1") for _ in range(10)]
    await wait_for(lambda: server.gateway.pending_auth == 10)
    for _ in range(40):
        assert await refused(server, "127.0.0.1") == (429, "1")
    assert server.gateway.pending_auth == 10
    await auth_frame_client(server, "127.0.0.2", "alice")
    await auth_frame_client(server, "127.0.0.3", "bob")
    assert all(not s.listener.closed.is_set() for s in squatters)
    await assert_still_serving(server)


async def test_a_full_table_gives_the_oldest_silent_slot_to_a_newcomer(make_server):
    server = await make_server(auth__timeout=30.0, auth__max_pending=6,
                               auth__max_pending_per_address=2, auth__evict_after=0.0)
    squatters = []
    for address in ("127.0.0.11", "127.0.0.12", "127.0.0.13"):
        for _ in range(2):
            squatters.append(await silent(server, address))
            await wait_for(lambda: server.gateway.pending_auth == len(squatters))
    await auth_frame_client(server, "127.0.0.20", "alice")
    assert await squatters[0].closed() == (4002, "no auth in time: server busy")
    assert server.gateway.pending_auth == 5
    assert all(not s.listener.closed.is_set() for s in squatters[1:])


async def test_a_full_table_of_young_sockets_answers_503_with_retry_after(make_server):
    server = await make_server(auth__timeout=30.0, auth__max_pending=4,
                               auth__max_pending_per_address=2, auth__evict_after=30.0)
    for address in ("127.0.0.11", "127.0.0.12"):
        for _ in range(2):
            await silent(server, address)
    await wait_for(lambda: server.gateway.pending_auth == 4)
    assert await refused(server, "127.0.0.20") == (503, "1")
    # header-authenticated clients never need a slot
    client = await RawClient.connect(server.url, server.token("bob"))
    assert (await client.recv("welcome")).welcome.user_id == "bob"
