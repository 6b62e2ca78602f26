"""Readings from /proc: what the kernel knows about a server process and about TCP sockets.

The bench reports server memory and CPU from outside the process, so it works the same for a
server it started, a server someone else started (--server-pid) and the peer relays, and needs
no cooperation from the code under test. Everything here is Linux-only and cheap enough to
sample every few milliseconds.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

PAGE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class ProcSample:
    """One process at one moment."""
    rss: int          # bytes resident now
    peak_rss: int     # bytes: VmHWM, the high-water mark since start or the last reset_peak()
    fds: int          # open file descriptors
    cpu: float        # seconds of user + system CPU since start, all threads

    def as_dict(self) -> dict:
        return asdict(self)


def total(samples: dict[str, ProcSample]) -> ProcSample:
    """Several processes as one: every field summed (a peak sum is an upper bound of the
    processes' joint peak, exact for one process)."""
    return ProcSample(rss=sum(s.rss for s in samples.values()),
                      peak_rss=sum(s.peak_rss for s in samples.values()),
                      fds=sum(s.fds for s in samples.values()),
                      cpu=sum(s.cpu for s in samples.values()))


def sample(pid: int) -> ProcSample:
    status = _status(pid)
    return ProcSample(rss=status["VmRSS"], peak_rss=status["VmHWM"], fds=len(os.listdir(f"/proc/{pid}/fd")),
                      cpu=cpu_seconds(pid))


def children(pid: int) -> list[int]:
    """The process's direct children (a supervisor's workers), oldest first."""
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return sorted(int(child) for child in fh.read().split())


def rss(pid: int) -> int:
    """Resident bytes now (the cheapest reading, for sampling loops)."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        # the command name may hold spaces; the fields after its closing parenthesis do not
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (clear_refs 5), so a phase can report its own peak.
    False when the kernel or the permissions do not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}/stat")


@dataclass(slots=True)
class KernelSockets:
    """System-wide TCP socket memory. Loopback benchmarks own both ends of every connection,
    so per-connection figures divide deltas by two sockets."""
    tcp_sockets: int        # allocated TCP sockets
    tcp_buffer_bytes: int   # sockstat "mem": pages held in socket buffers
    slab_bytes: int         # kernel slab (struct sock, inode, file, epoll item live here)
    listen_overflows: int   # accept queue was full (SYN dropped, the client retries ~1 s later)
    listen_drops: int

    def as_dict(self) -> dict:
        return asdict(self)


def kernel_sockets() -> KernelSockets:
    tcp: dict[str, int] = {}
    with open("/proc/net/sockstat") as fh:
        for line in fh:
            if line.startswith("TCP:"):
                parts = line.split()[1:]
                tcp = {parts[i]: int(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}
    slab = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("Slab:"):
                slab = int(line.split()[1]) * 1024
    ext = _netstat("TcpExt")
    return KernelSockets(tcp_sockets=tcp.get("alloc", 0), tcp_buffer_bytes=tcp.get("mem", 0) * PAGE,
                         slab_bytes=slab, listen_overflows=ext.get("ListenOverflows", 0),
                         listen_drops=ext.get("ListenDrops", 0))


@dataclass(slots=True)
class KernelTime:
    """System-wide, since boot: CPU seconds in softirq (all cores; where the kernel's TCP
    timers, keepalive probes included, and most packet input run) and keepalive probes sent
    (TcpExt TCPKeepAlive). Both count every process on the host, the generator's side of a
    loopback connection included."""
    softirq_s: float
    keepalive_probes: int


def kernel_time() -> KernelTime:
    with open("/proc/stat") as fh:
        cpu = fh.readline().split()  # "cpu user nice system idle iowait irq softirq ..."
    return KernelTime(softirq_s=int(cpu[7]) / CLOCK_TICKS,
                      keepalive_probes=_netstat("TcpExt").get("TCPKeepAlive", 0))


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def _netstat(section: str) -> dict[str, int]:
    with open("/proc/net/netstat") as fh:
        lines = [line.split() for line in fh if line.startswith(section + ":")]
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))
