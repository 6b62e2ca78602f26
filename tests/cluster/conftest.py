"""Real clusters: 3 `switchboard serve` processes over a real Redis Cluster (docs/cluster.md).

`gateways` shares the session-wide 3-master Redis Cluster (`redis_cluster`; each test gets its
own key prefix, cluster.redis_prefix); `ha_gateways` runs on a fresh 3 masters + 3 replicas
(`redis_cluster_with_replicas`, reachable as `ha_gateways.redis_cluster`) for tests that kill a
Redis master. Both fixtures come from tests/support/redis_cluster.py (a plugin of
tests/conftest.py) and skip only when redis-server is not installed. The gateways are torn down
whatever happens (SIGTERM, then SIGKILL), and a failing test shows their log tails."""
from __future__ import annotations

import inspect

import pytest

from tests.support.cluster import GatewayCluster
from tests.support.raw import OPEN_CLIENTS


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name in ("gateways", "ha_gateways"):
            cluster = funcargs.get(name)
            if isinstance(cluster, GatewayCluster):
                report.sections.append((f"{name}: gateway logs", cluster.logs(80)))
    return report


async def _close_clients() -> None:
    while OPEN_CLIENTS:
        closing = OPEN_CLIENTS.pop().close()
        if inspect.isawaitable(closing):
            await closing


async def _running(tmp_path, redis, store=None):
    cluster = GatewayCluster(tmp_path, redis.addresses, store=store)
    cluster.redis_cluster = redis
    try:
        await cluster.start()
        yield cluster
    finally:
        await _close_clients()
        cluster.stop()


@pytest.fixture
async def gateways(request, tmp_path, redis_cluster):
    """On the shared SQLite file; a test parametrized indirectly with "scylla" gets the
    ScyllaDB store instead, on an emptied keyspace on the session's Cassandra node."""
    store = None
    if getattr(request, "param", "sqlite") == "scylla":
        target = request.getfixturevalue("cql_emptied_keyspace")
        store = {"store.kind": "scylla", "store.hosts": ",".join(target.hosts),
                 "store.port": target.port, "store.keyspace": target.keyspace,
                 "store.replication_strategy": "SimpleStrategy", "store.replication_factor": 1}
    async for cluster in _running(tmp_path, redis_cluster, store):
        yield cluster


@pytest.fixture
async def ha_gateways(tmp_path, redis_cluster_with_replicas):
    """Masters with replicas, fresh for the test: it may kill one."""
    async for cluster in _running(tmp_path, redis_cluster_with_replicas):
        yield cluster
