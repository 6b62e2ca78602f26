"""`switchboard serve --workers N` with real processes: one listening line once every worker
serves, each worker's ops port, connections spread by the kernel over the workers (seen in each
worker's connection gauge), a killed worker restarted while the port keeps serving and every
other worker's connections stay up, SIGTERM draining every worker within the deadline (with
thousands of connections held), `--workers auto`, and configuration errors exiting 2 (or 1 once
a worker keeps failing) instead of spinning. No worker's stderr may show an exception that
escaped into the event loop."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchboard.config import ConfigError, load
from switchboard.core.auth import TokenAuthority
from switchboard.proto.v1 import client_pb2 as pb
from switchboard.tools.devcluster import free_run
from switchboard.workers import plan
from tests.ops.node import BASE_ENV, INHERITED_SYSTEMD, http_get
from tests.ops.test_deploy import DEPLOY, UNIT, parse_unit
from tests.support.raw import OPEN_CLIENTS, RawClient
from tests.support.rawflow import direct, receive_and_ack, send
from tests.support.server import SECRET
from tests.support.waiting import wait_for

WORKERS = 3
STOP_TIMEOUT = 10.0
WORKER_ENV = {"SWITCHBOARD_SERVER_STOP_TIMEOUT": str(STOP_TIMEOUT),
              "SWITCHBOARD_SERVER_DRAIN_SPREAD": "0.2",
              "SWITCHBOARD_CLUSTER_HEARTBEAT_INTERVAL": "0.2",
              "SWITCHBOARD_CLUSTER_LINK_TIMEOUT": "1.0"}
LOOP_ERRORS = ("Task exception was never retrieved", "Exception in callback",
               "exception was never retrieved", "Unhandled error in exception handler")
_METRICS_LINE = re.compile(r"switchboard metrics on http://[\d.]+:(\d+)/metrics "
                           r"worker=(\d+) pid=(\d+) node=(\S+)")


class Supervised:
    """`python -m switchboard serve --workers N` in a child process; its stdout lines are
    collected by a thread (`lines`), its stderr (every process's logs) goes to a file."""

    def __init__(self, tmp_path: Path, workers: int = WORKERS, env: dict[str, str] | None = None,
                 port: int | None = None, workers_flag: str | None = None) -> None:
        self.port = port if port is not None else free_run(1)
        self.metrics_base = free_run(workers)
        self.mesh_base = free_run(workers)
        self.workers = workers
        self.workers_flag = workers_flag or str(workers)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("SWITCHBOARD_") and k not in INHERITED_SYSTEMD}
        self.env.update(BASE_ENV)
        self.env.update(WORKER_ENV)
        self.env.update({"SWITCHBOARD_METRICS_PORT": str(self.metrics_base),
                         "SWITCHBOARD_CLUSTER_MESH_PORT": str(self.mesh_base)})
        self.env.update(env or {})
        self.data_dir = tmp_path / "data"
        self.log_path = tmp_path / "supervisor.log"
        self.tokens = TokenAuthority(SECRET.encode())
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.pids: dict[int, int] = {}
        self._changed = threading.Condition()

    def spawn(self) -> "Supervised":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "switchboard", "serve", "--workers", self.workers_flag,
                 "--port", str(self.port), "--data-dir", str(self.data_dir)],
                stdout=subprocess.PIPE, stderr=log, env=self.env)
        threading.Thread(target=self._collect, daemon=True).start()
        return self

    async def start(self) -> "Supervised":
        self.spawn()
        try:  # a start that fails leaves no supervisor (and so no worker) behind
            first = await self.line(r"switchboard listening on ", timeout=60)
            assert first == self.lines[0], self.lines
            assert first == f"switchboard listening on ws://127.0.0.1:{self.port}/v1/ws"
            await wait_for(lambda: len(self.pids) == self.workers, timeout=5,
                           message="one metrics line per worker")
        except BaseException:
            self.stop()
            raise
        return self

    def _collect(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode().rstrip("\n")
            with self._changed:
                self.lines.append(line)
                if match := _METRICS_LINE.match(line):
                    assert int(match.group(1)) == self.metrics_base + int(match.group(2)), line
                    self.pids[int(match.group(2))] = int(match.group(3))
                self._changed.notify_all()

    async def line(self, pattern: str, timeout: float = 30, after: int = 0) -> str:
        """The first stdout line from index `after` on matching `pattern`."""
        def find():
            found = next((line for line in self.lines[after:] if re.search(pattern, line)), None)
            assert found or self.proc.poll() is None, f"exited {self.proc.returncode}"
            return found
        try:
            return await wait_for(find, timeout=timeout, interval=0.05, message=pattern)
        except AssertionError:
            raise AssertionError(f"no line {pattern!r} in {self.lines}\n{self.log()}") from None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def metrics_port(self, worker: int) -> int:
        return self.metrics_base + worker

    def token(self, user: str, device: str) -> str:
        return self.tokens.mint(user, device, 3600)

    async def gauge(self, name: str, **labels: str) -> list[float]:
        """One sample's value on each worker's /metrics."""
        values = []
        for worker in range(self.workers):
            status, body = await http_get(f"http://127.0.0.1:{self.metrics_port(worker)}/metrics")
            assert status == 200
            values.append(next(
                sample.value for family in text_string_to_metric_families(body.decode())
                for sample in family.samples if sample.name == name and sample.labels == labels))
        return values

    async def open_connections(self) -> list[float]:
        """Each worker's count of open (authenticated) connections."""
        return await self.gauge("switchboard_connections", state="open")

    async def wait(self, timeout: float) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_no_loop_errors(self) -> None:
        """Every worker's stderr (one file) shows no exception that escaped into the event
        loop: a callback that raised, or a task whose exception nobody retrieved."""
        log = self.log()
        for sign in LOOP_ERRORS:
            assert sign not in log, f"{sign!r} in the workers' stderr:\n{log[-5000:]}"

    def stop(self) -> None:
        """Teardown: SIGKILL the supervisor; its workers get SIGTERM from the kernel
        (PR_SET_PDEATHSIG) and must be gone soon after."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        deadline = time.monotonic() + STOP_TIMEOUT + 5
        while any(alive(pid) for pid in self.pids.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.stdout.close()


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


async def connect(node: Supervised, user: str, device: str, attempts: int = 1) -> RawClient:
    for attempt in range(attempts):
        client = None
        try:
            client = await RawClient.connect(node.url, node.token(user, device))
            await client.recv("welcome")
            return client
        except (OSError, AttributeError, asyncio.TimeoutError):
            # AttributeError: picows hands back no listener when the upgrade was reset
            if client is not None:
                close_all([client])
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


async def connect_many(node: Supervised, count: int, prefix: str) -> list[RawClient]:
    """`count` devices of distinct users, a hundred handshakes at a time."""
    clients: list[RawClient] = []
    for start in range(0, count, 100):
        clients += await asyncio.gather(*(connect(node, f"{prefix}{i}", "phone", attempts=5)
                                          for i in range(start, min(count, start + 100))))
    return clients


def open_sockets(clients: list[RawClient]) -> list[RawClient]:
    return [client for client in clients if not client.listener.closed.is_set()]


def close_all(clients: list[RawClient]) -> None:
    for client in clients:
        client.close()
        if client in OPEN_CLIENTS:
            OPEN_CLIENTS.remove(client)


async def test_workers_share_the_port_and_the_kernel_spreads_connections(tmp_path):
    node = await Supervised(tmp_path).start()
    clients: list[RawClient] = []
    try:
        for worker in range(WORKERS):
            status, _ = await http_get(f"http://127.0.0.1:{node.metrics_port(worker)}/healthz")
            assert status == 200, worker
        assert len(set(node.pids.values())) == WORKERS
        for i in range(60):
            clients.append(await connect(node, f"user{i}", "phone"))
        counts = await wait_for(lambda: _total(node, 60), timeout=10,
                                message="60 open connections over the workers")
        assert sum(1 for count in counts if count) >= 2, counts
    finally:
        close_all(clients)
        node.stop()


async def _total(node: Supervised, expected: int) -> list[int] | None:
    counts = await node.open_connections()
    return counts if sum(counts) == expected else None


async def test_a_killed_worker_is_restarted_and_the_port_keeps_serving(tmp_path):
    node = await Supervised(tmp_path).start()
    clients: list[RawClient] = []
    try:
        victim = node.pids[1]
        seen = len(node.lines)
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: not alive(victim), message="the killed worker gone")
        # the others keep accepting on the shared port while it restarts; a connection the
        # kernel queued on the dying worker's socket is reset, and its client reconnects
        for i in range(10):
            clients.append(await connect(node, f"during{i}", "phone", attempts=5))
        # the replacement's announcement; the victim's own (start-up) line may still be on its
        # way through the pipe when `seen` was taken, so the pid is part of the pattern
        await node.line(rf"worker=1 pid=(?!{victim}\b)\d+", after=seen, timeout=30)
        assert node.pids[1] != victim and alive(node.pids[1])
        status, _ = await http_get(f"http://127.0.0.1:{node.metrics_port(1)}/healthz")
        assert status == 200
        for i in range(20):
            clients.append(await connect(node, f"after{i}", "phone"))
        assert "exited with code -9; restart 1" in node.log()
        assert node.proc.poll() is None
        # a supervisor killed outright takes its workers along (PR_SET_PDEATHSIG: SIGTERM)
        node.proc.kill()
        await wait_for(lambda: not any(alive(pid) for pid in node.pids.values()),
                       timeout=STOP_TIMEOUT + 5, message="the workers gone with the supervisor")
    finally:
        close_all(clients)
        node.stop()


async def test_sigterm_drains_every_worker_and_exits_0(tmp_path):
    node = await Supervised(tmp_path).start()
    clients: list[RawClient] = []
    try:
        for i in range(12):
            clients.append(await connect(node, f"user{i}", "phone"))
        pids = list(node.pids.values())
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        assert await node.wait(STOP_TIMEOUT + 5) == 0, node.log()
        assert time.monotonic() - started < STOP_TIMEOUT
        assert not any(alive(pid) for pid in pids)
        for client in clients:  # every device was told to go (Goaway, close 1001)
            assert (await client.closed())[0] == 1001
        # each log line says which process wrote it: the drains can be told apart
        lines = [orjson.loads(line) for line in node.log().splitlines() if line.startswith("{")]
        drained = {line["node"] for line in lines if line["msg"].startswith("drained")}
        assert drained == {f"n{i}" for i in range(WORKERS)}
        assert all("node" in line for line in lines)
        assert {line["node"] for line in lines if line["logger"] == "switchboard.workers"} == \
            {"supervisor"}
        node.assert_no_loop_errors()
    finally:
        close_all(clients)
        node.stop()


HELD_PER_WORKER = 200
HELD_FOR_DRAIN = 3000


async def test_a_killed_worker_is_restarted_and_no_other_workers_connection_drops(tmp_path):
    """kill -9 of one worker while every worker holds a few hundred devices: exactly the
    victim's devices lose their socket and reconnect; every other device keeps its socket and
    is answered on it; the other workers take the victim off their rings at once (their redial
    or probe is refused) or see it back within the grace, never after a grace or a timeout."""
    node = await Supervised(tmp_path).start()
    clients: dict[RawClient, str] = {}
    try:
        await wait_for(lambda: _all_equal(node, "switchboard_cluster_ring_nodes", WORKERS),
                       timeout=20, message="every worker's ring has every worker")
        total = HELD_PER_WORKER * WORKERS
        users = [f"held{i}" for i in range(total)]
        for user, client in zip(users, await connect_many(node, total, "held")):
            clients[client] = user
        counts = await wait_for(lambda: _total(node, total), timeout=60,
                                message=f"{total} open connections over the workers")
        assert all(counts), counts  # the kernel gave every worker some
        victim = node.pids[1]
        seen = len(node.lines)
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: len(open_sockets(list(clients))) == total - counts[1],
                       timeout=30, message="the victim's devices disconnected")
        await node.line(rf"worker=1 pid=(?!{victim}\b)\d+", after=seen, timeout=60)
        dropped = [client for client in clients if client.listener.closed.is_set()]
        assert len(dropped) == counts[1]
        kept = open_sockets(list(clients))
        for client in dropped:  # the victim's devices come back (wherever the kernel puts them)
            user = clients.pop(client)
            close_all([client])
            clients[await connect(node, user, "phone", attempts=5)] = user
        await wait_for(lambda: _total(node, total), timeout=60,
                       message="every device connected again")
        # the other workers' devices never noticed: same socket, still answered on it
        rids = {client: client.send(ping=pb.Ping(client_time_ms=1)) for client in kept}
        for client, rid in rids.items():
            assert (await client.reply(rid)).WhichOneof("body") == "pong"
        assert open_sockets(kept) == kept
        lines = [orjson.loads(line) for line in node.log().splitlines() if line.startswith("{")]
        # each survivor either had its redial refused (n1 left its ring at once) or redialled
        # after the restarted n1 listened again (back within the grace); none waited the grace out
        about_n1 = {(line["node"], line["msg"]) for line in lines
                    if line["msg"].startswith("n1 leaves the ring")
                    or line["msg"] == "link to n1 back within the grace"}
        assert {node for node, _ in about_n1} == {"n0", "n2"}, about_n1
        assert all(msg in ("n1 leaves the ring: connection refused",
                           "link to n1 back within the grace") for _, msg in about_n1), about_n1
        await wait_for(lambda: _all_equal(node, "switchboard_cluster_ring_nodes", WORKERS),
                       timeout=20, message="the restarted worker back on every ring")
        node.assert_no_loop_errors()
    finally:
        close_all(list(clients))
        node.stop()


async def test_sigterm_with_thousands_of_connections_drains_every_worker_in_time(tmp_path):
    node = await Supervised(tmp_path).start()
    clients: list[RawClient] = []
    try:
        clients = await connect_many(node, HELD_FOR_DRAIN, "drain")
        await wait_for(lambda: _total(node, HELD_FOR_DRAIN), timeout=60,
                       message=f"{HELD_FOR_DRAIN} open connections")
        pids = list(node.pids.values())
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        assert await node.wait(STOP_TIMEOUT + 5) == 0, node.log()[-5000:]
        elapsed = time.monotonic() - started
        assert elapsed < STOP_TIMEOUT, f"stop took {elapsed:.1f}s"
        assert not any(alive(pid) for pid in pids)
        log = node.log()
        assert "drain did not finish" not in log and "still running after" not in log
        lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert {line["node"] for line in lines if line["msg"].startswith("drained")} == \
            {f"n{i}" for i in range(WORKERS)}
        for client in clients:
            assert (await client.closed())[0] == 1001
        node.assert_no_loop_errors()
    finally:
        close_all(clients)
        node.stop()


async def test_workers_auto_starts_one_per_usable_core(tmp_path):
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one usable core: auto means a single process, no supervisor")
    node = await Supervised(tmp_path, workers=cores, workers_flag="auto").start()
    try:
        assert len(set(node.pids.values())) == cores
        assert f"--workers auto: {cores} worker(s)" in node.log()
        node.assert_no_loop_errors()
    finally:
        node.stop()


async def test_users_on_different_workers_chat_both_ways_in_order(tmp_path):
    node = await Supervised(tmp_path).start()
    clients: list[RawClient] = []
    try:
        await wait_for(lambda: _all_equal(node, "switchboard_cluster_ring_nodes", WORKERS),
                       timeout=20, message="every worker's ring has every worker")
        # the kernel picks the worker: connect devices one by one, see whose gauge rose, until
        # alice and bob each have one on a different worker
        landed: dict[str, dict[int, RawClient]] = {"alice": {}, "bob": {}}
        counts = await node.open_connections()
        for attempt in range(40):
            user = ("alice", "bob")[attempt % 2]
            client = await connect(node, user, f"d{attempt}")
            clients.append(client)
            now = await wait_for(lambda: _total(node, sum(counts) + 1), timeout=10)
            worker = next(i for i, (a, b) in enumerate(zip(now, counts)) if a > b)
            counts = now
            landed[user].setdefault(worker, client)
            pairs = [(a, b) for wa, a in landed["alice"].items()
                     for wb, b in landed["bob"].items() if wa != wb]
            if pairs:
                break
        else:
            raise AssertionError(f"alice and bob never on different workers: {landed}")
        alice, bob = pairs[0]
        await alice.recv("sync_complete")
        await bob.recv("sync_complete")
        chat = await direct(alice, "bob")
        for i in range(20):  # alice -> bob
            assert (await send(alice, chat, f"a{i}".encode())).seq == i + 1
        got = await receive_and_ack(bob, 20)
        assert [(m.seq, m.body) for m in got] == [(i + 1, f"a{i}".encode()) for i in range(20)]
        for i in range(20):  # bob -> alice
            assert (await send(bob, chat, f"b{i}".encode())).seq == 21 + i
        got = await receive_and_ack(alice, 20)
        assert [(m.seq, m.body) for m in got] == [(21 + i, f"b{i}".encode()) for i in range(20)]
        # both at once, pipelined: one order for the chat, each sender's order kept in it
        rids = {client: [client.send(send=pb.Send(client_msg_id=f"{tag}{i}", chat_id=chat,
                                                  body=f"{tag}{i}".encode()))
                         for i in range(10)] for client, tag in ((alice, "x"), (bob, "y"))}
        acked = {client: [(await client.reply(rid)).send_ack.seq for rid in rids[client]]
                 for client in (alice, bob)}
        assert sorted(acked[alice] + acked[bob]) == list(range(41, 61))
        assert acked[alice] == sorted(acked[alice]) and acked[bob] == sorted(acked[bob])
        to_bob, to_alice = await receive_and_ack(bob, 10), await receive_and_ack(alice, 10)
        assert [m.seq for m in to_bob] == acked[alice]
        assert [m.body for m in to_bob] == [f"x{i}".encode() for i in range(10)]
        assert [m.seq for m in to_alice] == acked[bob]
        assert [m.body for m in to_alice] == [f"y{i}".encode() for i in range(10)]
        assert sum(await node.gauge("switchboard_cluster_forwarded_sends_total")) > 0
    finally:
        close_all(clients)
        node.stop()


async def _all_equal(node: Supervised, name: str, expected: float) -> bool:
    return all(value == expected for value in await node.gauge(name))


async def test_port_0_with_workers_is_a_config_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "switchboard", "serve", "--workers", "3", "--port", "0",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
        env=dict(os.environ, SWITCHBOARD_AUTH_SECRET=SECRET))
    assert done.returncode == 2
    assert "server.port" in done.stderr and "--workers" in done.stderr, done.stderr
    assert done.stdout == ""


async def test_a_worker_whose_port_is_taken_stops_the_supervisor_with_exit_2(tmp_path):
    node = Supervised(tmp_path)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", node.metrics_port(2)))  # worker 2 cannot open its ops port
    blocker.listen()
    try:
        node.spawn()
        assert await node.wait(60) == 2  # an operator's fix, not worth restarts
        assert not any(line.startswith("switchboard listening") for line in node.lines)
        log = node.log()
        assert f"switchboard: metrics.port: cannot listen on 127.0.0.1:{node.metrics_port(2)}" in log
        assert "worker 2 exited with a configuration error (code 2): giving up" in log
    finally:
        blocker.close()
        node.stop()


async def test_a_worker_that_keeps_failing_makes_the_supervisor_give_up(tmp_path):
    node = await Supervised(tmp_path).start()
    try:
        for failure in range(1, 6):  # killed as soon as it serves, five times within a minute
            victim = node.pids[2]
            os.kill(victim, signal.SIGKILL)
            if failure < 5:
                await wait_for(lambda: node.pids[2] != victim, timeout=60,
                               message="worker 2 serving again")
        assert await node.wait(60) == 1
        assert "worker 2 failed 5 times" in node.log()
    finally:
        node.stop()


def _plan(workers: int = 3, **values):
    overrides = {"server.port": 8765, "auth.secret": SECRET, **values}
    config = load(None, {**overrides, "cluster.enabled": False}, environ={})
    return plan(config, workers, lambda environ: load(None, overrides, environ=environ))


def test_plan_without_redis_static_peers_on_fixed_ports():
    env = [worker.env for worker in _plan(**{"server.node_id": 4})]
    peers = "n4=127.0.0.1:8865,n5=127.0.0.1:8866,n6=127.0.0.1:8867"
    for i, each in enumerate(env):
        assert each == {"SWITCHBOARD_SERVER_NODE_ID": str(4 + i),
                        "SWITCHBOARD_SERVER_REUSE_PORT": "true",
                        "SWITCHBOARD_CLUSTER_ENABLED": "true",
                        "SWITCHBOARD_CLUSTER_NODE_NAME": f"n{4 + i}",
                        "SWITCHBOARD_CLUSTER_MESH_PORT": str(8865 + i),
                        "SWITCHBOARD_METRICS_PORT": str(9765 + i),
                        "SWITCHBOARD_CLUSTER_PEERS": peers}


def test_plan_with_redis_registers_and_keeps_port_0():
    env = [worker.env for worker in _plan(**{"cluster.redis": "127.0.0.1:7000",
                                             "cluster.node_name": "host-a",
                                             "metrics.port": 0})]
    assert [each["SWITCHBOARD_CLUSTER_NODE_NAME"] for each in env] == \
        ["host-a-w0", "host-a-w1", "host-a-w2"]
    assert {each["SWITCHBOARD_CLUSTER_MESH_PORT"] for each in env} == {"0"}
    assert {each["SWITCHBOARD_METRICS_PORT"] for each in env} == {"0"}
    assert not any("SWITCHBOARD_CLUSTER_PEERS" in each for each in env)


@pytest.mark.parametrize("values, message", [
    ({"server.port": 0}, "server.port: --workers needs a fixed client port"),
    ({"server.node_id": 1022}, "server.node_id: 1022 \\+ 3 workers runs past 1023"),
    ({"metrics.port": 8866}, "cluster.mesh_port and metrics.port: the workers' ports overlap"),
    ({"metrics.port": 65534}, "metrics.port: 65534 \\+ 3 workers runs past port 65535"),
    ({"cluster.node_name": "a b"}, "worker 0: cluster.node_name: 'a b"),
])
def test_plan_refuses_what_the_workers_could_not_run(values, message):
    with pytest.raises(ConfigError, match=message):
        _plan(**values)


def test_systemd_drop_in_runs_the_supervisor():
    drop_in = parse_unit(DEPLOY / "systemd" / "switchboard@0.service.d" / "workers.conf")
    assert drop_in["Service"]["ExecStart"][0] == ""  # clears the template's
    assert re.search(r"serve --config /etc/switchboard/switchboard.toml --workers (\d+|auto)$",
                     drop_in["Service"]["ExecStart"][1])
    unit = parse_unit(UNIT)["Service"]
    assert unit["KillMode"] == ["mixed"] and unit["NotifyAccess"] == ["main"]
