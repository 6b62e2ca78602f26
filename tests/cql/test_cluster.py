"""Three real Cassandra nodes on 127.0.0.1-3 (the `cassandra_cluster` fixture; slow): they come
up all UN, a keyspace with RF 3 takes QUORUM writes through a kill -9 of one node, the node
restarts and rejoins, a paused node stops answering until resumed, and the driver routes each
prepared statement to a replica of its partition."""
from __future__ import annotations

import asyncio
import uuid

import pytest
from cassandra.cluster import NoHostAvailable

from switchboard.core.cql import CqlSettings, connect
from switchboard.tools.devcassandra import DATACENTER
from tests.support.waiting import wait_for


@pytest.fixture
async def rf3(cassandra_cluster):
    """A session on the cluster (QUORUM by default) and a fresh keyspace with RF 3."""
    keyspace = f"t_{uuid.uuid4().hex[:16]}"
    session = await connect(CqlSettings(hosts=tuple(cassandra_cluster.hosts),
                                        port=cassandra_cluster.port, consistency="QUORUM"))
    await session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                          f"{{'class': 'NetworkTopologyStrategy', '{DATACENTER}': 3}}",
                          prepare=False)
    await session.execute(f"CREATE TABLE {keyspace}.kv (k int PRIMARY KEY, v text)",
                          prepare=False)
    yield session, keyspace
    await session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", prepare=False, timeout=60)
    await session.close()


def test_three_nodes_come_up_each_seeing_the_others(cassandra_cluster):
    assert cassandra_cluster.hosts == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    for node in cassandra_cluster.nodes:
        peers = {str(row.peer) for row in cassandra_cluster.query(
            node.host, "SELECT peer FROM system.peers_v2")}
        assert peers == set(cassandra_cluster.hosts) - {node.host}
        [local] = cassandra_cluster.query(node.host, "SELECT data_center, tokens FROM system.local")
        assert local.data_center == DATACENTER and len(local.tokens) == 1


async def test_quorum_writes_survive_a_killed_node_which_restarts_and_rejoins(cassandra_cluster,
                                                                             rf3):
    cql, keyspace = rf3
    insert = f"INSERT INTO {keyspace}.kv (k, v) VALUES (?, ?)"
    await asyncio.gather(*(cql.execute(insert, (k, "before"), idempotent=True)
                           for k in range(100)))
    cassandra_cluster.kill(1)
    assert not cassandra_cluster.nodes[1].alive()
    # Two replicas of three are a quorum: every write goes through, whichever node coordinates.
    await asyncio.gather(*(cql.execute(insert, (k, "while down"), idempotent=True)
                           for k in range(100, 300)))
    # A read contacts a quorum only, so it can wait on the dead node until the others notice.
    cassandra_cluster.wait_down(1)
    rows = (await cql.execute(f"SELECT k FROM {keyspace}.kv")).rows
    assert sorted(row.k for row in rows) == list(range(300))

    cassandra_cluster.restart(1)  # returns once all three see each other up again
    assert cassandra_cluster.nodes[1].alive()
    # ALL needs the restarted node's answer too (it catches up by hints and read repair).
    rows = (await cql.execute(f"SELECT k, v FROM {keyspace}.kv", consistency="ALL")).rows
    assert sorted(row.k for row in rows) == list(range(300))
    [row] = cassandra_cluster.query("127.0.0.2", f"SELECT v FROM {keyspace}.kv WHERE k = 299",
                                    consistency="ALL")
    assert row.v == "while down"


def test_a_paused_node_answers_nothing_until_resumed(cassandra_cluster):
    cassandra_cluster.pause(2)
    with pytest.raises(NoHostAvailable, match="Timed out creating connection"):
        cassandra_cluster.query("127.0.0.3", "SELECT release_version FROM system.local",
                                timeout=1.0)  # not even the CQL handshake is answered
    cassandra_cluster.resume(2)
    [row] = cassandra_cluster.query("127.0.0.3", "SELECT release_version FROM system.local")
    assert row.release_version.startswith("5.0")


async def test_prepared_statements_go_to_a_replica_of_their_partition(cassandra_cluster):
    """Token-aware routing needs the keyspace's replication and the statement's partition key;
    with RF 1 each key has one replica, and the driver's plan must start there."""
    keyspace = f"t_{uuid.uuid4().hex[:16]}"
    session = await connect(CqlSettings(hosts=tuple(cassandra_cluster.hosts),
                                        port=cassandra_cluster.port))
    try:
        await session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                              f"{{'class': 'NetworkTopologyStrategy', '{DATACENTER}': 1}}",
                              prepare=False)
        await session.execute(f"CREATE TABLE {keyspace}.kv (k int PRIMARY KEY)", prepare=False)
        prepared = await session.prepare(f"INSERT INTO {keyspace}.kv (k) VALUES (?)")
        cluster = session._cluster
        assert cluster.protocol_version == 4
        policy = cluster.profile_manager.default.load_balancing_policy
        await wait_for(lambda: cluster.metadata.keyspaces.get(keyspace) is not None,
                       message="the driver to know the keyspace")
        first_hosts = set()
        for k in range(30):
            bound = prepared.bind((k,))
            [replica] = cluster.metadata.get_replicas(keyspace, bound.routing_key)
            first = next(iter(policy.make_query_plan(keyspace, bound)))
            assert first == replica
            first_hosts.add(first.address)
        assert first_hosts == set(cassandra_cluster.hosts)  # the keys spread over all three
    finally:
        await session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", prepare=False, timeout=60)
        await session.close()
