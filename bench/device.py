"""Generated devices: one WebSocket connection each, speaking the target's protocol.

The bench does not use the SDK's Client for load: a generated device must bind its socket to a
chosen source address (the SDK offers no hook for connection options) and should cost the
generator as little as possible per message (no future per send, no queue per message). It
does reuse the SDK's wire helpers and its `ChatOrder`, so "delivered exactly once, in order" is
judged by the same dedup rules a real device applies.

Every generated message body starts with HEADER: the sender's message number `k` (per sender
and chat, counting from 0) and the time it was meant to be sent (monotonic ns), then padding to
the requested body size. Receivers compute latency from it and check exactly-once order on `k`;
no lookup table is shared between processes.

Scenarios attach two callbacks: `on_ack(k, t_ns)` when the server confirmed a send (SendAck:
stored durably) and `on_deliver(k, t_ns)` when a message reached this device (after dedup).
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
import struct
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from switchboard.client import ChatOrder, frames
from switchboard.client.sdk import DEFAULT_TCP_KEEPALIVE
from switchboard.core.auth import TokenAuthority
from switchboard.proto.v1 import client_pb2 as pb

if TYPE_CHECKING:
    from .gen import Endpoint


HEADER = struct.Struct("<QQ")
#: Server frames can carry a page of messages: accept large ones (as the SDK does).
MAX_RECEIVE_FRAME = 32 * 1024 * 1024
#: A small initial read buffer: the generator holds up to ~20,000 sockets per process and
#: picows grows the buffer when a larger frame arrives.
READ_BUFFER = 2048
HANDSHAKE_TIMEOUT = 30.0
RETRYABLE = frozenset({pb.UNAVAILABLE, pb.RATE_LIMITED})
GOING_AWAY = 1001   # the close after a Goaway: reconnect elsewhere (protocol.md)
MOVE_ATTEMPTS = 5
MOVE_JITTER = 1.0   # s: the longest pause before a moved device's first reconnect


def body(k: int, t_ns: int, size: int) -> bytes:
    return HEADER.pack(k, t_ns) + b"x" * max(0, size - HEADER.size)


def _ignore(k: int, t_ns: int) -> None:
    pass


class Device(WSListener):
    """What every generated device has, whatever it speaks: identity, callbacks, counters of
    unexpected disconnects, and open/close around one picows connection. A protocol subclass
    adds `send(k, t_ns)` (send message number k, stamped t_ns) and `on_payload(frame)` (every
    frame but CLOSE)."""

    #: > 0: ping the server after this many seconds without a frame from it (hold --device-ping)
    ping_when_idle = 0.0
    #: > 0: kernel TCP keepalive after this many seconds of silence, as the SDK sets it
    #: (hold --device-keepalive)
    keepalive_idle = 0

    def __init__(self, user: str, partner: str = "", body_size: int = 64) -> None:
        super().__init__()
        self.user = user
        self.partner = partner
        self.body_size = body_size
        self.on_ack = _ignore
        self.on_deliver = _ignore
        self.transport: WSTransport | None = None
        self.drops = 0          # disconnects nobody asked for
        self.close_codes: list[int] = []  # the codes of the server's closes, in order
        #: (endpoint, its Worker): reconnect when the server moves this device (close 1001,
        #: after a Goaway: the rebalancer or a drain), as the SDK does; else such a close is a drop
        self.follow_moves: tuple[Endpoint, object] | None = None
        self.moves = 0          # server moves followed by a reconnect
        self._reopening: asyncio.Task | None = None
        self.errors = 0         # sends that could not be made or were refused for good
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self, endpoint: Endpoint, local_addr: tuple[str, int] | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = False
        extra = {"local_addr": local_addr} if local_addr else {}
        if self.ping_when_idle:
            extra.update(enable_auto_ping=True, auto_ping_idle_timeout=self.ping_when_idle,
                         auto_ping_reply_timeout=min(10.0, self.ping_when_idle))
        await ws_connect(lambda: self, self.url(endpoint), extra_headers=self.headers(endpoint),
                         use_aiofastnet=False, websocket_handshake_timeout=HANDSHAKE_TIMEOUT,
                         max_frame_size=MAX_RECEIVE_FRAME, read_buffer_init_size=READ_BUFFER,
                         **extra)
        if self.keepalive_idle and self.transport is not None:
            # the SDK's settings scaled to this idle time: a probe comes every max(idle,
            # interval), so a short idle needs its interval shortened alike
            scale = self.keepalive_idle / DEFAULT_TCP_KEEPALIVE.idle
            settings = dataclasses.replace(
                DEFAULT_TCP_KEEPALIVE, idle=self.keepalive_idle,
                interval=max(1, round(DEFAULT_TCP_KEEPALIVE.interval * scale)))
            settings.apply(self.transport.underlying_transport.get_extra_info("socket"))
        await self.opened()

    async def close(self) -> None:
        self._closing = True
        if self._reopening is not None:
            self._reopening.cancel()
        transport = self.transport
        if transport is None:
            return
        transport.send_close()
        transport.disconnect()
        try:
            await asyncio.wait_for(transport.wait_disconnected(), 10)
        except asyncio.TimeoutError:
            transport.disconnect(graceful=False)

    @property
    def connected(self) -> bool:
        return self.transport is not None

    # -- for subclasses
    def url(self, endpoint: Endpoint) -> str:
        return endpoint.url

    def headers(self, endpoint: Endpoint) -> dict | None:
        return None

    async def opened(self) -> None:
        """Wait until the protocol considers the connection usable."""

    # -- picows
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.transport = None
        if self._closing:
            return
        if self.follow_moves is not None and self.close_codes[-1:] == [GOING_AWAY]:
            self.moves += 1
            self._reopening = asyncio.ensure_future(self._follow_move())
        else:
            self.drops += 1

    async def _follow_move(self) -> None:
        """Reconnect as a moved SDK client does: after a jittered pause, a few tries."""
        endpoint, worker = self.follow_moves
        for attempt in range(MOVE_ATTEMPTS):
            await asyncio.sleep(random.uniform(0, MOVE_JITTER * (attempt + 1)))
            if self._closing:
                return
            try:
                await self.open(endpoint, worker.local_addr(endpoint))
                return
            except Exception:  # counted below when every try failed
                pass
        self.drops += 1

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_codes.append(int(frame.get_close_code()))
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        else:
            self.on_payload(frame)


class SwitchboardDevice(Device):
    """A device of protocol v1: header auth, Welcome, sends with SendAck, deliveries deduped
    by ChatOrder and acked once per loop turn (as the SDK does), retry of RATE_LIMITED and
    UNAVAILABLE with the same client_msg_id."""

    _tokens: dict[str, TokenAuthority] = {}

    def __init__(self, user: str, partner: str = "", body_size: int = 64,
                 device_id: str = "d") -> None:
        super().__init__(user, partner, body_size)
        self.device_id = device_id
        self.chat_id = ""                 # where send() goes; set by the scenario
        self.order = ChatOrder(user_id=user, device_id=device_id)
        self.retries = 0                  # sends repeated after RATE_LIMITED / UNAVAILABLE
        self.retried: set[int] = set()    # their ks: they may land after later ones (8.2)
        self.sync_completes = 0
        self._rid = 0
        self._sends: dict[int, tuple[int, int, pb.Send]] = {}
        self._requests: dict[int, asyncio.Future] = {}
        self._welcome: asyncio.Future | None = None
        self._synced: asyncio.Event | None = None
        self._acks_scheduled = False
        self._token: str | None = None

    def headers(self, endpoint: Endpoint) -> dict:
        """The device's token, minted once and sent again on every reconnect (as an app keeps
        its token until it expires)."""
        if self._token is None:
            tokens = self._tokens.get(endpoint.secret)
            if tokens is None:
                tokens = self._tokens[endpoint.secret] = TokenAuthority(endpoint.secret.encode())
            self._token = tokens.mint(self.user, self.device_id, 86400)
        return {"Authorization": f"Bearer {self._token}"}

    async def open(self, endpoint: Endpoint, local_addr: tuple[str, int] | None) -> None:
        loop = asyncio.get_running_loop()
        self._welcome = loop.create_future()
        self._synced = asyncio.Event()
        await super().open(endpoint, local_addr)

    async def opened(self) -> None:
        await asyncio.wait_for(self._welcome, HANDSHAKE_TIMEOUT)

    async def wait_synced(self, timeout: float) -> None:
        """The automatic sync after Welcome completed (its backlog has been sent)."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    def send(self, k: int, t_ns: int) -> None:
        self._transmit_send(k, t_ns, pb.Send(client_msg_id=str(k), chat_id=self.chat_id,
                                             body=body(k, t_ns, self.body_size)))

    async def request(self, reply: str, **frame_body):
        """The answer to one request; ConnectionError naming the close code when the connection
        ends before it comes (an answer never comes on a closed connection)."""
        if self.transport is None:
            raise ConnectionError(f"{self.user}: not connected ({self._closed_how()})")
        rid = self._next_rid()
        future = self._requests[rid] = self._loop.create_future()
        self.transport.send(WSMsgType.BINARY, frames.encode(rid, **frame_body))
        try:
            answer = await asyncio.wait_for(future, 60)
        finally:
            self._requests.pop(rid, None)
        if answer.WhichOneof("body") != reply:
            raise RuntimeError(f"{self.user}: expected {reply}, got {answer}")
        return getattr(answer, reply)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        pending = [f for f in self._requests.values() if not f.done()]
        if pending:
            error = ConnectionError(f"{self.user}: connection closed before the answer "
                                    f"({self._closed_how()})")
            for future in pending:
                future.set_exception(error)

    def _closed_how(self) -> str:
        if self.close_codes:
            return f"server's close code {self.close_codes[-1]}"
        return "no close frame from the server" if not self._closing else "closed by the bench"

    # -- internals
    def _next_rid(self) -> int:
        self._rid = self._rid % 0xFFFFFFFF + 1
        return self._rid

    def _transmit_send(self, k: int, t_ns: int, send: pb.Send) -> None:
        if self.transport is None:
            self.errors += 1
            return
        rid = self._next_rid()
        self._sends[rid] = (k, t_ns, send)
        self.transport.send(WSMsgType.BINARY, frames.encode(rid, send=send))

    def on_payload(self, frame: WSFrame) -> None:
        try:
            server_frame = frames.decode(frame.get_payload_as_bytes())
        except DecodeError:
            self.transport.disconnect()
            return
        kind = server_frame.WhichOneof("body")
        if kind == "deliver":
            deliver = server_frame.deliver
            order = self.order
            ready = [r for f in deliver.floors for r in order.floor(f.chat_id, f.seq)]
            ready += [r for message in deliver.messages for r in order.feed(message)]
            on_deliver = self.on_deliver
            for message in ready:
                if not message.HasField("membership"):  # the set-up's member changes
                    k, t_ns = HEADER.unpack_from(message.body)
                    on_deliver(k, t_ns)
            self._schedule_acks()
        elif kind == "send_ack":
            entry = self._sends.pop(server_frame.request_id, None)
            ack = server_frame.send_ack
            for ready in self.order.on_send_ack(ack.chat_id, ack.seq):
                k, t_ns = HEADER.unpack_from(ready.body)
                self.on_deliver(k, t_ns)
            self._schedule_acks()
            if entry is not None:
                self.on_ack(entry[0], entry[1])
        elif kind == "error":
            self._on_error(server_frame)
        elif kind == "welcome":
            self.order.new_connection()
            if not self._welcome.done():  # a late Welcome: opened() has given up already
                self._welcome.set_result(server_frame.welcome)
        elif kind == "sync_complete":
            self.sync_completes += 1
            self._synced.set()
        elif server_frame.request_id:
            future = self._requests.get(server_frame.request_id)
            if future is not None and not future.done():
                future.set_result(server_frame)

    def _on_error(self, server_frame: pb.ServerFrame) -> None:
        entry = self._sends.pop(server_frame.request_id, None)
        error = server_frame.error
        if entry is None:
            future = self._requests.get(server_frame.request_id)
            if future is not None and not future.done():
                future.set_result(server_frame)
            return
        if error.code in RETRYABLE:
            self.retries += 1
            self.retried.add(entry[0])
            self._loop.call_later(max(error.retry_after_ms, 1) / 1000, self._transmit_send, *entry)
        else:
            self.errors += 1

    def _schedule_acks(self) -> None:
        if not self._acks_scheduled:
            self._acks_scheduled = True
            self._loop.call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._acks_scheduled = False
        acks = self.order.take_acks()
        if acks and self.transport is not None:
            self.transport.send(WSMsgType.BINARY, frames.ack(acks))
