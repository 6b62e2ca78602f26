"""Client-side wire helpers: one ClientFrame / ServerFrame per WebSocket binary message.

Shared by the SDK and by tests that speak raw frames, so both put exactly the same bytes on the
wire (docs/protocol.md "Transport").
"""
from __future__ import annotations

from collections.abc import Iterable

from switchboard.proto.v1 import client_pb2 as pb

__all__ = ["encode", "ack", "decode"]


def encode(request_id: int = 0, **body) -> bytes:
    """Serialise a ClientFrame: `encode(7, ping=pb.Ping())`. At most one body (it is a oneof);
    none gives a frame the server answers with UNKNOWN_FRAME, which hostile tests want."""
    if len(body) > 1:
        raise TypeError(f"a ClientFrame carries one body, got {sorted(body)}")
    return pb.ClientFrame(request_id=request_id, **body).SerializeToString()


def ack(acks: Iterable[tuple[str, int]]) -> bytes:
    """One Ack frame for several chats: [(chat_id, seq), ...], each cumulative. No request_id:
    acks get no reply."""
    return pb.ClientFrame(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=seq)
                                           for chat, seq in acks])).SerializeToString()


def decode(data: bytes) -> pb.ServerFrame:
    """Parse one ServerFrame; raises google.protobuf.message.DecodeError on garbage."""
    return pb.ServerFrame.FromString(data)
