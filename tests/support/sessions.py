"""Driving a sans-I/O Session without a socket: a port that records what the session asks of
it, a clock and a timer list the test advances by hand, and helpers that encode client frames
and decode the session's output back into ServerFrames."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from switchboard.core.model import Backlog, StoredMessage
from switchboard.gateway import wire
from switchboard.proto.v1 import client_pb2 as pb

BINARY, CONTINUATION, TEXT, CLOSE, PING, PONG = 0x2, 0x0, 0x1, 0x8, 0x9, 0xA


class Clock:
    """The session's timer service: `schedule` records, `fire(now)` runs what is due."""

    def __init__(self) -> None:
        self.t = 100.0
        self.entries: list[tuple[float, Any]] = []

    def now(self) -> float:
        return self.t

    def schedule(self, item, due: float) -> None:
        self.entries.append((due, item))

    def advance(self, seconds: float) -> None:
        self.t += seconds
        due = sorted((e for e in self.entries if e[0] <= self.t), key=lambda e: e[0])
        self.entries = [e for e in self.entries if e[0] > self.t]
        for _, item in due:
            item.on_timer(self.t)

    @property
    def next_due(self) -> float:
        return min((due for due, _ in self.entries), default=math.inf)


@dataclass
class Port:
    """Records every call a session makes on its port; `buffered` is what the transport
    would still hold."""
    calls: list[tuple] = field(default_factory=list)
    buffered_bytes: int = 0
    session: Any = None

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def take(self, name: str) -> list[tuple]:
        """The calls named `name` (their arguments), removed from the record."""
        found = [c[1:] for c in self.calls if c[0] == name]
        self.calls = [c for c in self.calls if c[0] != name]
        return found

    def decode(self, payload):
        return wire.session_frame(payload)

    def connected(self):
        self.calls.append(("connected",))

    def disconnected(self, prev):
        self.calls.append(("disconnected", int(prev)))

    def resumed(self):
        self.calls.append(("resumed",))

    def authenticate(self, token):
        self.calls.append(("authenticate", token))

    def submit(self, rid, chat_id, client_msg_id, body, media_ids, e2e, now):
        self.calls.append(("submit", rid, chat_id, client_msg_id, body, list(media_ids), e2e))

    def cursor(self, chat_id, seq):
        self.calls.append(("cursor", chat_id, seq))

    def request(self, kind, frame):
        self.calls.append(("request", kind, frame))

    def pump(self):
        self.calls.append(("pump",))

    def load_backlog(self, sync):
        self.calls.append(("load_backlog", sync))

    def load_cursors(self):
        self.calls.append(("load_cursors",))

    def buffered(self):
        return self.buffered_bytes

    def wants_flush(self):
        self.calls.append(("wants_flush",))

    def closing(self, prev, code, reason):
        self.calls.append(("closing", int(code), reason))

    def echo_close(self, code):
        self.calls.append(("echo_close", code))

    def disconnect(self, graceful):
        self.calls.append(("disconnect", graceful))


def client(rid: int = 0, **body) -> bytes:
    return pb.ClientFrame(request_id=rid, **body).SerializeToString()


def send(rid: int, chat_id: str, client_msg_id: str, body: bytes = b"hi",
         e2e: bool = False) -> bytes:
    return client(rid, send=pb.Send(chat_id=chat_id, client_msg_id=client_msg_id, body=body,
                                    e2e=e2e))


def ack(*pairs: tuple[str, int], rid: int = 0) -> bytes:
    return client(rid, ack=pb.Ack(acks=[pb.ChatSeq(chat_id=c, seq=s) for c, s in pairs]))


def message(chat_id: str, seq: int, sender: str = "alice", device: str = "phone",
            body: bytes = b"m") -> StoredMessage:
    return StoredMessage(chat_id, seq, 1000 + seq, sender, device, f"c{seq}", body, (), 5000 + seq)


def backlog(chat_id: str, cursor: int, head: int) -> Backlog:
    return Backlog(chat_id, cursor, head)


def split_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every server WebSocket frame in `data` (unmasked, FIN set)."""
    out = []
    i = 0
    while i < len(data):
        first, second = data[i], data[i + 1]
        assert first & 0x80, "the server never fragments"
        assert not second & 0x80, "server frames are not masked"
        n = second & 0x7F
        i += 2
        if n == 126:
            n = int.from_bytes(data[i:i + 2], "big")
            i += 2
        elif n == 127:
            n = int.from_bytes(data[i:i + 8], "big")
            i += 8
        out.append((first & 0x0F, data[i:i + n]))
        i += n
    return out


def server_frames(data: bytes) -> list[pb.ServerFrame]:
    return [pb.ServerFrame.FromString(payload) for opcode, payload in split_frames(data)
            if opcode == BINARY]
