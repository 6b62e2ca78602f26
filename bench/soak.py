"""Soak: a steady load with churn against one gateway, to tell a plateau from a leak.

    python -m bench.soak --minutes 30              # the long run (docs: bench/README.md)
    python -m bench.soak --minutes 2 --devices 40  # a quick look

The gateway runs in this process (so tracemalloc sees it) with its timers scaled down (heartbeat,
retransmit, presence and receipt flushes every fraction of a second), the devices in a child
process: `devices` devices of `users` users in `chats` groups, each sending `rate` messages a
second, acking what it gets, subscribing to presence and typing now and then; every
`churn` seconds a tenth of them disconnect (some with a close, some dropped) and reconnect, and
a few new users appear. Every `sample` seconds the gateway's RSS, descriptors, asyncio tasks and
the sizes of its in-memory maps (connections, presence, caches, limits...) are recorded.

The report gives, over the time after the warm-up (the first third), the least-squares slope of
each series per hour, and tracemalloc's top growths between the end of the warm-up and the end:
a slope of ~0 once warm is a plateau (caches filled, SQLite's page cache warm); a steady slope
that tracemalloc attributes to one line is a leak. Output: a JSON file and a text summary.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

SECRET = "soak-secret-" + "s" * 40


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--devices", type=int, default=70)
    p.add_argument("--users", type=int, default=35)
    p.add_argument("--chats", type=int, default=20)
    p.add_argument("--rate", type=float, default=2.0, help="messages per second per device")
    p.add_argument("--churn", type=float, default=10.0, help="seconds between reconnect waves")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--body", type=int, default=400, help="largest message body (bytes)")
    p.add_argument("--out", type=Path, default=Path("soak.json"))
    p.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # the child process
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------------------- the gateway side
def gateway_config(data_dir: str):
    from switchboard.config import load
    return load(None, {
        "server.host": "127.0.0.1", "server.port": 0, "server.data_dir": data_dir,
        "auth.secret": SECRET, "metrics.enabled": False, "log.level": "WARNING",
        "timers.tick": 0.05, "timers.heartbeat_interval": 2.0, "timers.idle_timeout": 6.0,
        "timers.retransmit_after": 1.0, "timers.presence_interval": 0.1,
        "timers.receipt_flush": 0.02, "limits.sends_per_second": 1000.0,
        "limits.send_burst": 1000.0, "limits.connects_per_minute": 6000.0,
        "limits.connect_burst": 1000.0, "limits.history_per_second": 1000.0,
        "limits.chats_per_minute": 6000.0, "limits.chat_burst": 1000.0,
    }, environ={})


def map_sizes(gw) -> dict[str, int]:
    """The gateway's in-memory maps that grow with users, devices or chats."""
    services = gw.services
    presence = gw.presence
    return {
        "connections": gw.hub.connections,
        "hub_users": len(gw.hub._by_user),
        "pending_auth": gw.pending_auth,
        "gateway_tasks": len(gw.tasks),
        "presence_subjects": len(presence._subscribers),
        "presence_dirty": len(presence._dirty),
        "presence_devices": len(presence.registry._devices),
        "presence_last_seen": len(presence.registry._last_seen),
        "member_cache": len(services.chats._cache),
        "receipt_cache": len(services.receipts._cache),
        "settings_cache": len(services.settings._cache),
        "admitted_devices": len(services.devices._admitted),
        "user_limits": len(gw.limits),
        "usage_totals": len(gw._usage_totals),
        "writer_pending": services.messages.writer.pending,
    }


def process_sample(gw, data_dir: str) -> dict[str, float]:
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    sample = {"t": time.monotonic(), "rss_bytes": rss,
              "rss_anon_bytes": int(status["RssAnon"].split()[0]) * 1024,
              "rss_file_bytes": int(status["RssFile"].split()[0]) * 1024,
              "database_bytes": sum(p.stat().st_size for p in Path(data_dir).glob("switchboard.db*")),
              "descriptors": len(os.listdir("/proc/self/fd")),
              "asyncio_tasks": len(asyncio.all_tasks()),
              "sends": gw.session_stats.sends, "connects": gw.stats.connects}
    sample.update(map_sizes(gw))
    kinds = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks())
    sample["task_kinds"] = dict(kinds.most_common(6))
    return sample


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value), per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def slopes(samples: list[dict], warm_fraction: float = 1 / 3) -> dict[str, float]:
    warm = samples[int(len(samples) * warm_fraction):]
    return {key: slope_per_hour([(s["t"], s[key]) for s in warm])
            for key in samples[0] if key not in ("t", "sends", "connects", "task_kinds")}


async def soak(args) -> dict:
    from switchboard.app import build_gateway
    data_dir = tempfile.mkdtemp(prefix="soak-")
    gw = build_gateway(gateway_config(data_dir))
    await gw.start()
    url = f"ws://127.0.0.1:{gw.port}/v1/ws"
    seconds = args.minutes * 60
    load = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.soak", "--load", url,
        "--seconds", str(seconds + 3 * args.sample),  # still loaded at the last sample
        "--devices", str(args.devices), "--users", str(args.users), "--chats", str(args.chats),
        "--rate", str(args.rate), "--churn", str(args.churn), "--body", str(args.body))
    tracemalloc.start(16)
    samples: list[dict] = []
    warm_snapshot = None
    started = time.monotonic()
    try:
        exited = asyncio.ensure_future(load.wait())
        while not exited.done() and time.monotonic() - started < seconds:
            await asyncio.wait({exited}, timeout=args.sample)
            gc.collect()
            samples.append(process_sample(gw, data_dir))
            if warm_snapshot is None and time.monotonic() - started >= seconds / 3:
                warm_snapshot = tracemalloc.take_snapshot()
            last = samples[-1]
            print(f"{last['t'] - started:7.0f}s rss {last['rss_bytes'] / 2**20:6.1f} MB  fds "
                  f"{last['descriptors']}  tasks {last['asyncio_tasks']}  conns "
                  f"{last['connections']}  sends {last['sends']}", flush=True)
        end_snapshot = tracemalloc.take_snapshot()
        load_exit = load.returncode
        exited.cancel()
    finally:
        if load.returncode is None:
            load.kill()
            await load.wait()
        await gw.stop()
    growth = []
    if warm_snapshot is not None:
        for stat in end_snapshot.compare_to(warm_snapshot, "lineno")[:15]:
            frame = stat.traceback[0]
            growth.append({"where": f"{frame.filename}:{frame.lineno}",
                           "size_diff": stat.size_diff, "count_diff": stat.count_diff})
    return {"args": {k: str(v) for k, v in vars(args).items()}, "samples": samples,
            "slopes_per_hour": slopes(samples), "tracemalloc_growth": growth,
            "load_exit": load_exit}


def summary(result: dict) -> str:
    lines = ["slope per hour once warm (after the first third):"]
    for key, value in result["slopes_per_hour"].items():
        unit = f"{value / 2**20:+.2f} MB" if key.endswith("bytes") else f"{value:+.1f}"
        lines.append(f"  {key:20s} {unit}")
    lines.append("tracemalloc, largest growth from the end of the warm-up to the end:")
    for item in result["tracemalloc_growth"]:
        lines.append(f"  {item['size_diff'] / 1024:+9.1f} KiB {item['count_diff']:+7d} "
                     f"blocks  {item['where']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the load side
async def device_loop(url: str, user: str, device: str, chats: list[str], users: list[str],
                      rate: float, stop_at: float, churn: float, body: int,
                      rng: random.Random) -> int:
    from switchboard.core.auth import TokenAuthority
    from switchboard.client import Client
    tokens = TokenAuthority(SECRET.encode())
    sent = 0
    while time.monotonic() < stop_at:
        client = Client(url, lambda: tokens.mint(user, device), backoff_min=0.05, backoff_max=1.0)
        await client.connect()
        reader = asyncio.ensure_future(drain(client))
        if rng.random() < 0.5:
            await client.subscribe_presence(rng.sample(users, 3))
        session_end = min(stop_at, time.monotonic() + rng.uniform(churn, churn * 10))
        while time.monotonic() < session_end:
            chat = rng.choice(chats)
            try:
                await client.send(chat, os.urandom(rng.randrange(10, body)))
                sent += 1
            except Exception:  # a reconnect in between: the outbox retries it
                pass
            if rng.random() < 0.05:
                await client.typing(chat, True)
            if rng.random() < 0.02:
                await client.mark_read(chat, 1 << 40)
            await asyncio.sleep(rng.expovariate(rate))
        reader.cancel()
        if rng.random() < 0.5:
            await client.close()
        else:  # dropped without a close, as a phone losing its network
            client._listener.transport.disconnect(graceful=False)  # the SDK's socket
            await client.close()
    return sent


async def drain(client) -> None:
    async for _ in client.messages():
        pass


async def load(args) -> None:
    from switchboard.core.auth import TokenAuthority
    from switchboard.client import Client
    tokens = TokenAuthority(SECRET.encode())
    users = [f"user{i}" for i in range(args.users)]
    admin = Client(args.load, tokens.mint(users[0], "setup"))
    await admin.connect()
    chats_of: dict[str, list[str]] = {user: [] for user in users}
    for i in range(args.chats):  # groups of 8: every user is in a few of them
        members = [users[(i * 3 + k) % len(users)] for k in range(8)]
        chat = (await admin.create_group(f"soak {i}", [u for u in members if u != users[0]]))
        for user in {*members, users[0]}:
            chats_of[user].append(chat.chat_id)
    await admin.close()
    stop_at = time.monotonic() + args.seconds
    devices = []
    for i in range(args.devices):
        user = users[i % len(users)]
        if chats_of[user]:
            devices.append(device_loop(args.load, user, f"d{i}", chats_of[user], users, args.rate,
                                       stop_at, args.churn, args.body, random.Random(i)))
    totals = await asyncio.gather(*devices, return_exceptions=True)
    print(f"load: {sum(t for t in totals if isinstance(t, int))} sends", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.load:
        logging.getLogger("asyncio").setLevel(logging.ERROR)  # sends on dropped sockets
        asyncio.run(load(args))
        return
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # writes to sockets devices dropped
    result = asyncio.run(soak(args))
    args.out.write_text(json.dumps(result, indent=1))
    print(summary(result))
    print(f"written to {args.out}")
    if result["load_exit"] is not None:  # it should still have been running at the end
        sys.exit(f"the load process failed (exit {result['load_exit']})")


if __name__ == "__main__":
    main()
