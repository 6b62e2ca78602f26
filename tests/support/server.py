"""Test servers: an in-process Gateway on port 0, or a real `switchboard serve` subprocess
(for kill -9), both with fast timers so deadlines are reached in test time."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from switchboard.config import Config, load
from switchboard.core.auth import TokenAuthority
from switchboard.app import build_gateway

SECRET = "test-secret-" + "x" * 40

FAST = {
    "server.host": "127.0.0.1",
    "server.port": 0,
    "auth.secret": SECRET,
    "timers.tick": 0.05,
    "timers.heartbeat_interval": 2.0,
    "timers.idle_timeout": 5.0,
    "timers.retransmit_after": 1.0,
    "auth.timeout": 1.0,
    "metrics.port": 0,
    # per-user limits out of the way of set-ups that create, add and reconnect in bulk (the
    # limits' own tests set theirs)
    "limits.chats_per_minute": 100000.0,
    "limits.chat_burst": 100000.0,
    "limits.member_adds_per_minute": 1000000.0,
    "limits.member_add_burst": 1000000.0,
    "limits.history_per_second": 100000.0,
    "limits.history_burst": 100000.0,
    "limits.connects_per_minute": 100000.0,
    "limits.connect_burst": 100000.0,
}


def fast_config(data_dir: Path, **overrides) -> Config:
    values = dict(FAST)
    values["server.data_dir"] = str(data_dir)
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load(None, values, environ={})


class InProcessServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.gateway = build_gateway(config)
        self.tokens = TokenAuthority(config.secret_bytes())
        self.stopped = False

    async def start(self) -> "InProcessServer":
        await self.gateway.start()
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway.port}/v1/ws"

    def token(self, user: str, device: str = "phone", ttl: float = 3600) -> str:
        return self.tokens.mint(user, device, ttl)

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.gateway.stop()


class ServerProcess:
    """`python -m switchboard.cli serve` in a child process, killable with SIGKILL."""

    def __init__(self, data_dir: Path, port: int = 0, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.tokens = TokenAuthority(SECRET.encode())

    async def start(self) -> "ServerProcess":
        env = dict(os.environ, SWITCHBOARD_AUTH_SECRET=SECRET,
                   SWITCHBOARD_TIMERS_RETRANSMIT_AFTER="1.0", SWITCHBOARD_TIMERS_TICK="0.05",
                   SWITCHBOARD_METRICS_PORT="0",
                   **{"SWITCHBOARD_" + k.upper().replace(".", "_"): str(v)
                      for k, v in FAST.items() if k.startswith("limits.")})
        env.update(self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "switchboard.cli", "serve", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:  # a slow start on a loaded machine is waited for; a failed one leaves no process
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 90)
            match = re.search(rb"ws://[\d.]+:(\d+)/", line)
            assert match, f"server did not start: {line!r}"
        except BaseException:
            self.stop()
            raise
        self.port = int(match.group(1))
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def token(self, user: str, device: str = "phone", ttl: float = 3600) -> str:
        return self.tokens.mint(user, device, ttl)

    def rss_bytes(self) -> int:
        """The server process's resident set size, from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
