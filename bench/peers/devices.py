"""Generated devices for the two peer relays: the same generator, the same message body
(HEADER + padding), only the wire format differs, so the relays and Switchboard are driven
identically and their figures compare honestly."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson
from picows import WSFrame, WSMsgType

from ..device import HEADER, Device, body

if TYPE_CHECKING:
    from ..gen import Endpoint


class RelayDevice(Device):
    """picows relay: the binary body itself is the frame; the path names me and my partner."""

    def url(self, endpoint: Endpoint) -> str:
        return f"{endpoint.url.rstrip('/')}/{self.user}/{self.partner}"

    def send(self, k: int, t_ns: int) -> None:
        if self.transport is None:
            self.errors += 1
            return
        self.transport.send(WSMsgType.BINARY, body(k, t_ns, self.body_size))

    def on_payload(self, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY:
            k, t_ns = HEADER.unpack_from(frame.get_payload_as_memoryview())
            self.on_deliver(k, t_ns)


class JsonRelayDevice(Device):
    """websockets + Redis relay: JSON text frames, the body a string "k:t_ns:padding". The
    relay says {"ready": true} once this user's channel is subscribed."""

    def __init__(self, user: str, partner: str = "", body_size: int = 64) -> None:
        super().__init__(user, partner, body_size)
        self._ready: asyncio.Future | None = None

    async def open(self, endpoint: Endpoint, local_addr: tuple[str, int] | None) -> None:
        self._ready = asyncio.get_running_loop().create_future()
        await super().open(endpoint, local_addr)

    async def opened(self) -> None:
        await asyncio.wait_for(self._ready, 30)

    def url(self, endpoint: Endpoint) -> str:
        return f"{endpoint.url.rstrip('/')}/?user={self.user}"

    def send(self, k: int, t_ns: int) -> None:
        if self.transport is None:
            self.errors += 1
            return
        text = f"{k}:{t_ns}:".ljust(self.body_size, "x")
        self.transport.send(WSMsgType.TEXT, orjson.dumps({"to": self.partner, "body": text}))

    def on_payload(self, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        message = orjson.loads(frame.get_payload_as_bytes())
        if "body" in message:
            k, t_ns, _ = message["body"].split(":", 2)
            self.on_deliver(int(k), int(t_ns))
        elif not self._ready.done():
            self._ready.set_result(None)
