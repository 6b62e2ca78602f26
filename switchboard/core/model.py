"""Domain records shared by the stores, the writer and the services.

Plain slotted classes: they are created per message on the hot path, so no dataclass
machinery beyond __slots__, and no protobuf (core does not depend on the wire format).
"""
from __future__ import annotations

import enum
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
    a ForwardSend): what the sender asked, before the owner checks it."""
    __slots__ = ("user", "device", "chat_id", "client_msg_id", "body", "media_ids")

    def __init__(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                 media_ids: list[str]) -> None:
        self.user = user
        self.device = device
        self.chat_id = chat_id
        self.client_msg_id = client_msg_id
        self.body = body
        self.media_ids = media_ids


@dataclass(slots=True)
class NewMessage:
    """A send accepted by the owner, not yet sequenced: the store assigns `seq`."""
    chat_id: str
    sender_user: str
    sender_device: str
    client_msg_id: str
    body: bytes
    media_ids: tuple[str, ...]
    server_id: int
    created_at_ms: int


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

    `cursors` maps (user, device, chat) -> acked seq, `delivered` and `reads` map (chat, user) ->
    delivered / read seq; all only ever move forward (the store keeps the max).
    """
    messages: list[NewMessage] = field(default_factory=list)
    cursors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    reads: dict[tuple[str, str], int] = field(default_factory=dict)
    delivered: dict[tuple[str, str], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.messages) + len(self.cursors) + len(self.reads) + len(self.delivered)


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
    joined_seq: int  # messages with seq > joined_seq are visible to this member


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
    """A chat in which a device has not acked everything (sync snapshot row)."""
    chat_id: str
    cursor: int  # highest seq acked by the device (or the member's joined_seq)
    head: int


@dataclass(slots=True)
class Receipt:
    """A member's watermarks in a chat."""
    delivered_seq: int
    read_seq: int


@dataclass(slots=True)
class UserSettings:
    read_receipts: bool = True
    last_seen: Visibility = Visibility.EVERYONE


@dataclass(slots=True)
class DeviceRow:
    device_id: str
    first_seen_ms: int
    last_seen_ms: int


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
