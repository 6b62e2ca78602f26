"""The client listener: picows's WebSocket server, with the peer's address at the upgrade.

picows hands the listener factory the upgrade request alone, but the pre-auth limits
(preauth.py) are per source address and must answer at the upgrade (HTTP 429/503). So each
accepted socket gets a protocol whose listener factory knows that socket's peer. Otherwise this
builds the protocol exactly as picows.ws_create_server does, except for pings, both ways (no
auto-ping: the gateway's timer wheel pings; no auto-pong: the session answers a device's ping,
which picows would answer without telling it, so that the ping counts as the device's activity),
and for its logger: picows gives each connection a child
logging.Logger of its own when handed a Logger (about 1 KiB per connection, kept for the
connection's life), and none when handed a LoggerAdapter, which logs to the same logger.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from picows import WSAutoPingStrategy, WSUpgradeRequest
from picows.picows import WSProtocol

from switchboard.keepalive import TcpKeepalive

ListenerFor = Callable[[WSUpgradeRequest, str], Any]
"""listener_for(request, peer_address): what picows's listener factory returns."""


async def listen(listener_for: ListenerFor, host: str, port: int, *, handshake_timeout: float,
                 max_frame_size: int, logger_name: str, keepalive: TcpKeepalive | None = None,
                 **server_options) -> asyncio.Server:
    """Listen; with `keepalive` on the listening sockets before the first accept, so that every
    accepted socket inherits it (no system call per connection)."""
    logger = logging.LoggerAdapter(logging.getLogger(f"picows.{logger_name}"), {})

    def protocol() -> WSProtocol:
        def listener_factory(request: WSUpgradeRequest):
            peer = ws.transport.underlying_transport.get_extra_info("peername")
            return listener_for(request, peer[0] if peer else "")

        ws = WSProtocol(None, None, False, listener_factory, logger, True, handshake_timeout,
                        False, 20, 20, WSAutoPingStrategy.PING_WHEN_IDLE, False, max_frame_size,
                        None, 1024)
        return ws

    server = await asyncio.get_running_loop().create_server(protocol, host, port,
                                                            start_serving=False, **server_options)
    if keepalive is not None:
        for sock in server.sockets:
            keepalive.apply(sock)
    await server.start_serving()
    return server
