"""What the generator is pointed at: a Switchboard server (started here or already running) and
the two peer relays, each with the processes whose memory and CPU the figures are about.

A server started here gets its rate limits raised out of the way (the bench measures throughput,
not the limiter), a group limit that fits the fanout size, and a signing key the workers mint
tokens with; its output goes to a log file in the run directory. Every target is stopped by the
bench that started it, also when the run fails.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from switchboard.tools.devcluster import free_port, free_run

from . import procfs
from .gen import Endpoint

#: Settings of a server started by the bench: the per-connection limiter must not be what a load
#: test measures.
SERVER_ENV = {
    "SWITCHBOARD_LIMITS_SENDS_PER_SECOND": "1000000",
    "SWITCHBOARD_LIMITS_SEND_BURST": "1000000",
    "SWITCHBOARD_LIMITS_FRAMES_PER_SECOND": "1000000",
    "SWITCHBOARD_LIMITS_FRAME_BURST": "1000000",
    "SWITCHBOARD_LIMITS_CHATS_PER_MINUTE": "1000000",
    "SWITCHBOARD_LIMITS_CHAT_BURST": "1000000",
    "SWITCHBOARD_LIMITS_MEMBER_ADDS_PER_MINUTE": "100000000",
    "SWITCHBOARD_LIMITS_MEMBER_ADD_BURST": "100000000",
    "SWITCHBOARD_LIMITS_HISTORY_PER_SECOND": "1000000",
    "SWITCHBOARD_LIMITS_HISTORY_BURST": "1000000",
    "SWITCHBOARD_LIMITS_CONNECTS_PER_MINUTE": "1000000",
    "SWITCHBOARD_LIMITS_CONNECT_BURST": "1000000",
    "SWITCHBOARD_MEDIA_UPLOADS_PER_MINUTE": "1000000",
    "SWITCHBOARD_MEDIA_UPLOAD_BURST": "1000000",
    # any free port for /metrics: several bench servers (and CI runs) may run side by side
    "SWITCHBOARD_METRICS_PORT": "0",
}
#: Processes of the ws-redis-relay peer (--ws-redis-workers): the faster of one and two in the
#: same run here (bench/README.md, "Third round").
WS_REDIS_WORKERS = 2
LISTENING = re.compile(r"listening on (ws://[\d.]+:\d+)")
METRICS = re.compile(r"metrics on (http://[\d.]+:\d+/metrics)")
#: What a connect costs between the workers of `serve --workers W`: their mesh's writes and reads
#: (each a wake-up), the Located frames and the arrivals they carried.
MESH_COUNTERS = ("switchboard_cluster_mesh_writes_total", "switchboard_cluster_mesh_reads_total",
                 "switchboard_cluster_located_frames_total",
                 "switchboard_cluster_located_arrivals_total")
WORKER_METRICS = re.compile(r"metrics on (http://[\d.]+:\d+/metrics) worker=")
STORE_REQUESTS = re.compile(r'^switchboard_store_requests_total\{kind="(\w+)"\} ([\d.e+]+)$',
                            re.MULTILINE)
WRITER_COMMITS = re.compile(r"^switchboard_writer_batches_total ([\d.e+]+)$", re.MULTILINE)
START_TIMEOUT = 30.0


class Target:
    """A target's name, how workers reach it, and the processes to measure by role. Memory and
    CPU figures are sums over all of them (every worker of a `serve --workers N` server, a
    relay and its redis-server): what the target costs, whichever process holds a
    connection."""
    name = ""
    note = ""

    def __init__(self) -> None:
        self.endpoint: Endpoint | None = None
        self.pids: dict[str, int] = {}

    async def start(self) -> "Target":
        return self

    async def stop(self) -> None:
        pass

    @property
    def main_pid(self) -> int | None:
        return next(iter(self.pids.values()), None)

    def sample(self) -> dict[str, procfs.ProcSample]:
        return {role: procfs.sample(pid) for role, pid in self.pids.items() if procfs.alive(pid)}

    def rss(self) -> int:
        """Resident bytes of all the target's processes now (cheap: for sampling loops)."""
        return sum(procfs.rss(pid) for pid in self.pids.values() if procfs.alive(pid))

    def cpu(self) -> float:
        """CPU seconds of all the target's processes so far."""
        return sum(procfs.cpu_seconds(pid) for pid in self.pids.values() if procfs.alive(pid))

    async def worker_counters(self, names: tuple[str, ...]) -> dict[str, float]:
        """`names` summed over the workers of a `serve --workers W` this bench started; {} for
        any other target."""
        return {}

    async def __aenter__(self) -> "Target":
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc) -> None:
        await self.stop()


class Child:
    """A subprocess whose output goes to a log file, started and waited for by a line it
    prints once it accepts connections."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.proc: subprocess.Popen | None = None

    async def start(self, ready: re.Pattern | None) -> re.Match | None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env)
        if ready is None:
            return None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = ready.search(self.log_path.read_text(errors="replace"))
            if match:
                return match
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.02)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        await self.stop()
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.argv)}):\n{tail}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)


class SpawnedSwitchboard(Target):
    """`python -m switchboard.cli serve --port 0` in a fresh data dir. With `cprofile` set the
    server runs under cProfile (written to that path when it stops)."""
    name = "switchboard"

    def __init__(self, log_dir: Path, max_group_members: int = 1000,
                 cprofile: Path | None = None, workers: int = 1, store: str = "sqlite",
                 cql=None, env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.env = env or {}  # --server-env: over the bench's own settings
        if workers > 1 and cprofile is not None:
            raise ValueError("--profile profiles one process: not with --server-workers")
        self.workers = workers
        self.store = store
        self._cql = cql  # async () -> (hosts, port), for the scylla store
        if store != "sqlite":
            self.name = f"switchboard-{store}"
        if workers > 1:
            self.name = f"{self.name} x{workers}"
        self.metrics_url: str | None = None
        self.log_dir = log_dir
        self.max_group_members = max_group_members
        self.cprofile = cprofile
        self.secret = secrets.token_urlsafe(48)
        self._data_dir: tempfile.TemporaryDirectory | None = None
        self._child: Child | None = None

    async def start(self) -> "SpawnedSwitchboard":
        self._data_dir = tempfile.TemporaryDirectory(prefix="switchboard-bench-")
        env = dict(os.environ, SWITCHBOARD_AUTH_SECRET=self.secret, **SERVER_ENV,
                   SWITCHBOARD_LIMITS_MAX_GROUP_MEMBERS=str(max(1000, self.max_group_members)),
                   **await self._store_env())
        env.update(self.env)
        runner = [sys.executable]
        if self.cprofile is not None:
            runner += ["-m", "cProfile", "-o", str(self.cprofile)]
        # workers share one fixed port (SO_REUSEPORT); their mesh ports are a free run below
        # the ephemeral range, where the generator's own sockets never land
        port = free_port() if self.workers > 1 else 0
        if self.workers > 1:
            env["SWITCHBOARD_CLUSTER_MESH_PORT"] = str(free_run(self.workers))
        argv = runner + ["-m", "switchboard.cli", "serve", "--port", str(port),
                         "--data-dir", self._data_dir.name, "--log-level", "WARNING"]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        self._child = Child("switchboard", argv, self.log_dir, env)
        match = await self._child.start(LISTENING)
        self.endpoint = Endpoint("switchboard", match.group(1) + "/v1/ws", self.secret)
        metrics = METRICS.search(self._child.log_path.read_text(errors="replace"))
        self.metrics_url = metrics.group(1) if metrics else None
        if self.workers > 1:
            # the workers hold the connections; the supervisor is counted too (it only waits,
            # so its share of any delta is next to nothing)
            workers = procfs.children(self._child.pid)
            self.pids = {f"worker{i}": pid for i, pid in enumerate(workers)}
            self.pids["supervisor"] = self._child.pid
        else:
            self.pids = {"server": self._child.pid}
        return self

    async def _store_env(self) -> dict[str, str]:
        if self.store != "scylla":
            return {"SWITCHBOARD_STORE_KIND": self.store}
        hosts, port = await self._cql()
        return {"SWITCHBOARD_STORE_KIND": "scylla", "SWITCHBOARD_STORE_HOSTS": ",".join(hosts),
                "SWITCHBOARD_STORE_PORT": str(port),
                "SWITCHBOARD_STORE_KEYSPACE": f"bench_{secrets.token_hex(6)}",
                "SWITCHBOARD_STORE_REPLICATION_STRATEGY": "SimpleStrategy",
                "SWITCHBOARD_STORE_REPLICATION_FACTOR": "1"}

    async def worker_counters(self, names: tuple[str, ...]) -> dict[str, float]:
        """`names` (metric names as exported) summed over every worker's /metrics, which the
        supervisor's log names; empty with one process, whose router tells no peer."""
        if self.workers < 2 or self._child is None:
            return {}
        totals = dict.fromkeys(names, 0.0)
        for url in WORKER_METRICS.findall(self._child.log_path.read_text(errors="replace")):
            for name, value in (await _scrape(url)).items():
                if name in totals:
                    totals[name] += value
        return totals

    async def store_requests(self) -> dict[str, float]:
        """The store's requests so far by kind (reads, writes, conditional), from /metrics;
        empty for a store that does not count them (SQLite: one transaction per flush)."""
        if self.metrics_url is None:
            return {}
        import urllib.request
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(self.metrics_url, timeout=5).read().decode())
        return {kind: float(value) for kind, value in STORE_REQUESTS.findall(text)}

    async def writer_commits(self) -> float | None:
        """The coalescing writer's commits so far, from /metrics (None without it)."""
        if self.metrics_url is None:
            return None
        import urllib.request
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(self.metrics_url, timeout=5).read().decode())
        found = WRITER_COMMITS.search(text)
        return float(found.group(1)) if found else None

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop()
        if self._data_dir is not None:
            self._data_dir.cleanup()
            self._data_dir = None


CLUSTER_PORTS = 50  # ports a SwitchboardCluster takes its client, mesh and metrics ports from


class SwitchboardCluster(Target):
    """`nodes` gateways forming one cluster over a Redis Cluster of 3 masters and a replica
    each (switchboard/tools/devcluster.py: the same processes as `devcluster up`), one shared
    SQLite file, each gateway on its own client port so devices choose their node. The rate
    limits are raised as for a single server. CPU and memory figures count the gateways and
    the Redis nodes: what the cluster costs."""

    def __init__(self, log_dir: Path, nodes: int = 3, replicas: int = 1) -> None:
        super().__init__()
        self.name = f"switchboard x{nodes}"
        self.note = f"{nodes} gateways, Redis Cluster 3 masters x {1 + replicas}, one SQLite file"
        self.nodes = nodes
        self.replicas = replicas
        self.directory = log_dir / "cluster"
        self.secret = secrets.token_urlsafe(48)
        self.endpoints: list[Endpoint] = []
        self.redis = None
        self.gateways: list = []

    async def start(self) -> "SwitchboardCluster":
        from switchboard.tools.devcluster import PortRange, RedisCluster, start_gateways
        # Ports below the kernel's ephemeral range (32768-60999 by default): a port picked
        # free among ephemeral ones can be taken as the source port of an outgoing connection
        # before the process binds it, which happens readily while a bench holds 100,000s of
        # loopback connections. A random base keeps two runs on one machine apart.
        base = random.randrange(10_000, 32_000 - 2 * CLUSTER_PORTS, CLUSTER_PORTS)
        ports = PortRange(base, base + CLUSTER_PORTS - 1)
        bus_ports = PortRange(base + CLUSTER_PORTS, base + 2 * CLUSTER_PORTS - 1)
        self.redis = RedisCluster(self.directory, 3, self.replicas, ports=ports,
                                  bus_ports=bus_ports)
        await asyncio.to_thread(self.redis.start)
        settings = {**SERVER_ENV, "SWITCHBOARD_LOG_LEVEL": "WARNING"}
        self.gateways = await asyncio.to_thread(
            start_gateways, self.directory, self.nodes, self.secret, self.redis.addresses,
            ports=ports, settings=settings)
        self.endpoints = [Endpoint("switchboard", f"ws://127.0.0.1:{g.port}/v1/ws", self.secret)
                          for g in self.gateways]
        self.endpoint = self.endpoints[0]
        self.pids = {f"gw{i}": g.pid for i, g in enumerate(self.gateways)}
        self.pids.update({f"redis{i}": n.pid for i, n in enumerate(self.redis.nodes)})
        await self.wait_formed()
        return self

    async def metrics(self) -> list[dict[str, float]]:
        """Every gateway's /metrics as {name{labels}: value} ({} for one that does not
        answer)."""
        return [await _scrape(g.extra["metrics"]) for g in self.gateways]

    async def wait_formed(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rings = [m.get("switchboard_cluster_ring_nodes") for m in await self.metrics()]
            if rings == [float(self.nodes)] * self.nodes:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not form: rings {rings}")
            await asyncio.sleep(0.1)

    def signal(self, index: int, sig: int) -> None:
        os.kill(self.gateways[index].pid, sig)

    async def stop(self) -> None:
        for gateway in self.gateways:
            with contextlib.suppress(ProcessLookupError):
                os.kill(gateway.pid, signal.SIGCONT)  # a paused one could not drain
            await asyncio.to_thread(gateway.stop, signal.SIGTERM)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        shutil.rmtree(self.directory / "data", ignore_errors=True)


async def _scrape(url: str) -> dict[str, float]:
    host, _, rest = url.removeprefix("http://").partition(":")
    port = int(rest.split("/")[0])
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        body = (await asyncio.wait_for(reader.read(), 5)).decode(errors="replace")
        writer.close()
    except (OSError, asyncio.TimeoutError):
        return {}
    out = {}
    for line in body.split("\r\n\r\n", 1)[-1].splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


class ExternalSwitchboard(Target):
    """A server someone else runs (--target host:port). Its limits are its own: with the
    defaults (50 sends/s per connection) the limiter, not the server, bounds chat throughput."""
    name = "switchboard"

    def __init__(self, hostport: str, secret: str, pid: int | None) -> None:
        super().__init__()
        self.endpoint = Endpoint("switchboard", f"ws://{hostport}/v1/ws", secret)
        if pid is not None:
            self.pids = {"server": pid}
        self.note = ("external server: its own limits apply" +
                     ("" if pid else "; no --server-pid, so no server memory/CPU figures"))


class PicowsRelay(Target):
    name = "picows-relay"
    note = "bare picows relay: no auth, no storage, no acks, no ordering"

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self._child = Child("picows-relay", [sys.executable, "-m", "bench.peers.picows_relay",
                                             "--port", "0"], log_dir)

    async def start(self) -> "PicowsRelay":
        match = await self._child.start(LISTENING)
        self.endpoint = Endpoint("picows-relay", match.group(1))
        self.pids = {"relay": self._child.pid}
        return self

    async def stop(self) -> None:
        await self._child.stop()


class WsRedisRelay(Target):
    """The websockets + Redis relay (`workers` processes on one port) and its own
    redis-server on a free port (no persistence: pub/sub keeps nothing anyway). Every process
    counts toward its CPU."""
    name = "ws-redis-relay"
    note = "websockets + JSON + Redis pub/sub: no auth, no storage, no acks, no ordering"

    def __init__(self, log_dir: Path, workers: int = WS_REDIS_WORKERS) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.workers = workers
        self.name = f"{self.name} x{workers}"
        self._redis: Child | None = None
        self._relay: Child | None = None

    @staticmethod
    def missing() -> str | None:
        """Why this peer cannot run here, or None."""
        if shutil.which("redis-server") is None:
            return "redis-server is not installed: the ws-redis-relay peer was skipped"
        return None

    async def start(self) -> "WsRedisRelay":
        port = free_port()
        label = self.name.replace(" ", "-")  # each count its own logs when several run
        self._redis = Child(f"{label}-redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"], self.log_dir)
        await self._redis.start(re.compile(r"Ready to accept connections"))
        self._relay = Child(label, [sys.executable, "-m", "bench.peers.ws_redis_relay",
                                               "--port", "0", "--redis",
                                               f"redis://127.0.0.1:{port}", "--workers",
                                               str(self.workers)], self.log_dir)
        match = await self._relay.start(LISTENING)
        self.endpoint = Endpoint("ws-redis-relay", match.group(1))
        self.pids = {"relay": self._relay.pid, "redis": self._redis.pid}
        for i, pid in enumerate(procfs.children(self._relay.pid), 1):
            self.pids[f"relay{i}"] = pid
        return self

    async def stop(self) -> None:
        for child in (self._relay, self._redis):
            if child is not None:
                await child.stop()


def peers(log_dir: Path, ws_redis_workers: list[int]) -> tuple[list[Target], list[str]]:
    """The peer targets that can run here (the ws-redis-relay once per process count), and
    notes on those that cannot."""
    found: list[Target] = [PicowsRelay(log_dir)]
    notes = []
    why = WsRedisRelay.missing()
    if why is None:
        found += [WsRedisRelay(log_dir, workers) for workers in ws_redis_workers]
    else:
        notes.append(why)
    return found, notes


