"""Domain errors. The gateway maps each `Code` to the wire ErrorCode of the same name."""
from __future__ import annotations

import enum


class Code(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_MEMBER = "NOT_MEMBER"
    FORBIDDEN = "FORBIDDEN"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    GROUP_FULL = "GROUP_FULL"
    UNAVAILABLE = "UNAVAILABLE"
    NOT_FOUND = "NOT_FOUND"
    BLOCKED = "BLOCKED"
    MEDIA_TOO_LARGE = "MEDIA_TOO_LARGE"
    MEDIA_TYPE_REFUSED = "MEDIA_TYPE_REFUSED"
    MEDIA_NOT_OWNED = "MEDIA_NOT_OWNED"
    MEDIA_INCOMPLETE = "MEDIA_INCOMPLETE"
    MEDIA_MISMATCH = "MEDIA_MISMATCH"


RETRY_AFTER_MS = 200
"""What UNAVAILABLE tells the device to wait before its retry when nothing better is known (the
store failed, an owner did not answer, a send could not be handed on): long enough for a
failover to show, short enough that a user does not notice."""


DRAIN_RETRY_AFTER_MS = 1000
"""What a send refused by a draining node tells the device: reconnect (elsewhere), then retry."""


class DomainError(Exception):
    def __init__(self, code: Code, detail: str, retry_after_ms: int = 0) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after_ms = retry_after_ms
