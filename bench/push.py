"""push: N offline devices, a burst of messages for them; how fast the server wakes them.

    python -m bench push [--size 1000] [--messages 1] [--rounds 2] [--interval 2]

Starts the local APNs and FCM servers of the tests (tests/support/push_servers.py: HTTP/2 over
TLS, the provider JWT and the OAuth2 grant checked) in a process of their own
(bench/push_providers.py), and `switchboard serve` (SQLite, rate limits raised) pointed at
them. N receivers (half APNs, half FCM) register a push token and disconnect; one sender holds
a direct chat with each. The burst: the sender
sends `--messages` messages into every chat, about 1,024 in flight. Reported:

* pushes/s: devices pushed (the first wave, one push per device), over the time from the
  burst's start to the last of those pushes' arrival (coalesced pushes wait for `--interval`);
* commit -> push p50/p99: from the SendAck of a chat's first message (the commit is just
  before it) to that chat's first push arriving at the provider server (CLOCK_MONOTONIC, one
  clock for every process of the machine);
* server CPU per push: the server's CPU during the burst with push on, minus the CPU of the same
  burst with push off (a second server, same load), over the pushes: what waking costs beyond
  storing and acknowledging.

Rounds alternate push on and off, so a noisy neighbour hits both alike; the table keeps each
configuration's best round. Results go to bench/results/runs/<timestamp>-push/result.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from switchboard.client import Client
from switchboard.core.auth import TokenAuthority

from . import hist, machine, procfs

SECRET = "bench-push-" + "k" * 40
IN_FLIGHT = 1024
CONNECT_CONCURRENCY = 32
LIMITS = {"LIMITS_SENDS_PER_SECOND": "1000000", "LIMITS_SEND_BURST": "1000000",
          "LIMITS_CHATS_PER_MINUTE": "10000000", "LIMITS_CHAT_BURST": "1000000",
          "LIMITS_CONNECTS_PER_MINUTE": "10000000", "LIMITS_CONNECT_BURST": "1000000",
          "LIMITS_FRAMES_PER_SECOND": "1000000", "LIMITS_FRAME_BURST": "1000000"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench push", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1000, help="offline devices (default 1000)")
    p.add_argument("--messages", type=int, default=1,
                   help="messages per device in the burst (default 1; more shows coalescing)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of push on and off (default 2)")
    p.add_argument("--interval", type=float, default=2.0,
                   help="push.interval, s: one push per device and chat per interval (default 2)")
    p.add_argument("--out", type=Path, default=Path("bench/results/runs"),
                   help="results root (default bench/results/runs, ignored by git)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import uvloop
    return uvloop.run(_main(args))


class Providers:
    """bench/push_providers.py in a child process."""

    async def start(self, directory: Path) -> Providers:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.push_providers", str(directory),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024)
        self.environment = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 60))
        return self

    async def received(self) -> list[tuple[float, str]]:
        """(monotonic time, chat id) of every push the providers accepted so far."""
        self.proc.stdin.write(b"received\n")
        await self.proc.stdin.drain()
        return [tuple(item) for item in json.loads(await self.proc.stdout.readline())]

    async def stop(self) -> None:
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        await asyncio.wait_for(self.proc.wait(), 30)


async def _main(args: argparse.Namespace) -> int:
    rounds: dict[str, list[dict]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        servers = await Providers().start(Path(tmp))
        try:
            for number in range(args.rounds):
                for mode in ("on", "off"):
                    data_dir = Path(tmp) / f"{mode}{number}"
                    data_dir.mkdir()
                    result = await _round(servers, data_dir, args, push=mode == "on")
                    rounds[mode].append(result)
                    print(f"round {number + 1} push {mode}: {json.dumps(_brief(result))}",
                          flush=True)
        finally:
            await servers.stop()
    best_on = max(rounds["on"], key=lambda r: r["pushes_per_s"])
    best_off = min(rounds["off"], key=lambda r: r["server_cpu_s"])
    pushes = best_on["pushes"]
    doc = {
        "scenario": "push", "size": args.size, "messages": args.messages,
        "pushes": pushes, "pushes_per_s": best_on["pushes_per_s"],
        "commit_to_push": best_on["commit_to_push"],
        "server_cpu_s_push_on": best_on["server_cpu_s"],
        "server_cpu_s_push_off": best_off["server_cpu_s"],
        "server_cpu_ms_per_push": round(
            1000 * max(0.0, best_on["server_cpu_s"] - best_off["server_cpu_s"]) / max(1, pushes), 3),
        "rounds": rounds, "machine": machine.describe(),
    }
    run_dir = args.out / time.strftime("%Y%m%d-%H%M%S-push")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps(doc, indent=2))
    latency = doc["commit_to_push"]
    print(f"\n{args.size} offline devices x {args.messages} messages: {pushes} pushes, "
          f"{doc['pushes_per_s']} pushes/s, commit -> push p50 {latency.get('p50_ms')} ms "
          f"p99 {latency.get('p99_ms')} ms, server CPU {doc['server_cpu_ms_per_push']} ms per "
          f"push (push on {doc['server_cpu_s_push_on']} s, off {doc['server_cpu_s_push_off']} s)"
          f"\nresults: {run_dir / 'result.json'}")
    return 0


def _copy(source, path: Path) -> None:
    with path.open("wb") as out:
        for line in source:
            out.write(line)


def _brief(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "commit_to_push"} | {
        "p50_ms": result["commit_to_push"].get("p50_ms"),
        "p99_ms": result["commit_to_push"].get("p99_ms")}


async def _round(servers, data_dir: Path, args: argparse.Namespace, *, push: bool) -> dict:
    env = {**os.environ, "SWITCHBOARD_AUTH_SECRET": SECRET, "SWITCHBOARD_METRICS_PORT": "0",
           **{f"SWITCHBOARD_{k}": v for k, v in LIMITS.items()}}
    if push:
        env.update(servers.environment, SWITCHBOARD_PUSH_INTERVAL=str(args.interval))
    proc = subprocess.Popen([sys.executable, "-m", "switchboard", "serve", "--port", "0",
                             "--data-dir", str(data_dir), "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        match = re.search(rb"ws://[\d.]+:(\d+)/", line)
        if not match:
            raise RuntimeError(f"the server did not start: {line!r}")
        url = f"ws://127.0.0.1:{int(match.group(1))}/v1/ws"
        log = data_dir / "server.log"  # drained, so a chatty server never blocks on its pipe
        drain = asyncio.ensure_future(asyncio.to_thread(_copy, proc.stdout, log))
        try:
            return await _load(servers, url, proc.pid, args, push)
        except BaseException:
            proc.terminate()
            await drain
            print(f"the server's last log lines:\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            proc.terminate()
            await drain
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _load(servers, url: str, pid: int, args: argparse.Namespace, push: bool) -> dict:
    tokens = TokenAuthority(SECRET.encode())
    prefix = os.urandom(3).hex()
    receivers = [f"r{prefix}{i}" for i in range(args.size)]
    device_token = {user: (("apns", f"{i:064x}") if i % 2 == 0 else ("fcm", f"fcm:{prefix}:{i}"))
                    for i, user in enumerate(receivers)}
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def register(user: str) -> None:
        async with gate:
            client = Client(url, tokens.mint(user, "phone", 3600))
            await client.connect()
            platform, token = device_token[user]
            await client.register_push(platform, token)
            await client.close()

    await asyncio.gather(*(register(user) for user in receivers))
    sender = Client(url, tokens.mint(f"s{prefix}", "phone", 3600))
    await sender.connect()
    chats = {}
    for start in range(0, len(receivers), 256):
        part = receivers[start:start + 256]
        infos = await asyncio.gather(*(sender.create_direct(user) for user in part))
        chats.update({info.chat_id: user for info, user in zip(infos, part)})
    acked_at: dict[str, float] = {}
    window = asyncio.Semaphore(IN_FLIGHT)

    async def send(chat_id: str, number: int) -> None:
        async with window:
            await sender.send(chat_id, b"burst message %d" % number)
        acked_at.setdefault(chat_id, time.monotonic())

    cpu_before = procfs.cpu_seconds(pid)
    started = time.monotonic()
    await asyncio.gather(*(send(chat_id, n) for n in range(args.messages) for chat_id in chats))
    sends_done = time.monotonic()
    expected = len(chats)  # at least one push per device
    received: list[tuple[float, str]] = []
    if push:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            received = [item for item in await servers.received() if item[1] in chats]
            if len(received) >= expected:
                break
            await asyncio.sleep(0.05)
        # the burst's coalesced pushes come an interval after the first ones
        await asyncio.sleep(args.interval + 1.0 if args.messages > 1 else 0.5)
        received = [item for item in await servers.received() if item[1] in chats]
    finished = time.monotonic()
    cpu = procfs.cpu_seconds(pid) - cpu_before
    await sender.close()
    fresh = sorted(received)
    latency = hist.new()
    first_push: dict[str, float] = {}
    for at, chat_id in fresh:
        first_push.setdefault(chat_id, at)
    for chat_id, at in first_push.items():
        if chat_id in acked_at:
            hist.record_ns(latency, int(max(0.0, at - acked_at[chat_id]) * 1e9))
    last = max((at for at, _ in fresh), default=finished)
    return {
        "push": push, "devices": len(chats), "messages_sent": len(chats) * args.messages,
        "pushes": len(fresh), "devices_pushed": len(first_push),
        "pushes_per_device": round(len(fresh) / max(1, len(first_push)), 2),
        "sends_s": round(sends_done - started, 3),
        # over the first wave (one push per device): the coalesced ones wait for the interval
        "pushes_per_s": round(len(first_push) / max(1e-9, max(first_push.values(), default=last)
                                                    - started), 1) if push else 0.0,
        "server_cpu_s": round(cpu, 3),
        "commit_to_push": {k: v for k, v in hist.summary(latency).items() if k != "hdr"},
    }
