"""Where a server's time goes during the chat sweep (--profile).

py-spy samples the server process from outside (no change to the server, low overhead in its
--nonblocking mode: the server is not paused to take a sample). Samples are Python stacks, so
time inside C code (uvloop's loop and socket I/O, picows framing, protobuf, SQLite) is charged
to the Python frame that called it; per thread, the leaf frames are aggregated by function. With
the server's CPU seconds and the number of messages of the same window, a function's share
becomes microseconds per message, the figure that says what to move into native code next.

Without py-spy the server is started under cProfile instead (the bench cannot change the
server, so it wraps the interpreter: `python -m cProfile -o ... -m switchboard.cli serve`), and
the same summary is made from its per-function self times (event-loop thread only, the server's
whole life including start-up, and with cProfile's own overhead on every call).
"""
from __future__ import annotations

import asyncio
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

SAMPLE_RATE = 250
TOP = 25
_LINE = re.compile(r":\d+\)$")


def find_tool(name: str) -> str | None:
    """A command installed with this interpreter's packages (the venv's bin, found whether or
    not the venv is activated), else one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


class Profiler:
    def __init__(self, base: Path) -> None:
        self.pyspy = find_tool("py-spy")
        self.raw_path = base.with_suffix(".collapsed.txt")
        #: Set when the server must be started under cProfile (no py-spy here).
        self.cprofile_path = None if self.pyspy else base.with_suffix(".pstats")
        self._proc: subprocess.Popen | None = None
        self._log = base.with_suffix(".py-spy.log")

    async def start(self, pid: int | None) -> None:
        if self.pyspy is None or pid is None:
            return
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [self.pyspy, "record", "--pid", str(pid), "--format", "raw", "--rate",
                 str(SAMPLE_RATE), "--nonblocking", "--threads", "-o", str(self.raw_path)],
                stdout=log, stderr=subprocess.STDOUT)
        await asyncio.sleep(0.5)  # attached before the load starts

    async def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        await asyncio.to_thread(self._proc.wait, 60)

    def summary(self, server_cpu_s: float | None, messages: int) -> dict:
        """Shares of time by thread and by function (self time), with microseconds per
        message where the server's CPU time is known."""
        if self.raw_path.exists():
            tool, path = "py-spy", self.raw_path
            threads, functions = _collapsed(self.raw_path)
        elif self.cprofile_path is not None and self.cprofile_path.exists():
            tool, path = "cProfile", self.cprofile_path
            threads, functions = _pstats(self.cprofile_path)
        else:
            return {"tool": None, "path": None, "note": f"no profile was recorded (see {self._log})"}
        total = sum(functions.values()) or 1
        per_msg = server_cpu_s / messages * 1e6 if server_cpu_s and messages else None

        def entry(name: str, amount: float) -> dict:
            share = amount / total
            return {"name": name, "share": round(share, 4),
                    "us_per_msg": round(share * per_msg, 2) if per_msg else None}

        return {
            "tool": tool, "path": str(path), "messages": messages,
            "server_cpu_s": server_cpu_s, "server_cpu_us_per_msg": per_msg,
            "threads": [entry(n, a) for n, a in threads.most_common()],
            "functions": [entry(n, a) for n, a in functions.most_common(TOP)],
        }


def _collapsed(path: Path) -> tuple[Counter, Counter]:
    """py-spy raw output: 'thread (tid): name;frame;...;leaf count' per line."""
    threads, functions = Counter(), Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += int(count)
        functions[f"{thread}: {_LINE.sub(')', frames[-1])}"] += int(count)
    return threads, functions


def _pstats(path: Path) -> tuple[Counter, Counter]:
    stats = pstats.Stats(str(path))
    functions = Counter()
    for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items():
        functions[f"{name} ({Path(filename).name})"] += tottime
    return Counter({"MainThread": sum(functions.values())}), functions
