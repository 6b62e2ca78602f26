"""switchboard.tools.devcassandra: the CLI brings a real node up and down, says what is missing,
and works offline once the jars are cached. (The session node of the other tests comes from the
same class: tests/support/cassandra.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from switchboard.core.cql import CqlRejected, CqlSettings, connect
from switchboard.tools import devcassandra
from switchboard.tools.devcassandra import CassandraCluster, DevCassandraError, Process
from tests.support.cassandra import start_cluster

TOOL = [sys.executable, "-m", "switchboard.tools.devcassandra"]


def _run(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*TOOL, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.slow
async def test_up_starts_a_node_that_answers_down_stops_exactly_it_up_again_resumes(cassandra_node,
                                                                               tmp_path):
    # cassandra_node: the jars are cached, so this run measures the node, not Maven.
    started = _run("up", "--dir", str(tmp_path))
    assert started.returncode == 0, started.stderr
    state = json.loads((tmp_path / devcassandra.STATE_FILE).read_text())
    assert f"hosts 127.0.0.1 port {state['port']}" in started.stdout
    assert f"down --dir {tmp_path}" in started.stdout
    [entry] = state["nodes"]
    node = Process(**entry)
    try:
        assert node.alive() and Path(node.log).exists()
        # A client other than the tool's own probe: what `up` printed is all it needs.
        session = await connect(CqlSettings(hosts=("127.0.0.1",), port=state["port"]))
        try:
            [row] = (await session.execute("SELECT cluster_name FROM system.local")).rows
            await session.execute("CREATE KEYSPACE kept WITH replication = "
                                  "{'class': 'SimpleStrategy', 'replication_factor': 1}",
                                  prepare=False)
        finally:
            await session.close()
        assert row.cluster_name == devcassandra.CLUSTER_NAME
        assert state["port"] != cassandra_node.port  # its own ports: never the other node's

        stopped = _run("down", "--dir", str(tmp_path))
        assert stopped.returncode == 0, stopped.stderr
        assert f"pid {node.pid}" in stopped.stdout
        assert not node.alive()
        assert not (tmp_path / devcassandra.STATE_FILE).exists()
        assert cassandra_node.nodes[0].alive()  # the session's node was not touched
    finally:
        node.stop()
    again = _run("down", "--dir", str(tmp_path))
    assert again.returncode == 1 and "nothing to stop" in again.stderr

    # `up` in the same directory starts on the same data, on the same port.
    restarted = _run("up", "--dir", str(tmp_path))
    assert restarted.returncode == 0, restarted.stderr
    try:
        assert f"port {state['port']}" in restarted.stdout
        session = await connect(CqlSettings(hosts=("127.0.0.1",), port=state["port"]))
        try:
            kept = (await session.execute("SELECT keyspace_name FROM system_schema.keyspaces "
                                          "WHERE keyspace_name = 'kept'")).rows
        finally:
            await session.close()
        assert [row.keyspace_name for row in kept] == ["kept"]
    finally:
        assert _run("down", "--dir", str(tmp_path)).returncode == 0


def test_up_names_what_is_missing(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "JAVA_HOME"}, "PATH": str(empty),
           devcassandra.CACHE_ENV: str(tmp_path / "cache")}
    result = _run("up", "--dir", str(tmp_path / "dev"), env=env, timeout=60)
    assert result.returncode == 1
    assert "java (a JDK 17" in result.stderr
    assert "mvn, to fetch Cassandra" in result.stderr
    assert not (tmp_path / "dev" / devcassandra.STATE_FILE).exists()


def test_cached_jars_need_neither_maven_nor_the_network(cassandra_node, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    started = time.monotonic()
    lib = devcassandra.resolve_jars()
    assert time.monotonic() - started < 1.0
    assert (lib / f"cassandra-all-{devcassandra.VERSION}.jar").exists()
    assert any(lib.glob("jamm-*.jar"))


def test_nodes_other_than_1_or_3_are_refused(tmp_path):
    with pytest.raises(ValueError, match="nodes: 1, or 3"):
        CassandraCluster(tmp_path, nodes=2)


@pytest.mark.slow
async def test_password_authenticator_lets_in_the_superuser_only(tmp_path):
    cluster = start_cluster(tmp_path, authenticator="PasswordAuthenticator")
    try:
        settings = dict(hosts=tuple(cluster.hosts), port=cluster.port)
        user, password = devcassandra.SUPERUSER
        session = await connect(CqlSettings(**settings, username=user, password=password))
        try:
            [row] = (await session.execute("SELECT role FROM system_auth.roles WHERE role = ?",
                                           (user,))).rows
            assert row.role == user
        finally:
            await session.close()
        with pytest.raises(CqlRejected, match="AuthenticationFailed|Bad credentials|Provided"):
            await connect(CqlSettings(**settings, username=user, password="wrong"))
    finally:
        cluster.stop()


def test_restart_refuses_a_running_node(cassandra_node):
    with pytest.raises(DevCassandraError, match="is running"):
        cassandra_node.restart(0)
