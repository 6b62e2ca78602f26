"""fanout: one sender in a group of G members, all online; how long until the last member has
a message.

The sender sends one message, every worker waits until each of its members has it, then the
next message goes: each figure is one fan-out on an otherwise idle server, not a queue. Every
member records its own delivery latency (send -> delivered, after dedup); the latency of a
message is that of its last member. The first message is a warm-up (it fills the server's member
map cache) and is reported apart. The server started here gets max_group_members = G + 1.

The yardstick (with peers, the default) is the bare picows relay in its group mode: the same G
receiving devices in the same generator processes, each frame written to every member's socket
in one callback. On a small machine the receivers' own work (reading G frames in Python) is
part of both figures, so the ratio, not the absolute time, says what the server adds.

Counts that must add up: every member got every message exactly once, in order.
"""
from __future__ import annotations

import asyncio
import time

from switchboard.proto.v1 import client_pb2 as pb

from .. import hist, report
from ..device import SwitchboardDevice
from ..gen import Worker
from ..ordercheck import InOrder
from ..profile import Profiler
from ..progress import Progress

NAME = "fanout"
SIZE_HELP = "group members"
DEFAULT_SIZES = (100, 1_000, 10_000)
PEERS_DEFAULT = True   # the bare picows relay's group mode (the Redis relay is 1:1 only)
#: Members per CreateChat / AddMembers frame (keeps each frame far below max_frame_bytes).
MEMBER_BATCH = 500
ARRIVAL_TIMEOUT = 60.0


# ====================================================================== worker side
class Arrivals:
    """What this worker's members received: per message number, how many have it and the
    slowest latency; all members' latencies; exactly-once checks per member."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.count: dict[int, int] = {}
        self.slowest: dict[int, int] = {}
        self.latency = hist.new()
        self.delivered = 0
        self.anomalies = 0

    def receiver(self):
        check = InOrder()

        def on_deliver(k: int, t_ns: int) -> None:
            latency = time.monotonic_ns() - t_ns
            if not check.see(k):
                self.anomalies += 1
            self.delivered += 1
            self.count[k] = self.count.get(k, 0) + 1
            if latency > self.slowest.get(k, 0):
                self.slowest[k] = latency
            hist.record_ns(self.latency, latency)
        return on_deliver


async def members(worker: Worker, endpoint, users: list[str], group: str, body_size: int,
                  concurrency: int) -> dict:
    arrivals = worker.scratch["arrivals"] = Arrivals(len(users))
    devices = [endpoint.device(user, group, body_size) for user in users]
    opened, errors, _ = await worker.connect(devices, endpoint, concurrency)
    if endpoint.kind == "switchboard":
        await asyncio.gather(*(d.wait_synced(60) for d in devices if d.connected))
    for device in devices:
        device.on_deliver = arrivals.receiver()
        worker.devices[device.user] = device
    return {"opened": opened, "errors": errors}


async def sender(worker: Worker, endpoint, user: str, members: list[str], group: str,
                 body_size: int, concurrency: int) -> dict:
    device = endpoint.device(user, group, body_size)
    await device.open(endpoint, worker.local_addr(endpoint))
    if endpoint.kind != "switchboard":  # the relay: no chat to create, no SendAck
        worker.devices[user] = device
        worker.scratch["sender"] = (device, None)
        return {"chat_id": group, "members": len(members)}
    await device.wait_synced(60)
    first, rest = members[:MEMBER_BATCH], members[MEMBER_BATCH:]
    chat = await device.request("chat", create_chat=pb.CreateChat(
        kind=pb.GROUP, title="fanout", member_user_ids=first))
    for i in range(0, len(rest), MEMBER_BATCH):
        chat = await device.request("chat", add_members=pb.AddMembers(
            chat_id=chat.chat_id, user_ids=rest[i:i + MEMBER_BATCH]))
    device.chat_id = chat.chat_id
    acks: dict[int, asyncio.Future] = {}

    def on_ack(k: int, t_ns: int) -> None:
        future = acks.pop(k, None)
        if future is not None and not future.done():
            future.set_result(time.monotonic_ns() - t_ns)

    device.on_ack = on_ack
    worker.devices[user] = device
    worker.scratch["sender"] = (device, acks)
    return {"chat_id": chat.chat_id, "members": len(chat.members)}


async def send(worker: Worker, k: int) -> dict:
    device, acks = worker.scratch["sender"]
    if acks is None:
        device.send(k, time.monotonic_ns())
        return {"ack_ns": None}
    future = acks[k] = asyncio.get_running_loop().create_future()
    device.send(k, time.monotonic_ns())
    return {"ack_ns": await asyncio.wait_for(future, ARRIVAL_TIMEOUT)}


async def arrived(worker: Worker, k: int) -> dict:
    arrivals = worker.scratch.get("arrivals")
    if arrivals is None:
        return {"count": 0, "slowest_ns": 0}
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while arrivals.count.get(k, 0) < arrivals.members and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    return {"count": arrivals.count.get(k, 0), "slowest_ns": arrivals.slowest.get(k, 0)}


async def totals(worker: Worker) -> dict:
    arrivals = worker.scratch.get("arrivals")
    devices = list(worker.devices.values())
    return {"delivered": arrivals.delivered if arrivals else 0,
            "anomalies": arrivals.anomalies if arrivals else 0,
            "wire_duplicates": sum(d.order.duplicates for d in devices
                                   if isinstance(d, SwitchboardDevice)),
            "drops": sum(d.drops for d in devices),
            "latency_hdr": hist.encode(arrivals.latency) if arrivals else ""}


# ====================================================================== main side
async def run(ctx, size: int) -> dict:
    targets = [ctx.switchboard(max_group_members=size + 1)]
    profiler = Profiler(ctx.run_dir / f"profile-fanout-{size}") if ctx.args.profile else None
    if ctx.args.peers:
        targets += [peer for peer in ctx.peers() if peer.name == "picows-relay"]
    results = []
    for target in targets:
        async with target:
            results.append(await _fanout(ctx, target, size,
                                         profiler if target is targets[0] else None))
    return {"size": size, "members": size, "targets": results, "ratios": _ratios(results)}


def _ratios(results: list[dict]) -> dict:
    """Switchboard's last-member p50 and p99 over the relay's, in this run."""
    ours, relay = results[0], next((r for r in results[1:] if r["target"] == "picows-relay"), None)
    if relay is None:
        return {}
    return {f"last_member_{p}": (ours["last_member"][f"{p}_ms"] / relay["last_member"][f"{p}_ms"]
                                 if relay["last_member"].get(f"{p}_ms") else None)
            for p in ("p50", "p99")}


async def _fanout(ctx, target, g: int, profiler: Profiler | None = None) -> dict:
    """With a profiler: py-spy samples the server over the sends alone (not the connecting and
    the group's set-up), and the summary puts its shares in microseconds per message."""
    pool, args = ctx.pool, ctx.args
    prefix = f"{ctx.prefix}f{g}{target.name[0]}"
    group = f"group:{prefix}"
    users = [f"{prefix}m{i}" for i in range(g)]
    with Progress(g, f"fanout {g}: connecting", "dev") as bar:
        parts = await pool.run("bench.scenarios.fanout:members", [
            dict(ctx.common(target), users=shard, group=group) for shard in ctx.shard(users)],
            bar)
    opened = sum(p["opened"] for p in parts)
    if opened < g:
        raise RuntimeError(f"fanout: only {opened} of {g} members connected: "
                           f"{sorted({e for p in parts for e in p['errors']})}")
    [group] = await pool.run_on([0], "bench.scenarios.fanout:sender",
                                [dict(ctx.common(target), user=f"{prefix}s", members=users,
                                      group=group)])
    last = hist.new()
    acks = hist.new()
    warmup = None
    incomplete = 0
    if profiler is not None:
        await profiler.start(target.main_pid)
    cpu_before = target.cpu()
    with Progress(args.messages + 1, f"fanout {g}: sending", "msg") as bar:
        for k in range(args.messages + 1):
            [sent] = await pool.run_on([0], "bench.scenarios.fanout:send", [dict(k=k)])
            got = await pool.run("bench.scenarios.fanout:arrived", dict(k=k))
            slowest = max(a["slowest_ns"] for a in got)
            if sum(a["count"] for a in got) < g:
                incomplete += 1
            ack_ns = sent["ack_ns"]
            if k == 0:
                warmup = {"last_member_ms": slowest / 1e6,
                          "ack_ms": None if ack_ns is None else ack_ns / 1e6}
            else:
                hist.record_ns(last, slowest)
                if ack_ns is not None:
                    hist.record_ns(acks, ack_ns)
            bar.update()
    server_cpu_s = target.cpu() - cpu_before
    profile = None
    if profiler is not None:
        await profiler.stop()
        profile = profiler.summary(server_cpu_s, args.messages + 1)
    counts = await pool.run("bench.scenarios.fanout:totals")
    server = {role: s.as_dict() for role, s in target.sample().items()}
    await pool.run("bench.gen:close_all")
    delivered = sum(c["delivered"] for c in counts)
    anomalies = sum(c["anomalies"] for c in counts)
    expected = g * (args.messages + 1)
    return {
        "target": target.name, "note": target.note, "members": g,
        "group_members": group["members"], "messages": args.messages,
        "last_member": hist.summary(last), "send_ack": hist.summary(acks),
        "per_member": hist.summary(hist.merge(c["latency_hdr"] for c in counts)),
        "warmup": warmup,
        "counts": {"sent": args.messages + 1, "expected_deliveries": expected,
                   "delivered": delivered, "anomalies": anomalies, "incomplete_messages": incomplete,
                   "wire_duplicates": sum(c["wire_duplicates"] for c in counts),
                   "drops": sum(c["drops"] for c in counts)},
        "exactly_once": delivered == expected and anomalies == 0,
        "server_cpu_ms_per_message": server_cpu_s / (args.messages + 1) * 1e3,
        "processes": server,
        **({"profile": profile} if profile is not None else {}),
    }


# ====================================================================== output
def rows(doc: dict) -> tuple[list[str], list[list]]:
    headers = ["target", "members", "sends", "last member p50 ms", "p99 ms", "max ms", "per member p50 ms",
               "SendAck p50 ms", "warm-up ms", "CPU ms/msg", "exactly once"]
    out = []
    for run_ in doc["runs"]:
        for res in run_["targets"]:
            last = res["last_member"]
            out.append([res["target"], res["members"], res["messages"], report.ms(last.get("p50_ms")),
                        report.ms(last.get("p99_ms")), report.ms(last.get("max_ms")),
                        report.ms(res["per_member"].get("p50_ms")),
                        report.ms(res["send_ack"].get("p50_ms")),
                        report.ms(res["warmup"]["last_member_ms"]),
                        report.ms(res.get("server_cpu_ms_per_message")), res["exactly_once"]])
    return headers, out


def summary(doc: dict) -> list[str]:
    lines = []
    for run_ in doc["runs"]:
        ratios = run_.get("ratios") or {}
        if ratios.get("last_member_p50") and ratios.get("last_member_p99"):
            lines.append(f"{run_['members']:,} members: Switchboard / picows-relay, last member "
                         f"p50 {ratios['last_member_p50']:.1f}x, p99 "
                         f"{ratios['last_member_p99']:.1f}x")
    return lines


def plots(doc: dict, run_dir) -> list:
    last = {f"{r['target']}, {r['members']:,} members": r["last_member"]["hdr"]
            for run_ in doc["runs"] for r in run_["targets"]}
    each = {f"{r['target']}, {r['members']:,} members": r["per_member"]["hdr"]
            for run_ in doc["runs"] for r in run_["targets"]}
    return [report.cdf_plot(run_dir / "fanout-last-member-cdf.png",
                            "fanout: time until the last member has the message", last),
            report.cdf_plot(run_dir / "fanout-per-member-cdf.png",
                            "fanout: delivery latency of every member", each)]
