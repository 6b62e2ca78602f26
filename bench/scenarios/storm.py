"""storm: N known devices drop at once (their generator processes SIGKILLed), messages arrive
for half of them while they are away, then all reconnect as the SDK would; time until every one
is synced, handshakes per second, and the server's peak memory meanwhile.

Set-up: N receivers connect once (so they are known devices: admitted, in the store) and stay
connected; N/2 senders, each in a direct chat with one receiver, connect in other generator
processes. The drop: the receivers' processes are SIGKILLed, no CLOSE sent: the kernel closes
their sockets and the server has to notice by itself (on loopback it sees the FIN or RST at
once; across a network its heartbeats and idle timeout would). While they are away each sender
sends `--messages` K (default 1) into its chat. The storm: fresh processes reconnect every
receiver with the SDK's reconnect timing (switchboard/client/sdk.py `_reconnect_loop`: a first
delay uniform in [0, backoff_min], doubling caps up to backoff_max after a failed attempt) and
at most `--connect-concurrency` handshakes in flight per process (the generator's own limit, a
phone has no such gate). A receiver is synced when it has its SyncComplete and, for the
messaged half, its K messages. Time counts from the first reconnect. The server's peak RSS is
VmHWM reset just before the drop (or the highest of samples every 10 ms where the kernel does
not allow the reset), summed over the server's processes.

Counts that must add up: every messaged receiver got its K messages exactly once, in order.
"""
from __future__ import annotations

import asyncio
import inspect
import math
import random
import time

from switchboard.client import Client
from switchboard.proto.v1 import client_pb2 as pb

from .. import hist, procfs, report
from ..gen import PER_WORKER, Worker
from ..progress import Progress
from ..targets import MESH_COUNTERS
from ..ordercheck import InOrder

NAME = "storm"
SIZE_HELP = "known devices that drop and reconnect"
DEFAULT_SIZES = (2_000,)
PEERS_DEFAULT = None   # the peers store nothing, so they have nothing to sync
FILL_IN_FLIGHT = 1024
SYNC_TIMEOUT = 300.0
RSS_SAMPLE_EVERY = 0.01
#: The SDK's reconnect backoff, read from its Client so the storm follows it when it changes.
_SDK = inspect.signature(Client).parameters
BACKOFF_MIN = _SDK["backoff_min"].default
BACKOFF_MAX = _SDK["backoff_max"].default
MAX_BACKOFF_EXPONENT = 30


def min_workers(size: int) -> int:
    """Receivers and senders live in separate processes (the receivers' are killed)."""
    return _sender_workers(size) + math.ceil(size / PER_WORKER)


def _sender_workers(size: int) -> int:
    return max(1, math.ceil(size // 2 / PER_WORKER))


# ====================================================================== worker side
class Receiver(InOrder):
    """One returning device: what it got back, and when it was complete."""
    __slots__ = ("device", "wanted", "complete", "attempts")

    def __init__(self, device, wanted: int) -> None:
        super().__init__()
        self.device = device
        self.wanted = wanted
        self.complete = asyncio.Event()
        self.attempts = 0
        device.on_deliver = self.on_deliver
        if not wanted:
            self.complete.set()

    def on_deliver(self, k: int, t_ns: int) -> None:
        self.see(k)
        if self.delivered >= self.wanted:
            self.complete.set()


class Sender:
    """Sends K messages into one chat, `window` in flight."""
    __slots__ = ("device", "total", "window", "sent", "acked", "done")

    def __init__(self, device, total: int, window: int) -> None:
        self.device = device
        self.total = total
        self.window = window
        self.sent = 0
        self.acked = 0
        self.done = asyncio.Event()

    def refill(self) -> None:
        while self.sent < self.total and self.sent - self.acked < self.window:
            self.device.send(self.sent, time.monotonic_ns())
            self.sent += 1

    def on_ack(self, k: int, t_ns: int) -> None:
        self.acked += 1
        if self.acked == self.total:
            self.done.set()
        self.refill()


async def connect_receivers(worker: Worker, endpoint, users: list[str], body_size: int,
                            concurrency: int) -> dict:
    devices = [endpoint.device(user, "", body_size) for user in users]
    opened, errors, _ = await worker.connect(devices, endpoint, concurrency)
    await asyncio.gather(*(d.wait_synced(SYNC_TIMEOUT) for d in devices if d.connected))
    for device in devices:
        worker.devices[device.user] = device
    return {"opened": opened, "errors": errors}


async def connect_senders(worker: Worker, endpoint, pairs: list[tuple[str, str]],
                          body_size: int, concurrency: int) -> dict:
    senders = [endpoint.device(s, r, body_size) for s, r in pairs]
    opened, errors, _ = await worker.connect(senders, endpoint, concurrency)
    if opened < len(senders):
        return {"opened": opened, "errors": errors}
    await asyncio.gather(*(d.wait_synced(SYNC_TIMEOUT) for d in senders))
    gate = asyncio.Semaphore(concurrency)

    async def create(sender) -> None:
        async with gate:
            chat = await sender.request("chat", create_chat=pb.CreateChat(
                kind=pb.DIRECT, member_user_ids=[sender.partner]))
        sender.chat_id = chat.chat_id
        worker.progress()

    await asyncio.gather(*(create(s) for s in senders))
    worker.scratch["senders"] = senders
    for device in senders:
        worker.devices[device.user] = device
    return {"opened": opened, "errors": errors}


async def fill(worker: Worker, messages: int, window: int) -> dict:
    senders = [Sender(d, messages, window) for d in worker.scratch["senders"]]
    for sender in senders:
        sender.device.on_ack = sender.on_ack
        sender.refill()
    for sender in senders:
        await asyncio.wait_for(sender.done.wait(), SYNC_TIMEOUT)
        worker.progress(sender.total)
    return {"acked": sum(s.acked for s in senders),
            "send_errors": sum(s.device.errors for s in senders)}


async def storm(worker: Worker, endpoint, receivers: list[tuple[str, int]], t0_ns: int,
                body_size: int, concurrency: int) -> dict:
    """Reconnect every (user, messages wanted) with the SDK's backoff and full jitter."""
    synced = hist.new()
    cpu = time.process_time()
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []
    opens: list[int] = []
    rxs = [Receiver(endpoint.device(user, "", body_size), wanted) for user, wanted in receivers]
    deadline = time.monotonic() + SYNC_TIMEOUT

    async def reconnect(rx: Receiver) -> None:
        while True:
            cap = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(rx.attempts, MAX_BACKOFF_EXPONENT))
            rx.attempts += 1
            await asyncio.sleep(random.uniform(0, cap))
            try:
                async with gate:
                    await rx.device.open(endpoint, worker.local_addr(endpoint))
                opens.append(time.monotonic_ns())
                return
            except Exception as exc:  # as the SDK: back off and try again, until the deadline
                if time.monotonic() > deadline:
                    raise
                failures.append(f"{type(exc).__name__}: {exc}")
                await rx.device.close()

    async def one(rx: Receiver) -> int:
        try:
            await reconnect(rx)
            await rx.device.wait_synced(SYNC_TIMEOUT)
            await asyncio.wait_for(rx.complete.wait(), SYNC_TIMEOUT)
        except Exception as exc:  # counted: the run reports how many never synced
            failures.append(f"{type(exc).__name__}: {exc}")
            return 0
        done = time.monotonic_ns()
        hist.record_ns(synced, done - t0_ns)
        worker.progress()
        return done

    finished = await asyncio.gather(*(one(rx) for rx in rxs))
    for rx in rxs:
        worker.devices[rx.device.user] = rx.device
    return {"synced": sum(1 for f in finished if f), "last_ns": max(finished, default=0),
            "opened": len(opens), "last_open_ns": max(opens, default=0),
            "cpu_s": time.process_time() - cpu,
            "attempts": sum(rx.attempts for rx in rxs),
            "errors": sorted(set(failures))[:5], "failed_attempts": len(failures),
            "synced_hdr": hist.encode(synced),
            "delivered": sum(rx.delivered for rx in rxs),
            "anomalies": sum(rx.anomalies for rx in rxs),
            "wire_duplicates": sum(rx.device.order.duplicates for rx in rxs),
            "drops": sum(rx.device.drops for rx in rxs)}


# ====================================================================== main side
async def run(ctx, size: int) -> dict:
    async with ctx.switchboard() as target:
        result = await _storm(ctx, target, size)
    return {"size": size, "devices": size, "targets": [result]}


async def _storm(ctx, target, n: int) -> dict:
    pool, args = ctx.pool, ctx.args
    k = args.messages
    messaged = n // 2
    senders_n = _sender_workers(n)
    if pool.size <= senders_n:
        raise RuntimeError(f"storm {n}: needs at least {senders_n + 1} generator workers")
    rx_workers = list(range(pool.size - senders_n))
    tx_workers = list(range(pool.size - senders_n, pool.size))
    prefix = f"{ctx.prefix}s{n}"
    receivers = [f"{prefix}r{i}" for i in range(n)]
    common = ctx.common(target)
    with Progress(n, f"storm {n}: receivers connect (known devices)", "dev") as bar:
        parts = await pool.run_on(rx_workers, "bench.scenarios.storm:connect_receivers", [
            dict(common, users=u) for u in ctx.shard(receivers, len(rx_workers))], bar)
    with Progress(messaged, f"storm {n}: senders connect, one chat each", "chat") as bar:
        parts += await pool.run_on(tx_workers, "bench.scenarios.storm:connect_senders", [
            dict(common, pairs=p) for p in ctx.shard(
                [(f"{prefix}s{i}", receivers[i]) for i in range(messaged)], len(tx_workers))],
            bar)
    opened = sum(p["opened"] for p in parts)
    if opened < n + messaged:
        raise RuntimeError(f"storm: only {opened} of {n + messaged} devices connected: "
                           f"{sorted({e for p in parts for e in p['errors']})}")
    await asyncio.sleep(1.0)  # let the server settle (acks of the chat events written)

    pids = list(target.pids.values())
    before = target.sample()
    peak_reset = bool(pids) and all([procfs.reset_peak(pid) for pid in pids])
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(_sample_rss(target, samples)) if pids else None
    killed_ns = time.monotonic_ns()
    await pool.kill(rx_workers)
    respawned_s = (time.monotonic_ns() - killed_ns) / 1e9
    fill_start = time.monotonic()
    window = max(1, FILL_IN_FLIGHT // max(messaged, 1))
    with Progress(messaged * k, f"storm {n}: {k} message(s) each for {messaged} while away",
                  "msg") as bar:
        filled = await pool.run_on(tx_workers, "bench.scenarios.storm:fill",
                                   [dict(messages=k, window=window)] * len(tx_workers), bar)
    fill_seconds = time.monotonic() - fill_start
    wanted = [(user, k if i < messaged else 0) for i, user in enumerate(receivers)]
    mesh_before = await target.worker_counters(MESH_COUNTERS)
    t0 = time.monotonic_ns()
    storm_cpu = target.cpu() if pids else None
    with Progress(n, f"storm {n}: reconnect + sync", "dev") as bar:
        parts = await pool.run_on(rx_workers, "bench.scenarios.storm:storm", [
            dict(endpoint=target.endpoint, receivers=shard, t0_ns=t0, body_size=args.body,
                 concurrency=args.connect_concurrency)
            for shard in ctx.shard(wanted, len(rx_workers))], bar)
    if storm_cpu is not None:
        storm_cpu = target.cpu() - storm_cpu
    if sampler is not None:
        sampler.cancel()
    after = target.sample()
    mesh_used = {name: value - mesh_before.get(name, 0.0)
                 for name, value in (await target.worker_counters(MESH_COUNTERS)).items()}
    await pool.run("bench.gen:close_all")

    synced = sum(p["synced"] for p in parts)
    delivered = sum(p["delivered"] for p in parts)
    anomalies = sum(p["anomalies"] for p in parts)
    reopened = sum(p["opened"] for p in parts)
    total_s = (max(p["last_ns"] for p in parts) - t0) / 1e9 if synced else None
    open_s = (max(p["last_open_ns"] for p in parts) - t0) / 1e9 if reopened else None
    server = None
    if pids and before:
        b, a = procfs.total(before), procfs.total(after)
        sampled_peak = max((rss for _, rss in samples), default=a.rss)
        server = {"processes": sorted(after), "rss_before": b.rss, "rss_after": a.rss,
                  "peak_rss": a.peak_rss if peak_reset else sampled_peak,
                  "peak_source": "VmHWM" if peak_reset else "sampled",
                  "sampled_peak_rss": sampled_peak,
                  "rss_samples": [(round(t, 3), rss) for t, rss in samples[::max(1, len(samples) // 400)]]}
    return {
        "target": target.name, "note": target.note, "devices": n, "messaged": messaged,
        "messages_each": k, "killed_and_respawned_seconds": respawned_s,
        "fill": {"seconds": fill_seconds, "acked": sum(f["acked"] for f in filled),
                 "send_errors": sum(f["send_errors"] for f in filled)},
        "synced": synced, "seconds_to_all_synced": total_s,
        "seconds_since_drop": (max(p["last_ns"] for p in parts) - killed_ns) / 1e9 if synced else None,
        "reconnected": reopened, "seconds_to_all_reconnected": open_s,
        "handshakes_per_second": reopened / open_s if open_s else None,
        # CPU of the whole reconnect + sync phase (handshakes, sync, deliveries, acks) per
        # returning device: the server's processes, and the generator's receiving ones
        "server_cpu_us_per_device": storm_cpu * 1e6 / max(reopened, 1) if storm_cpu else None,
        "generator_cpu_us_per_device": sum(p["cpu_s"] for p in parts) * 1e6 / max(reopened, 1),
        "mesh": _mesh_per_device(mesh_used, reopened, getattr(target, "workers", 1) - 1),
        "attempts": sum(p["attempts"] for p in parts),
        "failed_attempts": sum(p["failed_attempts"] for p in parts),
        "messages_per_second": delivered / total_s if total_s else None,
        "time_to_synced": hist.summary(hist.merge(p["synced_hdr"] for p in parts)),
        "errors": sorted({e for p in parts for e in p["errors"]}),
        "server": server,
        "counts": {"expected": messaged * k, "delivered": delivered, "anomalies": anomalies,
                   "wire_duplicates": sum(p["wire_duplicates"] for p in parts),
                   "drops": sum(p["drops"] for p in parts)},
        "exactly_once": synced == n and delivered == messaged * k and anomalies == 0,
    }


def _mesh_per_device(used: dict[str, float], devices: int, peers: int) -> dict | None:
    """Mesh writes and reads (each a wake-up of a worker) per returning device, over the whole
    reconnect + sync phase, and the arrivals one Located frame carried to a peer."""
    if not used or not devices:
        return None
    frames = used["switchboard_cluster_located_frames_total"]
    arrivals = used["switchboard_cluster_located_arrivals_total"]  # once for all `peers`
    return {"writes_per_device": used["switchboard_cluster_mesh_writes_total"] / devices,
            "reads_per_device": used["switchboard_cluster_mesh_reads_total"] / devices,
            "arrivals_per_frame": arrivals * peers / frames if frames else None}


async def _sample_rss(target, samples: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while True:
        samples.append((time.monotonic() - start, target.rss()))
        await asyncio.sleep(RSS_SAMPLE_EVERY)


# ====================================================================== output
def rows(doc: dict) -> tuple[list[str], list[list]]:
    headers = ["devices", "messaged", "synced", "all synced s", "handshakes/s", "p50 s", "p99 s",
               "server RSS before MiB", "peak MiB", "exactly once"]
    out = []
    for run_ in doc["runs"]:
        for res in run_["targets"]:
            t, server = res["time_to_synced"], res["server"] or {}
            out.append([res["devices"], f'{res["messaged"]} x {res["messages_each"]}', res["synced"],
                        report.ms(res["seconds_to_all_synced"]),
                        report.rate(res["handshakes_per_second"]),
                        report.ms(t["p50_ms"] / 1000 if "p50_ms" in t else None),
                        report.ms(t["p99_ms"] / 1000 if "p99_ms" in t else None),
                        _mib(server.get("rss_before")), _mib(server.get("peak_rss")),
                        res["exactly_once"]])
    return headers, out


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def summary(doc: dict) -> list[str]:
    lines = []
    for run_ in doc["runs"]:
        for r in run_["targets"]:
            server, gen = r.get("server_cpu_us_per_device"), r["generator_cpu_us_per_device"]
            lines.append(f"storm {r['devices']}: CPU per returning device (handshake + sync), "
                         f"server {'-' if server is None else f'{server / 1000:.2f} ms'}, "
                         f"generator {gen / 1000:.2f} ms")
            if r.get("mesh"):
                m = r["mesh"]
                per_frame = m["arrivals_per_frame"]
                lines.append(f"storm {r['devices']}: mesh per returning device: "
                             f"{m['writes_per_device']:.1f} writes, {m['reads_per_device']:.1f} "
                             f"reads; arrivals per Located frame "
                             f"{'-' if per_frame is None else f'{per_frame:.1f}'}")
            if r["errors"]:
                lines.append(f"storm {r['devices']}: errors: {r['errors']}")
    return lines


def plots(doc: dict, run_dir) -> list:
    files = [report.cdf_plot(run_dir / "storm-time-to-synced-cdf.png",
                             "storm: time from the storm's start until a device is fully synced",
                             {f"{r['devices']:,} devices, {r['messaged']:,} x {r['messages_each']} msgs":
                              r["time_to_synced"]["hdr"]
                              for run_ in doc["runs"] for r in run_["targets"]},
                             xlabel="time to synced (ms)")]
    rss = {f"{r['devices']:,} devices": ([t for t, _ in r["server"]["rss_samples"]],
                                         [v / 2**20 for _, v in r["server"]["rss_samples"]])
           for run_ in doc["runs"] for r in run_["targets"] if r["server"]}
    if rss:
        files.append(report.lines_plot(run_dir / "storm-server-rss.png",
                                       "storm: server RSS during reconnect + sync",
                                       "seconds since the storm started", "RSS (MiB)", rss,
                                       markers=False))
    return files
