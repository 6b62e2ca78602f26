"""The gateway on the ScyllaDB store, against real Cassandra nodes: the whole path works, and
the store's faults cost retries, never an acknowledged message or a second copy. Every store
node down; a node frozen (SIGSTOP) while sends pile up; kill -9 of one of three nodes under load
(RF 3, QUORUM)."""
from __future__ import annotations

import asyncio
import signal
import uuid

import pytest

from switchboard.core.model import StoredMessage
from switchboard.core.store_scylla import ScyllaStore, replication_map
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.cassandra import start_cluster
from tests.support.raw import RawClient
from tests.support.rawflow import authed, direct, receive_and_ack, request, send
from tests.support.waiting import wait_for

UNLIMITED = {"limits__sends_per_second": 100_000.0, "limits__send_burst": 100_000.0,
             "limits__frames_per_second": 100_000.0, "limits__frame_burst": 100_000.0}


def scylla(hosts, port: int, keyspace: str, **overrides) -> dict:
    return {"store__kind": "scylla", "store__hosts": ",".join(hosts), "store__port": port,
            "store__keyspace": keyspace, "store__replication_strategy": "SimpleStrategy",
            "store__replication_factor": 1, **overrides}


async def pipelined(client: RawClient, chat: str, cmids: list[str],
                    timeout: float = 60.0) -> dict[str, pb.ServerFrame]:
    """Send all at once; the reply (send_ack or error) to each, by client_msg_id."""
    rids = {client.send(send=pb.Send(client_msg_id=cmid, chat_id=chat, body=cmid.encode())): cmid
            for cmid in cmids}
    # one reply at a time: RawClient keeps frames for later calls, not for concurrent ones
    return {cmid: await client.reply(rid, timeout=timeout) for rid, cmid in rids.items()}


async def until_all_acked(client: RawClient, chat: str, cmids: list[str],
                          acks: dict[str, pb.SendAck], timeout: float = 90.0) -> None:
    """Retry, with the same client_msg_ids, every send not acked yet, until all are."""
    async def all_acked() -> bool:
        missing = [cmid for cmid in cmids if cmid not in acks]
        for cmid, reply in (await pipelined(client, chat, missing)).items():
            if reply.WhichOneof("body") == "send_ack":
                acks[cmid] = reply.send_ack
            else:
                assert reply.error.code == pb.UNAVAILABLE and reply.error.retry_after_ms > 0
        return len(acks) == len(cmids)
    await wait_for(all_acked, timeout=timeout, interval=0.3, message="every send acknowledged")


def assert_log_matches(log: list[StoredMessage], acks: dict[str, pb.SendAck]) -> None:
    """The chat holds each send once, at the seq its SendAck named, with no hole."""
    assert [m.seq for m in log] == list(range(1, len(log) + 1))
    assert {m.client_msg_id: m.seq for m in log} == {cmid: a.seq for cmid, a in acks.items()}


async def test_chat_sync_and_lists_work_on_the_scylla_store(make_server, cql_emptied_keyspace):
    target = cql_emptied_keyspace
    server = await make_server(**scylla(target.hosts, target.port, target.keyspace))
    alice, bob = await authed(server, "alice"), await authed(server, "bob")
    chat = await direct(alice, "bob")
    acks = [await send(alice, chat, f"{i}".encode()) for i in range(3)]
    assert [a.seq for a in acks] == [1, 2, 3]
    assert [m.body for m in await receive_and_ack(bob, 3)] == [b"0", b"1", b"2"]
    assert (await send(alice, chat, b"again", cmid="c1")).duplicate
    laptop = await RawClient.connect(server.url, server.token("bob", "laptop"))
    await laptop.recv("welcome")
    assert [m.seq for m in await receive_and_ack(laptop, 3)] == [1, 2, 3]  # synced
    await laptop.recv("sync_complete")
    await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=2))
    [summary] = (await request(bob, list_chats=pb.ListChats())).chat_list.chats
    assert (summary.chat_id, summary.head_seq, summary.read_seq, summary.member_count) == (
        chat, 3, 2, 2)


@pytest.fixture
def private_node(tmp_path):
    """A node of this test's own, free to stop and start."""
    cluster = start_cluster(tmp_path / "cassandra")
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_every_store_node_down_fails_sends_unavailable_then_recovers(make_server,
                                                                          private_node):
    """The one node stops (SIGTERM: a lone node killed -9 loses the commit-log tail it had not
    synced yet, ScyllaDB's default periodic sync too; surviving a crash is what replicas are
    for, see the 3-node test)."""
    cassandra_node = private_node
    server = await make_server(**scylla(private_node.hosts, private_node.port, "down",
                                        store__request_timeout=2.0))
    alice, bob = await authed(server, "alice"), await authed(server, "bob")
    chat = await direct(alice, "bob")
    acks = {"before": await send(alice, chat, b"before", cmid="before")}
    assert [m.body for m in await receive_and_ack(bob, 1)] == [b"before"]
    cmids = ["before", *(f"down{i}" for i in range(5))]
    # node operations block: off the loop, which also runs the server and the devices
    await asyncio.to_thread(cassandra_node.nodes[0].process.stop, signal.SIGTERM, 60)
    try:
        replies = await pipelined(alice, chat, cmids[1:])
        assert all(r.error.code == pb.UNAVAILABLE and r.error.retry_after_ms > 0
                   for r in replies.values())
        assert (await request(alice, ping=pb.Ping(client_time_ms=1))).WhichOneof("body") == "pong"
    finally:
        await asyncio.to_thread(cassandra_node.restart, 0)
    await until_all_acked(alice, chat, cmids, acks)  # the gateway found the node by itself
    assert [a.seq for a in acks.values()] == list(range(1, 7))
    assert [m.client_msg_id for m in await receive_and_ack(bob, 5, timeout=30)] == cmids[1:]
    assert_log_matches(await server.gateway.services.store.read_messages(chat, 0, 100), acks)


async def test_a_frozen_store_node_bounds_the_queue_and_loses_nothing_acked(
        make_server, cql_emptied_keyspace, cassandra_node):
    target = cql_emptied_keyspace
    server = await make_server(**scylla(target.hosts, target.port, target.keyspace,
                                        store__request_timeout=6.0),
                               writer__max_pending=40, writer__max_rows=10, **UNLIMITED)
    writer = server.gateway.services.messages.writer
    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    acks = {"warm": await send(alice, chat, b"warm", cmid="warm")}  # members now cached
    cmids = [f"m{i}" for i in range(200)]
    peak = 0

    def watch() -> None:
        nonlocal peak
        peak = max(peak, writer.pending)
        sampler.append(asyncio.get_running_loop().call_later(0.01, watch))
    sampler: list[asyncio.TimerHandle] = []
    watch()
    cassandra_node.pause(0)
    try:
        sending = asyncio.ensure_future(pipelined(alice, chat, cmids))
        await wait_for(lambda: writer.pending >= 40, timeout=10, message="the queue full")
        await asyncio.sleep(2.0)  # the node stays frozen a while with the queue full
    finally:
        cassandra_node.resume(0)
    replies = await sending
    sampler[-1].cancel()
    acks.update({cmid: r.send_ack for cmid, r in replies.items()
                 if r.WhichOneof("body") == "send_ack"})
    refused = [r for r in replies.values() if r.WhichOneof("body") == "error"]
    assert refused and all(r.error.code == pb.UNAVAILABLE and r.error.retry_after_ms > 0
                           for r in refused)
    assert peak <= 40
    await until_all_acked(alice, chat, ["warm", *cmids], acks)
    assert_log_matches(await server.gateway.services.store.read_messages(chat, 0, 1000), acks)


async def test_kill9_of_one_of_three_nodes_under_load_loses_no_acked_message(
        make_server, cassandra_cluster):
    keyspace = f"k{uuid.uuid4().hex[:16]}"
    server = await make_server(**scylla(cassandra_cluster.hosts, cassandra_cluster.port, keyspace,
                                        store__replication_factor=3, store__consistency="QUORUM",
                                        store__serial_consistency="SERIAL",
                                        store__request_timeout=4.0), **UNLIMITED)
    alice, bob = await authed(server, "alice"), await authed(server, "bob")
    chats = [await direct(alice, "bob"), await direct(bob, "carol")]
    acks: dict[tuple[int, str], pb.SendAck] = {}

    async def load(client: RawClient, index: int) -> None:
        for wave in range(30):
            cmids = [f"w{wave}.{i}" for i in range(10)]
            for cmid, reply in (await pipelined(client, chats[index], cmids)).items():
                if reply.WhichOneof("body") == "send_ack":
                    acks[(index, cmid)] = reply.send_ack
    loads = [asyncio.ensure_future(load(client, i)) for i, client in enumerate((alice, bob))]
    await wait_for(lambda: len(acks) >= 150, timeout=60, message="load under way")
    await asyncio.to_thread(cassandra_cluster.kill, 2)
    await asyncio.gather(*loads)
    for index, client in enumerate((alice, bob)):
        cmids = [cmid for wave in range(30) for cmid in (f"w{wave}.{i}" for i in range(10))]
        mine = {cmid: ack for (i, cmid), ack in acks.items() if i == index}
        await until_all_acked(client, chats[index], cmids, mine)
        acks.update({(index, cmid): ack for cmid, ack in mine.items()})
    # read back through a store of our own, at QUORUM, with the killed node still down
    reader = ScyllaStore(cassandra_cluster_settings(cassandra_cluster), keyspace=keyspace,
                         replication=replication_map("SimpleStrategy", 3, {}),
                         create_schema=False)
    await reader.open()
    try:
        for index, chat in enumerate(chats):
            log = await reader.read_messages(chat, 0, 1000)
            assert_log_matches(log, {cmid: a for (i, cmid), a in acks.items() if i == index})
    finally:
        await reader.close()


def cassandra_cluster_settings(cluster):
    from switchboard.core.cql import CqlSettings
    return CqlSettings(hosts=tuple(cluster.hosts), port=cluster.port, consistency="QUORUM",
                       serial_consistency="SERIAL")
