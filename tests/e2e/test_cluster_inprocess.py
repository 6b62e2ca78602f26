"""Three gateways in one process forming a mesh, sharing one SQLite file, once over static
peers (cluster.peers) and once with leases and sessions in a real Redis Cluster; either way
fan-out goes to the nodes the location map names: forwarding to the owner, fan-out to other
nodes, receipts, presence, typing, cache invalidation, replaced and revoked devices, membership
events, blocks, and a node leaving.

tests/cluster/ runs the same router as separate processes (kill -9, Redis failover); here every
node is in reach of the test, so the router's own state can be asserted."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from switchboard.core.chats import direct_chat_id
from switchboard.proto.v1 import client_pb2 as pb
from switchboard.proto.v1 import mesh_pb2
from switchboard.router.registry_static import StaticRegistry
from switchboard.router.ring import Ring
from switchboard.tools.devcluster import free_port
from tests.support.cassandra import scylla_overrides
from tests.support.faultproxy import FaultProxy
from tests.support.inprocess_cluster import NODES, start_nodes
from tests.support.raw import RawClient
from tests.support.rawflow import (arrived_messages, authed, direct, group, receive_and_ack,
                                   request, send)
from tests.support.waiting import wait_for


@pytest.fixture(params=["static", "redis"])
async def nodes(request, make_server):
    return await start_nodes(request, make_server, request.param, timers__presence_interval=0.05)


def chat_owned_by(servers, owner: str, prefix: str) -> str:
    """A group-like chat id owned by `owner` (the ring is the same on every node)."""
    ring = servers[0].gateway.router.ring
    return next(f"{prefix}{i}" for i in range(1000) if ring.owner(f"{prefix}{i}") == owner)


async def test_messages_cross_nodes_in_order(nodes):
    a, b, c = nodes
    alice, bob, carol = await authed(a, "alice"), await authed(b, "bob"), await authed(c, "carol")
    chat = await group(alice, ["bob", "carol"])
    owner = a.gateway.router.owner(chat)
    sender_of = {}
    for i in range(10):
        for client, user in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            sender_of[(await send(client, chat, f"{i}".encode())).seq] = user
    assert sorted(sender_of) == list(range(1, 31))  # one sequence, whichever node took the send
    for client, user in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        got = await receive_and_ack(client, 20)
        assert [m.seq for m in got] == [seq for seq, by in sender_of.items() if by != user]
    forwarded = sum(s.gateway.router.forwarding.forwarded_sends for s in nodes)
    owned = next(s for s in nodes if s.gateway.router.node_id == owner)
    assert forwarded == 20  # the two non-owners' sends went to the owner
    assert owned.gateway.router.forwarding.owned_sends == 30


async def test_direct_chat_both_ways_and_history(nodes):
    a, _, c = nodes
    alice, carol = await authed(a, "alice"), await authed(c, "carol")
    chat = await direct(alice, "carol")
    await send(alice, chat, b"hello carol")
    assert [m.body for m in await receive_and_ack(carol, 1)] == [b"hello carol"]
    await send(carol, chat, b"hello alice")
    assert [m.body for m in await receive_and_ack(alice, 1)] == [b"hello alice"]
    page = (await request(carol, history=pb.History(chat_id=chat, limit=10))).history_page
    assert sorted(m.body for m in page.messages) == [b"hello alice", b"hello carol"]


async def test_receipts_reach_the_sender_on_another_node(nodes):
    a, b, _ = nodes
    alice, bob = await authed(a, "alice"), await authed(b, "bob")
    chat = await direct(alice, "bob")
    ack = await send(alice, chat, b"hi")
    await receive_and_ack(bob, 1)

    async def receipt(predicate):
        while True:
            update = (await alice.recv("receipt_update")).receipt_update
            if update.chat_id == chat and predicate(update):
                return update
    assert (await receipt(lambda u: u.delivered_all_seq >= ack.seq)).delivered_all_seq == ack.seq
    await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=ack.seq))
    assert (await receipt(lambda u: u.read_all_seq >= ack.seq)).read_all_seq == ack.seq


async def test_presence_and_typing_across_nodes(nodes):
    a, b, _ = nodes
    alice = await authed(a, "alice")
    chat = await direct(alice, "bob")
    await request(alice, subscribe_presence=pb.SubscribePresence(user_ids=["bob"]))
    first = (await alice.recv("presence")).presence
    assert (first.user_id, first.online) == ("bob", False)
    bob = await authed(b, "bob")
    online = (await alice.recv("presence")).presence
    assert (online.user_id, online.online) == ("bob", True)
    bob.send(typing=pb.Typing(chat_id=chat, typing=True))
    typing = (await alice.recv("typing_update")).typing_update
    assert (typing.chat_id, typing.user_id, typing.typing) == (chat, "bob", True)
    bob.close()
    offline = (await alice.recv("presence")).presence
    assert (offline.user_id, offline.online) == ("bob", False)
    assert offline.last_seen_ms > 0
    registry = b.gateway.router.registry
    if not isinstance(registry, StaticRegistry):  # kept in Redis for nodes that did not see bob go
        await wait_for(lambda: registry.last_seen("bob"), message="last seen in the registry")
        assert await registry.last_seen("bob") == offline.last_seen_ms


async def test_added_member_sends_at_once_through_another_node(nodes):
    a, _, c = nodes
    alice = await authed(a, "alice")
    chat = await group(alice, ["bob"])
    dave = await authed(c, "dave")
    # dave is not a member yet: refused, and every node may now cache the member map
    reply = await request(dave, send=pb.Send(client_msg_id="early", chat_id=chat, body=b"x"))
    assert reply.error.code == pb.NOT_MEMBER
    await request(alice, add_members=pb.AddMembers(chat_id=chat, user_ids=["dave"]))
    assert (await send(dave, chat, b"joined")).seq == 2  # after the event that added dave
    added, joined = await receive_and_ack(alice, 2)
    assert (added.seq, list(added.membership.user_ids), joined.body) == (1, ["dave"], b"joined")
    await request(alice, remove_members=pb.RemoveMembers(chat_id=chat, user_ids=["dave"]))
    reply = await request(dave, send=pb.Send(client_msg_id="late", chat_id=chat, body=b"x"))
    assert reply.error.code == pb.NOT_MEMBER


async def test_bad_sends_through_another_node(nodes):
    a, b, _ = nodes
    alice = await authed(a, "alice")
    chat = chat_owned_by(nodes, "b", "g:nochat")
    reply = await request(alice, send=pb.Send(client_msg_id="m1", chat_id=chat, body=b"x"))
    assert reply.error.code == pb.NOT_MEMBER  # answered by the owner, b
    real = await group(alice, ["bob"])
    big = b"x" * (a.config.limits.max_body_bytes + 1)
    reply = await request(alice, send=pb.Send(client_msg_id="m2", chat_id=real, body=big))
    assert reply.error.code == pb.BODY_TOO_LARGE
    assert (await send(alice, real, b"fine")).seq == 1


async def test_replaced_and_revoked_devices_across_nodes(nodes):
    a, b, c = nodes
    first = await authed(a, "alice", "phone")
    await authed(c, "alice", "laptop")
    second = await authed(b, "alice", "phone")  # the same device, now through b
    assert (await first.closed())[0] == 4010
    laptop_on_c = c.gateway.hub.devices_of("alice")
    assert [conn.device for conn in laptop_on_c] == ["laptop"]
    reply = await request(second, revoke_device=pb.RevokeDevice(device_id="laptop"))
    assert reply.WhichOneof("body") == "ok"
    await wait_for(lambda: not c.gateway.hub.devices_of("alice"), message="laptop closed on c")
    retry = await RawClient.connect(c.url, c.token("alice", "laptop"))
    assert (await retry.closed())[0] == 4011


def replaced_kicks(nodes) -> dict[str, int]:
    return {node.gateway.router.node_id: node.gateway.router.locations.replaced_sent
            for node in nodes}


async def test_a_replaced_device_is_kicked_only_where_it_is(nodes):
    """The kick of a device that connected goes in the location frame, to the peer the map
    names for the user, and to no peer once the older connection is gone."""
    a, b, c = nodes
    first = await authed(a, "alice", "phone")
    await wait_for(lambda: all(n.gateway.router.locations.nodes_for(["alice"]).get("a")
                               for n in (b, c)), message="alice located on a")
    second = await authed(b, "alice", "phone")
    assert (await first.closed())[0] == 4010
    assert replaced_kicks(nodes) == {"a": 0, "b": 1, "c": 0}  # to a alone
    second.close()
    await wait_for(lambda: not b.gateway.hub.devices_of("alice"), message="closed on b")
    await wait_for(lambda: all(not n.gateway.router.locations.nodes_for(["alice"])
                               for n in (a, c)), message="alice gone from every map")
    await authed(c, "alice", "phone")
    assert replaced_kicks(nodes) == {"a": 0, "b": 1, "c": 0}  # nobody held it


async def test_a_peer_of_an_older_release_gets_a_kick_frame(nodes):
    """A peer whose Hello does not say it reads Located.replaced gets the Kick frame."""
    a, b, _ = nodes
    first = await authed(a, "alice", "phone")
    await wait_for(lambda: b.gateway.router.locations.nodes_for(["alice"]).get("a"),
                   message="alice located on a")
    b.gateway.router.mesh.link("a").features = 0  # b's view of a: an older release
    await authed(b, "alice", "phone")
    assert (await first.closed())[0] == 4010
    assert replaced_kicks(nodes)["b"] == 1


async def test_presence_goes_to_the_peers_at_most_once_per_interval(nodes):
    """A burst of connects on one node is told to its peers in one presence frame of its own
    per interval, not one per connect (the others ride in the writes of the connects' Located
    frames), and every peer ends up with every user online."""
    a, b, c = nodes
    gossip = a.gateway.router.gossip
    gossip.interval = 1.0
    frames, rode = gossip.frames, gossip.rode
    started = asyncio.get_running_loop().time()
    users = [f"burst{i}" for i in range(8)]
    for user in users:
        await authed(a, user)
    elapsed = asyncio.get_running_loop().time() - started
    await wait_for(lambda: all(n.gateway.presence.registry.is_online(u)
                               for n in (b, c) for u in users), message="all online on b, c")
    assert gossip.frames - frames <= 2 + int(elapsed / gossip.interval)
    assert gossip.frames - frames < len(users) or elapsed >= 6 * gossip.interval
    # each user went online before the next one's arrival left: that frame took it along,
    # unless a frame of its own had already
    assert gossip.rode - rode >= len(users) - 1 - (gossip.frames - frames)


async def test_a_node_leaving_hands_its_chats_over(nodes):
    a, b, c = nodes
    alice, bob = await authed(a, "alice"), await authed(b, "bob")
    chats = [await group(alice, ["bob"]) for _ in range(30)]  # (2/3)**30: one is on c
    chat = next(chat for chat in chats if a.gateway.router.owner(chat) == "c")
    await send(alice, chat, b"before")
    await c.stop()
    for node in (a, b):
        await wait_for(lambda: list(node.gateway.router.ring.nodes) == ["a", "b"],
                       message="c left the ring")
    assert a.gateway.router.owner(chat) == b.gateway.router.owner(chat) != "c"
    for i in range(5):
        await send(alice, chat, f"{i}".encode())
    assert [m.seq for m in await receive_and_ack(bob, 6)] == [1, 2, 3, 4, 5, 6]


def hide(nodes, user: str, on: str, hidden: bool = True) -> None:
    """Make every other node forget (or learn again) that `user` is connected to node `on`,
    through the same Located frame `on` sends when the user leaves (or arrives): their pushes
    for the user then skip `on` and are lost, as in a race with the location map."""
    located = mesh_pb2.Located(gone=[user]) if hidden else mesh_pb2.Located(here=[user])
    for node in nodes:
        router = node.gateway.router
        if router.node_id != on:
            router.locations.on_located(router.mesh.link(on), located)


async def test_a_missed_push_is_filled_from_the_store(nodes):
    a, b, c = nodes
    alice, bob = await authed(a, "alice"), await authed(b, "bob")
    chats = [await group(alice, ["bob"]) for _ in range(30)]
    chat, quiet = [chat for chat in chats if a.gateway.router.owner(chat) != "b"][:2]
    await send(alice, quiet, b"q1")
    assert [m.body for m in await receive_and_ack(bob, 1)] == [b"q1"]
    hide(nodes, "bob", "b")
    await send(alice, chat, b"1")
    await send(alice, chat, b"2")
    await send(alice, quiet, b"q2")
    assert not arrived_messages(bob)  # (a receipt or a retransmit may have come: not a message)
    hide(nodes, "bob", "b", hidden=False)
    # the next offer of `chat` starts at bob's stored cursor, not at the offered seq, and the
    # same read of the cursors brings the quiet chat's missed message too
    await send(alice, chat, b"3")
    got = await receive_and_ack(bob, 4)
    assert [m.body for m in got if m.chat_id == chat] == [b"1", b"2", b"3"]
    assert [m.body for m in got if m.chat_id == quiet] == [b"q2"]
    # a push lost in a chat that then goes quiet: the node's catch-up (after it re-registered,
    # or a link came back) brings it
    hide(nodes, "bob", "b")
    await send(alice, quiet, b"q3")
    hide(nodes, "bob", "b", hidden=False)
    assert not arrived_messages(bob)
    await b.gateway.router._node.catch_up()
    assert [m.body for m in await receive_and_ack(bob, 1)] == [b"q3"]


async def _nodes_with_a_to_c_through(make_server, ports: dict, proxy, **cluster) -> list:
    """The three nodes, a's link to c through `proxy` (the fault to inject), 0.1 s heartbeats."""
    peers = {name: ",".join(f"{n}={proxy.address if name == 'a' and n == 'c' else f'127.0.0.1:{ports[n]}'}"
                            for n in NODES) for name in NODES}
    return [await make_server(server__node_id=index, cluster__enabled=True,
                              cluster__node_name=name, cluster__mesh_port=ports[name],
                              cluster__peers=peers[name], cluster__heartbeat_interval=0.1,
                              **cluster)
            for index, name in enumerate(NODES)]


async def test_every_node_knows_where_a_device_is_before_its_first_sync(make_server):
    """Fan-out reads the location map, so a connecting device's first sync waits until every
    peer with an up link has applied its arrival (locations.py): with a's link to c
    black-holed, bob's Welcome on a comes only once a gave that link up; with healthy links,
    b and c know where he is by then, and know when he has gone."""
    ports = {name: free_port() for name in NODES}
    proxy = await FaultProxy(ports["c"]).start()
    try:
        servers = await _nodes_with_a_to_c_through(make_server, ports, proxy,
                                                   cluster__link_timeout=0.5)
        a, b, c = servers
        await wait_for(lambda: all(len(s.gateway.router.ring.nodes) == 3 for s in servers))
        alice = await authed(a, "alice")
        for other in (b, c):
            assert other.gateway.router.locations.nodes_for(["alice"]) == {"a": ["alice"]}
        alice.close()
        for other in (b, c):
            await wait_for(lambda: other.gateway.router.locations.nodes_for(["alice"]) == {},
                           message="alice's departure known")

        proxy.partition()
        assert a.gateway.router.mesh.link("c") is not None
        bob = await authed(a, "bob")
        assert a.gateway.router.mesh.link("c") is None  # his sync waited until c was given up
        assert b.gateway.router.locations.nodes_for(["bob"]) == {"a": ["bob"]}
        bob.close()
    finally:
        await proxy.stop()


async def test_connects_behind_an_unacknowledged_arrival_go_in_one_frame(make_server):
    """One announcement of arrivals awaits its acknowledgements at a time: the connects that
    come meanwhile wait for it, then go to every peer in one Located frame, and none of them is
    welcomed before every linked peer has them. c is black-holed (with a failure detector that
    would wait 30 s), so alice's arrival waits on c's ack, and the five that follow wait
    behind it until the link to c closes."""
    ports = {name: free_port() for name in NODES}
    proxy = await FaultProxy(ports["c"]).start()
    try:
        servers = await _nodes_with_a_to_c_through(make_server, ports, proxy,
                                                   cluster__link_timeout=30,
                                                   cluster__acceptable_pause=30)
        a, b, _ = servers
        await wait_for(lambda: all(len(s.gateway.router.ring.nodes) == 3 for s in servers))
        told, heard = a.gateway.router.locations, b.gateway.router.locations
        proxy.partition()
        first = asyncio.ensure_future(authed(a, "alice"))
        await wait_for(lambda: heard.nodes_for(["alice"]) == {"a": ["alice"]},
                       message="b has alice; c cannot acknowledge")
        frames, arrivals = told.frames_sent, told.arrivals_sent
        users = [f"storm{i}" for i in range(5)]
        later = [asyncio.ensure_future(authed(a, user)) for user in users]
        await wait_for(lambda: told.connections == 6, message="the five arrived on a")
        assert not first.done() and not any(task.done() for task in later)
        assert heard.nodes_for(users) == {}  # held behind alice's announcement
        assert (told.frames_sent, told.arrivals_sent) == (frames, arrivals)
        proxy.heal()  # a's link to c closes: nobody waits for c any more
        clients = [await first] + [await task for task in later]
        assert heard.nodes_for(users) == {"a": users}
        assert told.arrivals_sent - arrivals == 5
        assert told.frames_sent - frames <= 2  # one to b (and one to c if its link is back)
        for client in clients:
            client.close()
    finally:
        await proxy.stop()


async def test_connects_within_the_interval_wait_for_it_and_share_one_frame(nodes):
    """A node sends at most one Located frame per interval: the first connect on a quiet node
    is told at once (not held), the five that come within the interval after it wait until
    the interval is over and go to each peer in one frame, and each peer has all of them by
    the time they are welcomed."""
    a, b, c = nodes
    told = a.gateway.router.locations
    told.interval = 3.0
    held, frames, arrivals = told.held, told.frames_sent, told.arrivals_sent
    first = await authed(a, "quiet")
    assert (told.held, told.frames_sent - frames) == (held, 2)  # one to b, one to c
    users = [f"quick{i}" for i in range(5)]
    later = [asyncio.ensure_future(authed(a, user)) for user in users]
    await wait_for(lambda: told.connections == 6, message="the five arrived on a")
    assert told.held - held == 1
    assert b.gateway.router.locations.nodes_for(users) == {}  # held until the interval is over
    clients = [first] + list(await asyncio.gather(*later))
    for peer in (b, c):
        assert peer.gateway.router.locations.nodes_for(users) == {"a": users}
    assert (told.frames_sent - frames, told.arrivals_sent - arrivals) == (4, 6)
    assert told.held - held == 1
    for client in clients:
        client.close()


async def test_a_node_with_another_mesh_secret_never_joins(make_server, tmp_path):
    """cluster.mesh_secret(_file) through the configuration: a and b share it and form the
    ring; c holds another one: it refuses their dials (they cannot prove its secret), and
    counts them."""
    ports = {name: free_port() for name in NODES}
    peers = ",".join(f"{name}=127.0.0.1:{port}" for name, port in ports.items())
    secret_file = tmp_path / "mesh-secret"
    secret_file.write_text("m" * 40 + "\n")
    secrets = [{"cluster__mesh_secret_file": str(secret_file)}, {"cluster__mesh_secret": "m" * 40},
               {"cluster__mesh_secret": "x" * 40}]
    a, b, c = [await make_server(
        server__node_id=index, cluster__enabled=True, cluster__node_name=name,
        cluster__mesh_port=ports[name], cluster__peers=peers, cluster__heartbeat_interval=0.1,
        cluster__link_timeout=0.5, **secrets[index]) for index, name in enumerate(NODES)]
    await wait_for(lambda: list(a.gateway.router.ring.nodes) == ["a", "b"] ==
                   list(b.gateway.router.ring.nodes), message="a and b linked")
    await wait_for(lambda: c.gateway.router.mesh.refused >= 2, message="c refused a and b")
    assert list(c.gateway.router.ring.nodes) == ["c"]
    alice, bob = await authed(a, "alice"), await authed(b, "bob")
    chat = await direct(alice, "bob")
    await send(alice, chat, b"inside")
    assert [m.body for m in await receive_and_ack(bob, 1)] == [b"inside"]


async def test_pipelined_sends_keep_their_order_when_the_owner_changes(make_server):
    """A node joins while a device has hundreds of sends in flight to a chat the newcomer will
    own: sends still with the old owner finish first, so seq follows the device's send order."""
    ports = {name: free_port() for name in NODES}
    peers = ",".join(f"{name}=127.0.0.1:{port}" for name, port in ports.items())

    async def node(index: int):
        name = NODES[index]
        return await make_server(server__node_id=index, cluster__enabled=True,
                                 cluster__node_name=name, cluster__mesh_port=ports[name],
                                 cluster__peers=peers, cluster__heartbeat_interval=0.1,
                                 cluster__link_timeout=0.5, limits__send_burst=100_000,
                                 limits__frame_burst=100_000)
    a, _ = await node(0), await node(1)
    await wait_for(lambda: len(a.gateway.router.ring.nodes) == 2)
    alice = await authed(a, "alice")
    two, three = Ring(["a", "b"], 0), Ring(list(NODES), 0)
    chats = [await group(alice, ["bob"]) for _ in range(60)]  # (5/6)**60: one fits
    # forwarded to b (in flight over the mesh) until c joins and takes it
    chat = next(chat for chat in chats if two.owner(chat) == "b" and three.owner(chat) == "c")
    sent = 0

    def burst(count: int) -> list[int]:
        nonlocal sent
        rids = [alice.send(send=pb.Send(client_msg_id=f"m{sent + i}", chat_id=chat, body=b"x"))
                for i in range(count)]
        sent += count
        return rids
    rids = burst(100)
    c = await node(2)
    while a.gateway.router.owner(chat) != "c":  # keep sends in flight until the chat moves
        rids += burst(10)  # ~500/s: a's redial of c backs off up to 2 s, allow 10
        await asyncio.sleep(0.02)
        assert sent < 5100, "c never joined a's ring"
    rids += burst(100)
    seqs = []
    for rid in rids:
        reply = await alice.reply(rid, timeout=15)
        if reply.WhichOneof("body") == "send_ack":
            seqs.append(reply.send_ack.seq)
    assert len(seqs) == len(rids) and seqs == sorted(seqs), seqs
    assert c.gateway.router.forwarding.owned_sends > 0  # the newcomer took the chat over


async def receive_new(client, count: int) -> list[pb.Message]:
    """`count` messages after a device's dedup (wire retransmits of unacked frames are allowed,
    I2), checking that what is new always continues the stream in seq order."""
    got: list[pb.Message] = []
    while len(got) < count:
        for message in await receive_and_ack(client, 1):
            if got and message.seq <= got[-1].seq:
                assert any(m.seq == message.seq and m.body == message.body for m in got), message
                continue
            got.append(message)
    return got


@pytest.mark.parametrize("store", ["sqlite", "scylla"])
async def test_a_partitioned_node_and_the_rest_both_commit_and_heal(make_server, request, store):
    """F5: a is cut off from b and c (every link a dials goes through a fault proxy that
    black-holes). Both sides then own the chat and commit to it; the store fences the seq
    (the SQLite file's head, or the ScyllaDB store's conditional batch). After healing, the
    links come back, every device catches up from the store: every acked message reaches both
    members once, in one gap-free sequence."""
    on_store = {}
    if store == "scylla":
        target = request.getfixturevalue("cql_emptied_keyspace")
        on_store = scylla_overrides(target.hosts, target.port, target.keyspace)
    ports = {name: free_port() for name in NODES}
    proxies = {name: await FaultProxy(ports[name]).start() for name in ("b", "c")}
    try:
        def peers(name: str) -> str:
            # a dials b and c through the proxies; b dials c directly
            return ",".join(f"{n}={proxies[n].address if name == 'a' and n in proxies else f'127.0.0.1:{ports[n]}'}"
                            for n in NODES)
        servers = []
        for index, name in enumerate(NODES):
            servers.append(await make_server(
                server__node_id=index, cluster__enabled=True, cluster__node_name=name,
                cluster__mesh_port=ports[name], cluster__peers=peers(name),
                cluster__heartbeat_interval=0.1, cluster__link_timeout=0.5, **on_store))
        a, b, _ = servers
        await wait_for(lambda: all(len(s.gateway.router.ring.nodes) == 3 for s in servers))
        alice, bob = await authed(a, "alice"), await authed(b, "bob")
        chat = await group(alice, ["bob"])
        acked = {(await send(alice, chat, b"before")).seq}

        for proxy in proxies.values():
            proxy.partition()
        await wait_for(lambda: list(a.gateway.router.ring.nodes) == ["a"], timeout=5,
                       message="a alone on its ring")
        await wait_for(lambda: "a" not in b.gateway.router.ring.nodes, timeout=5)
        for i in range(3):  # both sides own the chat now, and both commit
            acked.add((await send(alice, chat, b"a%d" % i)).seq)
            acked.add((await send(bob, chat, b"b%d" % i)).seq)
        for i in range(3, 5):  # alice's last ones: nothing bob sends reveals them
            acked.add((await send(alice, chat, b"a%d" % i)).seq)
        assert acked == set(range(1, 10))  # 9 sends, 9 distinct seqs: no seq twice (I4)

        for proxy in proxies.values():
            proxy.heal()
        await wait_for(lambda: all(len(s.gateway.router.ring.nodes) == 3 for s in servers),
                       timeout=10, message="the partition healed")
        # pushes across the partition were lost; gaps, retransmits and the re-linked nodes'
        # catch-up fill from the store: each message once, in seq order (I1-I3)
        got_bob = await receive_new(bob, 6)
        got_alice = await receive_new(alice, 3)
        assert [m.body for m in got_bob] == [b"before", *(b"a%d" % i for i in range(5))]
        assert [m.body for m in got_alice] == [b"b%d" % i for i in range(3)]
    finally:
        for proxy in proxies.values():
            await proxy.stop()


class SwallowsOneCancel:
    """The real registry, except that a lease refresh swallows the first cancel it gets, as a
    client built on asyncio.wait_for can on Python 3.11 when the reply lands with the cancel."""

    def __init__(self, registry) -> None:
        self._registry = registry
        self.refreshing = asyncio.Event()
        self.swallowed = 0

    def __getattr__(self, name):
        return getattr(self._registry, name)

    async def refresh_node(self, *args):
        self.refreshing.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.swallowed += 1
        return await self._registry.refresh_node(*args)


async def test_a_node_stops_even_when_a_registry_call_swallows_its_cancel(make_server,
                                                                          redis_cluster):
    server = await make_server(cluster__enabled=True, cluster__node_name="a",
                               cluster__redis=",".join(redis_cluster.addresses),
                               cluster__redis_prefix=f"t{uuid.uuid4().hex[:12]}",
                               cluster__lease_ttl=0.6)
    membership = server.gateway.router.membership
    membership._registry = registry = SwallowsOneCancel(membership._registry)
    await asyncio.wait_for(registry.refreshing.wait(), 10)
    async with asyncio.timeout(10):  # the maintenance loop would run on forever
        await server.stop()
    assert registry.swallowed == 1


async def test_a_block_is_honoured_by_the_owner_wherever_the_blocked_user_is(nodes):
    a, b, c = nodes
    ring = a.gateway.router.ring
    blocker, blocked = next((f"alice{i}", f"mallory{i}") for i in range(1000)
                            if ring.owner(direct_chat_id(f"alice{i}", f"mallory{i}")) == "b")
    alice, mallory = await authed(a, blocker), await authed(c, blocked)
    chat = await direct(mallory, blocker)  # owned by b; the users are on a and c
    await send(mallory, chat, b"before")
    await receive_and_ack(alice, 1)
    assert b.gateway.services.blocks.cached_blockers(blocked) == frozenset()  # the owner's view
    await request(mallory, subscribe_presence=pb.SubscribePresence(user_ids=[blocker]))
    assert (await mallory.recv("presence")).presence.online

    def every_node_knows(blocking: bool):
        def check():
            return all(s.gateway.services.blocks.cached_blockers(blocked) in
                       (None, frozenset({blocker}) if blocking else frozenset()) for s in nodes)
        return check

    await request(alice, block=pb.Block(user_id=blocked))
    await wait_for(every_node_knows(True), message="the block reached every node's cache")
    reply = await request(mallory, send=pb.Send(client_msg_id="after", chat_id=chat, body=b"x"))
    assert reply.error.code == pb.BLOCKED
    hidden = (await mallory.recv("presence")).presence
    assert (hidden.user_id, hidden.online, hidden.last_seen_ms) == (blocker, False, 0)
    reply = await request(mallory, create_chat=pb.CreateChat(kind=pb.DIRECT,
                                                             member_user_ids=[blocker]))
    assert reply.error.code == pb.BLOCKED

    await request(alice, unblock=pb.Unblock(user_id=blocked))
    await wait_for(every_node_knows(False), message="the unblock reached every node's cache")
    assert (await mallory.recv("presence")).presence.online
    await send(mallory, chat, b"after the unblock")
    assert [m.body for m in await receive_and_ack(alice, 1)] == [b"after the unblock"]


async def test_membership_events_are_committed_by_the_owner(nodes):
    """A removal and a re-add made through other nodes than the chat's owner: the removed
    member's device on a third node gets its range, then the new one, with no gap."""
    a, b, c = nodes
    alice, bob = await authed(a, "alice"), await authed(c, "bob")
    chats = [await group(alice, ["bob"]) for _ in range(30)]
    chat = next(chat for chat in chats if a.gateway.router.owner(chat) == "b")
    await send(alice, chat, b"1")
    await request(alice, remove_members=pb.RemoveMembers(chat_id=chat, user_ids=["bob"]))
    await send(alice, chat, b"3: bob is away")
    await request(alice, add_members=pb.AddMembers(chat_id=chat, user_ids=["bob"]))
    await send(alice, chat, b"5")
    got = await receive_and_ack(bob, 4)
    assert [m.seq for m in got] == [1, 2, 4, 5]
    assert [m.membership.action for m in got] == [0, pb.MembershipEvent.REMOVED,
                                                  pb.MembershipEvent.ADDED, 0]
    assert b.gateway.router.forwarding.owned_sends == 5  # the two events with the sends, on b
