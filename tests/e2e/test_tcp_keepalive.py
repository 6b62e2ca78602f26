"""Kernel TCP keepalive over real sockets (docs/protocol.md 8.8): the gateway drops a device that
vanished within timers.tcp_keepalive_idle + interval x count, keeps an idle one whose kernel
answers the probes, and the SDK's own keepalive finds a vanished server the same way.

A vanished peer is one end made deaf (tests/support/blackhole.py): it receives nothing more, so it
answers nothing, as when the network between the two has gone. The application's heartbeat is
set far beyond each test's length, so only the kernel can explain what happens."""
from __future__ import annotations

import socket
import struct
import time

from switchboard.client import Client, TcpKeepalive
from tests.support.blackhole import drop_incoming
from tests.support.raw import OPEN_CLIENTS
from tests.support.waiting import wait_for

PROBING = TcpKeepalive(idle=1, interval=1, count=2)
KEEPALIVE = {"timers__tcp_keepalive_idle": PROBING.idle,
             "timers__tcp_keepalive_interval": PROBING.interval,
             "timers__tcp_keepalive_count": PROBING.count}
QUIET_APP = {"timers__heartbeat_interval": 600.0, "timers__idle_timeout": 1200.0}
# The kernel's timer slack at these lengths is well under a second; the rest is for the event
# loop of a loaded machine to hear of the drop
SLACK = 5.0


def socket_of(transport) -> socket.socket:
    return transport.underlying_transport.get_extra_info("socket")


def ms_since_data_and_ack(sock) -> tuple[int, int]:
    """From the kernel's tcp_info: ms since the last data, and since the last ACK, received."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    fields = struct.unpack_from("8B13I", info)
    return fields[8 + 11], fields[8 + 12]


async def connected(server, **options) -> Client:
    client = Client(server.url, server.token("alice"), **options)
    OPEN_CLIENTS.append(client)
    await client.connect()
    await wait_for(lambda: server.gateway.hub.connections == 1)
    return client


async def test_the_gateway_drops_a_vanished_device_within_the_bound(make_server):
    server = await make_server(**KEEPALIVE, **QUIET_APP)
    client = await connected(server, reconnect=False, tcp_keepalive=None)
    drop_incoming(socket_of(client._listener.transport))
    vanished = time.monotonic()
    await wait_for(lambda: server.gateway.hub.connections == 0, timeout=PROBING.bound + 60,
                   message="the gateway dropping the vanished device")
    took = time.monotonic() - vanished
    assert took <= PROBING.bound + SLACK, f"dropped after {took:.1f}s, bound {PROBING.bound}s"


async def test_a_live_idle_device_is_kept_by_its_answers_to_the_probes(make_server):
    server = await make_server(**KEEPALIVE, **QUIET_APP)
    client = await connected(server, reconnect=False, tcp_keepalive=None)
    [conn] = server.gateway.hub.all()
    sock = socket_of(conn.session.transport)
    # nothing from the device's application for twice the bound: the probes' answers alone kept
    # the connection (an unanswered probe would have had it dropped by now)
    await wait_for(lambda: ms_since_data_and_ack(sock)[0] >= 2 * PROBING.bound * 1000,
                   timeout=2 * PROBING.bound + 60, message="twice the bound without data")
    since_data, since_ack = ms_since_data_and_ack(sock)
    assert since_ack < since_data - 1000, "no probe answered since the last data"
    assert server.gateway.hub.connections == 1
    pong = await client.ping()
    assert pong.server_time_ms > 0


async def test_the_sdk_leaves_a_vanished_server_within_the_bound(make_server):
    server = await make_server(**QUIET_APP)  # the gateway's own probes at their default, 180 s
    closes = []
    client = await connected(server, tcp_keepalive=PROBING,
                             on_close=lambda code, reason: closes.append(code))
    drop_incoming(socket_of(client._listener.transport))
    vanished = time.monotonic()
    await wait_for(lambda: closes, timeout=PROBING.bound + 60,
                   message="the SDK dropping the silent connection")
    took = time.monotonic() - vanished
    assert took <= PROBING.bound + SLACK, f"dropped after {took:.1f}s, bound {PROBING.bound}s"
    assert closes == [1006]
    await wait_for(lambda: client.stats.reconnects == 1, message="the SDK reconnecting")
    assert (await client.ping()).server_time_ms > 0
