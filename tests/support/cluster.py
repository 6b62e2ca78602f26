"""A cluster of real gateway processes for tests: N `python -m switchboard serve` sharing one
data dir (one SQLite store, or the store `store` names) and a Redis Cluster (leases and
sessions), meshed on free ports.

Each gateway gets server.node_id i and cluster.node_name f"g{i}", its own client port (parsed
from its "switchboard listening on ws://..." line) and metrics port, fast timers (as
tests/support/server.py's ServerProcess) and fast cluster timers (lease 2 s, mesh heartbeat
0.2 s, link timeout 1 s). Every cluster gets its own Redis key prefix (cluster.redis_prefix), so
tests can share one Redis Cluster without flushing it. Logs (stdout and stderr, WARNING and up,
text format) go to <directory>/g<i>.log, appended across restarts; `logs()` returns their tails
for assertion messages.

kill(i) is SIGKILL; restart(i) starts the same node (same node_id and name) on the same client
port when it can be bound again, else on a new one (url(i) follows). stop() sends SIGTERM to all
and waits, then SIGKILLs what is left: the `gateway_cluster` fixtures call it whatever happens.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from switchboard.config import load
from switchboard.core.auth import TokenAuthority
from switchboard.core.store import Store
from switchboard.core.stores import make_store
from tests.support.server import FAST, SECRET

HOST = "127.0.0.1"
LISTENING = re.compile(r"switchboard listening on (wss?://[\d.]+:(\d+)/v1/ws)")
METRICS = re.compile(r"switchboard metrics on http://[\d.]+:(\d+)/metrics")

#: The configuration of every gateway: section.key -> value, given as SWITCHBOARD_* variables.
DEFAULTS: dict[str, object] = {
    "server.host": HOST,
    "auth.secret": SECRET,
    "timers.tick": 0.05,
    "timers.retransmit_after": 1.0,
    "timers.presence_interval": 0.1,
    "metrics.port": 0,
    "log.format": "text",
    # WARNING keeps the logs short; CLUSTER_TEST_LOG_LEVEL=INFO (or DEBUG) to diagnose a failure
    "log.level": os.environ.get("CLUSTER_TEST_LOG_LEVEL", "WARNING"),
    "cluster.enabled": True,
    "cluster.mesh_host": HOST,
    "cluster.mesh_port": 0,
    "cluster.lease_ttl": 2.0,
    "cluster.heartbeat_interval": 0.2,
    "cluster.link_timeout": 1.0,
    "cluster.forward_timeout": 5.0,
    "server.drain_spread": 0.5,
    **{key: value for key, value in FAST.items() if key.startswith("limits.")},
}


class ClusterError(AssertionError):
    """A gateway did not start, or the cluster did not form; carries the logs."""


@dataclass
class GatewayProcess:
    index: int
    name: str
    log: Path
    port: int = 0              # client port; kept across restarts when possible
    metrics_port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/v1/ws"


class GatewayCluster:
    def __init__(self, directory: Path, redis_addresses: list[str], count: int = 3, *,
                 prefix: str | None = None, config: Mapping[str, object] | None = None,
                 store: Mapping[str, object] | None = None) -> None:
        """`store`: "store.*" keys every gateway gets (default: the SQLite file in the shared
        data dir)."""
        self.directory = Path(directory)
        self.data_dir = self.directory / "data"
        self.redis = ",".join(redis_addresses)
        self.prefix = prefix or f"t{uuid.uuid4().hex[:10]}"
        self.config = {**DEFAULTS, **(store or {}), **(config or {})}
        self.tokens = TokenAuthority(SECRET.encode())
        self.gateways = [GatewayProcess(i, f"g{i}", self.directory / f"g{i}.log")
                         for i in range(count)]

    # ------------------------------------------------------------------ addresses
    @property
    def names(self) -> list[str]:
        return [g.name for g in self.gateways]

    def url(self, i: int) -> str:
        return self.gateways[i].url

    def urls(self, first: int = 0) -> list[str]:
        """Every gateway's URL, starting with gateway `first` (an SDK client's endpoint list)."""
        n = len(self.gateways)
        return [self.gateways[(first + k) % n].url for k in range(n)]

    def token(self, user: str, device: str = "phone", ttl: float = 3600) -> str:
        return self.tokens.mint(user, device, ttl)

    @property
    def database(self) -> Path:
        return self.data_dir / "switchboard.db"

    async def open_store(self) -> Store:
        """A store of the gateways' own (the same [store] settings), opened; close it after."""
        values = {key: value for key, value in self.config.items() if key.startswith("store.")}
        store = make_store(load(None, {**values, "server.data_dir": str(self.data_dir)},
                                environ={}))
        await store.open()
        return store

    # ------------------------------------------------------------------ life cycle
    async def start(self, timeout: float = 30.0) -> "GatewayCluster":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            # one by one: the first creates the SQLite schema before the others open the file
            for gateway in self.gateways:
                await self._spawn(gateway, timeout)
            await self.wait_formed(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    async def _spawn(self, gateway: GatewayProcess, timeout: float) -> None:
        values = dict(self.config)
        values.update({"server.node_id": gateway.index, "cluster.node_name": gateway.name,
                       "cluster.redis": self.redis, "cluster.redis_prefix": self.prefix})
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        for key, value in values.items():
            section, _, name = key.partition(".")
            if isinstance(value, bool):
                value = "true" if value else "false"
            env[f"SWITCHBOARD_{section.upper()}_{name.upper()}"] = str(value)
        for port in ([gateway.port, 0] if gateway.port else [0]):
            offset = gateway.log.stat().st_size if gateway.log.exists() else 0
            with open(gateway.log, "ab") as out:
                out.write(f"=== {time.strftime('%H:%M:%S')} start {gateway.name} port {port} "
                          f"===\n".encode())
                gateway.proc = subprocess.Popen(
                    [sys.executable, "-m", "switchboard", "serve", "--port", str(port),
                     "--data-dir", str(self.data_dir)],
                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            text = await self._wait_listening(gateway, offset, timeout)
            if text is not None:
                gateway.port = int(LISTENING.search(text).group(2))
                metrics = METRICS.search(text)
                gateway.metrics_port = int(metrics.group(1)) if metrics else 0
                return
            # exited at start: the old port may be taken by now; try any port once
        raise ClusterError(f"{gateway.name} did not start\n{self.logs()}")

    async def _wait_listening(self, gateway: GatewayProcess, offset: int,
                              timeout: float) -> str | None:
        """The log text once the gateway printed its addresses; None if it exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(gateway.log, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            if LISTENING.search(text) and (METRICS.search(text) or not gateway.alive):
                return text
            if not gateway.alive:
                return None
            await asyncio.sleep(0.05)
        raise ClusterError(f"{gateway.name} did not print its address in {timeout}s\n"
                           f"{self.logs()}")

    def kill(self, i: int) -> None:
        """SIGKILL gateway i (no drain, no goodbye) and reap it."""
        gateway = self.gateways[i]
        if not gateway.alive:
            return
        gateway.proc.send_signal(signal.SIGKILL)
        gateway.proc.wait(10)
        with open(gateway.log, "ab") as out:
            out.write(f"=== {time.strftime('%H:%M:%S')} SIGKILL {gateway.name} ===\n".encode())

    def pause(self, i: int) -> None:
        self.gateways[i].proc.send_signal(signal.SIGSTOP)

    def resume(self, i: int) -> None:
        self.gateways[i].proc.send_signal(signal.SIGCONT)

    async def restart(self, i: int, timeout: float = 30.0, wait_formed: bool = True) -> None:
        """Start gateway i again (same node_id and name; the same client port if it can be
        bound, else a new one: url(i) follows). Kills it first if it still runs."""
        self.kill(i)
        await self._spawn(self.gateways[i], timeout)
        if wait_formed:
            await self.wait_formed(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to every gateway still running, wait, SIGKILL what did not exit."""
        running = [g for g in self.gateways if g.alive]
        for gateway in running:
            try:
                gateway.proc.send_signal(signal.SIGCONT)  # a paused one could not exit
                gateway.proc.terminate()
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for gateway in running:
            try:
                gateway.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                gateway.proc.kill()
                gateway.proc.wait(10)

    # ------------------------------------------------------------------ observing
    async def metrics(self, i: int) -> dict[str, float]:
        """Gateway i's /metrics as {name{labels}: value} (empty if it does not answer)."""
        port = self.gateways[i].metrics_port
        if not port or not self.gateways[i].alive:
            return {}
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 2)
            writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            body = await asyncio.wait_for(reader.read(), 2)
            writer.close()
        except (OSError, asyncio.TimeoutError):
            return {}
        out = {}
        for line in body.decode(errors="replace").split("\r\n\r\n", 1)[-1].splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    async def ring_sizes(self, among: list[int] | None = None) -> dict[str, int]:
        """Each live gateway's ring size (switchboard_cluster_ring_nodes); `among`: only
        these gateways (a paused one does not answer)."""
        sizes = {}
        for g in self.gateways:
            if g.alive and (among is None or g.index in among):
                metrics = await self.metrics(g.index)
                sizes[g.name] = int(metrics.get("switchboard_cluster_ring_nodes", -1))
        return sizes

    async def cluster_stats(self) -> dict[str, dict[str, float]]:
        """Each live gateway's router metrics (switchboard_cluster_*, prefix dropped): links,
        ring size, forwarded sends, fan-out lookup failures... for failure messages."""
        out = {}
        for g in self.gateways:
            if g.alive:
                out[g.name] = {k[len("switchboard_cluster_"):]: v
                               for k, v in (await self.metrics(g.index)).items()
                               if k.startswith("switchboard_cluster_") and not k.endswith("_created")}
        return out

    async def registry_view(self, users=()) -> dict[str, object]:
        """What the Redis registry holds for this cluster (its prefix), raw: every lease and
        epoch counter, and the users' session hashes (device -> node|epoch). For failure
        messages: a session under an epoch that is not its node's current one is invisible."""
        from switchboard.router.registry_redis import RedisClusterRegistry
        registry = RedisClusterRegistry(self.redis.split(","), prefix=self.prefix, deadline=5)
        client, keys = registry._client, registry.keys
        try:
            view: dict[str, object] = {}
            for name in self.names:
                view[f"lease:{name}"] = await client.get(keys.lease(name))
                view[f"epoch:{name}"] = await client.get(keys.epoch(name))
            for user in users:
                view[f"sessions:{user}"] = await client.hgetall(keys.sessions(user))
                try:
                    view[f"visible:{user}"] = {d: f"{e.node_id}|{e.node_epoch}" for d, e in
                                               (await registry.sessions(user)).items()}
                except Exception as exc:  # a view for a message: never raise
                    view[f"visible:{user}"] = repr(exc)
            return view
        except Exception as exc:
            return {"error": repr(exc)}
        finally:
            await registry.close()

    async def wait_formed(self, size: int | None = None, timeout: float = 20.0,
                          among: list[int] | None = None) -> None:
        """Until every live gateway (of `among`) has `size` nodes (default: all live ones) on
        its ring."""
        want = size if size is not None else sum(g.alive for g in self.gateways)
        deadline = time.monotonic() + timeout
        sizes: dict[str, int] = {}
        while time.monotonic() < deadline:
            sizes = await self.ring_sizes(among)
            if sizes and all(s == want for s in sizes.values()):
                return
            await asyncio.sleep(0.05)
        raise ClusterError(f"cluster did not form ({want} nodes per ring) in {timeout}s: rings "
                           f"{sizes}\n{self.logs()}")

    def logs(self, lines: int = 40) -> str:
        """The last lines of every gateway's log, for assertion messages."""
        parts = []
        for g in self.gateways:
            try:
                tail = g.log.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                tail = ["(no log)"]
            state = "running" if g.alive else f"exited {g.proc.returncode if g.proc else '-'}"
            parts.append(f"--- {g.log} ({state}, port {g.port}) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def errors(self) -> list[str]:
        """Log lines at ERROR or above, and tracebacks, over every gateway's whole log."""
        found = []
        for g in self.gateways:
            if g.log.exists():
                for line in g.log.read_text(errors="replace").splitlines():
                    if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                        found.append(f"{g.name}: {line}")
        return found


# ---------------------------------------------------------------------- clients and ownership
def owner(chat_id: str, names=("g0", "g1", "g2")) -> str:
    """The chat's owner while every node is on every ring: the router builds its ring the same
    way (switchboard/router/ring.py; the epoch does not change owners)."""
    from switchboard.router.ring import Ring
    return Ring(list(names), 0).owner(chat_id)


async def device_client(cluster: GatewayCluster, user: str, device: str = "phone",
                        node: int = 0, *, urls: list[str] | None = None, connect: bool = True,
                        **kwargs):
    """An SDK Client of (user, device) whose endpoint list starts at gateway `node` and goes on
    to the others (reconnects rotate), closed by the fixtures. Fast backoff by default."""
    from switchboard.client import Client
    from tests.support.raw import OPEN_CLIENTS
    kwargs.setdefault("backoff_min", 0.05)
    kwargs.setdefault("backoff_max", 0.5)
    kwargs.setdefault("send_timeout", 20.0)
    client = Client(urls or cluster.urls(node), lambda: cluster.token(user, device), **kwargs)
    OPEN_CLIENTS.append(client)
    if connect:
        await client.connect()
        await client.wait_synced(timeout=15)
    return client
