"""sd_notify over $NOTIFY_SOCKET: READY=1 once listening, WATCHDOG=1 from the event loop (and
none while the loop is stuck), STOPPING=1 when a drain begins; a no-op outside systemd."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

from switchboard.tools import sdnotify
from tests.ops.node import Node, NotifySocket
from tests.support.waiting import wait_for


async def test_ready_watchdog_and_stopping_reach_the_service_manager(tmp_path):
    systemd = NotifySocket(tmp_path / "notify.sock")
    node = Node(tmp_path / "data", env={"NOTIFY_SOCKET": str(systemd.path),
                                        "WATCHDOG_USEC": "200000"})
    try:
        await node.start()  # returns once "listening" is printed, which READY=1 follows at once
        await wait_for(lambda: "READY=1" in systemd.states(), timeout=5)
        assert any(s.startswith("STATUS=serving ws://") for s in systemd.states())
        await wait_for(lambda: systemd.states().count("WATCHDOG=1") >= 3, timeout=5)
        assert "STOPPING=1" not in systemd.states()

        node.signal(signal.SIGTERM)
        assert await node.wait(15) == 0
        states = systemd.states()
        assert states.index("READY=1") < states.index("STOPPING=1")
    finally:
        node.stop()
        systemd.close()


async def test_watchdog_pings_stop_while_the_loop_is_stuck(tmp_path, monkeypatch):
    systemd = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(systemd.path))
    watchdog = sdnotify.Watchdog(0.02)
    watchdog.start(asyncio.get_running_loop())
    def pings() -> int:
        return systemd.poll().count("WATCHDOG=1")
    try:
        await wait_for(lambda: pings() >= 3, timeout=10)
        before = pings()  # a ping is a datagram sent from the loop: any sent is here already
        time.sleep(0.3)  # the event loop is blocked: systemd would see WatchdogSec pass
        assert pings() == before
        await wait_for(lambda: pings() >= before + 2, timeout=10)  # the loop runs: pings resume
    finally:
        watchdog.stop()
        systemd.close()


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # armed for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sdnotify.watchdog_interval() is None


def test_abstract_socket_and_no_service_manager(monkeypatch):
    name = f"switchboard-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1", "STATUS=up")
        assert receiver.recv(100) == b"READY=1\nSTATUS=up"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.notify("READY=1") is False
