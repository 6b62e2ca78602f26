"""chat: P pairs of devices in 1:1 chats, both directions sending; end-to-end messages/s and
latency at a sweep of offered loads up to saturation, for Switchboard and the two peers.

A message is complete when the sender has its SendAck (stored durably) and the partner has it
(delivered, deduplicated, in order, and acked back in the same loop turn). The relays have no
SendAck: there a message is complete when the partner has it.

How the sweep finds saturation: first a closed-loop probe, where each direction keeps `window`
messages in flight and sends the next one as soon as one completes; its rate is what the target
sustains with that much in flight. Then open-loop steps at fractions of that rate (--loads), or
at fixed rates (--rates: two builds compared at the same load), messages paced on a fixed
schedule whatever the target does. Latency counts from the scheduled
send time, not the actual one, so a generator that falls behind (coordinated omission) shows up
as latency instead of hiding it.

Counts that must add up, per target: every message sent was delivered to the partner exactly
once and in order (no anomaly: no duplicate, gap or reordering after the device's dedup), and
for Switchboard also acknowledged exactly once. A send refused with RATE_LIMITED or UNAVAILABLE
and sent again may land after the sends pipelined behind it, as docs/protocol.md 8.2 says; such
a message is counted as `late_after_retry`, not as an anomaly (bench/ordercheck.py).
"""
from __future__ import annotations

import asyncio
import math
import time

from switchboard.proto.v1 import client_pb2 as pb

from .. import hist, hoptrace, report
from ..gen import Worker
from ..profile import Profiler
from ..progress import Progress
from ..ordercheck import InOrder

NAME = "chat"
SIZE_HELP = "pairs of devices"
DEFAULT_SIZES = (100,)
PEERS_DEFAULT = True
#: Messages in flight over the whole run during the saturation probe (split over directions).
PROBE_IN_FLIGHT = 1024
#: The open-loop pacer wakes this often and sends what is due (libuv timers have 1 ms
#: resolution; a shorter sleep only spins).
PACE = 0.001


# ====================================================================== worker side
class Meter:
    """One phase's measurements in one worker (flows point at the current one)."""
    __slots__ = ("deliver", "ack", "sent", "completed", "last_ns")

    def __init__(self) -> None:
        self.deliver = hist.new()
        self.ack = hist.new()
        self.sent = 0
        self.completed = 0
        self.last_ns = 0

    async def drained(self, timeout: float) -> int:
        """Wait until everything sent in this phase completed; returns how many did not."""
        deadline = time.monotonic() + timeout
        while self.completed < self.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return self.sent - self.completed


class Flow(InOrder):
    """One direction of one pair: the unit of sending, counting and exactly-once checking."""
    __slots__ = ("sender", "meter", "needs_ack", "window", "sent", "acked", "done")

    def __init__(self, sender, needs_ack: bool) -> None:
        super().__init__()
        self.sender = sender
        self.meter = Meter()
        self.needs_ack = needs_ack
        self.window = 0          # > 0: closed loop, keep this many in flight
        self.sent = 0
        self.acked = 0
        self.done = 0

    def send(self, t_ns: int) -> None:
        self.sender.send(self.sent, t_ns)
        self.sent += 1
        self.meter.sent += 1

    def refill(self) -> None:
        now = time.monotonic_ns()
        while self.sent - self.done < self.window:
            self.send(now)

    def on_ack(self, k: int, t_ns: int) -> None:
        now = time.monotonic_ns()
        self.acked += 1
        hist.record_ns(self.meter.ack, now - t_ns)
        self._progress(now)

    def on_deliver(self, k: int, t_ns: int) -> None:
        now = time.monotonic_ns()
        self.see(k)
        hist.record_ns(self.meter.deliver, now - t_ns)
        self._progress(now)

    def _progress(self, now: int) -> None:
        done = min(self.acked, self.delivered) if self.needs_ack else self.delivered
        if done > self.done:
            meter = self.meter
            meter.completed += done - self.done
            meter.last_ns = now
            self.done = done
            if self.window:
                self.refill()


async def connect(worker: Worker, endpoint, pairs: list[int], prefix: str, body_size: int,
                  concurrency: int) -> dict:
    devices = []
    for i in pairs:
        a, b = f"{prefix}c{i}a", f"{prefix}c{i}b"
        devices += [endpoint.device(a, b, body_size), endpoint.device(b, a, body_size)]
    opened, errors, _ = await worker.connect(devices, endpoint, concurrency)
    if opened < len(devices):
        return {"opened": opened, "errors": errors}
    switchboard = endpoint.kind == "switchboard"
    couples = list(zip(devices[::2], devices[1::2]))
    if switchboard:
        await asyncio.gather(*(_direct_chat(a, b) for a, b in couples))
    flows = []
    for a, b in couples:
        ab, ba = Flow(a, switchboard), Flow(b, switchboard)
        a.on_ack, b.on_deliver = ab.on_ack, ab.on_deliver
        b.on_ack, a.on_deliver = ba.on_ack, ba.on_deliver
        flows += [ab, ba]
        worker.devices[a.user] = a
        worker.devices[b.user] = b
    worker.scratch["flows"] = flows
    return {"opened": opened, "errors": errors, "flows": len(flows)}


async def _direct_chat(a, b) -> None:
    await asyncio.gather(a.wait_synced(30), b.wait_synced(30))
    chat = await a.request("chat", create_chat=pb.CreateChat(kind=pb.DIRECT,
                                                             member_user_ids=[b.user]))
    a.chat_id = b.chat_id = chat.chat_id


def _new_meter(worker: Worker) -> Meter:
    meter = Meter()
    for flow in worker.scratch["flows"]:
        flow.meter = meter
    return meter


def _stats(meter: Meter, start_ns: int, cpu0: float, unfinished: int) -> dict:
    return {"sent": meter.sent, "completed": meter.completed, "unfinished": unfinished,
            "start_ns": start_ns, "last_ns": meter.last_ns,
            "deliver_hdr": hist.encode(meter.deliver), "ack_hdr": hist.encode(meter.ack),
            "cpu_s": time.process_time() - cpu0}


async def probe(worker: Worker, window: int, duration: float, drain: float) -> dict:
    flows = worker.scratch["flows"]
    meter = _new_meter(worker)
    cpu0 = time.process_time()
    start = time.monotonic_ns()
    for flow in flows:
        flow.window = window
        flow.refill()
    await asyncio.sleep(duration)
    in_window = meter.completed
    elapsed = time.monotonic_ns() - start
    for flow in flows:
        flow.window = 0
    unfinished = await meter.drained(drain)
    return dict(_stats(meter, start, cpu0, unfinished), in_window=in_window, window_ns=elapsed)


async def step(worker: Worker, rate: float, duration: float, drain: float) -> dict:
    """Open loop: message i goes out at start + i / rate, round-robin over the flows."""
    flows = worker.scratch["flows"]
    meter = _new_meter(worker)
    cpu0 = time.process_time()
    total = int(rate * duration)
    interval = 1e9 / rate if rate > 0 else 0
    start = time.monotonic_ns()
    sent = 0
    nflows = len(flows)
    while sent < total:
        due = min(total, int((time.monotonic_ns() - start) / interval) + 1)
        while sent < due:
            flows[sent % nflows].send(start + int(sent * interval))
            sent += 1
        await asyncio.sleep(PACE)
    unfinished = await meter.drained(drain)
    return _stats(meter, start, cpu0, unfinished)


async def totals(worker: Worker) -> dict:
    flows = worker.scratch["flows"]
    devices = list(worker.devices.values())
    return {
        "sent": sum(f.sent for f in flows),
        "delivered": sum(f.delivered for f in flows),
        "acked": sum(f.acked for f in flows),
        "anomalies": sum(f.unexplained(_retried(f)) for f in flows),
        "late_after_retry": sum(f.anomalies - f.unexplained(_retried(f)) for f in flows),
        "wire_duplicates": sum(d.order.duplicates for d in devices if hasattr(d, "order")),
        "send_errors": sum(d.errors for d in devices),
        "retries": sum(getattr(d, "retries", 0) for d in devices),
        "drops": sum(d.drops for d in devices),
    }


def _retried(flow: Flow) -> set[int]:
    """The ks the flow's sender sent again after a refusal (a relay's devices refuse none)."""
    return getattr(flow.sender, "retried", set())


# ====================================================================== main side
async def run(ctx, size: int) -> dict:
    args = ctx.args
    profiler = Profiler(ctx.run_dir / f"profile-chat-{size}") if args.profile else None
    if args.trace_hops:  # the Switchboard servers started from here on (the peers come after)
        hoptrace.enable(ctx.run_dir / f"hops-{size}")
    targets = ctx.switchboards(cprofile=profiler.cprofile_path if profiler else None)
    profiled_target = targets[0]
    if args.peers:
        targets += ctx.peers()
    results = []
    for target in targets:
        profiled = profiler if target is profiled_target else None
        async with target:
            result = await _sweep(ctx, target, size, profiled)
        if profiled is not None:  # after stop: cProfile writes its file when the server exits
            phases = [result["saturation"], *result["steps"]]
            result["profile"] = profiled.summary(sum(p["server_cpu_s"] or 0 for p in phases),
                                                 result["counts"]["sent"])
        results.append(result)
        if args.trace_hops and target is profiled_target:  # written as the server exited
            hoptrace.disable()
            result["hops"] = hoptrace.analyse(ctx.run_dir / f"hops-{size}")
    return {"size": size, "pairs": size, "targets": results, "ratios": _ratios(results)}


async def _sweep(ctx, target, pairs: int, profiler: Profiler | None) -> dict:
    args, pool = ctx.args, ctx.pool
    shards = ctx.shard(range(pairs))
    with Progress(2 * pairs, f"{target.name}: connecting", "dev") as bar:
        connected = await pool.run("bench.scenarios.chat:connect", [
            dict(ctx.common(target), pairs=shard, prefix=f"{ctx.prefix}{target.name[0]}")
            for shard in shards], bar)
    opened = sum(c["opened"] for c in connected)
    if opened < 2 * pairs:
        errors = sorted({e for c in connected for e in c["errors"]})
        raise RuntimeError(f"{target.name}: only {opened} of {2 * pairs} devices connected: {errors}")
    flows_per_worker = [c["flows"] for c in connected]
    window = args.window or max(1, math.ceil(PROBE_IN_FLIGHT / (2 * pairs)))
    drain = max(10.0, 3 * args.duration)
    if profiler is not None:
        await profiler.start(target.main_pid)
    requests_before = await _store_requests(target)
    with Progress(1 + len(args.rates or args.loads), f"{target.name}: sweep", "step") as bar:
        saturation = await _measure(ctx, target, "bench.scenarios.chat:probe",
                                    dict(window=window, drain=drain,
                                         duration=args.probe_duration or args.duration))
        saturation["window"] = window
        bar.update()
        steps = []
        rates = args.rates or [fraction * saturation["achieved"] for fraction in args.loads]
        for rate in rates:
            fraction = rate / saturation["achieved"]
            per_worker = [dict(rate=rate * n / sum(flows_per_worker), duration=args.duration,
                               drain=drain) for n in flows_per_worker]
            result = await _measure(ctx, target, "bench.scenarios.chat:step", per_worker)
            result["fraction"] = fraction
            result["offered"] = rate
            steps.append(result)
            bar.update()
    if profiler is not None:
        await profiler.stop()
    counts = _sum(await pool.run("bench.scenarios.chat:totals"))
    requests = {kind: n - requests_before.get(kind, 0)
                for kind, n in (await _store_requests(target)).items()}
    server = {role: s.as_dict() for role, s in target.sample().items()}
    await pool.run("bench.gen:close_all")
    needs_ack = target.endpoint.kind == "switchboard"
    exactly_once = (counts["delivered"] == counts["sent"] and counts["anomalies"] == 0 and
                    (counts["acked"] == counts["sent"] if needs_ack else True))
    per_message = ({kind: n / counts["sent"] for kind, n in requests.items()}
                   if requests and counts["sent"] else None)
    return {"target": target.name, "note": target.note, "devices": opened,
            "saturation": saturation, "steps": steps, "counts": counts,
            "exactly_once": exactly_once, "processes": server,
            "store_requests_per_message": per_message}


async def _store_requests(target) -> dict[str, float]:
    """Database requests by kind so far (a store that counts them), else {}."""
    read = getattr(target, "store_requests", None)
    return await read() if read is not None else {}


async def _measure(ctx, target, fn: str, kwargs) -> dict:
    """Run one phase on every worker and merge: throughput, latency, CPU of both sides."""
    commits = getattr(target, "writer_commits", None)
    commits0 = await commits() if commits is not None else None
    cpu0 = target.cpu() if target.pids else None
    parts = await ctx.pool.run(fn, kwargs)
    server_cpu = target.cpu() - cpu0 if cpu0 is not None else None
    commits1 = await commits() if commits0 is not None else None
    sent = sum(p["sent"] for p in parts)
    completed = sum(p["completed"] for p in parts)
    start = min(p["start_ns"] for p in parts)
    last = max(p["last_ns"] for p in parts)
    seconds = max((last - start) / 1e9, 1e-9)   # from the first send to the last completion
    if "in_window" in parts[0]:   # closed loop: the rate inside the fixed window
        achieved = sum(p["in_window"] for p in parts) / (max(p["window_ns"] for p in parts) / 1e9)
    else:                         # open loop: until the last message completed
        achieved = completed / seconds
    generator_cpu = sum(p["cpu_s"] for p in parts)
    return {
        "sent": sent, "completed": completed,
        "unfinished": sum(p["unfinished"] for p in parts),
        "achieved": achieved,
        "deliver": hist.summary(hist.merge(p["deliver_hdr"] for p in parts)),
        "ack": hist.summary(hist.merge(p["ack_hdr"] for p in parts)),
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_msg": server_cpu / completed * 1e6 if server_cpu and completed else None,
        # the writer's commits per message (Switchboard): acks-only commits included
        "commits_per_msg": ((commits1 - commits0) / completed
                            if commits1 is not None and completed else None),
        "seconds": seconds,
        # cores busy during the phase: on a small machine the generator competes with the target
        "server_cores": server_cpu / seconds if server_cpu is not None else None,
        "generator_cores": generator_cpu / seconds,
        "generator_cpu_s": [round(p["cpu_s"], 3) for p in parts],
    }


def _sum(parts: list[dict]) -> dict:
    return {key: sum(p[key] for p in parts) for key in parts[0]}


def _half_load(result: dict) -> dict | None:
    """The step closest to half of saturation: the load where the latency ratio is read."""
    steps = result["steps"]
    return min(steps, key=lambda s: abs(s["fraction"] - 0.5)) if steps else None


def _ratios(results: list[dict]) -> dict:
    """Switchboard against each peer: saturation throughput and p99 at half load."""
    ours = next((r for r in results if r["target"].startswith("switchboard")), None)
    out = {}
    if ours is None:
        return out
    for peer in results:
        if peer is ours:
            continue
        mine, theirs = _half_load(ours), _half_load(peer)
        out[peer["target"]] = {
            "throughput": _ratio(ours["saturation"]["achieved"], peer["saturation"]["achieved"]),
            "p99_at_half_load": _ratio(mine and mine["deliver"].get("p99_ms"),
                                       theirs and theirs["deliver"].get("p99_ms")),
        }
    return out


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None when either side measured nothing (a peer that completed no
    message on a busy machine): a run reports that, it does not crash on it."""
    return ours / theirs if ours is not None and theirs else None


# ====================================================================== output
def rows(doc: dict) -> tuple[list[str], list[list]]:
    headers = ["pairs", "target", "load", "offered/s", "achieved/s", "p50 ms", "p99 ms",
               "p99.9 ms", "ack p99 ms", "srv us/msg", "commits/msg", "srv cores", "gen cores",
               "exactly once"]
    out = []
    for run_ in doc["runs"]:
        for res in run_["targets"]:
            sat = res["saturation"]
            phases = [("saturation", None, sat)] + [
                (f"{s['fraction']:.0%}", s["offered"], s) for s in res["steps"]]
            for label, offered, s in phases:
                out.append([run_["pairs"], res["target"], label, report.rate(offered),
                            report.rate(s["achieved"]), report.ms(s["deliver"].get("p50_ms")),
                            report.ms(s["deliver"].get("p99_ms")),
                            report.ms(s["deliver"].get("p99.9_ms")),
                            report.ms(s["ack"].get("p99_ms")),
                            report.ms(s["server_cpu_us_per_msg"]),
                            report.ms(s.get("commits_per_msg")), report.ms(s["server_cores"]),
                            report.ms(s["generator_cores"]), res["exactly_once"]])
    return headers, out


def summary(doc: dict) -> list[str]:
    lines = []
    for run_ in doc["runs"]:
        for peer, r in run_["ratios"].items():
            p99 = report.ratio(r["p99_at_half_load"])
            lines.append(f"{run_['pairs']} pairs: Switchboard / {peer}: throughput "
                         f"{report.ratio(r['throughput'])}, p99 at half load {p99}")
    if any(peer.startswith(("picows", "ws-")) for run_ in doc["runs"] for peer in run_["ratios"]):
        lines.append("Switchboard does strictly more work per message than either peer: it "
                     "authenticates, stores every message durably before the SendAck, "
                     "orders it per chat and tracks the receiver's ack; the peers only forward.")
    for run_ in doc["runs"]:
        for res in run_["targets"]:
            per = res.get("store_requests_per_message")
            if per:
                lines.append(f"{run_['pairs']} pairs: {res['target']}: database requests per "
                             "message: " + ", ".join(f"{kind} {n:.2f}" for kind, n in per.items())
                             + f" (all {sum(per.values()):.2f})")
    for run_ in doc["runs"]:
        for res in run_["targets"]:
            if "profile" in res:
                lines.append(f"profile: {res['profile']['path']}")
            if "hops" in res:
                lines += hoptrace.lines(res["hops"])
    return lines


def plots(doc: dict, run_dir) -> list:
    files = []
    for run_ in doc["runs"]:
        pairs = run_["pairs"]
        latency = {}
        for res in run_["targets"]:
            xs = [s["offered"] for s in res["steps"]]
            for p in ("p50", "p99", "p99.9"):
                latency[f"{res['target']} {p}"] = (xs, [s["deliver"].get(f"{p}_ms", 0)
                                                        for s in res["steps"]])
        files.append(report.lines_plot(run_dir / f"chat-{pairs}-latency-vs-load.png",
                                       f"chat, {pairs} pairs: delivery latency vs offered load",
                                       "offered load (messages/s)", "latency (ms)", latency,
                                       logx=True, logy=True))
        files.append(report.lines_plot(
            run_dir / f"chat-{pairs}-throughput.png", f"chat, {pairs} pairs: achieved vs offered",
            "offered load (messages/s)", "achieved (messages/s)",
            {r["target"]: ([s["offered"] for s in r["steps"]], [s["achieved"] for s in r["steps"]])
             for r in run_["targets"]}, diagonal=True))
        half = {}
        for res in run_["targets"]:
            step_ = _half_load(res)
            if step_:
                half[f"{res['target']} at {step_['fraction']:.0%} ({step_['offered']:,.0f}/s)"] = \
                    step_["deliver"]["hdr"]
        files.append(report.cdf_plot(run_dir / f"chat-{pairs}-cdf.png",
                                     f"chat, {pairs} pairs: delivery latency CDF at half load",
                                     half))
    return files
