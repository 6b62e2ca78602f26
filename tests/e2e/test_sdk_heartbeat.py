"""The SDK's idle rule (docs/protocol.md 8.8a) against a WebSocket server whose heartbeat the
test sets, over real sockets: a server that pings on time is never pinged back (one exchange per
interval, the server's); a late one is pinged; one that answers nothing is left."""
from __future__ import annotations

import asyncio

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

from switchboard.client import Client, sdk
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.raw import OPEN_CLIENTS
from tests.support.waiting import wait_for


class Heartbeat(WSListener):
    """A server that says Welcome with `interval_ms`, pings every `every` s (None: never) and
    answers the client's pings if `answers`; it counts what it gets."""

    def __init__(self, interval_ms: int, every: float | None, answers: bool) -> None:
        super().__init__()
        self.interval_ms, self.every, self.answers = interval_ms, every, answers
        self.client_pings = 0
        self.client_pongs = 0
        self.disconnected = asyncio.Event()
        self._ping: asyncio.TimerHandle | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        welcome = pb.Welcome(user_id="alice", device_id="phone",
                             heartbeat_interval_ms=self.interval_ms, idle_timeout_ms=120_000)
        transport.send(WSMsgType.BINARY, pb.ServerFrame(welcome=welcome).SerializeToString())
        if self.every is not None:
            self._ping_every(transport)

    def _ping_every(self, transport: WSTransport) -> None:
        transport.send_ping()
        self._ping = asyncio.get_running_loop().call_later(self.every, self._ping_every, transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.PING:
            self.client_pings += 1
            if self.answers:
                transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.PONG:
            self.client_pongs += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._ping is not None:
            self._ping.cancel()
        self.disconnected.set()


async def serve(listener: Heartbeat) -> tuple[asyncio.Server, Client]:
    server = await ws_create_server(lambda request: listener, "127.0.0.1", 0,
                                    enable_auto_pong=False)
    port = server.sockets[0].getsockname()[1]
    client = Client(f"ws://127.0.0.1:{port}/v1/ws", "token", reconnect=False)
    OPEN_CLIENTS.append(client)
    await client.connect()
    return server, client


async def test_a_server_that_pings_on_time_is_never_pinged_back():
    """20 heartbeats at 0.1 s: the client answers each and sends no ping of its own (it would
    only after 0.1 s + IDLE_GRACE of silence)."""
    listener = Heartbeat(interval_ms=100, every=0.1, answers=True)
    server, client = await serve(listener)
    try:
        await wait_for(lambda: listener.client_pongs >= 20, timeout=30, message="20 pongs")
        assert listener.client_pings == 0
        assert client.connected
    finally:
        await client.close()
        server.close()


async def test_a_late_server_is_pinged_and_kept_while_it_answers(monkeypatch):
    monkeypatch.setattr(sdk, "IDLE_GRACE", 0.1)
    monkeypatch.setattr(sdk, "PING_REPLY_TIMEOUT", 0.5)
    listener = Heartbeat(interval_ms=100, every=None, answers=True)
    server, client = await serve(listener)
    try:
        await wait_for(lambda: listener.client_pings >= 3, timeout=30, message="3 idle pings")
        assert client.connected and client.stats.silent_drops == 0
    finally:
        await client.close()
        server.close()


async def test_a_server_that_answers_nothing_is_left(monkeypatch):
    monkeypatch.setattr(sdk, "IDLE_GRACE", 0.1)
    monkeypatch.setattr(sdk, "PING_REPLY_TIMEOUT", 0.2)
    listener = Heartbeat(interval_ms=100, every=None, answers=False)
    server, client = await serve(listener)
    try:
        await asyncio.wait_for(listener.disconnected.wait(), 30)
        assert listener.client_pings >= 1
        assert client.stats.silent_drops == 1
        assert not client.connected
    finally:
        await client.close()
        server.close()
