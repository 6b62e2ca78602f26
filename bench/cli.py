"""`python -m bench <scenario>`: options, the run directory, the worker pool, and the output.

    python -m bench hold   --size 10000
    python -m bench chat   --size 100            # with the two peers (--no-peers to skip)
    python -m bench fanout --size 100,1000,10000
    python -m bench storm  --size 2000            # half of them get --messages (default 1) while away
    python -m bench cluster --size 60 --rate 400 --nodes 3
    python -m bench chat   --target 10.0.0.5:8765 --secret "$KEY" --server-pid 1234
    python -m bench chat   --store sqlite,scylla    # the same load on each store in turn

Without --target the bench starts `switchboard serve` itself (fresh data dir per size, rate
limits raised, group limit fitted to the fanout size) and stops it afterwards.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import signal
import sys
import time
from pathlib import Path

from . import machine, report, scenarios, targets
from .context import Context
from .gen import PER_WORKER, Pool


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=scenarios.NAMES)
    where = p.add_argument_group("target (default: start a server here)")
    where.add_argument("--target", metavar="HOST:PORT", help="a running Switchboard server")
    keys = where.add_mutually_exclusive_group()
    keys.add_argument("--secret", help="the target's auth.secret, to mint device tokens")
    keys.add_argument("--data-dir", type=Path,
                      help="the target's data dir (its development key, secret.key)")
    where.add_argument("--server-pid", type=int,
                       help="the target's pid, for server memory and CPU figures (/proc)")
    where.add_argument("--server-workers", type=int, default=1,
                       help="start the server as `serve --workers N`: N gateway processes on "
                            "one port forming one cluster (default 1: a single process)")
    where.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                       help="a setting for the server started here, as its environment "
                            "variable (e.g. SWITCHBOARD_CLUSTER_LINK_TIMEOUT=15); repeatable")
    where.add_argument("--nodes", type=int, default=3,
                       help="cluster: gateways of the cluster compared with one (default 3)")
    where.add_argument("--failover", action=argparse.BooleanOptionalAction, default=True,
                       help="cluster: also kill a Redis master under load (default on)")
    where.add_argument("--pause", action=argparse.BooleanOptionalAction, default=True,
                       help="cluster: also SIGSTOP a gateway with sends pending (default on)")
    where.add_argument("--rounds", type=int, default=3,
                       help="cluster: steady phases on each target, alternated (default 3)")
    where.add_argument("--store", default="sqlite",
                       help="comma-separated stores for the server started here, each measured "
                            "in turn: sqlite, scylla (default sqlite)")
    where.add_argument("--cql", metavar="HOST[,HOST...]:PORT",
                       help="scylla: a running ScyllaDB or Cassandra cluster (each server gets "
                            "a fresh keyspace, RF 1); default: a Cassandra dev node started "
                            "for the run (switchboard.tools.devcassandra)")
    size = p.add_argument_group("size and load")
    size.add_argument("--size", help="comma-separated sizes, each run in turn (hold: "
                                     "connections, chat: pairs, fanout: group members, storm: "
                                     "devices); default per scenario")
    size.add_argument("--messages", type=int, help="storm: messages waiting for each of the "
                                                   "messaged half (default 1); fanout: sends "
                                                   "(default 50)")
    size.add_argument("--duration", type=float, default=3.0,
                      help="chat: seconds per load step; hold: seconds to hold (default 3)")
    size.add_argument("--loads", default="0.1,0.25,0.5,0.75,0.9,1.0",
                      help="chat: offered loads as fractions of the measured saturation")
    size.add_argument("--probe-duration", type=float, default=0.0,
                      help="chat: seconds of the saturation probe (default: --duration); short, "
                           "a --trace-hops or --profile run is mostly the steps'")
    size.add_argument("--rates", type=_rates, default=None,
                      help="chat: offered loads in messages/s instead of --loads (the same load "
                           "for every target and run, to compare two builds)")
    size.add_argument("--reconnect", action=argparse.BooleanOptionalAction, default=True,
                      help="hold: after holding, close every device and open it again (the "
                           "known-device handshake; default on)")
    size.add_argument("--device-ping", type=float, default=0.0, metavar="S",
                      help="hold: devices ping the server after S seconds without a frame from "
                           "it, as an app's WebSocket library may (OkHttp's pingInterval, "
                           "picows's auto-ping); default 0: they only answer its pings")
    size.add_argument("--device-keepalive", type=int, default=0, metavar="S",
                      help="hold: devices turn kernel TCP keepalive on with this idle time "
                           "(the SDK's default: 180 s; its interval scaled alike); default 0: "
                           "off, only the server's probes")
    size.add_argument("--rate", type=float, default=400.0,
                      help="cluster: messages/s offered to each target, open loop (default 400)")
    size.add_argument("--load", type=float, default=0.0,
                      help="cluster: offer this fraction of the single gateway's capacity, "
                           "measured first by a closed-loop probe, instead of --rate")
    size.add_argument("--soak", type=float, default=0.0,
                      help="cluster: then the cluster alone under the same load for this many "
                           "seconds, counting registry timeouts (default 0: none)")
    size.add_argument("--window", type=int, default=0,
                      help="chat: messages in flight per direction in the saturation probe "
                           "(default: 1024 in flight in all)")
    size.add_argument("--body", type=int, default=64, help="message body bytes (default 64)")
    size.add_argument("--peers", action=argparse.BooleanOptionalAction, default=None,
                      help="also run the peer relays (chat; default on for chat)")
    size.add_argument("--ws-redis-workers", type=_counts, default=[targets.WS_REDIS_WORKERS],
                      help="processes of the ws-redis-relay peer; comma-separated to run it once "
                           f"per count (default {targets.WS_REDIS_WORKERS})")
    gen = p.add_argument_group("generator")
    gen.add_argument("--workers", type=int, default=0,
                     help="generator processes (default: 2, more when the size needs them)")
    gen.add_argument("--source-addrs", type=int, default=0,
                     help="client sockets bind to 127.0.0.1..N round-robin (loopback targets; "
                          "default: 8, or one per worker when there are more workers, so each "
                          "worker has ~28,000 ephemeral ports of its own)")
    gen.add_argument("--connect-concurrency", type=int, default=32,
                     help="handshakes in flight per worker (default 32: the servers listen "
                          "with asyncio's default backlog of 100)")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="results root (default bench/results/runs, "
                                               "ignored by git)")
    out.add_argument("--profile", action="store_true",
                     help="chat, fanout: profile the server started here with py-spy (chat: or "
                          "cProfile; fanout: over the sends only)")
    out.add_argument("--trace-hops", action="store_true",
                     help="cluster, chat: time every message at each hop in the servers (debug: "
                          "costs CPU per message) and report where it waited (bench/hoptrace)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    scenario = scenarios.load(args.scenario)
    try:
        _resolve(args, scenario)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    import uvloop
    try:
        return uvloop.run(_main(args, scenario))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; the servers it started were stopped", file=sys.stderr)
        return 130


def _rates(text: str) -> list[float]:
    """A comma-separated list of rates in messages/s, each above 0."""
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"rates are above 0: {text!r}")
    return rates


def _counts(text: str) -> list[int]:
    """A comma-separated list of process counts, each 1 or more."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"process counts are 1 or more: {text!r}")
    return counts


def _resolve(args: argparse.Namespace, scenario) -> None:
    """Fill per-scenario defaults and check what the options cannot check by themselves."""
    args.sizes = [int(s) for s in args.size.split(",")] if args.size else list(scenario.DEFAULT_SIZES)
    args.loads = [float(f) for f in args.loads.split(",")]
    if args.peers is None:
        args.peers = bool(scenario.PEERS_DEFAULT)
    elif args.peers and scenario.PEERS_DEFAULT is None:
        raise ValueError(f"the peer relays are 1:1 only: --peers does not apply to {scenario.NAME}")
    if args.messages is None:
        args.messages = {"storm": 1, "fanout": 50}.get(scenario.NAME, 0)
    if args.target:
        if args.data_dir:
            args.secret = (args.data_dir / "secret.key").read_text().strip()
        if not args.secret:
            raise ValueError("--target needs --secret or --data-dir to mint device tokens")
    elif args.secret or args.data_dir or args.server_pid:
        raise ValueError("--secret, --data-dir and --server-pid only apply with --target")
    if scenario.NAME == "cluster" and args.target:
        raise ValueError("cluster starts its own servers: --target does not apply")
    if not 0 <= args.load <= 1 or args.soak < 0:
        raise ValueError("--load is a fraction of the capacity (0 < F <= 1) and --soak seconds "
                         "(>= 0)")
    if (args.load or args.soak) and scenario.NAME != "cluster":
        raise ValueError("--load and --soak apply to the cluster scenario only")
    if args.trace_hops and scenario.NAME not in ("cluster", "chat"):
        raise ValueError("--trace-hops applies to the cluster and chat scenarios only")
    args.stores = [s.strip() for s in args.store.split(",") if s.strip()]
    unknown = sorted(set(args.stores) - {"sqlite", "scylla"})
    if unknown or not args.stores:
        raise ValueError(f"--store: sqlite and/or scylla, not {', '.join(unknown) or 'nothing'}")
    if args.target and args.stores != ["sqlite"]:
        raise ValueError("--store picks the store of a server started here, not of a --target")
    if args.cql and "scylla" not in args.stores:
        raise ValueError("--cql needs --store scylla")
    if scenario.NAME == "cluster" and args.stores != ["sqlite"]:
        raise ValueError("cluster: its gateways share one SQLite file (--store sqlite)")
    connections = max(args.sizes) * (2 if scenario.NAME in ("chat", "cluster") else 1)
    needed = getattr(scenario, "min_workers", lambda size: math.ceil(size / PER_WORKER))
    args.workers = max(args.workers or 2, math.ceil(connections / PER_WORKER),
                       needed(max(args.sizes)))
    args.source_addrs = args.source_addrs or max(8, args.workers)
    if any("=" not in item or not item.startswith("SWITCHBOARD_") for item in args.server_env):
        raise ValueError("--server-env takes SWITCHBOARD_<SECTION>_<KEY>=VALUE")
    if args.server_env and args.target:
        raise ValueError("--server-env sets up a server started here, not a --target")


async def _main(args: argparse.Namespace, scenario) -> int:
    # SIGTERM unwinds like Ctrl-C, so the servers this run started are stopped, not orphaned
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    run_dir = report.new_run_dir(args.out, scenario.NAME)
    started = time.time()
    async with Pool(args.workers, args.source_addrs) as pool:
        ctx = Context(args, pool, run_dir, prefix=secrets.token_hex(3))
        try:
            runs = [await scenario.run(ctx, size) for size in args.sizes]
        finally:
            await ctx.close()
    doc = {
        "scenario": scenario.NAME,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                    if k not in ("secret", "size")},
        "machine": machine.describe(),
        "notes": ctx.notes,
        "runs": runs,
    }
    report.write_json(run_dir / "result.json", doc)
    files = scenario.plots(doc, run_dir)
    headers, rows = scenario.rows(doc)
    print(report.table(headers, rows))
    for line in scenario.summary(doc) + ctx.notes:
        print(line)
    m = doc["machine"]
    print(f"machine: {m['cpu_model']}, {m['cores']} cores, {m['python']}, "
          f"commit {(m['git_commit'] or '?')[:10]}{' (dirty)' if m['git_dirty'] else ''}")
    print(f"results: {run_dir}/result.json and {len(files)} plots")
    return 0
