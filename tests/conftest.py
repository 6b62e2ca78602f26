import inspect

import pytest

from tests.support.raw import OPEN_CLIENTS
from tests.support.server import InProcessServer, fast_config
from tests.support.waiting import finishes, wait_for

# Real Redis Clusters (redis_cluster, redis_cluster_with_replicas) and real Cassandra nodes
# (cassandra_node, cql_keyspace, cassandra_cluster) and an S3 API server (s3_endpoint, s3_media)
# for every test package.
pytest_plugins = ["tests.support.redis_cluster", "tests.support.cassandra", "tests.support.s3"]


@pytest.fixture
async def make_server(tmp_path):
    """Start in-process servers with config overrides (section__key=value). At teardown every
    client the test opened is closed and each running server must come back to zero
    connections, zero unauthenticated sockets, no presence subscriptions and no tasks: a test
    that leaks fails (uvloop's live-object counters, the same idea)."""
    started: list[InProcessServer] = []

    async def start(**overrides) -> InProcessServer:
        srv = await InProcessServer(fast_config(tmp_path, **overrides)).start()
        started.append(srv)
        return srv

    yield start
    while OPEN_CLIENTS:
        closing = OPEN_CLIENTS.pop().close()
        if inspect.isawaitable(closing):
            await finishes(closing, 30, "closing a test's client")
    for srv in started:
        if srv.stopped:
            continue
        gw = srv.gateway
        await wait_for(lambda: (gw.hub.connections, gw.pending_auth, len(gw.tasks),
                                len(gw.presence._subscribers)) == (0, 0, 0, 0),
                       timeout=10, message="server resources back to zero after the test")
        await finishes(srv.stop(), 60, "the server's stop")


@pytest.fixture
async def server(make_server):
    return await make_server()
