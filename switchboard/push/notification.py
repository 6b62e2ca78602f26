"""What one push says, whichever provider carries it.

Content-free by default: the chat, the sender's user id and how many messages are waiting, so
a lock screen shows "2 new messages from alice" (the app's own strings) and the app fetches the
messages itself. A text preview only where the device's user allowed it, and never of a body
its sender marked end-to-end encrypted (Send.e2e): that decision is made when the push is
queued (service.py), so an encrypted body never reaches this module.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

PREVIEW_CHARS = 120


class Kind(enum.Enum):
    MESSAGE = "message"      # an alert: new messages in a chat
    READ_SYNC = "read"       # silent: the user read elsewhere, update the badge


@dataclass(slots=True, frozen=True)
class Notification:
    kind: Kind
    chat_id: str
    badge: int               # the user's unread messages over all chats
    sender_user: str = ""    # of the newest message (MESSAGE)
    count: int = 0           # messages this push stands for (MESSAGE)
    seq: int = 0             # newest seq it covers (MESSAGE), or the read watermark (READ_SYNC)
    preview: str = ""        # "" unless allowed; shown as the alert's body
    topic: str = ""          # APNs bundle id for this device's app

    @property
    def collapse_id(self) -> str:
        """One notification per chat on the device: a newer push replaces the older one (and a
        push sent twice shows once)."""
        return self.chat_id[:64]


def preview_of(body: bytes, limit: int = PREVIEW_CHARS) -> str:
    """The start of a plaintext body, or "" when it is not UTF-8 text (a client's own format:
    showing it would be noise)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    text = " ".join(text.split())
    if not text.isprintable():
        return ""
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"
