"""What one idle connection and one user of a peer cost a gateway's heap, by allocating line.

    python -m bench.conncost --connections 2000     # the connection itself
    python -m bench.conncost --peer-users 100000    # a peer's users in this node's maps
    python -m bench.conncost --churn 2000           # what closed connections leave behind

`--connections`: a gateway runs in this process (uvloop, tracemalloc on) and a child process
opens N bench devices against it (header token, Welcome, automatic sync) and keeps them; the
heap's growth from before the N to after them, divided by N, is printed by allocating line
(picows's and uvloop's C objects show under the asyncio runner's line, the only Python frame
they are made under). `--peer-users`: a peer's `Located` and `PresenceStates` snapshots of N
users, encoded and decoded as the mesh does, applied to the location map and the presence
registry as a clustered gateway wires them (one `RemoteUsers` for both). `hold` measures the
same costs as RSS over real workers; this says where they come from. `--churn`: N devices
open against a gateway with the server's collector settings (collector.settle), live long
enough to be frozen, and drop; once the timer wheel has let go of them, the Connection objects
still in memory are cyclic garbage a complete collection would have to find (none is the aim:
docs/architecture.md, "Timers").
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import tempfile
import tracemalloc
from multiprocessing.connection import Connection

from .soak import SECRET

WARMUP = 200
LINES = 25


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.conncost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=0)
    p.add_argument("--peer-users", type=int, default=0)
    p.add_argument("--churn", type=int, default=0)
    return p


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, what: str) -> None:
    stats = after.compare_to(before, "lineno")
    print(f"{sum(s.size_diff for s in stats) / n:,.0f} bytes per {what} (tracemalloc)")
    for stat in stats[:LINES]:
        if abs(stat.size_diff) >= n:  # a byte per unit or more
            frame = stat.traceback[0]
            print(f"  {stat.size_diff / n:8.1f} B {stat.count_diff / n:5.2f} blocks  "
                  f"{os.path.relpath(frame.filename)}:{frame.lineno}")


# ---------------------------------------------------------------------------- connections
def _devices(url: str, prefix: str, n: int, ready: Connection, done: Connection) -> None:
    """The child: n devices opened and kept until `done` says so."""
    async def run() -> None:
        from .gen import Endpoint
        endpoint = Endpoint("switchboard", url, SECRET)
        devices = [endpoint.device(f"{prefix}u{i}", f"{prefix}u{i}") for i in range(n)]
        slots = asyncio.Semaphore(32)

        async def one(device) -> None:
            async with slots:
                await device.open(endpoint, None)
                await device.opened()
        await asyncio.gather(*(one(device) for device in devices))
        ready.send(sum(device.connected for device in devices))
        await asyncio.get_running_loop().run_in_executor(None, done.recv)
    asyncio.run(run())


async def _gateway(**overrides):
    from switchboard.app import build_gateway
    from switchboard.config import load
    gw = build_gateway(load(None, {
        "server.host": "127.0.0.1", "server.port": 0, "server.data_dir": tempfile.mkdtemp(),
        "auth.secret": SECRET, "metrics.enabled": False, "log.level": "WARNING",
        "limits.connects_per_minute": 600_000.0, "limits.connect_burst": 100_000.0,
        **overrides}, environ={}))
    await gw.start()
    return gw


def _opener(gw, children: list):
    """opened(prefix, count): a child process opens `count` devices and keeps them until its
    pipe in `children` says done; returns how many connected."""
    spawn = multiprocessing.get_context("spawn")

    async def opened(prefix: str, count: int) -> int:
        ready, ready_in = spawn.Pipe(False)
        done_out, done = spawn.Pipe(False)
        child = spawn.Process(target=_devices, args=(f"ws://127.0.0.1:{gw.port}/v1/ws", prefix,
                                                     count, ready_in, done_out))
        child.start()
        children.append((child, done))
        got = await asyncio.get_running_loop().run_in_executor(None, ready.recv)
        await asyncio.sleep(1.0)  # the last syncs settle
        return got
    return opened


async def connections(n: int) -> None:
    gw = await _gateway()
    children = []
    opened = _opener(gw, children)
    try:
        await opened("w", WARMUP)  # one-time costs (imports, caches) before the baseline
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        got = await opened("c", n)
        gc.collect()
        after = tracemalloc.take_snapshot()
        print(f"{got} of {n} connected")
        report(before, after, n, "idle connection")
    finally:
        for child, done in children:
            done.send(None)
            child.join()
        await gw.stop()


async def churn(n: int) -> None:
    from switchboard import collector
    from switchboard.gateway.connection import Connection
    idle = 3.0
    gw = await _gateway(**{"timers.heartbeat_interval": 1.0, "timers.idle_timeout": idle})
    children = []
    opened = _opener(gw, children)
    try:
        collector.settle()
        frozen = gc.get_freeze_count()
        got = await opened("c", n)
        gc.collect(1)  # they lived: the freezer freezes what survives a middle collection
        for child, done in children:
            done.send(None)
            child.join()
        children.clear()
        while gw.hub.connections:
            await asyncio.sleep(0.1)
        await asyncio.sleep(idle + 1.0)  # every timer wheel entry of theirs has fired
        grown = gc.get_freeze_count() - frozen
        gc.unfreeze()
        left = sum(1 for obj in gc.get_objects() if type(obj) is Connection)
        print(f"{got} of {n} connected and dropped; then the frozen heap held {grown:,} more "
              f"objects than before them, {left} Connection objects were left for the cyclic "
              f"collector and a complete collection freed {gc.collect():,} objects")
    finally:
        for child, done in children:
            done.send(None)
            child.join()
        await gw.stop()


# ---------------------------------------------------------------------------- a peer's users
class _PeerLink:
    """What the location map reads of the link a frame came on (no barrier: nothing to ack)."""
    node_id = "worker-1"


def peer_users(n: int) -> None:
    from switchboard.core.remote_users import RemoteUsers
    from switchboard.gateway.presence_registry import PresenceRegistry
    from switchboard.proto.v1 import mesh_pb2 as mesh
    from switchboard.router.locations import Locations
    from switchboard.router.mesh import Mesh
    users = [f"peer-user-{i}" for i in range(n)]
    located = mesh.MeshFrame(located=mesh.Located(snapshot=True, here=users)).SerializeToString()
    presence = mesh.MeshFrame(presence=mesh.PresenceStates(snapshot=True, users=[
        mesh.UserPresence(user_id=user, online=True) for user in users])).SerializeToString()
    del users
    remote = RemoteUsers()
    locations = Locations(Mesh("worker-0", 0, None), lambda *kick: None, remote)
    registry = PresenceRegistry(lambda user: None, remote=remote)
    link = _PeerLink()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    locations.on_located(link, mesh.MeshFrame.FromString(located).located)
    for state in mesh.MeshFrame.FromString(presence).presence.users:
        registry.remote(link.node_id, state.user_id, state.online, state.last_seen_ms)
    gc.collect()
    report(before, tracemalloc.take_snapshot(), n, "user of a peer (location map and presence)")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.peer_users:
        peer_users(args.peer_users)
    if args.connections or args.churn:
        import uvloop
        uvloop.run(connections(args.connections) if args.connections else churn(args.churn))


if __name__ == "__main__":
    main()
