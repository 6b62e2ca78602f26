"""cluster: the same load on one gateway and on a cluster of `--nodes` gateways (a Redis
Cluster of 3 masters with a replica each, one SQLite file), measured in one run, with the
messages reported by where their sender, receiver and chat owner are; then, on the cluster, a
Redis master failover and a paused gateway under the same load.

Phases:

* steady, on each target, alternately, `--rounds` times (both targets stay up; the figures
  are the medians): P pairs of devices in direct chats, both directions sending, open loop at
  `--rate` messages/s in all (or `--load` times the single gateway's capacity, measured first
  by a closed-loop probe) for `--duration` s (the chat scenario's flows, its exactly-once
  check and latency from the scheduled send time). On the cluster, pair i gets the i-th of the
  N^3 placements (first device's gateway, partner's gateway, the chat's owner) in turn: user ids
  are chosen so that the direct chat's id hashes to that owner on the ring the gateways build.
  Each direction of a pair is one class of message (`CLASSES`): `local` (sender, receiver and
  owner on one gateway: the single gateway's path, run on a machine the other gateways share,
  so it is the control for CPU sharing), `same` (sender and receiver on one gateway, the owner
  on another), `cross1` (sender and receiver apart, the owner one of them: one mesh hop) and
  `cross2` (three gateways: two hops); `cross` is cross1 and cross2 together. Latency is
  send -> delivered per class. Registry timeouts are read from every gateway's metrics
  (switchboard_cluster_registry_timeouts) before and after.
* soak (`--soak S`): the cluster alone under the same load for S seconds on fresh devices;
  registry timeouts from the metrics and the gateways' log lines that report one.
* failover (`--failover`): the same load on fresh devices; a third of the way in, the Redis
  master holding the node table (leases) is killed with SIGKILL, and the run waits until the
  cluster reports the promoted replica (every slot served, every node ok, the replica
  acknowledging writes: devcluster's wait_ok). Meanwhile a probe connects a new device every
  100 ms whose session key lives on the killed master (a registry write on the failing slots).
  Figures: how long after the promotion the last probe that started before it was answered
  (the registry's calls succeed again), probes refused, and the messages' latency through it.
* pause (`--pause`): SDK clients (the reference client with its liveness rule) on gateway 0,
  each sending every 100 ms to a partner on gateway 1; gateway 0 gets SIGSTOP and the devices
  go on sending for a second; for every send the paused gateway had (unanswered at the pause,
  or made after it), the time from the pause to its SendAck, through another gateway. Then
  SIGCONT.
"""
from __future__ import annotations

import asyncio
import math
import signal
import time

from .. import hist, hoptrace, procfs, report
from ..gen import Worker
from ..progress import Progress
from ..targets import SwitchboardCluster
from . import chat

NAME = "cluster"
SIZE_HELP = "pairs of devices"
DEFAULT_SIZES = (60,)
PEERS_DEFAULT = None
PROBE_EVERY = 0.1     # s between two failover probes
PAUSE_DEVICES = 8     # SDK clients on the gateway that is paused
PAUSE_SEND_EVERY = 0.1
PAUSE_AFTER = 1.0     # s the devices go on sending after the pause (to the paused gateway)
PAUSE_WAIT = 20.0     # s a pending send may take before the phase gives up on it
PROBE_SECONDS = 5.0  # the single gateway's closed-loop capacity probe (--load)
CLASSES = ("local", "same", "cross1", "cross2")
#: What the report shows: every message, each class, and cross1 + cross2 merged.
SHOWN = {"all": CLASSES, "local": ("local",), "same": ("same",),
         "cross": ("cross1", "cross2"), "cross2": ("cross2",)}
TIMEOUT_LINE = "no answer from Redis Cluster within"


# ====================================================================== worker side
def placement(i: int, nodes: int) -> tuple[int, int, int]:
    """Pair i's (first device's gateway, partner's gateway, chat owner): the N^3 placements in
    turn, so every class of message occurs in fixed proportions."""
    return i % nodes, (i // nodes) % nodes, (i // nodes // nodes) % nodes


def flow_class(sender, receiver, owner) -> str:
    """The class of a message by the gateways (indexes or names) of its sender, receiver and
    chat owner."""
    if sender != receiver:
        return "cross1" if owner in (sender, receiver) else "cross2"
    return "local" if owner == sender else "same"


def owned_pair(prefix: str, i: int, owner: int, nodes: int) -> tuple[str, str]:
    """Two user ids whose direct chat the ring of gateways gw0..gw(N-1) (devcluster's names)
    gives to gateway `owner`."""
    from switchboard.core.chats import direct_chat_id
    from switchboard.router.ring import Ring
    ring = Ring([f"gw{n}" for n in range(nodes)], 0)
    b = f"{prefix}c{i}b"
    for salt in range(10_000):
        a = f"{prefix}c{i}a{salt}"
        if ring.owner(direct_chat_id(a, b)) == f"gw{owner}":
            return a, b
    raise RuntimeError(f"no user id found for a chat owned by gw{owner}")


async def connect(worker: Worker, endpoints, pairs: list[int], prefix: str, body_size: int,
                  concurrency: int) -> dict:
    """Pair i placed as placement(i) says."""
    nodes = len(endpoints)
    gate = asyncio.Semaphore(concurrency)
    placed = []
    for i in pairs:
        a_node, b_node, owner = placement(i, nodes)
        a, b = owned_pair(prefix, i, owner, nodes)
        first = endpoints[a_node].device(a, b, body_size)
        second = endpoints[b_node].device(b, a, body_size)
        placed.append((first, endpoints[a_node], second, endpoints[b_node],
                       (flow_class(a_node, b_node, owner), flow_class(b_node, a_node, owner))))

    async def open_(device, endpoint) -> str | None:
        async with gate:
            try:
                await device.open(endpoint, worker.local_addr(endpoint))
            except Exception as exc:  # reported: one refusal must not end a run
                return f"{type(exc).__name__}: {exc}"
        return None

    errors = [e for e in await asyncio.gather(*(open_(d, e) for p in placed
                                                for d, e in (p[:2], p[2:4]))) if e]
    if errors:
        return {"opened": 2 * len(placed) - len(errors), "errors": sorted(set(errors))[:5]}
    await asyncio.gather(*(chat._direct_chat(a, b) for a, _, b, _, _ in placed))
    flows, classes = [], []
    for a, _, b, _, kinds in placed:
        ab, ba = chat.Flow(a, True), chat.Flow(b, True)
        a.on_ack, b.on_deliver = ab.on_ack, ab.on_deliver
        b.on_ack, a.on_deliver = ba.on_ack, ba.on_deliver
        flows += [ab, ba]
        classes += kinds
        worker.devices[a.user] = a
        worker.devices[b.user] = b
    worker.scratch["flows"] = flows
    worker.scratch["classes"] = classes
    return {"opened": 2 * len(placed), "errors": [], "flows": len(flows)}


async def step(worker: Worker, rate: float, duration: float, drain: float) -> dict:
    """chat.step with one meter per class of flow."""
    flows, classes = worker.scratch["flows"], worker.scratch["classes"]
    meters = {name: chat.Meter() for name in CLASSES}
    for flow, name in zip(flows, classes):
        flow.meter = meters[name]
    cpu0 = time.process_time()
    total, interval = int(rate * duration), 1e9 / rate
    start = time.monotonic_ns()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic_ns() - start) / interval) + 1)
        while sent < due:
            flows[sent % len(flows)].send(start + int(sent * interval))
            sent += 1
        await asyncio.sleep(chat.PACE)
    out = {}
    for name, meter in meters.items():
        unfinished = await meter.drained(drain)
        out[name] = chat._stats(meter, start, cpu0, unfinished)
    return out


# ====================================================================== main side
async def run(ctx, size: int) -> dict:
    """Both targets stay up; their steady phases alternate `--rounds` times, so a busy
    machine's moods fall on both alike; the figures are the medians over the rounds."""
    args = ctx.args
    results = {"size": size, "pairs": size, "rounds": []}
    if args.trace_hops:
        hoptrace.enable(ctx.run_dir / "hops")
    async with ctx.switchboard() as single, SwitchboardCluster(ctx.run_dir, args.nodes) as cluster:
        rate = args.rate
        if args.load:
            results["capacity"] = await _capacity(ctx, single, size)
            rate = args.load * results["capacity"]
        results["rate"] = rate
        for round_ in range(args.rounds):
            results["rounds"].append({
                "single": await _steady(ctx, single, [single.endpoint], size, rate,
                                        f"{round_}s"),
                "cluster": await _steady(ctx, cluster, cluster.endpoints, size, rate,
                                         f"{round_}c")})
        if args.soak:
            results["soak"] = await _steady(ctx, cluster, cluster.endpoints, size, rate, "k",
                                            duration=args.soak)
            results["soak"]["timeout_log_lines"] = _timeout_log_lines(cluster)
        if args.failover:
            results["failover"] = await _failover(ctx, cluster, size, rate)
        if args.pause:
            results["pause"] = await _pause(cluster)
    if args.trace_hops:  # the servers wrote their last records as they exited
        results["hops"] = hoptrace.analyse(ctx.run_dir / "hops")
    results["single"] = _median_phase([r["single"] for r in results["rounds"]])
    results["cluster"] = _median_phase([r["cluster"] for r in results["rounds"]])
    results["ratios"] = _ratios(results)
    return results


async def _capacity(ctx, single, pairs: int) -> float:
    """The single gateway's saturation rate on these pairs (the chat scenario's closed-loop
    probe, PROBE_SECONDS long): what `--load` is a fraction of."""
    await _connect(ctx, single, [single.endpoint], pairs, f"{ctx.prefix}p")
    window = max(1, math.ceil(chat.PROBE_IN_FLIGHT / (2 * pairs)))
    probe = await chat._measure(ctx, single, "bench.scenarios.chat:probe",
                                dict(window=window, duration=PROBE_SECONDS, drain=30.0))
    await ctx.pool.run("bench.gen:close_all")
    return probe["achieved"]


def _timeout_log_lines(cluster: SwitchboardCluster) -> int:
    """Lines in the gateways' logs that report a registry call unanswered by its deadline."""
    count = 0
    for gateway in cluster.gateways:
        with open(gateway.log, errors="replace") as log:
            count += sum(TIMEOUT_LINE in line for line in log)
    return count


def _median_phase(phases: list[dict]) -> dict:
    """The round whose cross-node (else overall) p50 is the median, with the medians of every
    percentile per class, the totals of counts and timeouts over all rounds."""
    key = "cross" if phases[0]["cross"]["deliver"].get("count") else "all"
    ordered = sorted(phases, key=lambda p: p[key]["deliver"].get("p50_ms", 0))
    out = dict(ordered[len(ordered) // 2])
    for name in SHOWN:
        merged = {**out[name], "deliver": dict(out[name]["deliver"])}
        for p in ("p50", "p99", "p99.9"):
            values = sorted(ph[name]["deliver"][f"{p}_ms"] for ph in phases
                            if f"{p}_ms" in ph[name]["deliver"])
            if values:
                merged["deliver"][f"{p}_ms"] = values[len(values) // 2]
        out[name] = merged
    out["registry_timeouts"] = sum(p["registry_timeouts"] for p in phases)
    out["exactly_once"] = all(p["exactly_once"] for p in phases)
    out["rounds"] = len(phases)
    return out


async def _steady(ctx, target, endpoints, pairs: int, rate: float, tag: str,
                  duration: float | None = None) -> dict:
    before = await _timeouts(target)
    flows = await _connect(ctx, target, endpoints, pairs, f"{ctx.prefix}{tag}")
    phase = await _measure(ctx, target, rate, flows, duration=duration)
    phase["registry_timeouts"] = await _timeouts(target) - before
    phase["counts"] = chat._sum(await ctx.pool.run("bench.scenarios.chat:totals"))
    phase["exactly_once"] = (phase["counts"]["delivered"] == phase["counts"]["sent"] ==
                             phase["counts"]["acked"] and not phase["counts"]["anomalies"])
    await ctx.pool.run("bench.gen:close_all")
    return {"target": target.name, "note": target.note, **phase}


async def _connect(ctx, target, endpoints, pairs: int, prefix: str) -> list[int]:
    """The devices of `pairs` pairs, placed; returns each worker's number of flows."""
    with Progress(2 * pairs, f"{target.name}: connecting", "dev") as bar:
        parts = await ctx.pool.run("bench.scenarios.cluster:connect", [
            dict(endpoints=endpoints, pairs=shard, prefix=prefix, body_size=ctx.args.body,
                 concurrency=ctx.args.connect_concurrency)
            for shard in ctx.shard(range(pairs))], bar)
    if sum(p["opened"] for p in parts) < 2 * pairs:
        raise RuntimeError(f"{target.name}: devices refused: "
                           f"{sorted({e for p in parts for e in p['errors']})}")
    return [p["flows"] for p in parts]


async def _measure(ctx, target, rate: float, flows: list[int], during=None,
                   duration: float | None = None) -> dict:
    """One open-loop step on every worker (rate split by their flows), with `during` (a
    coroutine) run alongside; the classes' figures merged over the workers."""
    duration = duration or ctx.args.duration
    kwargs = [dict(rate=rate * n / sum(flows), duration=duration,
                   drain=max(10.0, 3 * duration)) for n in flows]
    cpu0 = _cpu_by_kind(target)
    load = ctx.pool.run("bench.scenarios.cluster:step", kwargs)
    parts, extra = await asyncio.gather(load, during if during is not None else _nothing())
    cpu = {kind: seconds - cpu0.get(kind, 0.0) for kind, seconds in _cpu_by_kind(target).items()}
    server_cpu = sum(cpu.values())
    out = {"server_cpu_s": server_cpu, "server_cpu_s_by_kind": cpu, "extra": extra}
    for shown, classes in SHOWN.items():
        mine = [p[name] for p in parts for name in classes]
        out[shown] = {
            "sent": sum(p["sent"] for p in mine),
            "completed": sum(p["completed"] for p in mine),
            "unfinished": sum(p["unfinished"] for p in mine),
            "deliver": hist.summary(hist.merge(p["deliver_hdr"] for p in mine)),
            "ack": hist.summary(hist.merge(p["ack_hdr"] for p in mine)),
        }
    completed = out["all"]["completed"]
    out["achieved"] = completed / duration
    out["server_cpu_us_per_msg"] = server_cpu / completed * 1e6 if completed else None
    # cores the target kept busy: the load must stay well below what either target can take
    out["server_cores"] = server_cpu / duration
    out["generator_cores"] = sum(max(p[n]["cpu_s"] for n in CLASSES) for p in parts) / duration
    return out


def _cpu_by_kind(target) -> dict[str, float]:
    """CPU seconds so far of the target's processes by kind (gw, redis, server): what the
    gateways cost apart from the Redis Cluster under them."""
    out: dict[str, float] = {}
    for role, pid in target.pids.items():
        if procfs.alive(pid):
            kind = role.rstrip("0123456789")
            out[kind] = out.get(kind, 0.0) + procfs.cpu_seconds(pid)
    return out


async def _nothing() -> None:
    return None


async def _timeouts(target) -> float:
    if not isinstance(target, SwitchboardCluster):
        return 0.0
    return sum(m.get("switchboard_cluster_registry_timeouts_total", 0.0)
               for m in await target.metrics())


# ---------------------------------------------------------------------- failover
async def _failover(ctx, cluster: SwitchboardCluster, pairs: int, rate: float) -> dict:
    from switchboard.core.auth import TokenAuthority
    from switchboard.router.redis_client import key_slot
    from switchboard.router.registry_redis import Keys
    redis = cluster.redis
    keys = Keys("sb")
    table_slot = key_slot(keys.members)
    victim = next(i for i, shard in enumerate(redis.shards()) if shard.serves(table_slot))
    victim_shard = redis.shards()[victim]
    probe_users = (f"probe{n}" for n in range(10**6)
                   if victim_shard.serves(key_slot(keys.sessions(f"probe{n}"))))
    tokens = TokenAuthority(cluster.secret.encode())
    before = await _timeouts(cluster)
    flows = await _connect(ctx, cluster, cluster.endpoints, pairs, f"{ctx.prefix}f")
    marks: dict[str, float] = {}
    probes: list[tuple[float, float, bool]] = []

    async def fail_over() -> None:
        await asyncio.sleep(ctx.args.duration / 3)
        marks["killed"] = time.monotonic()
        dead = await asyncio.to_thread(redis.kill_master, victim)
        await asyncio.to_thread(_until_promoted, redis, table_slot, dead)
        marks["promoted"] = time.monotonic()
        await asyncio.to_thread(redis.wait_ok, 60)

    async def probe() -> None:
        end = time.monotonic() + ctx.args.duration
        running = []
        while time.monotonic() < end:
            running.append(asyncio.ensure_future(_probe_once(cluster, tokens, next(probe_users),
                                                             len(running), probes)))
            await asyncio.sleep(PROBE_EVERY)
        await asyncio.gather(*running)

    async def both() -> None:
        await asyncio.gather(fail_over(), probe())

    phase = await _measure(ctx, cluster, rate, flows, during=both())
    phase["registry_timeouts"] = await _timeouts(cluster) - before
    await ctx.pool.run("bench.gen:close_all")
    killed, promoted = marks["killed"], marks["promoted"]
    waited = [end - promoted for start, end, ok in probes if killed <= start < promoted and ok]
    phase["promoted_after_kill_s"] = promoted - killed
    phase["registry_answered_after_promotion_s"] = max(0.0, max(waited, default=0.0))
    phase["probe_max_s"] = max((end - start for start, end, _ in probes), default=None)
    phase["probes"] = len(probes)
    phase["probes_refused"] = sum(1 for *_, ok in probes if not ok)
    phase["target"] = cluster.name
    return phase


def _until_promoted(redis, slot: int, dead: str, timeout: float = 60.0) -> None:
    """Until a live master other than `dead` serves `slot` in the cluster's own view (the
    replica's promotion, before it has caught up with anything else)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(shard.serves(slot) and shard.address != dead for shard in redis.shards()):
            return
        time.sleep(0.02)
    raise RuntimeError(f"no replica took over slot {slot} within {timeout}s")


async def _probe_once(cluster, tokens, user: str, index: int, out: list) -> None:
    """One new device connecting (its session written to the registry before Welcome)."""
    from switchboard.client import Client
    endpoint = cluster.endpoints[index % len(cluster.endpoints)]
    client = Client(endpoint.url, tokens.mint(user, "probe", 600), reconnect=False,
                    connect_timeout=30)
    started = time.monotonic()
    try:
        await client.connect()
        ok = True
    except Exception:
        ok = False
    out.append((started, time.monotonic(), ok))
    await client.close()


# ---------------------------------------------------------------------- pause
async def _pause(cluster: SwitchboardCluster) -> dict:
    from switchboard.client import Client
    from switchboard.core.auth import TokenAuthority
    tokens = TokenAuthority(cluster.secret.encode())
    urls = [e.url for e in cluster.endpoints]
    senders, partners = [], []
    for i in range(PAUSE_DEVICES):
        sender = Client(urls, tokens.mint(f"pause{i}a", "d", 600), send_timeout=60)
        partner = Client(urls[1:] + urls[:1], tokens.mint(f"pause{i}b", "d", 600))
        await sender.connect()
        await partner.connect()
        senders.append(sender)
        partners.append(partner)
    chats = [(await s.create_direct(f"pause{i}b")).chat_id for i, s in enumerate(senders)]
    paused_at: list[float] = []
    sends: list[tuple[float, asyncio.Future]] = []  # (when it was made, its outcome)

    async def keep_sending(client, chat_id) -> None:
        for n in range(10**6):
            if paused_at and time.monotonic() > paused_at[0] + PAUSE_AFTER:
                return
            sends.append((time.monotonic(), asyncio.ensure_future(
                client.send(chat_id, b"%d" % n))))
            await asyncio.sleep(PAUSE_SEND_EVERY)

    loops = [asyncio.ensure_future(keep_sending(c, chat)) for c, chat in zip(senders, chats)]
    await asyncio.sleep(2.0)
    cluster.signal(0, signal.SIGSTOP)
    paused = time.monotonic()
    paused_at.append(paused)
    await asyncio.gather(*loops, return_exceptions=True)
    # what the paused gateway had: unanswered at the pause, or sent to it in the second after
    affected = [future for made, future in sends
                if made >= paused or not future.done()]
    acked_after: list[float] = []

    async def answered(future) -> None:
        try:
            await future
            acked_after.append(time.monotonic() - paused)
        except Exception:
            pass
    try:
        await asyncio.wait_for(asyncio.gather(*(answered(f) for f in affected)), PAUSE_WAIT)
    except asyncio.TimeoutError:
        pass
    finally:
        cluster.signal(0, signal.SIGCONT)
        for client in senders + partners:
            await client.close()
        await asyncio.gather(*(f for _, f in sends), return_exceptions=True)
    return {"devices": PAUSE_DEVICES, "pending_at_pause": len(affected),
            "acked": len(acked_after), "max_ack_after_pause_s": max(acked_after, default=None),
            "silent_drops": sum(c.stats.silent_drops for c in senders)}


#: The ratios reported, per round and as the median over rounds: (name, cluster's class,
#: target and class it is compared with).
RATIOS = (("cross", "cross", "single", "all"),     # the aim: <= 2x p50, <= 3x p99
          ("cross2", "cross2", "single", "all"),   # three gateways on the path
          ("local", "local", "single", "all"),     # CPU sharing alone: no mesh hop
          ("hops", "cross", "cluster", "local"))   # the mesh hops alone: same run, same machine


def _ratios(results: dict) -> dict:
    """The cluster's classes over the single gateway's (and cross-node over the cluster's own
    local messages), p50 and p99, per round (measured back to back) and their median."""
    out: dict = {"per_round": []}
    for round_ in results["rounds"]:
        ratios = {}
        for name, mine, other, theirs in RATIOS:
            a = round_["cluster"][mine]["deliver"]
            b = round_[other][theirs]["deliver"]
            ratios[name] = {p: (a[f"{p}_ms"] / b[f"{p}_ms"]
                                if a.get(f"{p}_ms") and b.get(f"{p}_ms") else None)
                            for p in ("p50", "p99")}
        out["per_round"].append(ratios)
    for name, *_ in RATIOS:
        out[name] = {}
        for p in ("p50", "p99"):
            values = sorted(r[name][p] for r in out["per_round"] if r[name][p] is not None)
            out[name][p] = values[len(values) // 2] if values else None
    return out


# ====================================================================== output
def rows(doc: dict) -> tuple[list[str], list[list]]:
    headers = ["pairs", "rate/s", "phase", "target", "achieved/s", "class", "p50 ms", "p99 ms",
               "max ms", "ack p99 ms", "unfinished", "srv us/msg", "srv cores", "reg. timeouts"]
    # single and cluster: the median round (percentiles: medians over the rounds)
    out = []
    for run_ in doc["runs"]:
        for phase in ("single", "cluster", "soak", "failover"):
            res = run_.get(phase)
            if res is None:
                continue
            for name in SHOWN:
                figures = res[name]
                deliver = figures["deliver"]
                if not deliver.get("count"):
                    continue
                out.append([run_["pairs"], report.rate(run_["rate"]), phase, res["target"],
                            report.rate(res["achieved"]), name, report.ms(deliver.get("p50_ms")),
                            report.ms(deliver.get("p99_ms")), report.ms(deliver.get("max_ms")),
                            report.ms(figures.get("ack", {}).get("p99_ms")),
                            figures.get("unfinished", "-"),
                            report.ms(res["server_cpu_us_per_msg"]),
                            f"{res.get('server_cores', 0):.2f}",
                            int(res.get("registry_timeouts", 0))])
    return headers, out


def summary(doc: dict) -> list[str]:
    lines = []
    for run_ in doc["runs"]:
        ratios = run_["ratios"]
        if "capacity" in run_:
            lines.append(f"one gateway's capacity on these pairs: {run_['capacity']:,.0f} msg/s "
                         f"(closed loop); offered {run_['rate']:,.0f} msg/s to each target")
        per_round = ", ".join(f"{report.ratio(r['cross']['p50'])}/{report.ratio(r['cross']['p99'])}"
                              for r in ratios["per_round"])
        lines.append(f"{run_['pairs']} pairs at {run_['rate']:,.0f} msg/s, median of "
                     f"{len(run_['rounds'])} rounds: cross-node p50 "
                     f"{report.ratio(ratios['cross']['p50'])} and p99 "
                     f"{report.ratio(ratios['cross']['p99'])} of one gateway's (p50/p99 per "
                     f"round: {per_round}); registry timeouts "
                     f"{int(run_['cluster']['registry_timeouts'])}; exactly once: one gateway "
                     f"{run_['single']['exactly_once']}, cluster {run_['cluster']['exactly_once']}")
        lines.append("  p50/p99 medians: three gateways on the path (cross2) "
                     f"{_pair(ratios['cross2'])} of one gateway's; the cluster's local messages "
                     f"(CPU sharing, no hop) {_pair(ratios['local'])}; cross-node over the "
                     f"cluster's own local messages (the hops) {_pair(ratios['hops'])}")
        lines.append("  server CPU per message (median round): "
                     + "; ".join(f"{run_[t]['target']} " + ", ".join(
                         f"{kind} {seconds / max(run_[t]['all']['completed'], 1) * 1e6:,.0f} us"
                         for kind, seconds in run_[t].get("server_cpu_s_by_kind", {}).items())
                                 for t in ("single", "cluster")))
        soak = run_.get("soak")
        if soak:
            lines.append(f"soak: {soak['all']['completed']:,} messages in "
                         f"{soak['all']['completed'] / max(soak['achieved'], 1e-9):,.0f} s; "
                         f"registry timeouts {int(soak['registry_timeouts'])} (metrics), "
                         f"{soak['timeout_log_lines']} log lines '{TIMEOUT_LINE}' (whole run); "
                         f"exactly once {soak['exactly_once']}")
        if "hops" in run_:
            lines += hoptrace.lines(run_["hops"])
        failover = run_.get("failover")
        if failover:
            lines.append(f"Redis master failover: promoted {failover['promoted_after_kill_s']:.1f}"
                         f" s after the kill; registry calls waiting on it answered "
                         f"{failover['registry_answered_after_promotion_s']:.2f} s after the "
                         f"promotion at most (slowest connect {failover['probe_max_s']:.2f} s); "
                         f"{failover['probes_refused']} of {failover['probes']} connect probes "
                         f"refused; registry timeouts {int(failover['registry_timeouts'])}")
        pause = run_.get("pause")
        if pause:
            worst = pause["max_ack_after_pause_s"]
            lines.append(f"paused gateway: {pause['acked']} of {pause['pending_at_pause']} sends "
                         f"the paused gateway had (pending at the SIGSTOP or sent to it in the "
                         f"second after) acknowledged through another gateway, the last "
                         f"{'-' if worst is None else f'{worst:.2f} s'} after the pause")
    return lines


def plots(doc: dict, run_dir) -> list:
    files = []
    for run_ in doc["runs"]:
        curves = {"one gateway": run_["single"]["all"]["deliver"]["hdr"],
                  "cluster, cross-node": run_["cluster"]["cross"]["deliver"]["hdr"],
                  "cluster, three gateways": run_["cluster"]["cross2"]["deliver"]["hdr"],
                  "cluster, all on one gateway": run_["cluster"]["local"]["deliver"]["hdr"]}
        files.append(report.cdf_plot(run_dir / f"cluster-{run_['pairs']}-cdf.png",
                                     f"{run_['pairs']} pairs at {run_['rate']:,.0f} msg/s: "
                                     "send -> delivered", curves))
    return files


def _pair(ratio: dict) -> str:
    return f"{report.ratio(ratio['p50'])}/{report.ratio(ratio['p99'])}"
