"""Known-device reconnects in a loop, for profiling the handshake: CPU per handshake of the
server and of the generator, apart.

    python -m bench.handshakes --devices 3000 --rounds 3 [--server-workers N] [--py-spy OUT]

Starts `serve --port 0` (or `--workers N` on a fixed port) in a temporary data dir; `--gens`
generator processes (each from its own 127.0.0.x source address) connect every device once
(new devices), then close and reconnect them `--rounds` times with the tokens they had (known
devices: admitted by a read, token remembered by the worker that verified it). Each phase
prints its rate, the server's CPU per handshake (all its processes, from /proc; also net of
the idle CPU measured for 5 s before, which matters with many workers) and the generator's
(process time of its processes); with workers, also what the mesh between them carried per
handshake (writes and reads over every link of every worker, from their /metrics) and how many
arrivals one Located frame carried. `--py-spy OUT` samples the last server process during the
last round (`--gil`: only the thread holding the GIL, so waits in C are not counted) into a
raw py-spy file, for `python -m bench.handshakes --top OUT`.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from switchboard.tools.devcluster import free_run

from .device import SwitchboardDevice
from .gen import Endpoint
from .procfs import cpu_seconds
from .profile import find_tool
from .targets import MESH_COUNTERS, SERVER_ENV

IDLE_SECONDS = 5.0


def _generator(index: int, count: int, url: str, secret: str, concurrency: int,
               commands: mp.Queue, results: mp.Queue) -> None:
    endpoint = Endpoint("switchboard", url, secret)
    devices = [SwitchboardDevice(f"u{index}-{i}") for i in range(count)]

    async def main() -> None:
        gate = asyncio.Semaphore(concurrency)
        local = (f"127.0.0.{2 + index}", 0)

        async def open_one(device) -> None:
            async with gate:
                await device.open(endpoint, local)
        while (command := await asyncio.to_thread(commands.get)) != "stop":
            cpu = time.process_time()
            if command == "open":
                outcome = await asyncio.gather(*(open_one(d) for d in devices),
                                               return_exceptions=True)
                errors = [repr(e) for e in outcome if isinstance(e, Exception)]
            else:
                await asyncio.gather(*(d.close() for d in devices))
                errors = []
            results.put((time.process_time() - cpu, errors[:3], len(errors)))
    asyncio.run(main())


def run(args: argparse.Namespace) -> None:
    secret = secrets.token_urlsafe(48)
    data = tempfile.TemporaryDirectory(prefix="switchboard-handshakes-")
    env = dict(os.environ, SWITCHBOARD_AUTH_SECRET=secret, **SERVER_ENV,
               SWITCHBOARD_CLUSTER_REBALANCE_INTERVAL="0",
               SWITCHBOARD_CLUSTER_ACCEPTABLE_PAUSE="30", SWITCHBOARD_CLUSTER_LINK_TIMEOUT="60")
    argv = [sys.executable, "-m", "switchboard.cli", "serve", "--data-dir", data.name,
            "--log-level", "WARNING", "--port", "0"]
    if args.server_workers > 1:
        env["SWITCHBOARD_CLUSTER_MESH_PORT"] = str(free_run(args.server_workers + 1))
        argv[-1] = str(int(env["SWITCHBOARD_CLUSTER_MESH_PORT"]) + args.server_workers)
        argv += ["--workers", str(args.server_workers)]
    log_path = os.path.join(data.name, "server.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = _listening(log_path)
        pids = [server.pid] + [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()]
        metrics = (re.findall(r"metrics on (http://\S+/metrics)", open(log_path).read())
                   if args.server_workers > 1 else [])
        _rounds(args, url, secret, pids, metrics)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        data.cleanup()


def _listening(log_path: str) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        match = re.search(r"listening on (ws://\S+?/v1/ws)", open(log_path).read())
        if match:  # with --workers the supervisor prints it once every worker serves
            return match.group(1)
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start:\n{open(log_path).read()[-2000:]}")


def _mesh_counters(metrics: list[str]) -> Counter[str]:
    """MESH_COUNTERS summed over the workers' /metrics (those a server does not export: 0)."""
    totals: Counter[str] = Counter()
    for address in metrics:
        body = urllib.request.urlopen(address, timeout=10).read().decode()
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name in MESH_COUNTERS:
                    totals[sample.name] += sample.value
    return totals


def _rounds(args, url: str, secret: str, pids: list[int], metrics: list[str]) -> None:
    queues = [(mp.Queue(), mp.Queue()) for _ in range(args.gens)]
    each = args.devices // args.gens
    gens = [mp.Process(target=_generator, args=(i, each, url, secret, args.concurrency, *q))
            for i, q in enumerate(queues)]
    for gen in gens:
        gen.start()
    n = each * args.gens
    before = sum(cpu_seconds(p) for p in pids)
    time.sleep(IDLE_SECONDS)
    idle = (sum(cpu_seconds(p) for p in pids) - before) / IDLE_SECONDS
    print(f"server idle: {idle * 100:.1f} % of a core")

    def phase(command: str, label: str) -> None:
        mesh = _mesh_counters(metrics)
        cpu, start = sum(cpu_seconds(p) for p in pids), time.monotonic()
        for commands, _ in queues:
            commands.put(command)
        outcomes = [results.get() for _, results in queues]
        wall, cpu = time.monotonic() - start, sum(cpu_seconds(p) for p in pids) - cpu
        failed = sum(o[2] for o in outcomes)
        print(f"{label}: {n} in {wall:.2f} s = {n / wall:,.0f}/s; CPU per handshake: server "
              f"{cpu / n * 1e3:.3f} ms (net of idle {(cpu - idle * wall) / n * 1e3:.3f}), "
              f"generator {sum(o[0] for o in outcomes) / n * 1e3:.3f} ms"
              + (f"; {failed} failed: {outcomes[0][1]}" if failed else ""), flush=True)
        if metrics and command == "open":
            mesh = _mesh_counters(metrics) - mesh
            frames = mesh["switchboard_cluster_located_frames_total"]
            peers = len(metrics) - 1
            arrivals = mesh["switchboard_cluster_located_arrivals_total"] * peers
            print(f"  mesh per handshake: {mesh['switchboard_cluster_mesh_writes_total'] / n:.1f} "
                  f"writes, {mesh['switchboard_cluster_mesh_reads_total'] / n:.1f} reads"
                  + (f"; {arrivals / frames:.1f} arrivals per Located frame" if frames else ""),
                  flush=True)

    phase("open", "new")
    spy = None
    for r in range(args.rounds):
        phase("close", "  close")
        time.sleep(0.5)
        if r == args.rounds - 1 and args.py_spy:
            spy = subprocess.Popen(
                [find_tool("py-spy") or "py-spy", "record", "-p", str(pids[-1]), "-r", "200",
                 "-f", "raw", "-o", args.py_spy, "--nonblocking", "--gil"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        phase("open", f"known {r + 1}")
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    for commands, _ in queues:
        commands.put("stop")
    for gen in gens:
        gen.join(30)


def top(path: str, count: int = 30) -> None:
    """Functions by own samples, then by samples including callees, from a raw py-spy file."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in open(path):
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        samples += int(n)
        own[frames[-1]] += int(n)
        for frame in set(frames):
            total[frame] += int(n)
    print(f"{samples} samples")
    for title, counter in (("own", own), ("including callees", total)):
        print(f"-- {title}")
        for frame, n in counter.most_common(count):
            print(f"{n / samples * 100:5.1f} %  {frame}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.handshakes", description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--gens", type=int, default=2, help="generator processes")
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight per generator")
    p.add_argument("--server-workers", type=int, default=1)
    p.add_argument("--py-spy", metavar="OUT", help="sample the server during the last round")
    p.add_argument("--top", metavar="RAW", help="summarise a raw py-spy file and exit")
    args = p.parse_args()
    if args.top:
        top(args.top)
    else:
        run(args)


if __name__ == "__main__":
    main()
