"""hold: N authenticated idle connections, opened and kept; what one costs the server.

Figures: connect rate (TCP + upgrade with token check + Welcome, `--connect-concurrency`
handshakes in flight per worker) with the handshake latency distribution; the server's RSS
delta divided by N (user-space bytes per connection; with `--server-workers` the RSS of every
process summed, since each worker holds its share of the N, and each process's own delta in
`per_process`); the kernel's memory per socket from
/proc/net/sockstat (socket buffers) and /proc/meminfo Slab (struct sock, file, inode, epoll
item), both divided by 2N because on loopback both ends of every connection live in this
kernel; descriptors; the server's idle CPU while holding (the server pings each connection
after `timers.heartbeat_interval` of silence, so a `--duration` longer than that includes the
heartbeats) and, beside it, the host's softirq time and kernel keepalive probes over the same
seconds (the kernel's share of holding them, `timers.tcp_keepalive_idle`; system-wide, so both
ends and any other job count); the server's CPU per handshake while connecting; and how many
connections dropped. Then every device is closed and opened again
with the token it had: the handshake of a known device (`known`), apart from a new one's.

A warm-up batch is connected and kept before the baseline is read, so one-time costs (imports,
caches, the SQLite page cache of the first device rows) are not charged to the connections.
"""
from __future__ import annotations

import asyncio
import time

from .. import hist, procfs, report
from ..gen import Worker
from ..progress import Progress

NAME = "hold"
SIZE_HELP = "connections"
DEFAULT_SIZES = (10_000,)
PEERS_DEFAULT = False
WARMUP = 200
SETTLE = 1.0


# ====================================================================== worker side
async def connect(worker: Worker, endpoint, users: list[str], body_size: int,
                  concurrency: int, device_ping: float = 0.0,
                  device_keepalive: int = 0) -> dict:
    devices = [endpoint.device(user, user, body_size) for user in users]
    for device in devices:
        device.ping_when_idle = device_ping
        device.keepalive_idle = device_keepalive
        device.follow_moves = (endpoint, worker)
    start, cpu = time.monotonic_ns(), time.process_time()
    opened, errors, latency = await worker.connect(devices, endpoint, concurrency)
    elapsed, cpu = time.monotonic_ns() - start, time.process_time() - cpu
    for device in devices:
        if device.connected or device.drops:  # opened: one that dropped since still counts
            worker.devices[device.user] = device
    return {"opened": opened, "errors": errors, "start_ns": start, "elapsed_ns": elapsed,
            "cpu_s": cpu, "latency_hdr": hist.encode(latency)}


async def close(worker: Worker) -> int:
    """Close every device but keep it, to be opened again by `reopen`."""
    devices = list(worker.devices.values())
    await asyncio.gather(*(d.close() for d in devices), return_exceptions=True)
    return len(devices)


async def reopen(worker: Worker, endpoint, concurrency: int) -> dict:
    """Open the closed devices again, with the tokens they had: known devices reconnecting."""
    devices = list(worker.devices.values())
    start, cpu = time.monotonic_ns(), time.process_time()
    opened, errors, latency = await worker.connect(devices, endpoint, concurrency)
    return {"opened": opened, "errors": errors, "start_ns": start,
            "elapsed_ns": time.monotonic_ns() - start, "cpu_s": time.process_time() - cpu,
            "latency_hdr": hist.encode(latency)}


async def check(worker: Worker) -> dict:
    devices = worker.devices.values()
    closes: dict[int, int] = {}
    for device in devices:
        for code in device.close_codes:
            closes[code] = closes.get(code, 0) + 1
    return {"connected": sum(d.connected for d in devices), "drops": sum(d.drops for d in devices),
            "moves": sum(d.moves for d in devices), "closes": closes}


# ====================================================================== main side
async def run(ctx, size: int) -> dict:
    targets = [ctx.switchboard()] + (ctx.peers() if ctx.args.peers else [])
    results = []
    for target in targets:
        async with target:
            results.append(await _hold(ctx, target, size))
    return {"size": size, "connections": size, "targets": results}


async def _hold(ctx, target, n: int) -> dict:
    pool, args = ctx.pool, ctx.args
    prefix = f"{ctx.prefix}h{target.name[0]}"
    warm = min(WARMUP, max(1, n // 20))
    warm_users = ctx.shard(f"{prefix}w{i}" for i in range(warm))
    await pool.run("bench.scenarios.hold:connect",
                   [dict(ctx.common(target), users=u) for u in warm_users])
    await asyncio.sleep(SETTLE)
    before = target.sample()
    kernel_before = procfs.kernel_sockets()
    connect_cpu = target.cpu() if target.pids else None
    with Progress(n, f"{target.name}: connecting", "conn") as bar:
        parts = await pool.run("bench.scenarios.hold:connect", [
            dict(ctx.common(target), users=u, device_ping=args.device_ping,
                 device_keepalive=args.device_keepalive)
            for u in ctx.shard(f"{prefix}u{i}" for i in range(n))],
            bar)
    opened = sum(p["opened"] for p in parts)
    elapsed = (max(p["start_ns"] + p["elapsed_ns"] for p in parts) -
               min(p["start_ns"] for p in parts)) / 1e9
    if connect_cpu is not None:
        connect_cpu = target.cpu() - connect_cpu
    await asyncio.sleep(SETTLE)
    after = target.sample()
    kernel_after = procfs.kernel_sockets()
    cpu0 = target.cpu() if target.pids else None
    kernel0 = procfs.kernel_time()
    await asyncio.sleep(args.duration)
    idle_cpu = (target.cpu() - cpu0) / args.duration if cpu0 is not None else None
    kernel1 = procfs.kernel_time()
    held = await pool.run("bench.scenarios.hold:check")
    known = None
    if args.reconnect:
        await pool.run("bench.scenarios.hold:close")
        await asyncio.sleep(SETTLE)
        reconnect_cpu = target.cpu() if target.pids else None
        with Progress(n + warm, f"{target.name}: reconnecting (known devices)", "conn") as bar:
            known = _phase(await pool.run("bench.scenarios.hold:reopen", [
                dict(endpoint=target.endpoint, concurrency=args.connect_concurrency)] * pool.size,
                bar))
        if reconnect_cpu is not None:
            known["server_cpu_us_per_handshake"] = ((target.cpu() - reconnect_cpu) * 1e6 /
                                                    max(known["opened"], 1))
    await pool.run("bench.gen:close_all")

    server = None
    if after:
        b, a = procfs.total(before), procfs.total(after)
        server = {"processes": sorted(after), "rss_before": b.rss, "rss_after": a.rss,
                  "bytes_per_connection": (a.rss - b.rss) / max(opened, 1),
                  "fds_before": b.fds, "fds_after": a.fds,
                  "idle_cpu_percent": round(idle_cpu * 100, 2) if idle_cpu is not None else None,
                  "connect_cpu_us_per_handshake": (connect_cpu * 1e6 / max(opened, 1)
                                                   if connect_cpu is not None else None),
                  "per_process": {role: {"rss_before": before[role].rss if role in before else None,
                                         "rss_after": s.rss, "fds_after": s.fds}
                                  for role, s in after.items()}}
    sockets = 2 * max(opened, 1)
    kernel = {
        "buffer_bytes_per_socket": (kernel_after.tcp_buffer_bytes - kernel_before.tcp_buffer_bytes) / sockets,
        "slab_bytes_per_socket": (kernel_after.slab_bytes - kernel_before.slab_bytes) / sockets,
        "tcp_sockets_added": kernel_after.tcp_sockets - kernel_before.tcp_sockets,
        "listen_overflows": kernel_after.listen_overflows - kernel_before.listen_overflows,
        # while holding, the whole host (both ends of every loopback connection, other jobs)
        "idle_softirq_percent": round((kernel1.softirq_s - kernel0.softirq_s) * 100 /
                                      args.duration, 2),
        "idle_keepalive_probes_per_s": round((kernel1.keepalive_probes -
                                              kernel0.keepalive_probes) / args.duration, 1),
    }
    connected = sum(h["connected"] for h in held)
    return {
        "target": target.name, "note": target.note, "requested": n, "opened": opened,
        "warmup": warm, "still_connected": connected - warm,
        "drops": sum(h["drops"] for h in held),
        "moved": sum(h["moves"] for h in held),
        "server_closes": _summed(h["closes"] for h in held),
        "errors": sorted({e for p in parts for e in p["errors"]}),
        "connect_seconds": elapsed, "connect_rate": opened / elapsed if elapsed else None,
        "generator_cpu_us_per_handshake": sum(p["cpu_s"] for p in parts) * 1e6 / max(opened, 1),
        "handshake": hist.summary(hist.merge(p["latency_hdr"] for p in parts)),
        "known": known,
        "server": server, "kernel": kernel,
        "processes": {role: s.as_dict() for role, s in after.items()},
    }


def _phase(parts: list[dict]) -> dict:
    """Opened, errors, rate and handshake latency of one connect phase over all workers."""
    opened = sum(p["opened"] for p in parts)
    elapsed = (max(p["start_ns"] + p["elapsed_ns"] for p in parts) -
               min(p["start_ns"] for p in parts)) / 1e9
    return {"opened": opened, "errors": sorted({e for p in parts for e in p["errors"]}),
            "seconds": elapsed, "rate": opened / elapsed if elapsed else None,
            "generator_cpu_us_per_handshake": sum(p["cpu_s"] for p in parts) * 1e6 / max(opened, 1),
            "handshake": hist.summary(hist.merge(p["latency_hdr"] for p in parts))}


# ====================================================================== output
def rows(doc: dict) -> tuple[list[str], list[list]]:
    headers = ["target", "conns", "held", "new conn/s", "handshake p50 ms", "p99 ms",
               "known conn/s", "p50 ms", "p99 ms",
               "server KiB/conn", "kernel KiB/socket", "server fds", "idle cpu %",
               "host softirq %", "keepalive probes/s"]
    out = []
    for run_ in doc["runs"]:
        for res in run_["targets"]:
            server, kernel, known = res["server"] or {}, res["kernel"], res["known"] or {}
            out.append([res["target"], res["requested"], res["still_connected"],
                        report.rate(res["connect_rate"]),
                        report.ms(res["handshake"].get("p50_ms")),
                        report.ms(res["handshake"].get("p99_ms")),
                        report.rate(known.get("rate")),
                        report.ms(known.get("handshake", {}).get("p50_ms")),
                        report.ms(known.get("handshake", {}).get("p99_ms")),
                        report.kib(server.get("bytes_per_connection")),
                        report.kib(kernel["buffer_bytes_per_socket"] + kernel["slab_bytes_per_socket"]),
                        server.get("fds_after"), server.get("idle_cpu_percent"),
                        kernel.get("idle_softirq_percent"),
                        kernel.get("idle_keepalive_probes_per_s")])
    return headers, out


def summary(doc: dict) -> list[str]:
    lines = []
    for run_ in doc["runs"]:
        for res in run_["targets"]:
            server, known = res["server"] or {}, res["known"] or {}
            lines.append(
                f"{res['target']}: CPU per handshake, server / generator: new "
                f"{_cpu_ms(server.get('connect_cpu_us_per_handshake'))} / "
                f"{_cpu_ms(res['generator_cpu_us_per_handshake'])}, known "
                f"{_cpu_ms(known.get('server_cpu_us_per_handshake'))} / "
                f"{_cpu_ms(known.get('generator_cpu_us_per_handshake'))}")
            if res["kernel"]["listen_overflows"]:
                lines.append(f"{res['target']}: {res['kernel']['listen_overflows']} accept-queue "
                             "overflows while connecting (clients retried the SYN)")
            if res["drops"] or res.get("moved"):
                lines.append(f"{res['target']}: {res['drops']} connections dropped, "
                             f"{res.get('moved', 0)} moved by the server and reconnected; its "
                             f"closes by code: {res.get('server_closes') or 'none'}")
            if res["errors"]:
                lines.append(f"{res['target']}: connect errors: {res['errors']}")
            if (res["known"] or {}).get("errors"):
                lines.append(f"{res['target']}: reconnect errors: {res['known']['errors']}")
    return lines


def _cpu_ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f} ms"


def plots(doc: dict, run_dir) -> list:
    series = {f"{r['target']}, {run_['connections']:,} conns": r["handshake"]["hdr"]
              for run_ in doc["runs"] for r in run_["targets"]}
    return [report.cdf_plot(run_dir / "hold-handshake-cdf.png",
                            "hold: handshake latency (TCP + upgrade + Welcome)", series)]


def _summed(counts) -> dict[str, int]:
    """Close code -> how many devices the server closed with it, over the generator workers
    (1001 with a Goaway: moved by the rebalancer or a drain; those devices reconnect)."""
    total: dict[str, int] = {}
    for part in counts:
        for code, n in part.items():
            total[str(code)] = total.get(str(code), 0) + n
    return total
