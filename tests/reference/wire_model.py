"""Reference twin of switchboard.core._native.wire, for tests only: the same ServerFrames built
with the protobuf library (message objects, SerializeToString) and framed in plain Python.
Reading has no twin of its own: what the native reader accepts must equal what the library and
gateway/wire.py make of the same bytes (`switchboard.gateway.wire.session_frame`)."""
from __future__ import annotations

from typing import NamedTuple

from switchboard.core.model import Receipt, StoredMessage
from switchboard.proto.codec import message_to_pb
from switchboard.proto.v1 import client_pb2 as pb

BINARY = 0x2
MESSAGE_OVERHEAD = 512  # what a Message costs beyond its body and media ids, generously


class Chunk(NamedTuple):
    last_seq: int
    count: int
    frame: bytes


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A server-to-client WebSocket frame (FIN set, unmasked) carrying `payload`."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return header + payload


def _framed(frame: pb.ServerFrame) -> bytes:
    return ws_frame(BINARY, frame.SerializeToString())


def send_ack(request_id: int, client_msg_id: str, chat_id: str, seq: int, server_id: int,
             created_at_ms: int, duplicate: bool) -> bytes:
    return _framed(pb.ServerFrame(request_id=request_id, send_ack=pb.SendAck(
        client_msg_id=client_msg_id, chat_id=chat_id, seq=seq, server_id=server_id,
        created_at_ms=created_at_ms, duplicate=duplicate)))


def error(request_id: int, code: int, detail: str, retry_after_ms: int = 0, chat_id: str = "",
          client_msg_id: str = "") -> bytes:
    return _framed(pb.ServerFrame(request_id=request_id, error=pb.Error(
        code=code, detail=detail, retry_after_ms=retry_after_ms, chat_id=chat_id,
        client_msg_id=client_msg_id)))


def sync_complete(request_id: int, chats: int, messages: int) -> bytes:
    return _framed(pb.ServerFrame(request_id=request_id, sync_complete=pb.SyncComplete(
        chats=chats, messages=messages)))


def floors_frame(floors: list[tuple[str, int]]) -> bytes:
    return _framed(pb.ServerFrame(deliver=pb.Deliver(floors=[
        pb.ChatSeq(chat_id=chat_id, seq=seq) for chat_id, seq in floors])))


def deliver_frames(rows: list[StoredMessage], max_frame_bytes: int) -> list[Chunk]:
    """Deliver frames for `rows` (one chat, seq order), each within max_frame_bytes: a client
    may size its frame limit to the one announced in Welcome."""
    chunks: list[Chunk] = []
    batch: list[pb.Message] = []
    size = 0
    for row in rows:
        cost = len(row.body) + sum(len(m) for m in row.media_ids) + MESSAGE_OVERHEAD
        if row.event is not None:
            cost += sum(len(user) + 2 for user in row.event.users)
        if batch and size + cost > max_frame_bytes:
            chunks.append(_chunk(batch))
            batch, size = [], 0
        batch.append(message_to_pb(row))
        size += cost
    if batch:
        chunks.append(_chunk(batch))
    return chunks


def _chunk(batch: list[pb.Message]) -> Chunk:
    frame = _framed(pb.ServerFrame(deliver=pb.Deliver(messages=batch)))
    return Chunk(batch[-1].seq, len(batch), frame)


def receipt_update(chat_id: str, members: dict[str, Receipt], delivered_all: int,
                   read_all: int) -> bytes:
    """ServerFrame{receipt_update}, unframed, members sorted by user."""
    return pb.ServerFrame(receipt_update=pb.ReceiptUpdate(
        chat_id=chat_id, delivered_all_seq=delivered_all, read_all_seq=read_all,
        members=[pb.MemberReceipt(user_id=u, delivered_seq=r.delivered_seq, read_seq=r.read_seq)
                 for u, r in sorted(members.items())])).SerializeToString()
