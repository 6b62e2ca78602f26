"""Server frame encoding of the answers to requests: domain records -> ServerFrame bytes.

The frames of every message (SendAck, Deliver, and the session's own errors) are written by
the native codec (core/_native/wire.pyx) straight into the session's output instead.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from switchboard.core._native import native
from switchboard.core.model import Chat, ChatSummaryRow, Membership, StoredMessage
from switchboard.proto.v1 import client_pb2 as pb
from switchboard.proto.codec import message_to_pb as message, wire_error


receipt_update = native("wire").receipt_update
"""receipt_update(chat_id, members {user: Receipt}, delivered_all, read_all) -> ServerFrame
bytes, members sorted by user: native, since the sender of a message to a group of 10,000 is
told of every member's delivered watermark."""


def goaway(reconnect_after_ms: int, reason: str) -> bytes:
    return pb.ServerFrame(goaway=pb.Goaway(reconnect_after_ms=reconnect_after_ms,
                                           reason=reason)).SerializeToString()


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
