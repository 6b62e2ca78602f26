"""What a scenario runs with: the parsed options, the worker pool, the run directory, and the
targets it may start (Switchboard, started here or given by --target, and the peers)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from . import targets
from .gen import Pool


@dataclass
class Context:
    args: argparse.Namespace
    pool: Pool
    run_dir: Path
    prefix: str                      # makes user ids unique per run (a --target keeps state)
    notes: list[str] = field(default_factory=list)

    def switchboard(self, max_group_members: int = 1000,
                    cprofile: Path | None = None) -> targets.Target:
        """The Switchboard under test: the --target, or a fresh server in a temporary data
        dir (fresh per size, so memory figures do not carry over)."""
        args = self.args
        if args.target:
            return targets.ExternalSwitchboard(args.target, args.secret, args.server_pid)
        return targets.SpawnedSwitchboard(self.run_dir, max_group_members, cprofile,
                                          workers=args.server_workers)

    def peers(self) -> list[targets.Target]:
        found, notes = targets.peers(self.run_dir)
        for note in notes:
            if note not in self.notes:
                self.notes.append(note)
        return found

    def shard(self, items) -> list[list]:
        """Split items into one contiguous slice per worker (sizes differ by at most one)."""
        items = list(items)
        n = self.pool.size
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
