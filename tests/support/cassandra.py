"""Real Cassandra nodes for tests: the CQL server the ScyllaDB store runs against, started by the
harness in a tmp dir and always stopped. A plugin of tests/conftest.py.

The logic lives in switchboard/tools/devcassandra.py (the dev tool starts the same nodes); this
module only adapts it to pytest:

* `cassandra_node`: one node for the whole session, started the first time a test asks for it
  (about 6 s; later tests pay nothing) and stopped at the end.
* `cql_keyspace`: a fresh keyspace on that node for one test (unique name, RF 1, dropped
  after), as a `CqlTarget`: contact points, port, keyspace, `settings()` for core/cql.py.
* `cql_emptied_keyspace`: the same for tests that keep the store's schema as it is, cheaper:
  one keyspace for the session, every table in it emptied before each test.
* `cassandra_cluster`: three nodes on 127.0.0.1-3, shared by the tests of one module (a start
  is ~15 s of a 2-core machine's time) and brought back to all-up before each test, so a test
  may kill, pause or restart nodes. Tests using it are marked `cassandra_cluster` and `slow`
  (`-m "not cassandra_cluster"` leaves them out).

When java, mvn (until Cassandra's jars are cached) or the driver are missing the tests skip,
saying what to install, unless SWITCHBOARD_REQUIRE_SERVICES=1 (CI), where they fail. A failing
test shows the tail of each node's log.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from switchboard.tools.devcassandra import CassandraCluster, missing_tools
from tests.support.services import unavailable


@dataclass(frozen=True)
class CqlTarget:
    """Where a test's CQL goes: the contact points, the port and the test's own keyspace."""
    hosts: tuple[str, ...]
    port: int
    keyspace: str

    def settings(self, **overrides):
        """core/cql.py settings for this target (keyspace set), with `overrides`."""
        from switchboard.core.cql import CqlSettings
        return CqlSettings(**{"hosts": self.hosts, "port": self.port,
                              "keyspace": self.keyspace, **overrides})


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cassandra_cluster: runs on a 3-node Cassandra cluster "
                                       "(tests/support/cassandra.py); slow")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "cassandra_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker("cassandra_cluster")
            item.add_marker("slow")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for name in ("cassandra_node", "cassandra_cluster"):
            cluster = getattr(item, "funcargs", {}).get(name)
            if isinstance(cluster, CassandraCluster):
                report.sections.append((f"{name}: log tails", "\n\n".join(
                    f"--- {node.log}\n{node.log_tail(40)}" for node in cluster.nodes)))
    return report


def start_cluster(directory, nodes: int = 1, **options) -> CassandraCluster:
    """A started cluster, or the test skipped (failed where services are required) when this
    machine cannot run one. A node that fails to start is an error either way."""
    missing = missing_tools()
    if missing:
        unavailable("cannot start Cassandra, missing: " + "; ".join(missing))
    return CassandraCluster(directory, nodes, **options).start()


@pytest.fixture(scope="session")
def cassandra_node(tmp_path_factory) -> Iterator[CassandraCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cassandra"))
    try:
        yield cluster
    finally:
        cluster.stop(graceful=False)  # its data goes with the tmp dir


@pytest.fixture(scope="session")
def _admin_session(cassandra_node):
    """A plain driver session for creating and dropping the tests' keyspaces."""
    with cassandra_node.session(cassandra_node.hosts[0], timeout=60.0) as session:
        yield session


@pytest.fixture
def cql_keyspace(cassandra_node, _admin_session) -> Iterator[CqlTarget]:
    keyspace = f"t_{uuid.uuid4().hex[:16]}"
    _admin_session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                           "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    try:
        yield CqlTarget(tuple(cassandra_node.hosts), cassandra_node.port, keyspace)
    finally:
        _admin_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


@pytest.fixture(scope="session")
def _shared_keyspace(cassandra_node, _admin_session) -> Iterator[str]:
    keyspace = f"shared_{uuid.uuid4().hex[:16]}"
    _admin_session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                           "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    try:
        yield keyspace
    finally:
        _admin_session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


@pytest.fixture
def cql_emptied_keyspace(cassandra_node, _admin_session, _shared_keyspace) -> CqlTarget:
    """One keyspace for every test that asks for it, each of its tables emptied (TRUNCATE)
    before the test: the same empty start as `cql_keyspace` for a test that leaves the schema
    as the store made it, without the seconds of schema changes a new keyspace costs."""
    tables = _admin_session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
        (_shared_keyspace,))
    for future in [_admin_session.execute_async(f"TRUNCATE {_shared_keyspace}.{row.table_name}")
                   for row in tables]:
        future.result()
    return CqlTarget(tuple(cassandra_node.hosts), cassandra_node.port, _shared_keyspace)


@pytest.fixture(scope="module")
def _module_cassandra_cluster(tmp_path_factory) -> Iterator[CassandraCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cassandra-cluster"), nodes=3)
    try:
        yield cluster
    finally:
        cluster.stop(graceful=False)  # a graceful stop of three takes ~15 s


@pytest.fixture
def cassandra_cluster(_module_cassandra_cluster) -> CassandraCluster:
    """The module's 3-node cluster with every node running, resumed and seen up by all."""
    cluster = _module_cassandra_cluster
    for index, node in enumerate(cluster.nodes):
        if node.alive():
            cluster.resume(index)
        else:
            cluster.restart(index)
    cluster.wait_all_up()
    return cluster
