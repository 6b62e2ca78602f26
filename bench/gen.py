"""The load generator: a pool of worker processes that hold the generated devices.

Why processes: one process may hold at most 20,000 descriptors here, and one event loop is one
core; a run of 10,000 group members or a saturating chat load needs both limits lifted. Each
worker runs a uvloop loop with its devices and executes the scenario's worker-side coroutines
("module:function") that the main process sends it, one at a time, over a pipe. The main
process only orchestrates: it never holds a device, so its own work cannot skew a latency.

Why several source addresses: a TCP client socket bound to one source address gets one of
~28,000 ephemeral ports; binding client sockets round-robin to 127.0.0.1..127.0.0.N (all of
127/8 is loopback on Linux) multiplies that, so a hold of 50,000 connections does not fail on
EADDRNOTAVAIL. Only used when the target itself is on loopback.

Timestamps are time.monotonic_ns() (CLOCK_MONOTONIC, one clock for every process of the host),
so a worker can subtract a send time recorded by another worker or by the main process.
"""
from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import resource
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

from hdrh.histogram import HdrHistogram

from . import hist
from .device import Device, SwitchboardDevice
from .peers.devices import JsonRelayDevice, RelayDevice
from .progress import Progress

#: Connections one worker holds at most: below the 20,000 descriptors a process may have here,
#: with room for the pipe, the loop and the files a worker opens.
PER_WORKER = 15_000
#: Seconds between progress reports from a worker: often enough for a smooth bar, rarely
#: enough that reporting costs nothing.
PROGRESS_EVERY = 0.1


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How a worker reaches a target: the protocol its devices speak, the URL, and for
    Switchboard the signing key to mint device tokens with."""
    kind: str          # "switchboard" | "picows-relay" | "ws-redis-relay"
    url: str
    secret: str = ""

    @property
    def loopback(self) -> bool:
        host = self.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
        return host.startswith("127.") or host == "localhost"

    def device(self, user: str, partner: str = "", body_size: int = 64) -> Device:
        """A new (closed) generated device that speaks this endpoint's protocol."""
        return _DEVICES[self.kind](user, partner, body_size)


_DEVICES = {"switchboard": SwitchboardDevice, "picows-relay": RelayDevice,
            "ws-redis-relay": JsonRelayDevice}


class Worker:
    """The state of one generator process, handed to every worker-side coroutine: its
    devices by user id, a scratch dict for the current scenario, and helpers."""

    def __init__(self, conn: Connection, source_addrs: list[str]) -> None:
        self.devices: dict = {}
        self.scratch: dict = {}
        self._conn = conn
        self._addrs = source_addrs
        self._next_addr = 0
        self._unreported = 0
        self._reported_at = 0.0

    def local_addr(self, endpoint: Endpoint) -> tuple[str, int] | None:
        """The next source address (round robin), or None to let the kernel choose."""
        if not endpoint.loopback or not self._addrs:
            return None
        addr = self._addrs[self._next_addr % len(self._addrs)]
        self._next_addr += 1
        return addr, 0

    def progress(self, n: int = 1) -> None:
        self._unreported += n
        now = time.monotonic()
        if now - self._reported_at >= PROGRESS_EVERY:
            self.flush_progress()

    def flush_progress(self) -> None:
        if self._unreported:
            self._conn.send(("progress", self._unreported))
            self._unreported = 0
        self._reported_at = time.monotonic()

    async def connect(self, devices: list, endpoint: Endpoint,
                      concurrency: int) -> tuple[int, list[str], HdrHistogram]:
        """Open `devices` with at most `concurrency` handshakes in flight. Returns the number
        opened, the distinct errors of those that failed (a failed device stays closed) and
        the handshake latencies (TCP connect + upgrade + the protocol's own greeting)."""
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []
        latency = hist.new()

        async def one(device) -> bool:
            async with gate:
                start = time.monotonic_ns()
                try:
                    await device.open(endpoint, self.local_addr(endpoint))
                except Exception as exc:  # reported, not raised: one refusal must not end a run
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return False
                hist.record_ns(latency, time.monotonic_ns() - start)
            self.progress()
            return True

        opened = sum(await asyncio.gather(*(one(d) for d in devices)))
        return opened, sorted(set(errors))[:5], latency


async def close_all(worker: Worker) -> int:
    """Close every device of the worker (worker-side, shared by all scenarios)."""
    devices = list(worker.devices.values())
    worker.devices.clear()
    worker.scratch.clear()
    await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)
    return len(devices)


def _worker_main(conn: Connection, source_addrs: list[str]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop
    uvloop.run(_serve(Worker(conn, source_addrs), conn))


async def _serve(worker: Worker, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def readable() -> None:
        while conn.poll():
            try:
                inbox.put_nowait(conn.recv())
            except EOFError:  # the main process went away
                loop.remove_reader(conn.fileno())
                inbox.put_nowait(("stop",))
                return

    _add_reader(loop, conn, readable)
    conn.send(("ready", None))
    while True:
        command = await inbox.get()
        if command[0] == "stop":
            break
        _, target, kwargs = command
        try:
            module, _, name = target.partition(":")
            result = await getattr(importlib.import_module(module), name)(worker, **kwargs)
        except Exception:
            worker.flush_progress()
            conn.send(("error", traceback.format_exc()))
        else:
            worker.flush_progress()
            conn.send(("result", result))
    await close_all(worker)


def _add_reader(loop: asyncio.AbstractEventLoop, conn: Connection, callback, *args) -> None:
    """Watch a pipe for messages. The loop makes a watched descriptor non-blocking, but
    Connection.recv() reads a message with several reads and must not stop halfway, so the
    pipe is put back in blocking mode: readability only says a message has started, and the
    sender writes each message whole."""
    loop.add_reader(conn.fileno(), callback, *args)
    os.set_blocking(conn.fileno(), True)


class WorkerError(RuntimeError):
    """A worker-side coroutine raised; the message carries its traceback."""


class Pool:
    """The worker processes, driven from the main process's event loop.

    `run(target, kwargs)` runs one worker-side coroutine on every worker at once (kwargs: one
    dict per worker, or one dict for all) and returns their results in worker order; progress
    the workers report goes to the given Progress bar.
    """

    def __init__(self, workers: int, source_addrs: int) -> None:
        self.size = workers
        addrs = [f"127.0.0.{i}" for i in range(1, source_addrs + 1)]
        # each worker gets its own slice of addresses, so workers never contend for ports
        self._addrs = [addrs[i::workers] or addrs for i in range(workers)]
        self._procs: list = []
        self._conns: list[Connection] = []
        self._waiting: list[asyncio.Future | None] = []
        self._progress: Progress | None = None

    async def start(self) -> "Pool":
        self._procs = [None] * self.size
        self._conns = [None] * self.size
        self._waiting = [None] * self.size
        await asyncio.gather(*(self._spawn(index) for index in range(self.size)))
        return self

    async def _spawn(self, index: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, self._addrs[index]),
                           name=f"bench-worker-{index}", daemon=True)
        proc.start()
        child.close()
        self._procs[index] = proc
        self._conns[index] = parent
        ready = self._waiting[index] = loop.create_future()
        _add_reader(loop, parent, self._readable, index)
        await ready

    async def kill(self, indexes) -> None:
        """SIGKILL these workers, as a phone that loses power or network: no CLOSE, no FIN
        sent on purpose; the kernel closes (or resets) their sockets when the process dies,
        and the server must notice by itself. Each is replaced by a fresh, empty worker."""
        loop = asyncio.get_running_loop()
        indexes = list(indexes)
        for index in indexes:
            loop.remove_reader(self._conns[index].fileno())
            self._procs[index].kill()
        for index in indexes:
            await asyncio.to_thread(self._procs[index].join, 15)
            self._conns[index].close()
            self._waiting[index] = None
        await asyncio.gather(*(self._spawn(index) for index in indexes))

    async def run(self, target: str, kwargs: dict | list[dict] | None = None,
                  progress: Progress | None = None) -> list:
        per_worker = kwargs if isinstance(kwargs, list) else [kwargs or {}] * self.size
        return await self.run_on(range(self.size), target, per_worker, progress)

    async def run_on(self, indexes, target: str, per_worker: list[dict],
                     progress: Progress | None = None) -> list:
        """Run on the given workers only, with one kwargs dict per given worker."""
        loop = asyncio.get_running_loop()
        self._progress = progress
        futures = []
        for index, kwargs in zip(indexes, per_worker):
            future = self._waiting[index] = loop.create_future()
            self._conns[index].send(("call", target, kwargs))
            futures.append(future)
        try:
            return await asyncio.gather(*futures)
        finally:
            self._progress = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for conn in filter(None, self._conns):
            loop.remove_reader(conn.fileno())
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for proc in filter(None, self._procs):  # a worker finishes its current command first
            await asyncio.to_thread(proc.join, 15)
            if proc.is_alive():
                proc.kill()
        for conn in filter(None, self._conns):
            conn.close()

    async def __aenter__(self) -> "Pool":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _readable(self, index: int) -> None:
        conn = self._conns[index]
        while conn.poll():
            try:
                kind, payload = conn.recv()
            except EOFError:
                asyncio.get_running_loop().remove_reader(conn.fileno())
                self._resolve(index, exception=WorkerError(f"worker {index} died"))
                return
            if kind == "progress":
                if self._progress is not None:
                    self._progress.update(payload)
            elif kind == "error":
                self._resolve(index, exception=WorkerError(f"worker {index}:\n{payload}"))
            else:  # "ready" or "result"
                self._resolve(index, result=payload)

    def _resolve(self, index: int, result=None, exception: Exception | None = None) -> None:
        future = self._waiting[index]
        if future is None or future.done():
            return
        self._waiting[index] = None
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
