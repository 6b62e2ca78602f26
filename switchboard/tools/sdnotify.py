"""systemd's notify protocol, spoken directly: one datagram to $NOTIFY_SOCKET per state change.

The protocol is a few lines (sd_notify(3)), so no libsystemd binding is needed. Outside systemd
(no NOTIFY_SOCKET) every call is a no-op, so `switchboard serve` behaves the same in a terminal.

The watchdog pings from a callback on the event loop itself, at half of WatchdogSec: when the
loop is stuck, the pings stop and systemd kills and restarts the process; a thread would keep
pinging for a dead loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send states such as "READY=1", "STOPPING=1", "STATUS=..." to the service manager.
    False when there is none to tell (or it could not be reached: that is logged, not raised,
    since readiness reporting must never take the server down)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract-namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.send("\n".join(states).encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when no watchdog is
    armed for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        return None


class Watchdog:
    """Pings WATCHDOG=1 every `interval` seconds from the event loop until stopped."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ping()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ping(self) -> None:
        notify("WATCHDOG=1")
        self._handle = self._loop.call_later(self.interval, self._ping)
