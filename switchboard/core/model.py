"""Domain records shared by the stores, the writer and the services.

Plain slotted classes: they are created per message on the hot path, so no dataclass
machinery beyond __slots__, and no protobuf (core does not depend on the wire format).
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


class ChatKind(enum.IntEnum):
    DIRECT = 1
    GROUP = 2


class Role(enum.IntEnum):
    MEMBER = 1
    ADMIN = 2


class Visibility(enum.IntEnum):
    """Who may see a user's last seen (and online status)."""
    EVERYONE = 1
    CONTACTS = 2  # users who share a direct chat with them
    NOBODY = 3


class DeviceStatus(enum.Enum):
    OK = "ok"
    REVOKED = "revoked"
    TOO_MANY = "too_many"


class SendRequest:
    """One device's send as it travels from its connection to the chat's owner (maybe through
    a ForwardSend): what the sender asked, before the owner checks it. `e2e`: the body is
    end-to-end encrypted (push notifications never preview it). With `event` it is a
    membership change instead (`SendRequest.membership`), travelling the same way so that it
    takes its place among the chat's sends."""
    __slots__ = ("user", "device", "chat_id", "client_msg_id", "body", "media_ids", "e2e",
                 "event")

    def __init__(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                 media_ids: list[str], e2e: bool = False,
                 event: MembershipEvent | None = None) -> None:
        self.user = user
        self.device = device
        self.chat_id = chat_id
        self.client_msg_id = client_msg_id
        self.body = body
        self.media_ids = media_ids
        self.e2e = e2e
        self.event = event

    @classmethod
    def membership(cls, chat_id: str, event: MembershipEvent) -> SendRequest:
        """A membership change to commit as the chat's next entry (from its actor, no device)."""
        return cls(event.actor, "", chat_id, "", b"", [], event=event)


class MemberAction(enum.IntEnum):
    ADDED = 1
    REMOVED = 2


@dataclass(slots=True, frozen=True)
class MembershipEvent:
    """A change of a chat's members, stored as an entry of the chat's log with its own seq.

    Committing it applies it (store.py): ADDED makes each named user who is not a member a
    MEMBER whose visible range starts at the event; REMOVED ends each named member's range at
    the event. `actor` made the change ("" for the operator); `users` are those it names.
    """
    action: MemberAction
    actor: str
    users: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class Period:
    """One stretch of a user's membership in a chat: messages with joined_seq < seq <= left_seq
    are visible (left_seq None: still a member). A user removed and added again has several."""
    joined_seq: int
    left_seq: int | None = None

    def covers(self, seq: int) -> bool:
        return self.joined_seq < seq and (self.left_seq is None or seq <= self.left_seq)


def next_visible(periods: Sequence[Period], after: int) -> int | None:
    """The lowest seq above `after` that the periods (oldest first) make visible; None when
    none does (the last one closed at or below `after`)."""
    for period in periods:
        if period.left_seq is None or period.left_seq > after:
            return max(after, period.joined_seq) + 1
    return None


def range_end(periods: Sequence[Period], seq: int) -> int | None:
    """The last seq of the period covering `seq` (None: open, no end)."""
    for period in periods:
        if period.covers(seq):
            return period.left_seq
    raise ValueError(f"seq {seq} is in no period")


@dataclass(slots=True)
class NewMessage:
    """A send accepted by the owner, not yet sequenced: the store assigns `seq`.

    `public_read`: committing it raises the sender's public read watermark too (the sender has
    read receipts on). `event`: a membership event (then sender_device is "" and body empty).
    """
    chat_id: str
    sender_user: str
    sender_device: str
    client_msg_id: str
    body: bytes
    media_ids: tuple[str, ...]
    server_id: int
    created_at_ms: int
    public_read: bool = False
    event: MembershipEvent | None = None


@dataclass(slots=True)
class StoredMessage:
    chat_id: str
    seq: int
    server_id: int
    sender_user: str
    sender_device: str
    client_msg_id: str
    body: bytes
    media_ids: tuple[str, ...]
    created_at_ms: int
    event: MembershipEvent | None = None


@dataclass(slots=True)
class CommitResult:
    """Outcome of one NewMessage in a committed batch.

    `duplicate` is True when (chat_id, sender_user, client_msg_id) was already stored: then
    `message` is the original row and nothing new was written.
    """
    message: StoredMessage
    duplicate: bool


@dataclass(slots=True)
class Batch:
    """What one flush of the coalescing writer commits (atomic per chat, see store.py).

    `cursors` maps (user, device, chat) -> acked seq; `delivered`, `reads` and `public_reads`
    map (chat, user) -> delivered / read / public read seq; all only ever move forward (the
    store keeps the max). A read made while the user's read receipts are on goes to
    `public_reads` (which raises the read watermark too), one made while they are off to `reads`.
    """
    messages: list[NewMessage] = field(default_factory=list)
    cursors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    reads: dict[tuple[str, str], int] = field(default_factory=dict)
    delivered: dict[tuple[str, str], int] = field(default_factory=dict)
    public_reads: dict[tuple[str, str], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return (len(self.messages) + len(self.cursors) + len(self.reads) + len(self.delivered)
                + len(self.public_reads))


@dataclass(slots=True)
class CommitOutcome:
    """What `Store.commit` did with a Batch (store.py: atomic per chat, not across chats).

    `results[i]` belongs to `batch.messages[i]`: its CommitResult, or None when it is not known
    to be stored because its chat failed (`failed[chat_id]` is the error). `unsaved` holds the
    watermark updates that did not land (messages always empty); the writer sends them again.
    """
    results: list[CommitResult | None]
    failed: dict[str, Exception] = field(default_factory=dict)
    unsaved: Batch = field(default_factory=Batch)


@dataclass(slots=True)
class Chat:
    chat_id: str
    kind: ChatKind
    title: str
    created_at_ms: int


@dataclass(slots=True)
class Membership:
    role: Role
    joined_seq: int  # the current period: messages with seq > joined_seq are visible


@dataclass(slots=True)
class ChatSummaryRow:
    chat_id: str
    kind: ChatKind
    title: str
    head_seq: int
    read_seq: int
    member_count: int


@dataclass(slots=True)
class Backlog:
    """A chat in which a device has not received everything visible to it (sync snapshot row).

    Delivery starts above `cursor`: the device's acked seq, or higher when nothing between is
    visible to the user (`jumped`: the device must be told, a floor). `head` is the last seq to
    deliver. `periods` is None when everything above `cursor` is visible; else the user's
    membership periods that reach above it (gaps between them are skipped).
    """
    chat_id: str
    cursor: int
    head: int
    periods: tuple[Period, ...] | None = None
    jumped: bool = False


@dataclass(slots=True)
class Receipt:
    """A member's watermarks in a chat: `read_seq` is the user's real read position (their own
    devices see it), `public_read_seq` the highest reached while their read receipts were on
    (what others may see)."""
    delivered_seq: int
    read_seq: int
    public_read_seq: int = 0


@dataclass(slots=True)
class UserSettings:
    read_receipts: bool = True
    last_seen: Visibility = Visibility.EVERYONE


@dataclass(slots=True)
class DeviceRow:
    device_id: str
    first_seen_ms: int
    last_seen_ms: int


class PushPlatform(enum.Enum):
    """The push service a token belongs to (the values are the protocol's names)."""
    APNS = "apns"                  # Apple, production
    APNS_SANDBOX = "apns-sandbox"  # Apple, development builds
    FCM = "fcm"                    # Firebase Cloud Messaging


@dataclass(slots=True)
class PushToken:
    """A device's push registration: where its app is woken while it has no connection."""
    platform: PushPlatform
    token: str
    topic: str          # APNs: the app's bundle id ("" = the server's default); FCM: unused
    previews: bool      # the user allows a text preview in this device's notifications
    updated_ms: int


MUTE_FOREVER = 2 ** 63 - 1
"""A mute's `until_ms` that never expires."""


@dataclass(slots=True)
class QueuedPush:
    """A push owed to one device for one chat: messages first_seq..last_seq (all by others)
    have not been pushed to it yet. `preview` is what may be shown ("" = content-free), fixed
    when the entry was made, so an end-to-end encrypted body never gets here."""
    user_id: str
    device_id: str
    chat_id: str
    first_seq: int
    last_seq: int
    count: int          # messages by others it covers (the notification says how many)
    sender_user: str    # of the newest message
    preview: str
    due_ms: int


class MediaState(enum.IntEnum):
    PENDING = 1   # a slot was given; the bytes are not (all) there or not checked yet
    COMPLETE = 2  # uploaded and checked: messages may reference it


@dataclass(slots=True)
class MediaRecord:
    """What the server knows of one uploaded file; the bytes are in object storage under the
    media id. `refs` are the chats in which a send was allowed to reference it (never shrinks):
    a media with refs is never swept as an orphan."""
    media_id: str
    owner: str
    size: int
    content_type: str
    sha256: bytes
    created_at_ms: int
    part_size: int          # every part of the upload but the last has this size
    upload_id: str = ""     # the object store's multipart upload ("" for a single PUT)
    thumbnail_of: str = ""  # set on a thumbnail: the media it belongs to
    state: MediaState = MediaState.PENDING
    thumbnail_id: str = ""  # set on a media once its thumbnail completed
    refs: frozenset[str] = frozenset()

    @property
    def content_key(self) -> str:
        """Dedup key within the owner's uploads: the same bytes of the same type (and, for a
        thumbnail, of the same media) are one upload."""
        return f"{self.sha256.hex()}:{self.size}:{self.content_type}:{self.thumbnail_of}"

    @property
    def part_count(self) -> int:
        return max(1, -(-self.size // self.part_size))
