"""media: concurrent uploads and downloads through the local backend (the server's own media
port), with the gateway's message latency measured at the same time.

For each file kind (a 100 KB photo, a 5 MB video) and each size (transfers in flight), worker 1
runs `size` sender/recipient pairs in a loop: the sender uploads a fresh file (CreateUpload, PUT,
CompleteUpload), sends a message naming it, the recipient gets its URL (GetMedia) and downloads
it, checking the SHA-256. Meanwhile worker 0 sends a message every PROBE_INTERVAL between two
other devices and records send -> deliver latency; it also runs alone first, for a baseline.

Figures: files/s, MB/s up and down, the server's CPU seconds per MB moved (up + down), and the
probe's p50/p99 with and without media traffic: media must not hurt the message path.
Everything runs on this machine: the generator's Python clients share the cores with the server
(and hash every byte they move), so MB/s is a floor of the server's.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time

from .. import hist, report

NAME = "media"
SIZE_HELP = "transfers in flight"
DEFAULT_SIZES = (4,)
PEERS_DEFAULT = None
KINDS = {"photo": (100_000, "image/jpeg"), "video": (5_000_000, "video/mp4")}
PROBE_INTERVAL = 0.02  # s: 50 messages per second


# ====================================================================== worker side
async def _client(endpoint, user: str):
    from switchboard.client import Client
    from switchboard.core.auth import TokenAuthority
    token = TokenAuthority(endpoint.secret.encode()).mint(user, "bench", 3600)
    client = Client(endpoint.url, token)
    await client.connect()
    await client.wait_synced(timeout=30)
    return client


async def probe(worker, endpoint, prefix: str, duration: float, body_size: int = 64,
                concurrency: int = 0) -> dict:
    """Messages at a steady rate between two devices: send -> deliver latency."""
    sender = await _client(endpoint, f"{prefix}ps")
    receiver = await _client(endpoint, f"{prefix}pr")
    try:
        chat = (await sender.create_direct(f"{prefix}pr")).chat_id
        latency = hist.new()

        async def receive() -> None:
            async for message in receiver.messages():
                hist.record_ns(latency, time.monotonic_ns() - int(message.body))

        reading = asyncio.ensure_future(receive())
        deadline = time.monotonic() + duration
        count = 0
        while time.monotonic() < deadline:
            await sender.send(chat, str(time.monotonic_ns()).encode())
            count += 1
            await asyncio.sleep(PROBE_INTERVAL)
        await asyncio.sleep(0.5)  # the last deliveries
        reading.cancel()
        return {"sent": count, "latency_hdr": hist.encode(latency)}
    finally:
        await sender.close()
        await receiver.close()


async def transfer(worker, endpoint, prefix: str, pairs: int, kind: str, duration: float,
                   body_size: int = 64, concurrency: int = 0) -> dict:
    """`pairs` sender/recipient loops: upload, send, GetMedia, download, for `duration` s once
    each pair is connected (a loaded machine's connects do not eat the window)."""
    size, content_type = KINDS[kind]
    base = os.urandom(size)
    moved = {"files": 0, "up": 0, "down": 0, "errors": []}

    async def pair(i: int) -> None:
        alice = await _client(endpoint, f"{prefix}a{i}")
        bob = await _client(endpoint, f"{prefix}b{i}")
        try:
            chat = (await alice.create_direct(f"{prefix}b{i}")).chat_id
            inbox = bob.messages()
            n = 0
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline:
                data = f"{prefix}{i}:{n}:".encode().ljust(32) + base[32:]
                n += 1
                info = await alice.upload(data, content_type)
                moved["up"] += size
                ack = await alice.send(chat, b"", media_ids=[info.media_id])
                message = await anext(inbox)
                got = await bob.download(message.media_ids[0], chat, ack.seq)
                assert hashlib.sha256(got).digest() == info.sha256
                moved["down"] += len(got)
                moved["files"] += 1
        except Exception as exc:  # reported, not raised: the figures say how far it got
            moved["errors"].append(f"{type(exc).__name__}: {exc}")
        finally:
            await alice.close()
            await bob.close()

    start = time.monotonic()
    await asyncio.gather(*(pair(i) for i in range(pairs)))
    moved["seconds"] = time.monotonic() - start
    moved["errors"] = sorted(set(moved["errors"]))[:5]
    return moved


# ====================================================================== main side
async def run(ctx, size: int) -> dict:
    if ctx.pool.size < 2:
        raise ValueError("media needs two generator workers (--workers 2)")
    duration = ctx.args.duration
    common = {"endpoint": None, "body_size": ctx.args.body, "concurrency": 0}
    results = []
    async with ctx.switchboard() as target:
        common["endpoint"] = target.endpoint
        prefix = f"{ctx.prefix}m{size}"
        [alone] = await ctx.pool.run_on([0], "bench.scenarios.media:probe",
                                        [dict(common, prefix=f"{prefix}base", duration=duration)])
        for kind in KINDS:
            cpu0 = target.cpu() if target.pids else None
            probed, [moved] = await asyncio.gather(
                ctx.pool.run_on([0], "bench.scenarios.media:probe",
                                [dict(common, prefix=f"{prefix}{kind}p", duration=duration)]),
                ctx.pool.run_on([1], "bench.scenarios.media:transfer",
                                [dict(common, prefix=f"{prefix}{kind}", pairs=size, kind=kind,
                                      duration=duration)]))
            cpu = target.cpu() - cpu0 if cpu0 is not None else None
            mb = (moved["up"] + moved["down"]) / 1e6
            seconds = moved["seconds"]
            results.append({
                "kind": kind, "file_bytes": KINDS[kind][0], "in_flight": size,
                "files": moved["files"], "files_per_s": moved["files"] / seconds,
                "up_mb_per_s": moved["up"] / 1e6 / seconds,
                "down_mb_per_s": moved["down"] / 1e6 / seconds,
                "server_cpu_s": cpu, "server_cpu_ms_per_mb": cpu / mb * 1000 if cpu and mb else None,
                "probe": hist.summary(hist.merge([probed[0]["latency_hdr"]])),
                "errors": moved["errors"]})
    return {"size": size, "baseline": hist.summary(hist.merge([alone["latency_hdr"]])),
            "kinds": results}


# ====================================================================== output
def rows(doc: dict) -> tuple[list[str], list[list]]:
    headers = ["file", "in flight", "files/s", "up MB/s", "down MB/s", "server CPU ms/MB",
               "msg p50 ms", "msg p99 ms", "msg p50 ms alone", "msg p99 ms alone"]
    out = []
    for run_ in doc["runs"]:
        base = run_["baseline"]
        for k in run_["kinds"]:
            out.append([f"{k['kind']} {k['file_bytes'] // 1000} KB", k["in_flight"],
                        report.rate(k["files_per_s"]), round(k["up_mb_per_s"], 1),
                        round(k["down_mb_per_s"], 1), report.ms(k["server_cpu_ms_per_mb"]),
                        report.ms(k["probe"].get("p50_ms")), report.ms(k["probe"].get("p99_ms")),
                        report.ms(base.get("p50_ms")), report.ms(base.get("p99_ms"))])
    return headers, out


def summary(doc: dict) -> list[str]:
    return [f"{k['kind']}: errors {k['errors']}" for run_ in doc["runs"] for k in run_["kinds"]
            if k["errors"]]


def plots(doc: dict, run_dir) -> list:
    series = {}
    for run_ in doc["runs"]:
        series[f"messages alone, {run_['size']} in flight"] = run_["baseline"]["hdr"]
        for k in run_["kinds"]:
            series[f"messages with {k['kind']} traffic, {run_['size']} in flight"] = k["probe"]["hdr"]
    return [report.cdf_plot(run_dir / "media-message-latency-cdf.png",
                            "media: send -> deliver latency with and without media traffic",
                            series)]
