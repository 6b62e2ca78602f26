"""storm: N devices go offline, K messages arrive for each while they are away, then all of
them reconnect at once and sync; time until every one is fully synced, and the server's peak
memory meanwhile.

Set-up: N pairs (sender, receiver) in 1:1 chats; the receivers connect once (so they are known
devices), then close; each sender sends K messages into its chat (closed loop, about 1,024 in
flight in all) and closes. The storm: every receiver reconnects (--connect-concurrency
handshakes in flight per worker, the rest queued right behind), gets the automatic sync, and is
fully synced when it holds all K messages and has its SyncComplete. Time counts from the start
of the storm. The server's peak RSS is VmHWM reset just before the storm (and, where the kernel
does not allow the reset, the highest of RSS samples taken every 10 ms); with `--server-workers`
every figure is the sum over all the server's processes (the sampled peak is that of the sum).

Counts that must add up: every receiver got its K messages exactly once, in order.
"""
from __future__ import annotations

import asyncio
import time

from switchboard.proto.v1 import client_pb2 as pb

from .. import hist, procfs, report
from ..gen import Worker
from ..progress import Progress
from ..ordercheck import InOrder

NAME = "storm"
SIZE_HELP = "offline devices"
DEFAULT_SIZES = (2_000,)
PEERS_DEFAULT = None   # the peers store nothing, so they have nothing to sync
FILL_IN_FLIGHT = 1024
SYNC_TIMEOUT = 120.0
RSS_SAMPLE_EVERY = 0.01


# ====================================================================== worker side
class Receiver(InOrder):
    """One offline device: what it got back, and when it was complete."""
    __slots__ = ("device", "complete")

    def __init__(self, device) -> None:
        super().__init__()
        self.device = device
        self.complete = asyncio.Event()

    def on_deliver(self, k: int, t_ns: int) -> None:
        self.see(k)


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


async def setup(worker: Worker, endpoint, pairs: list[int], prefix: str, body_size: int,
                concurrency: int) -> dict:
    senders, receivers = [], []
    for i in pairs:
        s, r = f"{prefix}s{i}", f"{prefix}r{i}"
        senders.append(endpoint.device(s, r, body_size))
        receivers.append(endpoint.device(r, s, body_size))
    opened, errors, _ = await worker.connect(senders + receivers, endpoint, concurrency)
    if opened < 2 * len(pairs):
        return {"opened": opened, "errors": errors}
    await asyncio.gather(*(d.wait_synced(60) for d in senders + receivers))
    for s, r in zip(senders, receivers):
        chat = await s.request("chat", create_chat=pb.CreateChat(kind=pb.DIRECT,
                                                                 member_user_ids=[r.user]))
        s.chat_id = r.chat_id = chat.chat_id
    await asyncio.gather(*(r.close() for r in receivers))
    worker.scratch["senders"] = senders
    worker.scratch["receivers"] = [Receiver(r) for r in receivers]
    for device in senders + receivers:
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
    await asyncio.gather(*(s.device.close() for s in senders))
    return {"acked": sum(s.acked for s in senders),
            "send_errors": sum(s.device.errors for s in senders)}


async def storm(worker: Worker, endpoint, t0_ns: int, messages: int, concurrency: int) -> dict:
    receivers: list[Receiver] = worker.scratch["receivers"]
    synced = hist.new()
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    def attach(rx: Receiver) -> None:
        def on_deliver(k: int, t_ns: int) -> None:
            rx.on_deliver(k, t_ns)
            if rx.delivered >= messages:
                rx.complete.set()
        rx.device.on_deliver = on_deliver

    async def one(rx: Receiver) -> int:
        attach(rx)
        try:
            async with gate:
                await rx.device.open(endpoint, worker.local_addr(endpoint))
            await rx.device.wait_synced(SYNC_TIMEOUT)
            await asyncio.wait_for(rx.complete.wait(), SYNC_TIMEOUT)
        except Exception as exc:  # counted: the run reports how many never synced
            failures.append(f"{type(exc).__name__}: {exc}")
            return 0
        done = time.monotonic_ns()
        hist.record_ns(synced, done - t0_ns)
        worker.progress()
        return done

    finished = await asyncio.gather(*(one(rx) for rx in receivers))
    return {"synced": sum(1 for f in finished if f), "last_ns": max(finished, default=0),
            "errors": sorted(set(failures))[:5], "synced_hdr": hist.encode(synced),
            "delivered": sum(rx.delivered for rx in receivers),
            "anomalies": sum(rx.anomalies for rx in receivers),
            "wire_duplicates": sum(rx.device.order.duplicates for rx in receivers),
            "drops": sum(rx.device.drops for rx in receivers)}


# ====================================================================== main side
async def run(ctx, size: int) -> dict:
    async with ctx.switchboard() as target:
        result = await _storm(ctx, target, size)
    return {"size": size, "devices": size, "targets": [result]}


async def _storm(ctx, target, n: int) -> dict:
    pool, args = ctx.pool, ctx.args
    k = args.messages
    shards = ctx.shard(range(n))
    with Progress(2 * n, f"storm {n}: connecting", "dev") as bar:
        parts = await pool.run("bench.scenarios.storm:setup", [
            dict(ctx.common(target), pairs=shard, prefix=f"{ctx.prefix}s{n}") for shard in shards],
            bar)
    opened = sum(p["opened"] for p in parts)
    if opened < 2 * n:
        raise RuntimeError(f"storm: only {opened} of {2 * n} devices connected: "
                           f"{sorted({e for p in parts for e in p['errors']})}")
    window = max(1, FILL_IN_FLIGHT // n)
    fill_start = time.monotonic()
    with Progress(n * k, f"storm {n}: {k} messages each while offline", "msg") as bar:
        filled = await pool.run("bench.scenarios.storm:fill", dict(messages=k, window=window), bar)
    fill_seconds = time.monotonic() - fill_start
    await asyncio.sleep(1.0)  # let the server settle (writer idle, sockets closed)

    pids = list(target.pids.values())
    before = target.sample()
    peak_reset = bool(pids) and all([procfs.reset_peak(pid) for pid in pids])
    samples: list[tuple[float, int]] = []
    sampler = asyncio.create_task(_sample_rss(target, samples)) if pids else None
    t0 = time.monotonic_ns()
    with Progress(n, f"storm {n}: reconnect + sync", "dev") as bar:
        parts = await pool.run("bench.scenarios.storm:storm", [
            dict(endpoint=target.endpoint, t0_ns=t0, messages=k,
                 concurrency=args.connect_concurrency)] * pool.size, bar)
    if sampler is not None:
        sampler.cancel()
    after = target.sample()
    await pool.run("bench.gen:close_all")

    synced = sum(p["synced"] for p in parts)
    delivered = sum(p["delivered"] for p in parts)
    anomalies = sum(p["anomalies"] for p in parts)
    total_s = (max(p["last_ns"] for p in parts) - t0) / 1e9 if synced else None
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
        "target": target.name, "note": target.note, "devices": n, "messages_each": k,
        "fill": {"seconds": fill_seconds, "acked": sum(f["acked"] for f in filled),
                 "send_errors": sum(f["send_errors"] for f in filled)},
        "synced": synced, "seconds_to_all_synced": total_s,
        "messages_per_second": delivered / total_s if total_s else None,
        "time_to_synced": hist.summary(hist.merge(p["synced_hdr"] for p in parts)),
        "errors": sorted({e for p in parts for e in p["errors"]}),
        "server": server,
        "counts": {"expected": n * k, "delivered": delivered, "anomalies": anomalies,
                   "wire_duplicates": sum(p["wire_duplicates"] for p in parts),
                   "drops": sum(p["drops"] for p in parts)},
        "exactly_once": synced == n and delivered == n * k and anomalies == 0,
    }


async def _sample_rss(target, samples: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while True:
        samples.append((time.monotonic() - start, target.rss()))
        await asyncio.sleep(RSS_SAMPLE_EVERY)


# ====================================================================== output
def rows(doc: dict) -> tuple[list[str], list[list]]:
    headers = ["devices", "msgs each", "synced", "all synced s", "msgs/s", "p50 s", "p99 s",
               "server RSS before MiB", "peak MiB", "exactly once"]
    out = []
    for run_ in doc["runs"]:
        for res in run_["targets"]:
            t, server = res["time_to_synced"], res["server"] or {}
            out.append([res["devices"], res["messages_each"], res["synced"],
                        report.ms(res["seconds_to_all_synced"]), report.rate(res["messages_per_second"]),
                        report.ms(t["p50_ms"] / 1000 if "p50_ms" in t else None),
                        report.ms(t["p99_ms"] / 1000 if "p99_ms" in t else None),
                        _mib(server.get("rss_before")), _mib(server.get("peak_rss")),
                        res["exactly_once"]])
    return headers, out


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def summary(doc: dict) -> list[str]:
    return [f"storm {r['devices']}: errors: {r['errors']}"
            for run_ in doc["runs"] for r in run_["targets"] if r["errors"]]


def plots(doc: dict, run_dir) -> list:
    files = [report.cdf_plot(run_dir / "storm-time-to-synced-cdf.png",
                             "storm: time from the storm's start until a device is fully synced",
                             {f"{r['devices']:,} devices x {r['messages_each']} msgs":
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
