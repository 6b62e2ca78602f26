"""Server frame encoding: domain records -> ServerFrame bytes.

A committed batch is encoded once and the same bytes go to every recipient, so group fan-out
costs one protobuf serialisation per chat per flush, not one per device.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from switchboard.core.model import Chat, ChatSummaryRow, Membership, StoredMessage
from switchboard.proto.v1 import client_pb2 as pb
from switchboard.proto.codec import message_to_pb as message, wire_error


class Chunk(NamedTuple):
    last_seq: int
    count: int
    data: bytes


# what a Message costs beyond its body and media ids (ids, seqs, tags), generously
_MESSAGE_OVERHEAD = 512


def deliver(rows: list[StoredMessage], max_frame_bytes: int) -> list[Chunk]:
    """Deliver frames for `rows` (one chat, seq order), each within max_frame_bytes: a client may
    size its frame limit to the one announced in Welcome."""
    chunks: list[Chunk] = []
    batch: list[pb.Message] = []
    size = 0
    for row in rows:
        cost = len(row.body) + sum(len(m) for m in row.media_ids) + _MESSAGE_OVERHEAD
        if row.event is not None:
            cost += sum(len(user) + 2 for user in row.event.users)
        if batch and size + cost > max_frame_bytes:
            chunks.append(_chunk(batch))
            batch, size = [], 0
        batch.append(message(row))
        size += cost
    if batch:
        chunks.append(_chunk(batch))
    return chunks


def _chunk(batch: list[pb.Message]) -> Chunk:
    data = pb.ServerFrame(deliver=pb.Deliver(messages=batch)).SerializeToString()
    return Chunk(batch[-1].seq, len(batch), data)


def goaway(reconnect_after_ms: int, reason: str) -> bytes:
    return pb.ServerFrame(goaway=pb.Goaway(reconnect_after_ms=reconnect_after_ms,
                                           reason=reason)).SerializeToString()


def send_ack(request_id: int, row: StoredMessage, duplicate: bool) -> bytes:
    return pb.ServerFrame(request_id=request_id, send_ack=pb.SendAck(
        client_msg_id=row.client_msg_id, chat_id=row.chat_id, seq=row.seq,
        server_id=row.server_id, created_at_ms=row.created_at_ms,
        duplicate=duplicate)).SerializeToString()


def error(request_id: int, code: int, detail: str, *, retry_after_ms: int = 0, chat_id: str = "",
          client_msg_id: str = "") -> bytes:
    return pb.ServerFrame(request_id=request_id, error=pb.Error(
        code=code, detail=detail, retry_after_ms=retry_after_ms, chat_id=chat_id,
        client_msg_id=client_msg_id)).SerializeToString()


def failure(request_id: int, exc: BaseException, *, chat_id: str = "",
            client_msg_id: str = "") -> bytes:
    """The Error frame for what a request raised (proto/codec.py wire_error says which)."""
    code, detail, retry_after_ms = wire_error(exc)
    return error(request_id, code, detail, retry_after_ms=retry_after_ms, chat_id=chat_id,
                 client_msg_id=client_msg_id)


def chat_info(request_id: int, chat: Chat, members: Mapping[str, Membership], head: int) -> bytes:
    return pb.ServerFrame(request_id=request_id, chat=pb.ChatInfo(
        chat_id=chat.chat_id, kind=int(chat.kind), title=chat.title,
        members=[pb.Member(user_id=user, role=int(m.role)) for user, m in sorted(members.items())],
        head_seq=head, created_at_ms=chat.created_at_ms)).SerializeToString()


def chat_list(request_id: int, rows: Iterable[ChatSummaryRow]) -> bytes:
    return pb.ServerFrame(request_id=request_id, chat_list=pb.ChatList(chats=[
        pb.ChatSummary(chat_id=r.chat_id, kind=int(r.kind), title=r.title, head_seq=r.head_seq,
                       read_seq=r.read_seq, member_count=r.member_count,
                       unread_count=max(0, r.head_seq - r.read_seq)) for r in rows
    ])).SerializeToString()


def history_page(request_id: int, chat_id: str, rows: list[StoredMessage], has_more: bool) -> bytes:
    return pb.ServerFrame(request_id=request_id, history_page=pb.HistoryPage(
        chat_id=chat_id, messages=[message(r) for r in rows], has_more=has_more)).SerializeToString()
