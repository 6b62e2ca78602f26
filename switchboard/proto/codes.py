"""Close codes of protocol v1 (docs/protocol.md, "Close codes and HTTP statuses"): the server
closes with them, the SDK decides by them whether to reconnect. Error codes are client.proto's
ErrorCode."""
from __future__ import annotations

import enum


class Close(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    ABNORMAL = 1006  # no CLOSE frame arrived (never sent: what a client library reports)
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    MALFORMED = 4000
    UNAUTHENTICATED = 4001
    AUTH_TIMEOUT = 4002
    SLOW_CONSUMER = 4008
    IDLE_TIMEOUT = 4009
    REPLACED = 4010
    DEVICE_REVOKED = 4011
    TOO_MANY_DEVICES = 4012
    FLOOD = 4029


NO_RECONNECT = frozenset({Close.UNAUTHENTICATED, Close.REPLACED, Close.DEVICE_REVOKED,
                          Close.TOO_MANY_DEVICES})
"""After these reconnecting cannot help: the token was refused, a newer connection of the same
device took over (reconnecting would throw that one out in turn), the device id was revoked
(refused forever), or the user has too many devices (until one is revoked)."""

REFUSED = frozenset({Close.UNAUTHENTICATED, Close.AUTH_TIMEOUT, Close.DEVICE_REVOKED,
                     Close.TOO_MANY_DEVICES})
"""The server refused the session before Welcome: the token or the device."""
