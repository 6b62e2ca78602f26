"""TCP keepalive: the kernel probes a silent connection, so dead peers are found and NAT mappings
refreshed with no user-space work (no timer, no syscall, no wake-up of the event loop).

A probe is an empty segment the peer's kernel answers with an ACK whatever its application is
doing; `count` probes unanswered `interval` apart and the kernel drops the connection
(ETIMEDOUT), which the event loop then reports like any lost connection. TCP_USER_TIMEOUT is set
to the same bound, so a peer that vanished while data to it was unacknowledged (a ping, a
delivery: keepalive waits while anything is in flight) is dropped within it too, not after the
kernel's ~15 minutes of retransmissions. What a probe cannot tell is a wedged application behind
a live kernel: the gateway's WebSocket ping (timers.heartbeat_interval) is for that.

The gateway sets the options on its listening sockets, which every accepted socket inherits from
(Linux copies them at accept), so a connection costs no extra system call; the SDK sets them on
the socket it connects. Options the platform lacks (TCP_KEEPIDLE is TCP_KEEPALIVE on macOS,
TCP_USER_TIMEOUT is Linux's) are skipped: keepalive then runs at the system's defaults.
"""
from __future__ import annotations

import socket
import sys
from dataclasses import dataclass

MAX_SECONDS = 32767  # the kernel's limit for TCP_KEEPIDLE and TCP_KEEPINTVL
MAX_COUNT = 127      # and for TCP_KEEPCNT
_IDLE_OPTION = getattr(socket, "TCP_KEEPIDLE", None) or (
    getattr(socket, "TCP_KEEPALIVE", None) if sys.platform == "darwin" else None)


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    """Whole seconds, as the kernel takes them. A live idle peer is probed every max(idle,
    interval) seconds (the kernel looks again `interval` after a probe), so keep interval
    under idle."""
    idle: int       # s of silence (nothing received) before the first probe
    interval: int   # s between unanswered probes
    count: int      # unanswered probes before the connection is dropped

    @property
    def bound(self) -> int:
        """Seconds after the last packet from a peer that vanished before the kernel drops its
        connection, plus the kernel's timer slack: its timer wheel rounds a long timer up by up
        to ~12 % (180 s: up to 16 s at HZ=250), and fires the timers of one bucket together."""
        return self.idle + self.interval * self.count

    def apply(self, sock) -> None:
        """Turn keepalive on for `sock` (a socket, or uvloop's stand-in for one)."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if _IDLE_OPTION is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _IDLE_OPTION, self.idle)
        for name, value in (("TCP_KEEPINTVL", self.interval), ("TCP_KEEPCNT", self.count),
                            ("TCP_USER_TIMEOUT", self.bound * 1000)):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
