"""`switchboard serve --workers N`: one supervisor process, N gateway workers on one host
(`--workers auto`: N is the number of cores the process may run on, chosen in cli.py).

The supervisor starts N children, `python -m switchboard serve` with the same flags, and tells
each what makes it a distinct cluster member through SWITCHBOARD_* environment variables (they
rank above the config file and below flags; none of these keys has a flag):

    SWITCHBOARD_SERVER_NODE_ID      base server.node_id + i  (server ids, admin-<id>.sock)
    SWITCHBOARD_SERVER_REUSE_PORT   true: every worker accepts on server.port (SO_REUSEPORT)
    SWITCHBOARD_METRICS_PORT        base metrics.port + i; a base of 0 stays 0 (any free port)
    SWITCHBOARD_CLUSTER_ENABLED     true: the workers form one cluster (docs/cluster.md)
    SWITCHBOARD_CLUSTER_NODE_NAME   "<cluster.node_name>-w<i>", or "n<node_id>" when unset
    SWITCHBOARD_CLUSTER_MESH_PORT   base mesh port + i; the base is cluster.mesh_port, or
                                    server.port + 100 when that is 0 and there is no Redis;
                                    with cluster.redis a base of 0 stays 0 (the registry
                                    carries each worker's address)
    SWITCHBOARD_CLUSTER_PEERS       without cluster.redis only: every worker's
                                    "name=mesh_host:port", plus any cluster.peers configured

So with the defaults (client 8765, metrics 9765) worker i has metrics 9765+i and mesh 8865+i.
The client port must be fixed: workers sharing it through SO_REUSEPORT must bind the same
number, so port 0 is a configuration error (exit 2), as are node ids past 1023 and port ranges
that run past 65535 or overlap. Every worker's full configuration is loaded and validated
before the first one starts.

**Readiness.** A worker's stdout is a pipe to the supervisor; its stderr (the JSON logs, each
line naming its node) is inherited, so journald or the terminal gets every worker's logs
unchanged. A worker prints
`switchboard listening on <url>` and `switchboard metrics on <url>` once it serves (cli.py);
the supervisor reads those two lines to learn that it is ready, and forwards any other line a
worker prints to its own stdout as is. Once every worker is ready it prints the same
`switchboard listening on <url>` line a single process prints (tools and tests parse it),
then one `switchboard metrics on <url> worker=<i> pid=<pid> node=<name>` line per worker
(again after each restart), and reports READY=1 to systemd. A pipe for stdout only keeps
readiness a plain line protocol the single-process mode already has, with no extra sockets
or files, and leaves the logs' path untouched.

**systemd.** Only the supervisor talks to the service manager: NOTIFY_SOCKET and WATCHDOG_*
are removed from the workers' environment (the unit's NotifyAccess=main would reject them).
The watchdog pings come from the supervisor's event loop. Workers stay in the supervisor's
process group (Ctrl-C in a terminal reaches all of them, and each drains), and each is
started with PR_SET_PDEATHSIG=SIGTERM, so a supervisor that dies without stopping them
(SIGKILL) still leaves no worker holding the port. Under systemd use KillMode=mixed: SIGTERM
goes to the supervisor alone, which forwards it; the final SIGKILL after TimeoutStopSec
reaches the whole cgroup.

**Stop.** SIGTERM or SIGINT: STOPPING=1, SIGTERM to every worker (each drains, see
deploy/README.md), wait up to server.stop_timeout plus STOP_GRACE (a worker gives up its own
drain at stop_timeout and exits 1), then SIGKILL whatever is left. Exit 0 when every worker
exited 0 (a worker our SIGTERM ended before it had installed its handlers counts as 0: it
served nothing). SIGHUP is forwarded (TLS reload).

**Restarts.** A worker that exits while the supervisor is not stopping is restarted after a
backoff (RESTART_BACKOFF doubling to RESTART_BACKOFF_MAX, from its recent failures). A worker
that fails MAX_FAILURES times within FAILURE_WINDOW seconds, or exits with the configuration
error code before it ever served, makes the supervisor give up: it stops the others and exits
1 (2 for a configuration error) instead of spinning. A worker that does not report ready
within READY_TIMEOUT is killed and counts as a failure.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Config, ConfigError, parse_peers
from .tools import sdnotify

log = logging.getLogger("switchboard.workers")

EXIT_CONFIG = 2
MESH_PORT_OFFSET = 100   # default mesh base without Redis: server.port + 100
STOP_GRACE = 2.0         # seconds past server.stop_timeout before stragglers get SIGKILL
READY_TIMEOUT = 60.0     # a worker must print its listening line within this (unit: 60 s start)
MAX_FAILURES = 5         # failures of one worker within FAILURE_WINDOW before giving up
FAILURE_WINDOW = 60.0
RESTART_BACKOFF = 0.25
RESTART_BACKOFF_MAX = 5.0
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

_LISTENING = re.compile(r"^switchboard listening on (\S+)")
_METRICS = re.compile(r"^switchboard metrics on (\S+)")
_WILDCARD = ("", "0.0.0.0", "::", "[::]")


@dataclass
class Worker:
    """One worker slot: what it is told, and what its current process reported."""
    index: int
    node_name: str
    env: dict[str, str]
    """The SWITCHBOARD_* overrides that make this worker distinct."""
    proc: asyncio.subprocess.Process | None = None
    url: str = ""
    metrics_url: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failures: deque = field(default_factory=deque)
    """Monotonic times of recent failures (exits while not stopping)."""
    restarts: int = 0
    served: bool = False
    """Whether any process of this slot ever reported ready."""


def plan(config: Config, workers: int, load_worker: Callable[[dict[str, str]], Config]) -> list[Worker]:
    """The N workers for `config` (loaded with cluster.enabled off: the supervisor itself is
    not a cluster member). `load_worker(environ)` loads the configuration a worker would see
    with that environment; each is loaded here so a bad value stops the supervisor before any
    worker starts. Raises ConfigError naming the key."""
    server, cluster = config.server, config.cluster
    if workers < 1:
        raise ConfigError(f"--workers: {workers} is not a number of workers (1 or more)")
    if server.port == 0:
        raise ConfigError("server.port: --workers needs a fixed client port (the workers share "
                          "it with SO_REUSEPORT), not 0")
    if server.node_id + workers > 1024:
        raise ConfigError(f"server.node_id: {server.node_id} + {workers} workers runs past 1023")
    metrics_base = config.metrics.port if config.metrics.enabled else 0
    mesh_base = cluster.mesh_port or (0 if cluster.redis else server.port + MESH_PORT_OFFSET)
    ranges = {"server.port": (server.port, 1)}
    if metrics_base:
        ranges["metrics.port"] = (metrics_base, workers)
    if mesh_base:
        ranges["cluster.mesh_port"] = (mesh_base, workers)
    for key, (first, count) in ranges.items():
        if first + count - 1 > 65535:
            raise ConfigError(f"{key}: {first} + {count} workers runs past port 65535")
    for key, (first, count) in ranges.items():
        for other, (first2, count2) in ranges.items():
            if key < other and first < first2 + count2 and first2 < first + count:
                raise ConfigError(f"{key} and {other}: the workers' ports overlap "
                                  f"({first}..{first + count - 1} and "
                                  f"{first2}..{first2 + count2 - 1})")

    names = [f"{cluster.node_name}-w{i}" if cluster.node_name else f"n{server.node_id + i}"
             for i in range(workers)]
    peers = ""
    if not cluster.redis:
        host = "127.0.0.1" if cluster.mesh_host in _WILDCARD else cluster.mesh_host
        members = parse_peers(cluster.peers)
        members.update({name: f"{host}:{mesh_base + i}" for i, name in enumerate(names)})
        peers = ",".join(f"{name}={address}" for name, address in members.items())
    result = []
    for i, name in enumerate(names):
        env = {"SWITCHBOARD_SERVER_NODE_ID": str(server.node_id + i),
               "SWITCHBOARD_SERVER_REUSE_PORT": "true",
               "SWITCHBOARD_CLUSTER_ENABLED": "true",
               "SWITCHBOARD_CLUSTER_NODE_NAME": name,
               "SWITCHBOARD_CLUSTER_MESH_PORT": str(mesh_base + i if mesh_base else 0)}
        if config.metrics.enabled:
            env["SWITCHBOARD_METRICS_PORT"] = str(metrics_base + i if metrics_base else 0)
        if peers:
            env["SWITCHBOARD_CLUSTER_PEERS"] = peers
        try:
            load_worker({**os.environ, **env})
        except ConfigError as exc:
            raise ConfigError(f"worker {i}: {exc}") from None
        result.append(Worker(i, name, env))
    return result


class Supervisor:
    """Runs `workers` as `python -m switchboard <argv>` children until stopped; see the module
    docstring for what it promises."""

    def __init__(self, config: Config, workers: list[Worker], argv: list[str]) -> None:
        self.config = config
        self.workers = workers
        self.argv = argv
        self.stopping = False
        self.exit_code = 0
        self._stop = asyncio.Event()
        self._announced = False
        self._base_env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ENV}
        self._libc = _libc()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        interval = sdnotify.watchdog_interval()
        watchdog = sdnotify.Watchdog(interval) if interval else None
        if watchdog is not None:
            watchdog.start(loop)
        keepers = [asyncio.create_task(self._keep(worker)) for worker in self.workers]
        await self._stop.wait()
        self.stopping = True
        sdnotify.notify("STOPPING=1", "STATUS=draining workers")
        log.info("stopping %d workers", len(self.workers))
        self._forward(signal.SIGTERM)
        deadline = self.config.server.stop_timeout + STOP_GRACE
        await asyncio.wait(keepers, timeout=deadline)
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                log.error("worker %d (pid %d) still running after %.1fs: SIGKILL",
                          worker.index, worker.proc.pid, deadline)
                worker.proc.kill()
        codes = await asyncio.gather(*keepers)
        if watchdog is not None:
            watchdog.stop()
        if any(code not in (0, -signal.SIGTERM) for code in codes if code is not None):
            self.exit_code = self.exit_code or 1
        return self.exit_code

    def _forward(self, sig: int) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.send_signal(sig)

    def _give_up(self, code: int) -> None:
        self.exit_code = max(self.exit_code, code)
        self._stop.set()

    # ------------------------------------------------------------------ one worker slot
    async def _keep(self, worker: Worker) -> int | None:
        """Run the worker's process, restarting it until the supervisor stops; returns the exit
        code of the process that was running when the stop came (None when none was)."""
        code = None
        while not self.stopping:
            worker.ready.clear()
            worker.url = worker.metrics_url = ""
            try:
                proc = worker.proc = await self._spawn(worker)
            except OSError as exc:
                log.error("cannot start worker %d: %s", worker.index, exc)
                self._give_up(1)
                return None
            if self.stopping:  # the stop came while it was being started
                proc.send_signal(signal.SIGTERM)
            reader = asyncio.create_task(self._read(worker, proc))
            exited = asyncio.create_task(proc.wait())
            ready = asyncio.create_task(worker.ready.wait())
            await asyncio.wait({exited, ready}, timeout=READY_TIMEOUT,
                               return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if worker.ready.is_set():
                self._on_ready(worker)
            elif not exited.done() and not self.stopping:
                log.error("worker %d (pid %d) not ready within %.0fs: SIGKILL",
                          worker.index, proc.pid, READY_TIMEOUT)
                proc.kill()
            code = await exited
            await reader
            if self.stopping:
                break
            now = time.monotonic()
            worker.failures.append(now)
            while worker.failures and worker.failures[0] < now - FAILURE_WINDOW:
                worker.failures.popleft()
            if code == EXIT_CONFIG and not worker.served:
                log.error("worker %d exited with a configuration error (code 2): giving up",
                          worker.index)
                self._give_up(EXIT_CONFIG)
                break
            if len(worker.failures) >= MAX_FAILURES:
                log.error("worker %d failed %d times within %.0fs: giving up",
                          worker.index, len(worker.failures), FAILURE_WINDOW)
                self._give_up(1)
                break
            delay = min(RESTART_BACKOFF * 2 ** (len(worker.failures) - 1), RESTART_BACKOFF_MAX)
            worker.restarts += 1
            log.warning("worker %d (pid %d, node %s) exited with code %s; restart %d in %.2fs",
                        worker.index, proc.pid, worker.node_name, code, worker.restarts, delay,
                        extra={"worker": worker.index, "exit_code": code,
                               "restarts": worker.restarts})
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return None  # stopped while waiting: no process of this slot was running
            except asyncio.TimeoutError:
                pass
        return code

    async def _spawn(self, worker: Worker) -> asyncio.subprocess.Process:
        env = dict(self._base_env, **worker.env)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard", *self.argv, env=env,
            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=self._die_with_parent)
        log.info("started worker %d (pid %d, node %s)", worker.index, proc.pid, worker.node_name,
                 extra={"worker": worker.index, "pid": proc.pid})
        return proc

    def _die_with_parent(self) -> None:
        """In the child between fork and exec: SIGTERM when the supervisor dies (Linux)."""
        if self._libc is not None:
            self._libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    async def _read(self, worker: Worker, proc: asyncio.subprocess.Process) -> None:
        """The worker's stdout until EOF: its two readiness lines are taken, anything else
        is passed on."""
        metrics = self.config.metrics.enabled
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").rstrip("\n")
            if (match := _LISTENING.match(text)) and not worker.url:
                worker.url = match.group(1)
            elif (match := _METRICS.match(text)) and not worker.metrics_url:
                worker.metrics_url = match.group(1)
            else:
                print(text, flush=True)
                continue
            if worker.url and (worker.metrics_url or not metrics):
                worker.ready.set()

    def _on_ready(self, worker: Worker) -> None:
        worker.served = True
        if not self._announced and all(w.ready.is_set() for w in self.workers):
            self._announced = True
            print(f"switchboard listening on {self.workers[0].url}", flush=True)
            for each in self.workers:
                self._print_worker(each)
            sdnotify.notify("READY=1", f"STATUS=serving {worker.url} with "
                                       f"{len(self.workers)} workers")
            log.info("%d workers serving %s", len(self.workers), worker.url)
        elif self._announced:
            self._print_worker(worker)
            log.info("worker %d serving again (pid %d)", worker.index, worker.proc.pid)

    def _print_worker(self, worker: Worker) -> None:
        line = f"worker={worker.index} pid={worker.proc.pid} node={worker.node_name}"
        if worker.metrics_url:
            print(f"switchboard metrics on {worker.metrics_url} {line}", flush=True)
        else:
            print(f"switchboard worker {line}", flush=True)


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def serve(config: Config, workers: list[Worker], argv: list[str]) -> int:
    """Run the supervisor until stopped; the process exit code."""
    import uvloop  # children are watched through its SIGCHLD handling, no waiter threads
    return uvloop.run(Supervisor(config, workers, argv).run())
