"""A raw protocol client for hostile tests: sends exactly the bytes it is given and records
every ServerFrame and the close code, with no SDK logic in between."""
from __future__ import annotations

import asyncio

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from switchboard.proto.v1 import client_pb2 as pb


OPEN_CLIENTS: list = []
"""Every client a test opened (raw or SDK); the fixtures close them before checking for leaks."""


class _Listener(WSListener):
    def __init__(self) -> None:
        super().__init__()
        self.answer_pings = True
        self.frames: asyncio.Queue[pb.ServerFrame] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()
        self.pings = 0
        self.pongs: asyncio.Queue[bytes] = asyncio.Queue()  # payloads of the server's pongs

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY:
            self.frames.put_nowait(pb.ServerFrame.FromString(frame.get_payload_as_bytes()))
        elif frame.msg_type == WSMsgType.CLOSE:
            self.close_code = int(frame.get_close_code())
            self.close_reason = frame.get_close_reason() or ""
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        elif frame.msg_type == WSMsgType.PING:
            self.pings += 1
            if self.answer_pings:
                transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.PONG:
            self.pongs.put_nowait(frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed.set()


class RawClient:
    def __init__(self, transport: WSTransport, listener: _Listener) -> None:
        self.transport = transport
        self.listener = listener
        self.stash: list[pb.ServerFrame] = []
        self.taken: set[tuple[str, int]] = set()
        """(chat_id, seq) of every message rawflow.receive_and_ack returned: its dedup."""
        self._rid = 0

    @classmethod
    async def connect(cls, url: str, token: str | None = None, *, auto_pong: bool = True,
                      **kwargs) -> "RawClient":
        headers = {"Authorization": f"Bearer {token}"} if token else None
        # pings are answered here, not by picows, so that they are counted either way
        transport, listener = await ws_connect(_Listener, url, extra_headers=headers,
                                               enable_auto_pong=False, use_aiofastnet=False,
                                               max_frame_size=16 * 1024 * 1024, **kwargs)
        listener.answer_pings = auto_pong
        client = cls(transport, listener)
        OPEN_CLIENTS.append(client)
        return client

    def send_bytes(self, data: bytes, msg_type: WSMsgType = WSMsgType.BINARY) -> None:
        self.transport.send(msg_type, data)

    def send(self, **body) -> int:
        """Send a ClientFrame with a fresh request_id; returns it."""
        self._rid += 1
        self.send_bytes(pb.ClientFrame(request_id=self._rid, **body).SerializeToString())
        return self._rid

    async def recv(self, kind: str | None = None, timeout: float = 15.0) -> pb.ServerFrame:
        """The next frame (of `kind`); frames of other kinds are kept for later calls."""
        return await self._take(lambda f: kind is None or f.WhichOneof("body") == kind, timeout)

    async def reply(self, rid: int, timeout: float = 15.0) -> pb.ServerFrame:
        """The reply to request `rid`; other frames are kept for later calls."""
        return await self._take(
            lambda f: f.request_id == rid and f.WhichOneof("body") != "deliver", timeout)

    async def _take(self, match, timeout: float) -> pb.ServerFrame:
        for i, frame in enumerate(self.stash):
            if match(frame):
                return self.stash.pop(i)

        async def wait() -> pb.ServerFrame:
            while True:
                frame = await self.listener.frames.get()
                if match(frame):
                    return frame
                self.stash.append(frame)
        return await asyncio.wait_for(wait(), timeout)

    def pending(self) -> bool:
        return bool(self.stash) or not self.listener.frames.empty()

    def pending_kinds(self) -> list[str]:
        """The bodies of the frames received and not taken yet (kept for recv)."""
        while not self.listener.frames.empty():
            self.stash.append(self.listener.frames.get_nowait())
        return [frame.WhichOneof("body") for frame in self.stash]

    def drain(self) -> None:
        self.stash.clear()
        while not self.listener.frames.empty():
            self.listener.frames.get_nowait()

    async def closed(self, timeout: float = 15.0) -> tuple[int | None, str]:
        await asyncio.wait_for(self.listener.closed.wait(), timeout)
        return self.listener.close_code, self.listener.close_reason

    def close(self) -> None:
        self.transport.disconnect(graceful=False)
