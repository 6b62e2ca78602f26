"""Rate limits per user, across all of the user's devices, reconnects and gateways: sends, chat
creation, member adds, history reads and connects answer RATE_LIMITED with retry_after_ms (or
HTTP 429 / close 1013 for connects) and close nothing; in a cluster the budget holds across
nodes through one registry batch per sync interval (docs/protocol.md 5, docs/cluster.md)."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from picows import WSError

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.raw import RawClient
from tests.support.rawflow import authed, direct, group, request
from tests.support.waiting import wait_for


async def blast(client: RawClient, chat: str, count: int, tag: str) -> tuple[int, list[pb.Error]]:
    rids = [client.send(send=pb.Send(client_msg_id=f"{tag}{i}", chat_id=chat, body=b"x"))
            for i in range(count)]
    acked, refused = 0, []
    for rid in rids:
        reply = await client.reply(rid)
        if reply.WhichOneof("body") == "send_ack":
            acked += 1
        else:
            refused.append(reply.error)
    return acked, refused


async def test_sends_are_limited_per_user_across_devices_and_reconnects(make_server):
    server = await make_server(limits__sends_per_second=0.5, limits__send_burst=10.0)
    phone = await authed(server, "alice", "phone")
    chat = await direct(phone, "bob")
    total = 0
    for device in ("phone", "tablet", "laptop"):
        client = phone if device == "phone" else await authed(server, "alice", device)
        acked, refused = await blast(client, chat, 10, device)
        total += acked
        assert all(e.code == pb.RATE_LIMITED and e.retry_after_ms > 0 for e in refused)
    phone.close()
    again = await authed(server, "alice", "phone")  # a reconnect does not refill the bucket
    acked, _ = await blast(again, chat, 10, "again")
    total += acked
    assert 10 <= total <= 12, total  # one burst (and what half a token a second refills)
    other = await authed(server, "bob")  # another user has a budget of its own
    assert (await blast(other, chat, 10, "bob"))[0] == 10
    assert not again.listener.closed.is_set()


@pytest.mark.parametrize("kind,overrides,make", [
    ("chat", {"limits__chats_per_minute": 1.0, "limits__chat_burst": 3.0},
     lambda i, chat: {"create_chat": pb.CreateChat(kind=pb.GROUP, member_user_ids=[f"u{i}"])}),
    ("history", {"limits__history_per_second": 0.1, "limits__history_burst": 3.0},
     lambda i, chat: {"history": pb.History(chat_id=chat)}),
    ("member_add", {"limits__member_adds_per_minute": 1.0, "limits__member_add_burst": 3.0},
     lambda i, chat: {"add_members": pb.AddMembers(chat_id=chat, user_ids=[f"m{i}"])}),
])
async def test_rare_operations_are_limited_per_user(make_server, kind, overrides, make):
    server = await make_server(**overrides)
    phone = await authed(server, "alice", "phone")
    chat = await group(phone, ["bob"])  # member adds: bob, then m0, m1, m2 use the burst
    tablet = await authed(server, "alice", "tablet")
    answers = []
    for i in range(6):
        client = phone if i % 2 else tablet
        answers.append(await request(client, **make(i, chat)))
    limited = [a.error for a in answers if a.WhichOneof("body") == "error"]
    allowed = 3 - (kind == "chat")  # the group above was the first chat
    assert len(answers) - len(limited) == allowed, answers
    assert all(e.code == pb.RATE_LIMITED and e.retry_after_ms > 0 for e in limited)
    assert (await request(phone, ping=pb.Ping(client_time_ms=9))).pong.client_time_ms == 9


async def test_connects_are_limited_per_user(make_server):
    server = await make_server(limits__connects_per_minute=1.0, limits__connect_burst=3.0)
    for device in ("d1", "d2", "d3"):
        await authed(server, "alice", device)
    with pytest.raises(WSError) as info:
        await RawClient.connect(server.url, server.token("alice", "d4"))
    assert info.value.response.status == 429
    assert int(info.value.response.headers["Retry-After"]) >= 1
    frame_mode = await RawClient.connect(server.url)
    frame_mode.send(auth=pb.Auth(token=server.token("alice", "d5")))
    code, reason = await frame_mode.closed()
    assert code == 1013 and reason.startswith("too many connections: retry in")
    assert server.gateway.pending_auth == 0
    await authed(server, "bob")  # others unaffected


async def test_the_budget_holds_across_gateways(make_server, redis_cluster):
    """One user, a device on each of two gateways, both sending as fast as they may for 3 s:
    together they get about one user's budget, not two (the bound: docs/cluster.md)."""
    rate, burst, interval, seconds = 10.0, 10.0, 0.2, 3.0
    prefix = f"t{uuid.uuid4().hex[:12]}"
    servers = [await make_server(
        server__node_id=i, cluster__enabled=True, cluster__node_name=name,
        cluster__redis=",".join(redis_cluster.addresses), cluster__redis_prefix=prefix,
        cluster__lease_ttl=2.0, cluster__heartbeat_interval=0.1, cluster__link_timeout=0.5,
        limits__sends_per_second=rate, limits__send_burst=burst,
        limits__usage_sync_interval=interval) for i, name in enumerate(("a", "b"))]
    await wait_for(lambda: all(len(s.gateway.router.ring.nodes) == 2 for s in servers),
                   message="both rings have both nodes")
    devices = [await authed(servers[0], "alice", "phone"), await authed(servers[1], "alice", "tablet")]
    chat = await direct(devices[0], "bob")
    accepted = [0, 0]

    async def sender(i: int) -> None:
        client, n = devices[i], 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            n += 1
            reply = await request(client, send=pb.Send(client_msg_id=f"{i}-{n}", chat_id=chat,
                                                        body=b"x"))
            if reply.WhichOneof("body") == "send_ack":
                accepted[i] += 1
            else:
                assert reply.error.code == pb.RATE_LIMITED
                await asyncio.sleep(reply.error.retry_after_ms / 1000)
    await asyncio.gather(sender(0), sender(1))
    one_user = rate * seconds + burst
    bound = rate * seconds + 2 * burst + rate * interval  # N bursts + (N-1) x rate x interval
    assert sum(accepted) <= bound + rate * interval, (accepted, bound)  # one sync of lag
    assert sum(accepted) >= 0.7 * one_user, accepted
