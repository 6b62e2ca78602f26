"""Three gateway processes over a real Redis Cluster: what devices on different nodes see of
each other (docs/cluster.md). Every message test runs through the history checker
(tests/support/history.py): in order, exactly once, nothing acknowledged lost, no seq reused."""
from __future__ import annotations

import asyncio
import itertools

import pytest

from switchboard.client import ServerError
from switchboard.core.backlog import read_backlog
from switchboard.core.chats import direct_chat_id
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.cluster import device_client, owner
from tests.support.clients import event, no_event, receive
from tests.support.history import Recorder
from tests.support.waiting import wait_for


def user_whose_direct_chat_with(other: str, owned_by: str, prefix: str) -> str:
    """A user id whose direct chat with `other` is owned by node `owned_by`."""
    return next(u for u in (f"{prefix}{i}" for i in itertools.count())
                if owner(direct_chat_id(u, other)) == owned_by)


async def check(rec: Recorder, gateways) -> None:
    await wait_for(lambda: not rec.missing(), timeout=15,
                   message="every acknowledged message delivered live to every member device")
    store = await gateways.open_store()
    try:
        await rec.finish(store=store)
    finally:
        await store.close()
    await rec.stop()
    violations = rec.history.check()
    assert not violations, "\n".join([rec.history.summary(), *violations[:20]])


@pytest.mark.parametrize("gateways", ["sqlite", "scylla"], indirect=True)
async def test_direct_and_group_chats_across_nodes_in_order_exactly_once(gateways):
    rec = Recorder()
    alice = await device_client(gateways, "alice", "phone", 0)
    bob = await device_client(gateways, "bob", "phone", 1)
    carol = await device_client(gateways, "carol", "phone", 2)
    tablet = await device_client(gateways, "alice", "tablet", 2)
    assert [c.url for c in (alice, bob, carol, tablet)] == \
        [gateways.url(0), gateways.url(1), gateways.url(2), gateways.url(2)]
    devices = {("alice", "phone"): alice, ("bob", "phone"): bob, ("carol", "phone"): carol,
               ("alice", "tablet"): tablet}
    for (user, device), client in devices.items():
        rec.watch(client, user, device)
    ab = (await alice.create_direct("bob")).chat_id
    bc = (await carol.create_direct("bob")).chat_id
    everyone = (await bob.create_group("all", ["alice", "carol"])).chat_id
    rec.history.member(ab, ["alice", "bob"])
    rec.history.member(bc, ["bob", "carol"])
    rec.history.member(everyone, ["alice", "bob", "carol"])

    async def sender(user: str, device: str, chat: str, count: int) -> None:
        for i in range(count):
            await rec.send(devices[(user, device)], user, device, chat,
                           f"{user}/{device} {i}".encode(), f"{user}-{device}-{chat}-{i}")

    await asyncio.wait_for(asyncio.gather(
        sender("alice", "phone", ab, 15), sender("bob", "phone", ab, 15),
        sender("alice", "tablet", ab, 5),
        sender("carol", "phone", bc, 10), sender("bob", "phone", bc, 10),
        *(sender(user, device, everyone, 10) for user, device in devices)), 30)
    failed = [s.describe() for s in rec.history.sends if s.outcome != "ok"]
    assert not failed, failed
    await check(rec, gateways)
    # one sequence per chat, whichever node took each send
    heads = {c: max(s.seq for s in rec.history.sends if s.chat == c) for c in (ab, bc, everyone)}
    assert heads == {ab: 35, bc: 20, everyone: 40}


async def test_receipts_reach_the_sender_on_another_node(gateways):
    # alice on g0, bob on g1, and their chat owned by g2: the ack, the owner's receipt state
    # and the push to alice are on three different nodes
    alice_id = user_whose_direct_chat_with("bob", "g2", "alice")
    alice = await device_client(gateways, alice_id, "phone", 0)
    bob = await device_client(gateways, "bob", "phone", 1)
    events = alice.events()
    chat = (await alice.create_direct("bob")).chat_id
    assert owner(chat) == "g2"
    sent = await alice.send(chat, b"hi bob")

    [got] = await receive(bob, 1)  # auto-acked on g1
    assert got.seq == sent.seq
    delivered = await event(events, pb.ReceiptUpdate, lambda u: u.delivered_all_seq >= sent.seq)
    assert delivered.chat_id == chat and delivered.read_all_seq < sent.seq
    assert (await bob.mark_read(chat, sent.seq)).read_seq == sent.seq
    read = await event(events, pb.ReceiptUpdate, lambda u: u.read_all_seq >= sent.seq)
    assert [(m.user_id, m.read_seq) for m in read.members] == [("bob", sent.seq)]
    status = await alice.get_receipts(chat, sent.seq)
    assert (status.delivered_count, status.read_count, list(status.read_by)) == (1, 1, ["bob"])


async def test_presence_of_a_user_on_another_node(gateways):
    carol = await device_client(gateways, "carol", "phone", 0)
    events = carol.events()
    await carol.subscribe_presence(["bob"])
    first = await event(events, pb.Presence, lambda p: p.user_id == "bob")
    assert not first.online

    bob = await device_client(gateways, "bob", "phone", 1)
    online = await event(events, pb.Presence, lambda p: p.user_id == "bob" and p.online)
    assert online.last_seen_ms == 0
    await bob.close()
    offline = await event(events, pb.Presence, lambda p: p.user_id == "bob" and not p.online)
    assert offline.last_seen_ms > 0


async def test_typing_reaches_every_other_device_on_other_nodes(gateways):
    alice = await device_client(gateways, "alice", "phone", 0)
    bob = await device_client(gateways, "bob", "phone", 1)
    carol = await device_client(gateways, "carol", "phone", 2)
    tablet = await device_client(gateways, "alice", "tablet", 1)
    streams = {name: c.events() for name, c in
               (("alice", alice), ("bob", bob), ("carol", carol), ("tablet", tablet))}
    chat = (await alice.create_group("g", ["bob", "carol"])).chat_id

    await alice.typing(chat, True)
    for name in ("bob", "carol", "tablet"):
        update = await event(streams[name], pb.TypingUpdate, lambda u: u.typing)
        assert (update.chat_id, update.user_id, update.device_id) == (chat, "alice", "phone")
        assert update.expires_in_ms > 0
    await alice.typing(chat, False)
    for name in ("bob", "carol", "tablet"):
        await event(streams[name], pb.TypingUpdate, lambda u: not u.typing)
    await no_event(streams["alice"], pb.TypingUpdate)  # never back to the typing connection


@pytest.mark.parametrize("gateways", ["sqlite", "scylla"], indirect=True)
async def test_a_device_that_moves_to_another_node_syncs_everything_once(gateways):
    rec = Recorder()
    alice = await device_client(gateways, "alice", "phone", 0)
    laptop = await device_client(gateways, "bob", "laptop", 0)
    rec.watch(alice, "alice", "phone")
    rec.watch(laptop, "bob", "laptop")
    chat = (await alice.create_group("g", ["bob"])).chat_id
    rec.history.member(chat, ["alice", "bob"])
    for i in range(5):
        await rec.send(alice, "alice", "phone", chat, b"before %d" % i, f"before-{i}")
    await wait_for(lambda: not rec.missing(), message="bob's laptop got the first five")

    have = laptop.have

    async def laptop_cursor_stored() -> bool:
        """bob's laptop acked the five and its node's writer stored the cursor: the new node
        starts after them (else they come again and the SDK drops them as duplicates)."""
        store = await gateways.open_store()
        try:
            return not await read_backlog(store, "bob", "laptop")
        finally:
            await store.close()
    await wait_for(laptop_cursor_stored, interval=0.05)
    await laptop.close()  # leaves g0
    for i in range(20):
        await rec.send(alice, "alice", "phone", chat, b"away %d" % i, f"away-{i}")
    moved = await device_client(gateways, "bob", "laptop", 1, have=have, connect=False)
    rec.watch(moved, "bob", "laptop")  # the same device's stream goes on
    await moved.connect()
    assert moved.url == gateways.url(1)
    await moved.wait_synced(timeout=15)
    await check(rec, gateways)
    assert len(rec.history.streams[("bob", "laptop")]) == 25
    assert moved.stats.duplicates == 0


async def test_a_reconnect_storm_while_messages_flow_delivers_each_once_in_order(gateways):
    """Every receiver's device closes and all reconnect at once, each onto the next node, three
    times, while alice sends to their group and to each of them: however long an arrival waits
    behind another's acknowledgements on the mesh (router/locations.py), every message reaches
    every device exactly once and in order (I1-I4 against the devices' logs and the store)."""
    rec = Recorder()
    alice = await device_client(gateways, "alice", "phone", 0)
    rec.watch(alice, "alice", "phone")
    users = [f"storm{i}" for i in range(24)]
    clients = {}
    for i, user in enumerate(users):
        clients[user] = await device_client(gateways, user, "phone", i % 3)
        rec.watch(clients[user], user, "phone")
    group = (await alice.create_group("storm", users)).chat_id
    rec.history.member(group, ["alice", *users])
    directs = {}
    for user in users:
        directs[user] = (await alice.create_direct(user)).chat_id
        rec.history.member(directs[user], ["alice", user])
    numbers = itertools.count()

    async def sends(count: int) -> None:
        for _ in range(count):
            n = next(numbers)
            chat = group if n % 2 else directs[users[n // 2 % len(users)]]
            await rec.send(alice, "alice", "phone", chat, b"m%d" % n, f"m{n}")

    for storm in range(1, 4):
        await asyncio.gather(*(client.close() for client in clients.values()))
        flowing = asyncio.ensure_future(sends(30))
        moved = {}
        for i, user in enumerate(users):
            moved[user] = await device_client(gateways, user, "phone", (i + storm) % 3,
                                              have=clients[user].have, connect=False)
            rec.watch(moved[user], user, "phone")
        await asyncio.gather(*(client.connect() for client in moved.values()))
        await flowing
        await asyncio.gather(*(client.wait_synced(timeout=30) for client in moved.values()))
        clients = moved
    failed = [s.describe() for s in rec.history.sends if s.outcome != "ok"]
    assert not failed, failed
    await check(rec, gateways)
    assert len(rec.history.sends) == 90


async def test_a_device_connecting_on_another_node_replaces_its_connection_4010(gateways):
    closes: list[int] = []
    old = await device_client(gateways, "bob", "phone", 1,
                              on_close=lambda code, reason: closes.append(code))
    alice = await device_client(gateways, "alice", "phone", 2)
    chat = (await alice.create_direct("bob")).chat_id
    new = await device_client(gateways, "bob", "phone", 0)
    await wait_for(lambda: closes, timeout=10, message="the g1 connection closed")
    assert closes == [4010] and old.last_close_code == 4010
    await asyncio.sleep(0.5)
    assert not old.connected and closes == [4010]  # it does not come back to throw out the new one
    await alice.send(chat, b"to the new one")
    assert [m.body for m in await receive(new, 1)] == [b"to the new one"]


async def test_refused_sends_over_the_cluster_affect_nothing_else(gateways):
    rec = Recorder()
    alice = await device_client(gateways, "alice", "phone", 0)
    bob = await device_client(gateways, "bob", "phone", 1)
    dave = await device_client(gateways, "dave", "phone", 2)
    rec.watch(alice, "alice", "phone")
    rec.watch(bob, "bob", "phone")
    rec.watch(dave, "dave", "phone")
    # a group owned by another node than dave's (g2) and alice's (g0): forwarded both ways
    for i in range(50):
        chat = (await alice.create_group(f"g{i}", ["bob"])).chat_id
        if owner(chat) == "g1":
            break
    assert owner(chat) == "g1"
    rec.history.member(chat, ["alice", "bob"])
    await rec.send(alice, "alice", "phone", chat, b"one", "one")

    with pytest.raises(ServerError) as info:
        await dave.send(chat, b"let me in", client_msg_id="intruder")
    assert info.value.code == pb.NOT_MEMBER
    rec.history.fail(rec.history.invoke(chat, "dave", "phone", "intruder", b"let me in"),
                     str(info.value))
    big = b"x" * (alice.welcome.max_body_bytes + 1)
    with pytest.raises(ServerError) as info:
        await alice.send(chat, big, client_msg_id="big")
    assert info.value.code == pb.BODY_TOO_LARGE
    rec.history.fail(rec.history.invoke(chat, "alice", "phone", "big", big), str(info.value))
    with pytest.raises(ServerError) as info:
        await dave.history(chat)
    assert info.value.code == pb.NOT_MEMBER

    await rec.send(bob, "bob", "phone", chat, b"two", "two")
    await rec.send(alice, "alice", "phone", chat, b"three", "three")
    await check(rec, gateways)
    assert [s.seq for s in rec.history.sends if s.outcome == "ok"] == [1, 2, 3]
    assert rec.history.streams.get(("dave", "phone"), []) == []
    assert alice.connected and bob.connected and dave.connected
