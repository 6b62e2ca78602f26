"""The machine a run came from, stored with every result: a figure without its machine (CPU,
cores, Python, library versions, commit) cannot be compared with another one."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

#: Libraries whose version changes the figures: the server's stack, the peers' and the bench's.
PACKAGES = ("switchboard", "picows", "aiofastnet", "uvloop", "protobuf", "websockets", "redis",
            "hiredis", "hdrhistogram", "matplotlib", "pyjwt")

REPO = Path(__file__).resolve().parent.parent


def describe() -> dict:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {name: _version(name) for name in PACKAGES},
        "redis_server": _redis_server_version(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "fd_limit": _fd_limit(),
        "fsync_ms_p50": _fsync_ms(),
        "argv": sys.argv,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _redis_server_version() -> str | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.strip() or None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _fsync_ms(rounds: int = 21) -> float:
    """Median fsync of a 4 KiB append where a server started by the bench keeps its data (the
    temporary dir): every SendAck waits for one, so it is the floor of Switchboard's latency."""
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-fsync-") as path:
        fd = os.open(os.path.join(path, "probe"), os.O_WRONLY | os.O_CREAT)
        times = []
        try:
            for _ in range(rounds):
                os.write(fd, b"x" * 4096)
                start = time.perf_counter()
                os.fsync(fd)
                times.append(time.perf_counter() - start)
        finally:
            os.close(fd)
    return round(sorted(times)[rounds // 2] * 1000, 3)


def _fd_limit() -> int:
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
