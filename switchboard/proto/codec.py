"""Domain records and errors on the wire: the one conversion the gateway (to devices) and the
mesh (between nodes) share, and the one mapping of an exception to a wire error."""
from __future__ import annotations

from switchboard.core.errors import RETRY_AFTER_MS, Code, DomainError
from switchboard.core.model import MemberAction, MembershipEvent, StoredMessage
from switchboard.core.store import StoreError
from switchboard.proto.v1 import client_pb2 as pb


def message_to_pb(row: StoredMessage) -> pb.Message:
    return pb.Message(chat_id=row.chat_id, seq=row.seq, server_id=row.server_id,
                      sender_user_id=row.sender_user, sender_device_id=row.sender_device,
                      client_msg_id=row.client_msg_id, body=row.body, media_ids=row.media_ids,
                      created_at_ms=row.created_at_ms,
                      membership=None if row.event is None else event_to_pb(row.event))


def message_from_pb(msg: pb.Message) -> StoredMessage:
    return StoredMessage(msg.chat_id, msg.seq, msg.server_id, msg.sender_user_id,
                         msg.sender_device_id, msg.client_msg_id, msg.body, tuple(msg.media_ids),
                         msg.created_at_ms,
                         event_from_pb(msg.membership) if msg.HasField("membership") else None)


class BadRecord(ValueError):
    """A peer's record names a value this node has no meaning for (a MemberAction it does not
    know): the record is refused; the link and everything else it carries stay."""


def event_to_pb(event: MembershipEvent) -> pb.MembershipEvent:
    return pb.MembershipEvent(action=int(event.action), actor_user_id=event.actor,
                              user_ids=event.users)


def event_from_pb(event: pb.MembershipEvent) -> MembershipEvent:
    try:
        action = MemberAction(event.action)
    except ValueError:
        raise BadRecord(f"membership event with unknown action {event.action}") from None
    return MembershipEvent(action, event.actor_user_id, tuple(event.user_ids))


ERROR_CODES = {code: pb.ErrorCode.Value(code.value) for code in Code}
"""Each domain Code -> the wire ErrorCode of the same name."""


def wire_error(exc: BaseException) -> tuple[int, str, int]:
    """(ErrorCode, detail, retry_after_ms) for what a request raised: a DomainError as itself,
    a StoreError as UNAVAILABLE (outcome unknown: retry), anything else as INTERNAL."""
    if isinstance(exc, DomainError):
        return ERROR_CODES[exc.code], exc.detail, exc.retry_after_ms
    if isinstance(exc, StoreError):
        return pb.UNAVAILABLE, "store unavailable", RETRY_AFTER_MS
    return pb.INTERNAL, "internal error", 0


def domain_error(code: int, detail: str, retry_after_ms: int) -> DomainError:
    """A wire ErrorCode back into the DomainError the owner raised."""
    try:
        return DomainError(Code(pb.ErrorCode.Name(code)), detail, retry_after_ms)
    except ValueError:
        return DomainError(Code.UNAVAILABLE, detail or "owner failed",
                           retry_after_ms or RETRY_AFTER_MS)
