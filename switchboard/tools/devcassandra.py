"""A local Apache Cassandra for development and tests: one node on 127.0.0.1, or a cluster of
three on 127.0.0.1, 127.0.0.2 and 127.0.0.3, speaking the CQL protocol the ScyllaDB store uses.

    python -m switchboard.tools.devcassandra up [--nodes 1|3] [--dir D] [--port P] [--auth]
    python -m switchboard.tools.devcassandra down --dir D
    python -m switchboard.tools.devcassandra fetch    # only resolve the jars (CI does, up front)

No ScyllaDB server can be installed on the project's machines; Cassandra 5.0 speaks the same
native protocol and runs from Maven Central on a JDK 17. The first `up` resolves
`org.apache.cassandra:cassandra-all` and its ~100 jars (66 MB) with Maven into a cache,
~/.cache/switchboard/cassandra-<version>/lib (the root moves with $SWITCHBOARD_CASSANDRA_CACHE);
later runs take them from there, without Maven or the network.

Each node is one JVM running `CassandraDaemon` in the foreground, with the JDK 17 module flags
and the jamm agent of Cassandra's own start scripts, in its own directory: cassandra.yaml,
logback.xml, data, commitlog, hints, saved_caches, system.log (the log) and stdout.log (what the
JVM itself prints). The nodes of a cluster listen on the same two ports (CQL and storage) on
different loopback addresses, as hosts would; the ports are picked free below the kernel's
ephemeral range (unless `--port` names the CQL one), so no client socket takes them while the
JVM starts; `up` in the directory of an earlier run starts on its data, with its ports. There
is no JMX. `up` returns once every node answers a CQL query through the real driver and, with
several nodes, each node sees every other as up and normal (UN in nodetool's words): it lists
them as peers on its own schema version and serves a read at consistency ALL of a keyspace
replicated to all of them (system_distributed, RF 3).

Settings chosen for a quick start on a small shared machine (on 2 cores, one node answers 6 s
after `up` when the machine is quiet and 9 to 12 s when other work keeps it busy; three in 15
to 17 s, 22 to 26 s busy; each node holds ~400 MB), and why:
* one token per node (`num_tokens: 1`, evenly spaced `initial_token`s) and
  `auto_bootstrap: false`: nothing to stream or allocate, every node may start at once;
  every node is a seed;
* `-Dcassandra.skip_wait_for_gossip_to_settle=0`, a short ring delay, a 0 ms superuser set-up
  delay (the `cassandra`/`cassandra` superuser of `--auth` exists as soon as the node answers),
  a 500 ms shutdown announcement;
* the C1 compiler only (`-XX:TieredStopAtLevel=1`): half the CPU at start, a slower peak that
  tests never reach (`full_jit=True` for benchmarks);
* a 512 MB heap that starts at 64 MB, no `AlwaysPreTouch`, and no `mlockall`: Cassandra locks
  its whole address space at start, which as root (CAP_IPC_LOCK) pins ~250 MB more per node;
  the node is started through `setpriv` without that capability, so the lock fails harmlessly;
* `auto_snapshot: false` (dropping a test's keyspace copies nothing), commit log synced every
  10 s (a process killed with -9 loses nothing: the segments are shared memory maps the kernel
  keeps; only a power cut would), request timeouts a little longer than the defaults (a shared
  machine stalls at times), ScyllaDB's batch size thresholds (warn 128 KiB, fail 1 MiB) so a
  batch the dev node takes is one ScyllaDB takes.

`kill`, `restart`, `pause` and `resume` (SIGKILL, a start on the same data, SIGSTOP, SIGCONT) and
`wait_down` (until the other nodes have noticed) are for fault tests. The same `CassandraCluster` class is what the test fixtures start
(tests/support/cassandra.py), so the tool and the tests cannot drift apart.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .devcluster import DevClusterError, Process, _listening, free_port
from .devcluster import _wait as wait_until

VERSION = "5.0.6"
CACHE_ENV = "SWITCHBOARD_CASSANDRA_CACHE"
STATE_FILE = "devcassandra.json"
CLUSTER_NAME = "switchboard-dev"
DATACENTER = "datacenter1"  # what SimpleSnitch reports; NetworkTopologyStrategy keyspaces name it
SUPERUSER = ("cassandra", "cassandra")  # created by PasswordAuthenticator on first start
PROTOCOL_VERSION = 4  # what ScyllaDB speaks; switchboard/core/cql.py pins the same
# A read of one partition of system_distributed (RF 3): at ALL it needs all three nodes.
_PROBE_ALL = ("SELECT * FROM system_distributed.view_build_status "
              "WHERE keyspace_name = 'devcassandra' AND view_name = 'probe'")
_RESOLVED = ".resolved"  # written into lib/ once every jar is there
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

# Cassandra's conf/jvm-server.options and conf/jvm17-server.options, less what only costs a dev
# node: AlwaysPreTouch (touches the whole heap at start), UseNUMA, a 16 MB G1 region (meant for
# big heaps), heap dumps (a dev node exits on OutOfMemoryError instead), UseBiasedLocking (gone
# in JDK 17).
_JVM_FLAGS = (
    "-ea", "-da:net.openhft...", "-XX:+UseThreadPriorities", "-Xss256k", "-XX:+UseTLAB",
    "-XX:+ResizeTLAB", "-XX:+PerfDisableSharedMem", "-Djava.net.preferIPv4Stack=true",
    "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1",
    "-XX:G1RSetUpdatingPauseTimePercent=5", "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70", "-XX:+ExitOnOutOfMemoryError",
    "-Djdk.attach.allowAttachSelf=true",
    *(f"--add-exports={module}=ALL-UNNAMED" for module in (
        "java.base/jdk.internal.misc", "java.management.rmi/com.sun.jmx.remote.internal.rmi",
        "java.rmi/sun.rmi.registry", "java.rmi/sun.rmi.server", "java.sql/java.sql",
        "java.base/java.lang.ref", "jdk.unsupported/sun.misc",
        "jdk.compiler/com.sun.tools.javac.file", "jdk.attach/sun.tools.attach")),
    *(f"--add-opens={module}=ALL-UNNAMED" for module in (
        "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
        "java.base/jdk.internal.reflect", "java.base/jdk.internal.math",
        "java.base/jdk.internal.module", "java.base/jdk.internal.util.jar",
        "jdk.management/com.sun.management.internal", "java.base/sun.nio.ch", "java.base/java.io",
        "java.base/java.lang.reflect", "jdk.compiler/com.sun.tools.javac", "java.base/java.lang",
        "java.base/java.util")),
    "-Dio.netty.tryReflectionSetAccessible=true", "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)
_FAST_START = (
    "-Dcassandra-foreground=yes", "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=1000", "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.shutdown_announce_in_ms=500",
)
_LOGBACK = """<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""


class DevCassandraError(DevClusterError):
    pass


# ---------------------------------------------------------------------------- what it needs
def cache_dir(version: str = VERSION) -> Path:
    """Where the jars of `version` are kept: $SWITCHBOARD_CASSANDRA_CACHE/cassandra-<version>,
    by default under ~/.cache/switchboard (or $XDG_CACHE_HOME/switchboard)."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "switchboard"
    return Path(root) / f"cassandra-{version}"


def jars_cached(version: str = VERSION) -> bool:
    return (cache_dir(version) / "lib" / _RESOLVED).exists()


def find_java() -> str | None:
    """$JAVA_HOME/bin/java when JAVA_HOME is set (as Cassandra's scripts do), else `java`."""
    if os.environ.get("JAVA_HOME"):
        java = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        return str(java) if os.access(java, os.X_OK) else None
    return shutil.which("java")


def java_major(java: str) -> int:
    """The feature release of a JVM (17 for "17.0.15"), 0 when it cannot tell."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr)
    if not found:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def missing_tools(version: str = VERSION) -> list[str]:
    """What starting a node needs and this machine lacks, each with how to get it; [] when a
    node can start. Maven counts only until the jars are cached."""
    missing = []
    java = find_java()
    if java is None:
        missing.append("java (a JDK 17: apt-get install openjdk-17-jdk-headless)")
    elif (major := java_major(java)) != 17:
        missing.append(f"a JDK 17 ({java} is Java {major or 'of an unknown version'}; "
                       "point JAVA_HOME at a JDK 17)")
    if not jars_cached(version) and shutil.which("mvn") is None:
        missing.append(f"mvn, to fetch Cassandra {version} once (apt-get install maven)")
    try:
        import cassandra.cluster  # noqa: F401  (the readiness probe speaks CQL through it)
    except ImportError:
        missing.append("the scylla-driver Python package (pip install -e '.[scylla]')")
    return missing


def resolve_jars(version: str = VERSION) -> Path:
    """The folder holding cassandra-all-<version>.jar and every jar it needs; Maven fills it on
    first use (into a temporary folder renamed at the end, so an interrupted run leaves no half
    cache), later calls return at once."""
    lib = cache_dir(version) / "lib"
    if (lib / _RESOLVED).exists():
        return lib
    if shutil.which("mvn") is None:
        raise DevCassandraError(f"Cassandra {version} is not in {lib.parent} and mvn is not "
                                "installed (apt-get install maven)")
    lib.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="resolve-", dir=lib.parent))
    try:
        (work / "pom.xml").write_text(
            '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            '<groupId>switchboard</groupId><artifactId>devcassandra</artifactId>'
            '<version>1</version><dependencies><dependency>'
            '<groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId>'
            f'<version>{version}</version></dependency></dependencies></project>\n')
        result = subprocess.run(
            ["mvn", "-B", "-q", "-f", str(work / "pom.xml"),
             f"{_DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={work / 'lib'}"],
            capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            raise DevCassandraError(f"mvn could not fetch cassandra-all {version}:\n"
                                    f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
        (work / "lib" / _RESOLVED).write_text(f"cassandra-all {version}\n")
        try:
            (work / "lib").rename(lib)
        except OSError:
            if not (lib / _RESOLVED).exists():  # not a concurrent resolver that won the race
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lib


# ---------------------------------------------------------------------------- nodes
@dataclass
class CassandraNode:
    """One JVM of the cluster: its address, its directory and, while it runs, its process."""
    index: int
    host: str
    directory: Path
    process: Process | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        """Cassandra's own log (system.log); the JVM's stdout and stderr go to stdout.log."""
        return self.directory / "system.log"

    @property
    def config(self) -> Path:
        return self.directory / "cassandra.yaml"

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def log_tail(self, lines: int = 30) -> str:
        text = []
        for path in (self.directory / "stdout.log", self.log):
            if path.exists():
                text += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)


class CassandraCluster:
    """One Cassandra node on 127.0.0.1, or three on 127.0.0.1-3, sharing one CQL port and one
    storage port, under `directory` (one sub-directory per node). Start with `start()`, stop
    with `stop()`; `kill`, `restart`, `pause`, `resume` and `wait_down` act on one node for
    fault tests.

    `authenticator` is "AllowAllAuthenticator" (no login) or "PasswordAuthenticator" (log in as
    SUPERUSER). `port` fixes the CQL port; by default a free one is picked."""

    def __init__(self, directory: Path | str, nodes: int = 1, *, port: int | None = None,
                 authenticator: str = "AllowAllAuthenticator", heap_mb: int = 512,
                 full_jit: bool = False, version: str = VERSION) -> None:
        if nodes not in (1, 3):
            raise ValueError("nodes: 1, or 3 (on 127.0.0.1-3)")
        if authenticator not in ("AllowAllAuthenticator", "PasswordAuthenticator"):
            raise ValueError(f"authenticator: AllowAllAuthenticator or PasswordAuthenticator, "
                             f"not {authenticator!r}")
        self.directory = Path(directory).absolute()
        self.version = version
        self.authenticator = authenticator
        self.heap_mb = heap_mb
        self.full_jit = full_jit
        self.nodes = [CassandraNode(i, f"127.0.0.{i + 1}", self.directory / f"node{i + 1}")
                      for i in range(nodes)]
        self.port = port or 0
        self.storage_port = 0

    @property
    def hosts(self) -> list[str]:
        """The contact points a client needs (all nodes; any one would do)."""
        return [node.host for node in self.nodes]

    @property
    def credentials(self) -> tuple[str, str] | None:
        return SUPERUSER if self.authenticator == "PasswordAuthenticator" else None

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 180.0) -> "CassandraCluster":
        """Start every node at once and return when all answer and see each other up; on any
        failure stop what was started and raise, naming the log to read."""
        missing = missing_tools(self.version)
        if missing:
            raise DevCassandraError("cannot start Cassandra, missing: " + "; ".join(missing))
        deadline = time.monotonic() + timeout
        lib = resolve_jars(self.version)
        previous = self._previous_config()
        if previous:  # a restart on the data of an earlier run: the peers know these ports
            self.port = self.port or previous["native_transport_port"]
            self.storage_port = previous["storage_port"]
        else:
            self.port = self.port or free_port(hosts=self.hosts)
            self.storage_port = free_port(hosts=self.hosts, exclude=[self.port])
        try:
            for node in self.nodes:
                self._write_config(node)
                self._spawn(node, lib)
            for node in self.nodes:
                self._wait_answering(node, deadline)
            self.wait_all_up(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop(graceful=False)
            raise
        return self

    def stop(self, timeout: float = 20.0, *, graceful: bool = True) -> None:
        """Stop every running node, one after the other (see `stop_nodes`); not `graceful`:
        SIGKILL them all at once, for data nobody will read again (test teardown)."""
        running = [node.process for node in self.nodes if node.alive()]
        if graceful:
            stop_nodes(running, timeout)
        else:
            for process in running:
                process.stop(signal.SIGKILL)

    def kill(self, index: int) -> None:
        """SIGKILL node `index` and wait until it is gone; its data stays for `restart`."""
        self.nodes[index].process.stop(signal.SIGKILL)

    def restart(self, index: int, timeout: float = 120.0) -> None:
        """Start a stopped node again on its data (it replays its commit log) and wait until it
        answers and every node sees every other up."""
        node = self.nodes[index]
        if node.alive():
            raise DevCassandraError(f"node {index} ({node.host}) is running: kill it first")
        deadline = time.monotonic() + timeout
        self._spawn(node, resolve_jars(self.version))
        self._wait_answering(node, deadline)
        self.wait_all_up(max(1.0, deadline - time.monotonic()))

    def wait_down(self, index: int, timeout: float = 60.0) -> None:
        """Until every other running node holds node `index` down: its failure detector has
        convicted it (some 10 s after a kill), so a read at ALL it coordinates is refused as
        unavailable. Until then a coordinator may still pick the dead node for a read and wait
        for it until the request times out."""
        target = self.nodes[index]
        others = [node for node in self.nodes if node is not target and node.alive()]
        wait_until(lambda: all(self._holds_down(node) for node in others), timeout,
                   f"the other nodes to hold {target.host} down")

    def _holds_down(self, node: CassandraNode) -> bool:
        from cassandra import Unavailable
        from cassandra.cluster import NoHostAvailable
        try:
            self.query(node.host, _PROBE_ALL, consistency="ALL", timeout=5.0)
        except Unavailable:
            return True
        except NoHostAvailable as exc:  # the driver tried the one host it may use
            return any(isinstance(error, Unavailable) for error in exc.errors.values())
        except Exception:  # the driver's: timed out, not reachable
            return False
        return False

    def pause(self, index: int) -> None:
        """SIGSTOP: the node keeps its sockets but answers nothing (a long GC pause, a frozen VM).
        Returns once every thread of the JVM has stopped: kill(2) only queues the stop, and a
        request sent before the last thread stops could still be answered."""
        node = self.nodes[index]
        _signal(node, signal.SIGSTOP)
        if node.alive():
            wait_until(lambda: _all_threads_stopped(node.process.pid), 10.0,
                       f"every thread of cassandra node {index} to stop")

    def resume(self, index: int) -> None:
        _signal(self.nodes[index], signal.SIGCONT)

    # ------------------------------------------------------------ queries
    def query(self, host: str, cql: str, *, consistency: str = "ONE",
              timeout: float = 10.0) -> list[Any]:
        """Run one statement with node `host` as the coordinator, through a short-lived driver
        connection to that node alone; returns the rows. Raises the driver's exception."""
        with self.session(host, timeout) as session:
            return list(session.execute(_statement(cql, consistency)))

    @contextmanager
    def session(self, host: str, timeout: float = 10.0) -> Iterator[Any]:
        """A plain (synchronous) driver session whose only coordinator is `host`, logged in
        when the cluster needs it, and closed after the block."""
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import WhiteListRoundRobinPolicy

        profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]),
                                   request_timeout=timeout)
        credentials = self.credentials
        cluster = Cluster(
            [host], port=self.port, protocol_version=PROTOCOL_VERSION,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            auth_provider=PlainTextAuthProvider(*credentials) if credentials else None,
            connect_timeout=timeout, control_connection_timeout=timeout,
            schema_metadata_enabled=False, token_metadata_enabled=False)
        try:
            yield cluster.connect()
        finally:
            cluster.shutdown()

    def wait_all_up(self, timeout: float = 60.0) -> None:
        """Until every node lists every other as a peer (in the ring, normal) on the same
        schema version as its own, and coordinates a read at consistency ALL over all of them
        (it holds them alive)."""
        live = [node for node in self.nodes if node.alive()]
        if len(live) < len(self.nodes):
            raise DevCassandraError(f"{len(self.nodes) - len(live)} node(s) are not running")
        wait_until(lambda: all(self._sees_all_up(node) for node in live), timeout,
                   f"all {len(live)} Cassandra nodes to see each other up and normal")

    def _sees_all_up(self, node: CassandraNode) -> bool:
        """With 3 nodes, system_distributed (RF 3) has a replica on each, so a read at ALL
        needs the coordinator to hold all three alive; one node needs only to answer."""
        others = {other.host for other in self.nodes if other is not node}
        try:
            with self.session(node.host, 5.0) as session:
                schema = session.execute("SELECT schema_version FROM system.local").one()
                peers = {str(row.peer): row.schema_version for row in session.execute(
                    "SELECT peer, schema_version FROM system.peers_v2")}
                if others:
                    session.execute(_statement(_PROBE_ALL, "ALL"))
        except Exception:  # the driver's: not reachable, unavailable, timed out, no schema yet
            return False
        return set(peers) == others and all(version == schema.schema_version
                                            for version in peers.values())

    # ------------------------------------------------------------ internals
    def _previous_config(self) -> dict[str, Any] | None:
        """The settings an earlier start wrote into `directory`, if any."""
        if not self.nodes[0].config.exists():
            return None
        return json.loads(self.nodes[0].config.read_text().split("\n", 1)[1])

    def _write_config(self, node: CassandraNode) -> None:
        for sub in ("data", "commitlog", "hints", "saved_caches", "cdc_raw", "tmp"):
            (node.directory / sub).mkdir(parents=True, exist_ok=True)
        step = 2 ** 64 // len(self.nodes)
        config = {
            "cluster_name": CLUSTER_NAME,
            "num_tokens": 1,
            "initial_token": str(-2 ** 63 + node.index * step),
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch": "SimpleSnitch",
            "listen_address": node.host,
            "rpc_address": node.host,
            "storage_port": self.storage_port,
            "native_transport_port": self.port,
            "start_native_transport": True,
            "seed_provider": [{
                "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                "parameters": [{"seeds": ",".join(f"{host}:{self.storage_port}"
                                                  for host in self.hosts)}]}],
            "auto_bootstrap": False,
            "data_file_directories": [str(node.directory / "data")],
            "commitlog_directory": str(node.directory / "commitlog"),
            "hints_directory": str(node.directory / "hints"),
            "saved_caches_directory": str(node.directory / "saved_caches"),
            "cdc_raw_directory": str(node.directory / "cdc_raw"),
            "commitlog_sync": "periodic",
            "commitlog_sync_period": "10000ms",
            "authenticator": self.authenticator,
            "authorizer": ("CassandraAuthorizer" if self.credentials else "AllowAllAuthorizer"),
            "role_manager": "CassandraRoleManager",
            "auto_snapshot": False,
            "storage_compatibility_mode": "NONE",
            "concurrent_compactors": 1,
            "batch_size_warn_threshold": "128KiB",
            "batch_size_fail_threshold": "1024KiB",
            "read_request_timeout": "10000ms",
            "range_request_timeout": "20000ms",
            "write_request_timeout": "5000ms",
            "counter_write_request_timeout": "10000ms",
            "cas_contention_timeout": "5000ms",
            "truncate_request_timeout": "60000ms",
            "request_timeout": "20000ms",
        }
        # YAML reads JSON; one line per key keeps it readable. The first line is a comment.
        node.config.write_text("# written by switchboard.tools.devcassandra\n"
                               + json.dumps(config, indent=1) + "\n")
        (node.directory / "logback.xml").write_text(_LOGBACK.format(log=node.log))

    def _command(self, node: CassandraNode, lib: Path) -> list[str]:
        java = find_java()
        if java is None:
            raise DevCassandraError("java is not installed (apt-get install openjdk-17-jdk-headless)")
        jamm = sorted(lib.glob("jamm-*.jar"))
        if not jamm:
            raise DevCassandraError(f"no jamm-*.jar in {lib}: delete {lib.parent} to fetch again")
        command = [
            java, *_JVM_FLAGS, f"-Xms{min(64, self.heap_mb)}m", f"-Xmx{self.heap_mb}m",
            *(() if self.full_jit else ("-XX:TieredStopAtLevel=1",)),
            f"-javaagent:{jamm[-1]}", *_FAST_START,
            f"-Dcassandra.config=file://{node.config}",
            f"-Dlogback.configurationFile=file://{node.directory / 'logback.xml'}",
            f"-Dcassandra.logdir={node.directory}", f"-Dcassandra.storagedir={node.directory}",
            f"-Djava.io.tmpdir={node.directory / 'tmp'}",
            f"-XX:ErrorFile={node.directory / 'hs_err_%p.log'}",
            "-cp", f"{lib}/*", "org.apache.cassandra.service.CassandraDaemon",
        ]
        if os.geteuid() == 0 and shutil.which("setpriv"):
            command = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", *command]
        return command

    def _spawn(self, node: CassandraNode, lib: Path) -> None:
        with open(node.directory / "stdout.log", "ab") as out:
            popen = subprocess.Popen(self._command(node, lib), cwd=node.directory,
                                     stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        node.process = Process(f"cassandra node {node.index} ({node.host})", popen.pid, self.port,
                               f"-Dcassandra.config=file://{node.config}", str(node.log), popen)

    def _wait_answering(self, node: CassandraNode, deadline: float) -> None:
        """Until the node's CQL port answers a query (a listening socket is not enough: the
        node opens it before it can serve); raises with the log's tail if the JVM exits."""
        def answers() -> bool:
            if not node.alive():
                return True
            if not _listening(self.port, node.host):
                return False
            try:
                self.query(node.host, "SELECT release_version FROM system.local", timeout=5.0)
            except Exception:  # the driver's: not ready yet
                return False
            return True

        try:
            wait_until(answers, max(0.0, deadline - time.monotonic()),
                       f"Cassandra on {node.host}:{self.port} to answer CQL; log {node.log}")
        except DevClusterError as exc:
            raise DevCassandraError(f"{exc}\n{node.log_tail()}") from None
        if not node.alive():
            raise DevCassandraError(f"Cassandra on {node.host} exited at start; log {node.log}:\n"
                                    f"{node.log_tail()}")

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "port": self.port, "storage_port": self.storage_port,
                "hosts": self.hosts, "authenticator": self.authenticator,
                "nodes": [node.process.to_json() for node in self.nodes if node.process]}


def stop_nodes(processes: list[Process], timeout: float = 20.0) -> None:
    """SIGCONT (a paused node must run to stop) and SIGTERM, then SIGKILL after `timeout`: the
    node drains (flushes its memtables, tells its peers it leaves) in 3 to 8 s. One node at a
    time, last first: nodes stopping together wait ~20 s on each other's closing connections."""
    for process in reversed(processes):
        if process.alive():
            os.kill(process.pid, signal.SIGCONT)
            process.stop(signal.SIGTERM, timeout)


def _statement(cql: str, consistency: str) -> Any:
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement
    return SimpleStatement(cql, consistency_level=ConsistencyLevel.name_to_value[consistency])


def _signal(node: CassandraNode, sig: int) -> None:
    if node.alive():
        os.kill(node.process.pid, sig)


def _all_threads_stopped(pid: int) -> bool:
    """Whether /proc shows every live thread of `pid` stopped by a signal (state T)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except (FileNotFoundError, ProcessLookupError):  # the thread exited meanwhile
            continue
    return all(state in ("T", "Z", "X") for state in states)  # a thread may be exiting


# ---------------------------------------------------------------------------- CLI
def up(directory: Path, nodes: int, port: int | None, authenticator: str) -> dict[str, Any]:
    state_path = directory / STATE_FILE
    if state_path.exists():
        raise DevCassandraError(f"{state_path} exists: run `down --dir {directory}` first")
    directory.mkdir(parents=True, exist_ok=True)
    cluster = CassandraCluster(directory, nodes, port=port, authenticator=authenticator).start()
    state = cluster.to_json()
    state_path.write_text(json.dumps(state, indent=2))
    return state


def down(directory: Path) -> list[str]:
    """Stop the nodes `up` started in `directory` (`stop_nodes`). Returns what was stopped;
    data and logs stay for inspection."""
    state_path = directory / STATE_FILE
    if not state_path.exists():
        raise DevCassandraError(f"no {STATE_FILE} in {directory}: nothing to stop")
    state = json.loads(state_path.read_text())
    running = [process for process in (Process(**entry) for entry in state["nodes"])
               if process.alive()]
    stop_nodes(running)
    state_path.unlink()
    return [f"{process.name} (pid {process.pid})" for process in running]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.tools.devcassandra",
        description="Bring a local Apache Cassandra (the CQL server the ScyllaDB store is tested "
                    "against) up on 127.0.0.1 (one node) or 127.0.0.1-3 (three), or down.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start Cassandra and wait until it answers")
    start.add_argument("--nodes", type=int, choices=(1, 3), default=1,
                       help="1 node, or 3 on 127.0.0.1-3 (default 1)")
    start.add_argument("--dir", type=Path,
                       help="where data, logs and the pid file go (default: a new temp dir)")
    start.add_argument("--port", type=int, help="the CQL port (default: a free one)")
    start.add_argument("--auth", action="store_true",
                       help="PasswordAuthenticator: log in as cassandra/cassandra")
    stop = sub.add_parser("down", help="stop the nodes `up` started in --dir")
    stop.add_argument("--dir", type=Path, required=True)
    sub.add_parser("fetch", help=f"resolve Cassandra {VERSION}'s jars into the cache (Maven)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(resolve_jars())
            return 0
        if args.command == "down":
            for line in down(args.dir):
                print(f"stopped {line}")
            return 0
        directory = args.dir or Path(tempfile.mkdtemp(prefix="switchboard-cassandra-"))
        started = time.monotonic()
        state = up(directory, args.nodes, args.port,
                   "PasswordAuthenticator" if args.auth else "AllowAllAuthenticator")
    except (DevClusterError, ValueError) as exc:
        print(f"devcassandra: {exc}", file=sys.stderr)
        return 1
    print(f"cassandra {state['version']}: hosts {','.join(state['hosts'])} port {state['port']} "
          f"(datacenter {DATACENTER}, up in {time.monotonic() - started:.1f}s)"
          + (f", user {SUPERUSER[0]} password {SUPERUSER[1]}" if args.auth else ""))
    for node in state["nodes"]:
        print(f"  {node['name']}: pid {node['pid']}, log {node['log']}")
    print(f"stop with: python -m switchboard.tools.devcassandra down --dir {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
