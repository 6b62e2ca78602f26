"""A local cluster on 127.0.0.1 for development and tests: a Redis Cluster and N gateways that
form one Switchboard cluster.

    python -m switchboard.tools.devcluster up [--redis 3] [--replicas 1] --gateways 3 [--dir D]
        [--ports 7000-7099] [--bus-ports 17000-17099]
    python -m switchboard.tools.devcluster up --redis 0 --gateways 3 [--dir D]
    python -m switchboard.tools.devcluster down --dir D

`up` starts `--redis` masters (and `--replicas` replicas per master) of redis-server from
Debian's packages in cluster mode, joins them with `redis-cli --cluster create`, waits until
every node reports `cluster_state:ok`, then starts the gateways and prints every address. The
processes outlive the command; their pids and ports go to D/devcluster.json, which `down`
reads to stop exactly those processes.

The gateways are one cluster (docs/cluster.md): one shared data dir (D/data, one SQLite file),
`cluster.enabled = true`, node ids 0..N-1 named gw0..gwN-1, each on its own client port and
metrics port. With Redis they register there (`cluster.redis` = every Redis node) and their
mesh listeners take any free port (`mesh_port = 0`: the registry carries the address). With
`--redis 0` no Redis is started and the gateways find each other through a static member list
(`cluster.peers`) on fixed free mesh ports. One dev signing secret is shared, so a token works
on every gateway.

Ports: without `--ports` every process takes a free loopback port (each Redis node one whose
+10000, Redis's default bus port, is free too). With `--ports LOW-HIGH` every port (Redis
nodes, then each gateway's client, metrics and mesh ports) comes from that range in order,
skipping ports in use, so a firewall or another cluster on the host can be planned around it;
`--bus-ports LOW-HIGH` gives the Redis Cluster bus ports (`cluster-port`) from their own range
instead of client port + 10000.

The Redis nodes run without persistence (`--save '' --appendonly no`) and with a short
`--cluster-node-timeout` (1000 ms), so a killed master fails over in about two seconds: the
settings the failover tests want, and fine for a throwaway dev cluster.

The same `RedisCluster` class is what the test fixtures start (tests/support/redis_cluster.py),
so the tool and the tests cannot drift apart.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
STATE_FILE = "devcluster.json"
_BUS_PORT_OFFSET = 10000  # Redis Cluster's node-to-node bus listens on port + 10000


class DevClusterError(RuntimeError):
    pass


class PortRange:
    """Ports handed out in order from `low` to `high`, skipping those something listens on (or
    another process holds bound). Taken ports are not given twice."""

    def __init__(self, low: int, high: int) -> None:
        if not 0 < low <= high < 65536:
            raise ValueError(f"port range {low}-{high}: expected 1 <= LOW <= HIGH <= 65535")
        self.low, self.high = low, high
        self._next = low

    @classmethod
    def parse(cls, text: str) -> "PortRange":
        low, sep, high = text.partition("-")
        if not sep or not low.isdigit() or not high.isdigit():
            raise ValueError(f"port range {text!r}: expected LOW-HIGH, e.g. 7000-7099")
        return cls(int(low), int(high))

    def take(self) -> int:
        while self._next <= self.high:
            port, self._next = self._next, self._next + 1
            if _bindable(port):
                return port
        raise DevClusterError(f"no free port left in {self.low}-{self.high}")


def missing_binaries() -> list[str]:
    """The Redis programs this module needs that are not on PATH."""
    return [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]


@dataclass
class Process:
    """A process this module started: enough to find it again from another process (`down`)
    and to make sure a pid is still ours before signalling it."""
    name: str
    pid: int
    port: int
    marker: str
    """A string the process's command line contains; a recycled pid will not have it."""
    log: str
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    extra: dict[str, str] = field(default_factory=dict)
    """Addresses worth printing besides the port (a gateway's metrics endpoint)."""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "port": self.port, "marker": self.marker,
                "log": self.log, "extra": self.extra}

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return state != "Z" and self.marker.encode() in cmdline

    def stop(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Signal the process and wait until it is gone (SIGKILL if `sig` was not enough)."""
        if not self.alive():
            return
        os.kill(self.pid, sig)
        try:
            _wait(lambda: not self.alive(), timeout, f"{self.name} (pid {self.pid}) to exit")
        except DevClusterError:
            if sig == signal.SIGKILL:
                raise
            os.kill(self.pid, signal.SIGKILL)
            _wait(lambda: not self.alive(), timeout, f"{self.name} (pid {self.pid}) to exit")


@dataclass(frozen=True)
class Shard:
    """One master and the slot ranges it serves, as the cluster sees it now."""
    address: str
    slots: tuple[tuple[int, int], ...]
    replicas: tuple[str, ...]

    def serves(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


class RedisCluster:
    """`masters` masters, each with `replicas` replicas, on free loopback ports under
    `directory` (one sub-directory and log per node). Start with `start()`, stop with `stop()`;
    `kill_master(i)` and `wait_ok()` are for failover tests."""

    def __init__(self, directory: Path | str, masters: int = 3, replicas: int = 0, *,
                 node_timeout_ms: int = 1000, ports: PortRange | None = None,
                 bus_ports: PortRange | None = None, extra_args: tuple[str, ...] = (),
                 cli_args: tuple[str, ...] = (), tls: tuple[str, str, str] | None = None) -> None:
        """`ports`/`bus_ports`: where client and bus ports come from (default: free ports,
        the bus on client port + 10000); `extra_args` go to every redis-server (ACL users),
        `cli_args` to every redis-cli (credentials); `tls` (cert, key, CA files) makes every
        node speak TLS only, on its port, to clients and to each other."""
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.directory = Path(directory)
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = ports
        self.bus_ports = bus_ports
        self.extra_args = tuple(extra_args)
        self.cli_args = tuple(cli_args)
        if tls is not None:
            cert, key, ca = tls
            self.cli_args += ("--tls", "--cert", cert, "--key", key, "--cacert", ca)
            self.extra_args += ("--tls-cluster", "yes", "--tls-replication", "yes",
                                "--tls-cert-file", cert, "--tls-key-file", key,
                                "--tls-ca-cert-file", ca)
        self.tls = tls is not None
        self.nodes: list[Process] = []

    @property
    def addresses(self) -> list[str]:
        """Every node's host:port, the startup list a cluster client needs."""
        return [f"{HOST}:{node.port}" for node in self.nodes]

    def start(self, timeout: float = 60.0) -> "RedisCluster":
        missing = missing_binaries()
        if missing:
            raise DevClusterError(f"not installed: {', '.join(missing)} "
                                  "(apt-get install redis-server)")
        deadline = time.monotonic() + timeout
        try:
            for _ in range(self.masters * (1 + self.replicas)):
                self.nodes.append(self._start_node(deadline))
            create = subprocess.run(
                ["redis-cli", *self.cli_args, "--cluster", "create", *self.addresses,
                 "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()))
            if create.returncode != 0:
                raise DevClusterError(f"redis-cli --cluster create failed:\n{create.stdout}"
                                      f"{create.stderr}")
            self.wait_ok(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, deadline: float) -> Process:
        """One redis-server on a free port pair (client port and bus port). A port taken by
        someone else between the probe and the bind makes the server exit; then another
        pair is tried."""
        for _ in range(5):
            port = self.ports.take() if self.ports else free_port(bus=self.bus_ports is None)
            bus = ["--cluster-port", str(self.bus_ports.take())] if self.bus_ports else []
            node_dir = self.directory / f"redis-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            log = node_dir / "redis.log"
            listen = ["--port", "0", "--tls-port", str(port)] if self.tls else ["--port", str(port)]
            popen = subprocess.Popen(
                ["redis-server", *listen, "--bind", HOST, *bus,
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(self.node_timeout_ms),
                 "--appendonly", "no", "--save", "", "--repl-diskless-sync-delay", "0",
                 "--dir", str(node_dir),
                 "--logfile", str(log), "--daemonize", "no", *self.extra_args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            node = Process("redis", popen.pid, port, f"{HOST}:{port}", str(log), popen)
            try:
                _wait(lambda: not node.alive() or self.redis(port, "PING") == "PONG",
                      deadline - time.monotonic(), f"redis-server on port {port}")
            except DevClusterError:
                node.stop()
                raise
            if node.alive():
                return node
        raise DevClusterError(f"redis-server would not start; see the logs in {self.directory}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every slot is served by a running master, every live node says
        `cluster_state:ok` and knows the others, and every replica acknowledges a write made
        on its master. The last check matters: after a full sync a master holds writes back
        until the replica's first ACK (up to a second later), and a failover in that second
        would lose them. After `kill_master` this is the wait for the failover."""
        live = [node for node in self.nodes if node.alive()]
        running = {f"{HOST}:{node.port}" for node in live}

        def ok() -> bool:
            shards = self.shards()
            if sum(high - low + 1 for shard in shards for low, high in shard.slots) != 16384 \
                    or any(shard.address not in running for shard in shards) \
                    or sum(len(shard.replicas) for shard in shards) != len(live) - len(shards):
                return False
            for node in live:
                info = _fields(self.redis(node.port, "CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok" or \
                        int(info.get("cluster_known_nodes", 0)) < len(self.nodes):
                    return False
            return all(self._replicated(shard) for shard in shards if shard.replicas)

        _wait(ok, timeout, "the Redis Cluster to be ok on every node")

    def shards(self) -> list[Shard]:
        """The masters that serve slots now (failed ones excluded), ordered by first slot."""
        for node in self.nodes:
            if node.alive():
                listing = self.redis(node.port, "CLUSTER", "NODES")
                break
        else:
            raise DevClusterError("no Redis node is running")
        masters: dict[str, tuple[str, list[tuple[int, int]]]] = {}
        replicas: dict[str, list[str]] = {}
        for line in listing.splitlines():
            node_id, address, flags, master_id, *_, link = line.split()[:8]
            ranges = [_slot_range(part) for part in line.split()[8:] if not part.startswith("[")]
            flags_set = set(flags.split(","))
            address = address.split("@")[0]
            if flags_set & {"fail", "fail?"} or link != "connected":
                continue
            if "master" in flags_set and ranges:
                masters[node_id] = (address, ranges)
            elif "slave" in flags_set:
                replicas.setdefault(master_id, []).append(address)
        shards = [Shard(address, tuple(sorted(ranges)), tuple(sorted(replicas.get(node_id, []))))
                  for node_id, (address, ranges) in masters.items()]
        return sorted(shards, key=lambda shard: shard.slots[0])

    def redis(self, port: int, *command: str) -> str:
        """One command through redis-cli; '' when the node does not answer."""
        try:
            result = subprocess.run(["redis-cli", *self.cli_args, "-h", HOST, "-p", str(port),
                                     *command], capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        return result.stdout.strip() if result.returncode == 0 else ""

    def _replicated(self, shard: Shard) -> bool:
        """Whether every replica of the shard acknowledges a write (a short-lived probe key in
        the shard's first slot) within 200 ms. WAIT asks the replicas for an ACK, so this also
        ends the hold-back after a full sync."""
        key = next(k for k in (f"devcluster-probe-{i}" for i in itertools.count())
                   if shard.serves(_key_slot(k)))
        port = shard.address.rsplit(":", 1)[1]
        try:
            result = subprocess.run(["redis-cli", *self.cli_args, "-h", HOST, "-p", port],
                                    input=f"SET {key} 1 PX 10000\nWAIT {len(shard.replicas)} 200\n",
                                    capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return False
        replies = result.stdout.split()
        return bool(replies) and replies[-1].isdigit() and int(replies[-1]) >= len(shard.replicas)

    def kill_master(self, index: int) -> str:
        """SIGKILL the master `shards()[index]` and return its address. With a replica, the
        cluster promotes it after about two node timeouts (see `wait_ok`); without one, those
        slots stay down."""
        address = self.shards()[index].address
        port = int(address.rsplit(":", 1)[1])
        next(node for node in self.nodes if node.port == port).stop(signal.SIGKILL)
        return address

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(signal.SIGKILL)

    def to_json(self) -> dict[str, Any]:
        return {"masters": self.masters, "replicas": self.replicas,
                "nodes": [node.to_json() for node in self.nodes]}


def free_port(bus: bool = False, *, hosts: Iterable[str] = (HOST,),
              exclude: Iterable[int] = ()) -> int:
    """A port nobody listens on now on any of `hosts`, below the kernel's ephemeral range and
    not in `exclude` (see free_run); with `bus`, port + 10000 is free and below that range as
    well (Redis Cluster's bus port). Another process may still take it before we bind: callers
    retry."""
    return free_run(1, above=_BUS_PORT_OFFSET if bus else 0, hosts=hosts, exclude=exclude)


_handed_out: set[int] = set()
"""Ports free_run gave this process: two calls before either port is bound (three nodes'
mesh ports, say) must not get the same one."""


def free_run(count: int, above: int = 0, *, hosts: Iterable[str] = (HOST,),
             exclude: Iterable[int] = ()) -> int:
    """The first of `count` consecutive ports nobody listens on now on any of `hosts`, picked at
    random below the kernel's ephemeral range, none of them in `exclude` (ports fixed by the
    caller) or given by an earlier call. An ephemeral port can be taken as the source port of
    any outgoing connection before its server binds it, even by a dial to that very port (a
    TCP self-connect), which then holds it. With `above`, each port + `above` is free and
    below that range too. Another process binding it on purpose still may: callers retry."""
    hosts = list(hosts)
    taken = _handed_out.union(exclude)
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    top = ephemeral_low - count - above
    if top <= 10000:
        raise DevClusterError(f"no room for {count} ports below the ephemeral range, which "
                              f"starts at {ephemeral_low}")
    for _ in range(500):
        first = random.randrange(10000, top)
        run = range(first, first + count)
        if (not taken.intersection(run)
                and all(_bindable(port, host) and (not above or _bindable(port + above, host))
                        for port in run for host in hosts)):
            _handed_out.update(run)
            return first
    raise DevClusterError(f"no {count} consecutive ports below {ephemeral_low} free on "
                          f"{', '.join(hosts)}")


def _bindable(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _key_slot(key: str) -> int:
    """Redis Cluster's slot of a key without a hash tag: CRC16 (XMODEM) mod 16384."""
    crc = 0
    for byte in key.encode():
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc % 16384


def _fields(text: str) -> dict[str, str]:
    """`key:value` lines (CLUSTER INFO, INFO) as a dict."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _slot_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise DevClusterError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------- gateways
def start_gateways(directory: Path, count: int, secret: str, redis: list[str],
                   timeout: float = 30.0, *, ports: PortRange | None = None,
                   settings: dict[str, str] | None = None) -> list[Process]:
    """`count` `python -m switchboard serve` processes forming one cluster: one shared data dir
    (directory/data), node ids 0..count-1 named gw<i>, each on its own client and metrics
    ports (from `ports`, else free ones). With `redis` (Redis Cluster node addresses) they
    register there and take a mesh port from `ports` (else any free port: the lease carries
    it); without, they list each other as static peers on fixed mesh ports. `settings` are more
    SWITCHBOARD_* variables for every gateway. Returns once every gateway accepts connections;
    stops the ones it started when one does not."""
    data_dir = directory / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    take = ports.take if ports else free_port
    mesh_ports = [take() if (ports or not redis) else 0 for _ in range(count)]
    peers = "" if redis else ",".join(f"gw{i}={HOST}:{port}" for i, port in enumerate(mesh_ports))
    started: list[Process] = []
    try:
        for index in range(count):
            started.append(_spawn_gateway(directory, data_dir, index, secret, take, {
                **(settings or {}),
                "SWITCHBOARD_CLUSTER_ENABLED": "true",
                "SWITCHBOARD_CLUSTER_NODE_NAME": f"gw{index}",
                "SWITCHBOARD_CLUSTER_MESH_HOST": HOST,
                "SWITCHBOARD_CLUSTER_MESH_PORT": str(mesh_ports[index]),
                "SWITCHBOARD_CLUSTER_REDIS": ",".join(redis),
                "SWITCHBOARD_CLUSTER_PEERS": peers,
            }))
        deadline = time.monotonic() + timeout
        for gateway in started:
            _wait(lambda: not gateway.alive() or _listening(gateway.port),
                  deadline - time.monotonic(), gateway.name)
            if not gateway.alive():
                raise DevClusterError(f"{gateway.name} exited at start; see {gateway.log}")
    except BaseException:
        for gateway in started:
            gateway.stop(signal.SIGTERM)
        raise
    return started


def _spawn_gateway(directory: Path, data_dir: Path, index: int, secret: str,
                   take: Callable[[], int], cluster_env: dict[str, str]) -> Process:
    port, metrics_port = take(), take()
    log = directory / f"gateway-{index}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(cluster_env, SWITCHBOARD_AUTH_SECRET=secret,
               SWITCHBOARD_SERVER_NODE_ID=str(index),
               SWITCHBOARD_METRICS_PORT=str(metrics_port))
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "switchboard", "serve", "--host", HOST, "--port", str(port),
             "--data-dir", str(data_dir)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    extra = {"metrics": f"http://{HOST}:{metrics_port}/metrics", "node": f"gw{index}"}
    if cluster_env["SWITCHBOARD_CLUSTER_MESH_PORT"] != "0":
        extra["mesh"] = f"{HOST}:{cluster_env['SWITCHBOARD_CLUSTER_MESH_PORT']}"
    return Process(f"gateway {index}", popen.pid, port, f"--port\0{port}\0", str(log), popen,
                   extra)


def _listening(port: int, host: str = HOST) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------- CLI
def up(directory: Path, redis_masters: int, replicas: int, gateways: int, *,
       ports: PortRange | None = None, bus_ports: PortRange | None = None) -> dict[str, Any]:
    """Start what `main` describes; `redis_masters` 0 means no Redis (static peers)."""
    if redis_masters == 0 and gateways == 0:
        raise DevClusterError("nothing to start: --redis 0 and --gateways 0")
    state_path = directory / STATE_FILE
    if state_path.exists():
        raise DevClusterError(f"{state_path} exists: run `down --dir {directory}` first")
    directory.mkdir(parents=True, exist_ok=True)
    cluster = RedisCluster(directory, redis_masters, replicas, ports=ports,
                           bus_ports=bus_ports).start() if redis_masters else None
    secret = secrets.token_urlsafe(32)
    try:
        started = start_gateways(directory, gateways, secret,
                                 cluster.addresses if cluster else [],
                                 ports=ports) if gateways else []
    except BaseException:
        if cluster is not None:
            cluster.stop()
        raise
    state = {"redis": cluster.to_json() if cluster else {"masters": 0, "replicas": 0, "nodes": []},
             "gateways": [g.to_json() for g in started], "secret": secret,
             "data_dir": str(directory / "data")}
    state_path.write_text(json.dumps(state, indent=2))
    return state


def down(directory: Path) -> list[str]:
    """Stop what `up` started in `directory`: gateways first (SIGTERM, they drain), then the
    Redis nodes. Returns what was stopped. Logs and data dirs are left for inspection."""
    state_path = directory / STATE_FILE
    if not state_path.exists():
        raise DevClusterError(f"no {STATE_FILE} in {directory}: nothing to stop")
    state = json.loads(state_path.read_text())
    stopped = []
    for entry, sig in ([(g, signal.SIGTERM) for g in state["gateways"]]
                       + [(n, signal.SIGKILL) for n in state["redis"]["nodes"]]):
        process = Process(**entry)
        if process.alive():
            process.stop(sig)
            stopped.append(f"{process.name} on port {process.port} (pid {process.pid})")
    state_path.unlink()
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.tools.devcluster",
        description="Bring a local Redis Cluster and N gateways forming one Switchboard cluster "
                    "up on 127.0.0.1, or down. The gateways share one data dir (one SQLite "
                    "file) and a dev signing secret; they register in the Redis Cluster, or "
                    "with --redis 0 list each other as static peers.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start a Redis Cluster and a cluster of gateways")
    start.add_argument("--redis", type=int, default=3, metavar="MASTERS",
                       help="Redis masters (at least 3; default 3); 0: no Redis, the gateways "
                            "use static peers on fixed mesh ports")
    start.add_argument("--replicas", type=int, default=0,
                       help="replicas per master (default 0; 1 lets a master fail over)")
    start.add_argument("--gateways", type=int, default=0, metavar="N",
                       help="gateway processes, one cluster (default 0)")
    start.add_argument("--dir", type=Path,
                       help="where logs, data and the pid file go (default: a new temp dir)")
    start.add_argument("--ports", type=PortRange.parse, metavar="LOW-HIGH",
                       help="take every port (Redis nodes, then each gateway's client, metrics "
                            "and mesh ports) from this range, in order, skipping ports in use "
                            "(default: any free ports)")
    start.add_argument("--bus-ports", type=PortRange.parse, metavar="LOW-HIGH",
                       help="the Redis Cluster bus ports (cluster-port) from this range "
                            "(default: each node's client port + 10000)")
    stop = sub.add_parser("down", help="stop everything `up` started in --dir")
    stop.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "down":
            for line in down(args.dir):
                print(f"stopped {line}")
            return 0
        directory = args.dir or Path(tempfile.mkdtemp(prefix="switchboard-dev-"))
        state = up(directory, args.redis, args.replicas, args.gateways, ports=args.ports,
                   bus_ports=args.bus_ports)
    except (DevClusterError, ValueError) as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    nodes = state["redis"]["nodes"]
    if nodes:
        print("redis cluster: " + ",".join(f"{HOST}:{node['port']}" for node in nodes)
              + f"  ({args.redis} masters, {args.replicas} replicas each)")
    for gateway in state["gateways"]:
        mesh = f"  mesh {gateway['extra']['mesh']}" if "mesh" in gateway["extra"] else ""
        print(f"{gateway['name']} ({gateway['extra']['node']}): ws://{HOST}:{gateway['port']}/v1/ws"
              f"  metrics {gateway['extra']['metrics']}{mesh}"
              f"  (pid {gateway['pid']}, log {gateway['log']})")
    if state["gateways"]:
        print(f"one cluster, data in {state['data_dir']}, "
              + ("leases in the Redis Cluster" if nodes else "static peers (no Redis)"))
        print(f"tokens: SWITCHBOARD_AUTH_SECRET={state['secret']} "
              "python -m switchboard token --user U --device D")
    print(f"stop with: python -m switchboard.tools.devcluster down --dir {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
