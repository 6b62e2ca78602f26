"""Which driver reactor, and which shape of the bridge, switchboard/core/cql.py uses.

    python -m bench.cql_reactors [--ops 10000] [--concurrency 256] [--rounds 2]
    python -m bench.cql_reactors --target 127.0.0.1:9042 --server-pid 4242

Starts one dev Cassandra node (switchboard.tools.devcassandra, with the full JIT so the server
runs at its peak) unless `--target` names one. Then, for every reactor of the driver (libev,
asyncore, asyncio: its own loop on a thread of its own) and three shapes of the bridge, a child
process on uvloop runs `--ops` single-row prepared INSERTs with
`--concurrency` requests in flight, then as many SELECTs by primary key. Per phase it reports
ops/s, the client's CPU per op (the whole child: loop thread and reactor thread), the server's
CPU per op and the loop's lag (a 1 ms ticker: p99 and worst). The shapes, as sender/wake-up:

* thread/batched: what cql.py does: `Session.execute_async` on the session's sender thread,
  one `call_soon_threadsafe` per burst of completions;
* loop/batched: `execute_async` on the event loop's thread itself;
* thread/each: one `call_soon_threadsafe` per completion.

Rounds alternate the configurations, so a
noisy neighbour on the shared machine hits all of them alike; the table keeps each one's best
round. The figures go to bench/results/<timestamp>-cql-reactors/result.json with the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine, procfs

KEYSPACE = "bench_cql"
REACTORS = ("libev", "asyncore", "asyncio")
VARIANTS = ("thread/batched", "loop/batched", "thread/each")


def wake_each_completion(session) -> None:
    """The bridge without batching, for comparison: every completion wakes the loop."""
    def completed(outcome, waiter, response):
        session._done.append((waiter, response, outcome))
        session._loop.call_soon_threadsafe(session._drain)
    session._completed = completed


def send_on_the_loop(session) -> None:
    """The bridge without its sender thread, for comparison: the loop calls execute_async."""
    async def send(request, params, timeout, paging_state):
        await session._slots.acquire()
        waiter = session._loop.create_future()
        session._in_flight += 1
        session._idle.clear()
        response = session._session.execute_async(
            request, params, paging_state=paging_state,
            timeout=session.settings.request_timeout if timeout is None else timeout)
        response.add_callbacks(session._completed, session._completed,
                               callback_args=(waiter, response), errback_args=(waiter, None))
        return await waiter
    session._send = send


async def _phase(session, cql: str, ops: int, concurrency: int, server_pid: int | None,
                 first_key: int) -> dict:
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            before = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - before - 0.001)

    async def worker(start: int) -> None:
        for key in range(start, first_key + ops, concurrency):
            await session.execute(cql, (key, b"x" * 100) if "INSERT" in cql else (key,))

    tick = asyncio.create_task(ticker())
    cpu0, server0, t0 = _cpu(), _server_cpu(server_pid), time.monotonic()
    await asyncio.gather(*(worker(first_key + i) for i in range(concurrency)))
    elapsed, cpu, server = time.monotonic() - t0, _cpu() - cpu0, _server_cpu(server_pid) - server0
    running = False
    await tick
    lags.sort()
    return {"ops_per_s": ops / elapsed, "client_cpu_us_per_op": cpu / ops * 1e6,
            "server_cpu_us_per_op": server / ops * 1e6 if server_pid else None,
            "loop_lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000,
            "loop_lag_max_ms": lags[-1] * 1000}


async def _child(options: dict) -> dict:
    from switchboard.core.cql import CqlSettings, connect

    session = await connect(CqlSettings(hosts=(options["host"],), port=options["port"],
                                        reactor=options["reactor"]))
    if options["variant"] == "thread/each":
        wake_each_completion(session)
    elif options["variant"] == "loop/batched":
        send_on_the_loop(session)
    insert = f"INSERT INTO {KEYSPACE}.kv (k, v) VALUES (?, ?)"
    select = f"SELECT v FROM {KEYSPACE}.kv WHERE k = ?"
    ops, concurrency, pid = options["ops"], options["concurrency"], options["server_pid"]
    base = options["round"] * 10 * ops  # fresh keys each round
    await _phase(session, insert, 1000, concurrency, None, -10_000)  # warm-up: prepare, JIT
    result = {"insert": await _phase(session, insert, ops, concurrency, pid, base),
              "select": await _phase(session, select, ops, concurrency, pid, base)}
    await session.close()
    return result


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _server_cpu(pid: int | None) -> float:
    return procfs.sample(pid).cpu if pid else 0.0


def _run_child(options: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.cql_reactors", "--child",
                          json.dumps(options)], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"child {options['reactor']} {options['variant']} failed:\n"
                           f"{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _prepare_schema(host: str, port: int) -> None:
    from switchboard.core.cql import CqlSettings, connect

    async def create() -> None:
        session = await connect(CqlSettings(hosts=(host,), port=port))
        await session.execute(f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = "
                              "{'class': 'SimpleStrategy', 'replication_factor': 1}",
                              prepare=False)
        await session.execute(f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.kv "
                              "(k bigint PRIMARY KEY, v blob)", prepare=False)
        await session.close()
    asyncio.run(create())


def _table(best: dict) -> str:
    lines = [f"{'reactor':9} {'bridge':15} {'phase':6} {'ops/s':>8} {'client us/op':>13} "
             f"{'server us/op':>13} {'lag p99 ms':>11} {'lag max ms':>11}"]
    for (reactor, variant), phases in best.items():
        for phase, row in phases.items():
            server = row["server_cpu_us_per_op"]
            lines.append(f"{reactor:9} {variant:15} {phase:6} {row['ops_per_s']:8.0f} "
                         f"{row['client_cpu_us_per_op']:13.1f} "
                         f"{server if server is None else round(server, 1)!s:>13} "
                         f"{row['loop_lag_p99_ms']:11.1f} {row['loop_lag_max_ms']:11.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cql_reactors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=10000, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--target", help="HOST:PORT of a running node (default: start one)")
    parser.add_argument("--server-pid", type=int, help="its pid, for the server's CPU")
    parser.add_argument("--out", type=Path, help="result folder (default bench/results/...)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import uvloop
        print(json.dumps(uvloop.run(_child(json.loads(args.child)))))
        return 0

    from switchboard.tools.devcassandra import CassandraCluster

    node = None
    if args.target:
        host, port = args.target.rsplit(":", 1)
        port, server_pid = int(port), args.server_pid
    else:
        node = CassandraCluster(tempfile.mkdtemp(prefix="bench-cql-"), full_jit=True).start()
        host, port, server_pid = node.hosts[0], node.port, node.nodes[0].process.pid
    try:
        _prepare_schema(host, port)
        runs: dict[tuple[str, str], list[dict]] = {}
        for round_no in range(args.rounds):
            for reactor in REACTORS:
                for variant in VARIANTS:
                    options = {"host": host, "port": port, "reactor": reactor, "variant": variant,
                               "ops": args.ops, "concurrency": args.concurrency,
                               "server_pid": server_pid, "round": round_no}
                    runs.setdefault((reactor, variant), []).append(_run_child(options))
                    print(f"round {round_no + 1}: {reactor} {variant} done", file=sys.stderr)
    finally:
        if node is not None:
            node.stop(graceful=False)
            shutil.rmtree(node.directory, ignore_errors=True)
    best = {key: {phase: max((run[phase] for run in rounds), key=lambda r: r["ops_per_s"])
                  for phase in ("insert", "select")} for key, rounds in runs.items()}
    print(_table(best))
    out = args.out or (machine.REPO / "bench" / "results"
                       / f"{time.strftime('%Y%m%d-%H%M%S')}-cql-reactors")
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps({
        "options": {"ops": args.ops, "concurrency": args.concurrency, "rounds": args.rounds,
                    "target": args.target or "dev node, full JIT"},
        "best": {f"{r} {v}": phases for (r, v), phases in best.items()},
        "runs": {f"{r} {v}": rounds for (r, v), rounds in runs.items()},
        "table": _table(best), "machine": machine.describe()}, indent=2))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
