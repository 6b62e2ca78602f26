"""What a scenario runs with: the parsed options, the worker pool, the run directory, and the
targets it may start (Switchboard, started here or given by --target, and the peers)."""
from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import targets
from .gen import Pool


@dataclass
class Context:
    args: argparse.Namespace
    pool: Pool
    run_dir: Path
    prefix: str                      # makes user ids unique per run (a --target keeps state)
    notes: list[str] = field(default_factory=list)
    _cassandra: Any = None           # the dev node started for --store scylla without --cql
    _cassandra_dir: Any = None       # its data, gone with the run

    def switchboard(self, max_group_members: int = 1000, cprofile: Path | None = None,
                    store: str | None = None) -> targets.Target:
        """The Switchboard under test: the --target, or a fresh server in a temporary data
        dir (fresh per size, so memory figures do not carry over) on `store` (default: the
        first of --store)."""
        args = self.args
        if args.target:
            return targets.ExternalSwitchboard(args.target, args.secret, args.server_pid)
        return targets.SpawnedSwitchboard(self.run_dir, max_group_members, cprofile,
                                          workers=args.server_workers,
                                          store=store or args.stores[0], cql=self.cql,
                                          env=dict(item.split("=", 1) for item in args.server_env))

    def switchboards(self, cprofile: Path | None = None) -> list[targets.Target]:
        """One Switchboard per --store (the profile, if any, is the first one's)."""
        if self.args.target:
            return [self.switchboard(cprofile=cprofile)]
        return [self.switchboard(cprofile=cprofile if i == 0 else None, store=store)
                for i, store in enumerate(self.args.stores)]

    async def cql(self) -> tuple[list[str], int]:
        """Where the scylla store's server connects: --cql, or a dev node started once for
        the whole run (full JIT: it serves the measurement, not a quick test)."""
        if self.args.cql:
            hosts, _, port = self.args.cql.rpartition(":")
            return hosts.split(","), int(port)
        if self._cassandra is None:
            from switchboard.tools.devcassandra import CassandraCluster
            self._cassandra_dir = tempfile.TemporaryDirectory(prefix="bench-cassandra-")
            node = CassandraCluster(self._cassandra_dir.name, 1, full_jit=True, heap_mb=1024)
            await asyncio.to_thread(node.start)
            self._cassandra = node
            self.notes.append("scylla store: a Cassandra 5.0 dev node on this machine, sharing "
                              "its cores with the server and the generator (RF 1)")
        return self._cassandra.hosts, self._cassandra.port

    async def close(self) -> None:
        if self._cassandra is not None:
            await asyncio.to_thread(self._cassandra.stop, graceful=False)  # data is thrown away
            self._cassandra = None
            self._cassandra_dir.cleanup()

    def peers(self) -> list[targets.Target]:
        found, notes = targets.peers(self.run_dir, self.args.ws_redis_workers)
        for note in notes:
            if note not in self.notes:
                self.notes.append(note)
        return found

    def shard(self, items, parts: int | None = None) -> list[list]:
        """Split items into one contiguous slice per worker, or into `parts` slices (sizes
        differ by at most one)."""
        items = list(items)
        n = parts or self.pool.size
        base, extra = divmod(len(items), n)
        out, start = [], 0
        for i in range(n):
            end = start + base + (1 if i < extra else 0)
            out.append(items[start:end])
            start = end
        return out

    def common(self, target: targets.Target) -> dict:
        """Worker kwargs every scenario passes."""
        return {"endpoint": target.endpoint, "body_size": self.args.body,
                "concurrency": self.args.connect_concurrency}
