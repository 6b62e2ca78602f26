from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHAT_KIND_UNSPECIFIED: _ClassVar[ChatKind]
    DIRECT: _ClassVar[ChatKind]
    GROUP: _ClassVar[ChatKind]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    MEMBER: _ClassVar[Role]
    ADMIN: _ClassVar[Role]

class Visibility(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VISIBILITY_UNSPECIFIED: _ClassVar[Visibility]
    EVERYONE: _ClassVar[Visibility]
    CONTACTS: _ClassVar[Visibility]
    NOBODY: _ClassVar[Visibility]

class PushPlatform(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUSH_PLATFORM_UNSPECIFIED: _ClassVar[PushPlatform]
    APNS: _ClassVar[PushPlatform]
    APNS_SANDBOX: _ClassVar[PushPlatform]
    FCM: _ClassVar[PushPlatform]

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    UNKNOWN_FRAME: _ClassVar[ErrorCode]
    INVALID_ARGUMENT: _ClassVar[ErrorCode]
    NOT_MEMBER: _ClassVar[ErrorCode]
    FORBIDDEN: _ClassVar[ErrorCode]
    BODY_TOO_LARGE: _ClassVar[ErrorCode]
    RATE_LIMITED: _ClassVar[ErrorCode]
    GROUP_FULL: _ClassVar[ErrorCode]
    ACK_INVALID: _ClassVar[ErrorCode]
    UNAVAILABLE: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    ALREADY_AUTHENTICATED: _ClassVar[ErrorCode]
    NOT_FOUND: _ClassVar[ErrorCode]
    BLOCKED: _ClassVar[ErrorCode]
    MEDIA_TOO_LARGE: _ClassVar[ErrorCode]
    MEDIA_TYPE_REFUSED: _ClassVar[ErrorCode]
    MEDIA_NOT_OWNED: _ClassVar[ErrorCode]
    MEDIA_INCOMPLETE: _ClassVar[ErrorCode]
    MEDIA_MISMATCH: _ClassVar[ErrorCode]
CHAT_KIND_UNSPECIFIED: ChatKind
DIRECT: ChatKind
GROUP: ChatKind
ROLE_UNSPECIFIED: Role
MEMBER: Role
ADMIN: Role
VISIBILITY_UNSPECIFIED: Visibility
EVERYONE: Visibility
CONTACTS: Visibility
NOBODY: Visibility
PUSH_PLATFORM_UNSPECIFIED: PushPlatform
APNS: PushPlatform
APNS_SANDBOX: PushPlatform
FCM: PushPlatform
ERROR_CODE_UNSPECIFIED: ErrorCode
UNKNOWN_FRAME: ErrorCode
INVALID_ARGUMENT: ErrorCode
NOT_MEMBER: ErrorCode
FORBIDDEN: ErrorCode
BODY_TOO_LARGE: ErrorCode
RATE_LIMITED: ErrorCode
GROUP_FULL: ErrorCode
ACK_INVALID: ErrorCode
UNAVAILABLE: ErrorCode
INTERNAL: ErrorCode
ALREADY_AUTHENTICATED: ErrorCode
NOT_FOUND: ErrorCode
BLOCKED: ErrorCode
MEDIA_TOO_LARGE: ErrorCode
MEDIA_TYPE_REFUSED: ErrorCode
MEDIA_NOT_OWNED: ErrorCode
MEDIA_INCOMPLETE: ErrorCode
MEDIA_MISMATCH: ErrorCode

class ClientFrame(_message.Message):
    __slots__ = ("request_id", "auth", "send", "ack", "sync", "history", "create_chat", "add_members", "remove_members", "list_chats", "mark_read", "ping", "subscribe_presence", "unsubscribe_presence", "typing", "update_settings", "list_devices", "revoke_device", "get_receipts", "block", "unblock", "list_blocked", "get_server_info", "register_push", "unregister_push", "mute_chat", "list_mutes", "create_upload", "complete_upload", "get_media")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    CREATE_CHAT_FIELD_NUMBER: _ClassVar[int]
    ADD_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    LIST_CHATS_FIELD_NUMBER: _ClassVar[int]
    MARK_READ_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_PRESENCE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_PRESENCE_FIELD_NUMBER: _ClassVar[int]
    TYPING_FIELD_NUMBER: _ClassVar[int]
    UPDATE_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    LIST_DEVICES_FIELD_NUMBER: _ClassVar[int]
    REVOKE_DEVICE_FIELD_NUMBER: _ClassVar[int]
    GET_RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    UNBLOCK_FIELD_NUMBER: _ClassVar[int]
    LIST_BLOCKED_FIELD_NUMBER: _ClassVar[int]
    GET_SERVER_INFO_FIELD_NUMBER: _ClassVar[int]
    REGISTER_PUSH_FIELD_NUMBER: _ClassVar[int]
    UNREGISTER_PUSH_FIELD_NUMBER: _ClassVar[int]
    MUTE_CHAT_FIELD_NUMBER: _ClassVar[int]
    LIST_MUTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_UPLOAD_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_UPLOAD_FIELD_NUMBER: _ClassVar[int]
    GET_MEDIA_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    auth: Auth
    send: Send
    ack: Ack
    sync: Sync
    history: History
    create_chat: CreateChat
    add_members: AddMembers
    remove_members: RemoveMembers
    list_chats: ListChats
    mark_read: MarkRead
    ping: Ping
    subscribe_presence: SubscribePresence
    unsubscribe_presence: UnsubscribePresence
    typing: Typing
    update_settings: UpdateSettings
    list_devices: ListDevices
    revoke_device: RevokeDevice
    get_receipts: GetReceipts
    block: Block
    unblock: Unblock
    list_blocked: ListBlocked
    get_server_info: GetServerInfo
    register_push: RegisterPush
    unregister_push: UnregisterPush
    mute_chat: MuteChat
    list_mutes: ListMutes
    create_upload: CreateUpload
    complete_upload: CompleteUpload
    get_media: GetMedia
    def __init__(self, request_id: _Optional[int] = ..., auth: _Optional[_Union[Auth, _Mapping]] = ..., send: _Optional[_Union[Send, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., sync: _Optional[_Union[Sync, _Mapping]] = ..., history: _Optional[_Union[History, _Mapping]] = ..., create_chat: _Optional[_Union[CreateChat, _Mapping]] = ..., add_members: _Optional[_Union[AddMembers, _Mapping]] = ..., remove_members: _Optional[_Union[RemoveMembers, _Mapping]] = ..., list_chats: _Optional[_Union[ListChats, _Mapping]] = ..., mark_read: _Optional[_Union[MarkRead, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., subscribe_presence: _Optional[_Union[SubscribePresence, _Mapping]] = ..., unsubscribe_presence: _Optional[_Union[UnsubscribePresence, _Mapping]] = ..., typing: _Optional[_Union[Typing, _Mapping]] = ..., update_settings: _Optional[_Union[UpdateSettings, _Mapping]] = ..., list_devices: _Optional[_Union[ListDevices, _Mapping]] = ..., revoke_device: _Optional[_Union[RevokeDevice, _Mapping]] = ..., get_receipts: _Optional[_Union[GetReceipts, _Mapping]] = ..., block: _Optional[_Union[Block, _Mapping]] = ..., unblock: _Optional[_Union[Unblock, _Mapping]] = ..., list_blocked: _Optional[_Union[ListBlocked, _Mapping]] = ..., get_server_info: _Optional[_Union[GetServerInfo, _Mapping]] = ..., register_push: _Optional[_Union[RegisterPush, _Mapping]] = ..., unregister_push: _Optional[_Union[UnregisterPush, _Mapping]] = ..., mute_chat: _Optional[_Union[MuteChat, _Mapping]] = ..., list_mutes: _Optional[_Union[ListMutes, _Mapping]] = ..., create_upload: _Optional[_Union[CreateUpload, _Mapping]] = ..., complete_upload: _Optional[_Union[CompleteUpload, _Mapping]] = ..., get_media: _Optional[_Union[GetMedia, _Mapping]] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("request_id", "welcome", "send_ack", "deliver", "sync_complete", "history_page", "chat", "chat_list", "error", "pong", "read_ack", "receipt_update", "presence", "typing_update", "settings", "device_list", "receipt_status", "goaway", "ok", "blocked_list", "server_info", "mute_list", "upload_slot", "media_info", "media_urls")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    SEND_ACK_FIELD_NUMBER: _ClassVar[int]
    DELIVER_FIELD_NUMBER: _ClassVar[int]
    SYNC_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_PAGE_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    CHAT_LIST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    READ_ACK_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_UPDATE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    TYPING_UPDATE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_LIST_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_STATUS_FIELD_NUMBER: _ClassVar[int]
    GOAWAY_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_LIST_FIELD_NUMBER: _ClassVar[int]
    SERVER_INFO_FIELD_NUMBER: _ClassVar[int]
    MUTE_LIST_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SLOT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_INFO_FIELD_NUMBER: _ClassVar[int]
    MEDIA_URLS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    welcome: Welcome
    send_ack: SendAck
    deliver: Deliver
    sync_complete: SyncComplete
    history_page: HistoryPage
    chat: ChatInfo
    chat_list: ChatList
    error: Error
    pong: Pong
    read_ack: ReadAck
    receipt_update: ReceiptUpdate
    presence: Presence
    typing_update: TypingUpdate
    settings: Settings
    device_list: DeviceList
    receipt_status: ReceiptStatus
    goaway: Goaway
    ok: Ok
    blocked_list: BlockedList
    server_info: ServerInfo
    mute_list: MuteList
    upload_slot: UploadSlot
    media_info: MediaInfo
    media_urls: MediaUrls
    def __init__(self, request_id: _Optional[int] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., send_ack: _Optional[_Union[SendAck, _Mapping]] = ..., deliver: _Optional[_Union[Deliver, _Mapping]] = ..., sync_complete: _Optional[_Union[SyncComplete, _Mapping]] = ..., history_page: _Optional[_Union[HistoryPage, _Mapping]] = ..., chat: _Optional[_Union[ChatInfo, _Mapping]] = ..., chat_list: _Optional[_Union[ChatList, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., read_ack: _Optional[_Union[ReadAck, _Mapping]] = ..., receipt_update: _Optional[_Union[ReceiptUpdate, _Mapping]] = ..., presence: _Optional[_Union[Presence, _Mapping]] = ..., typing_update: _Optional[_Union[TypingUpdate, _Mapping]] = ..., settings: _Optional[_Union[Settings, _Mapping]] = ..., device_list: _Optional[_Union[DeviceList, _Mapping]] = ..., receipt_status: _Optional[_Union[ReceiptStatus, _Mapping]] = ..., goaway: _Optional[_Union[Goaway, _Mapping]] = ..., ok: _Optional[_Union[Ok, _Mapping]] = ..., blocked_list: _Optional[_Union[BlockedList, _Mapping]] = ..., server_info: _Optional[_Union[ServerInfo, _Mapping]] = ..., mute_list: _Optional[_Union[MuteList, _Mapping]] = ..., upload_slot: _Optional[_Union[UploadSlot, _Mapping]] = ..., media_info: _Optional[_Union[MediaInfo, _Mapping]] = ..., media_urls: _Optional[_Union[MediaUrls, _Mapping]] = ...) -> None: ...

class Ok(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Goaway(_message.Message):
    __slots__ = ("reconnect_after_ms", "reason")
    RECONNECT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    reconnect_after_ms: int
    reason: str
    def __init__(self, reconnect_after_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Auth(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("user_id", "device_id", "server_time_ms", "heartbeat_interval_ms", "idle_timeout_ms", "max_frame_bytes", "max_body_bytes", "delivery_window")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_WINDOW_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    device_id: str
    server_time_ms: int
    heartbeat_interval_ms: int
    idle_timeout_ms: int
    max_frame_bytes: int
    max_body_bytes: int
    delivery_window: int
    def __init__(self, user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., server_time_ms: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ..., idle_timeout_ms: _Optional[int] = ..., max_frame_bytes: _Optional[int] = ..., max_body_bytes: _Optional[int] = ..., delivery_window: _Optional[int] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("client_time_ms",)
    CLIENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    client_time_ms: int
    def __init__(self, client_time_ms: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("client_time_ms", "server_time_ms")
    CLIENT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    client_time_ms: int
    server_time_ms: int
    def __init__(self, client_time_ms: _Optional[int] = ..., server_time_ms: _Optional[int] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("chat_id", "seq", "server_id", "sender_user_id", "sender_device_id", "client_msg_id", "body", "media_ids", "created_at_ms", "membership")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_USER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    seq: int
    server_id: int
    sender_user_id: str
    sender_device_id: str
    client_msg_id: str
    body: bytes
    media_ids: _containers.RepeatedScalarFieldContainer[str]
    created_at_ms: int
    membership: MembershipEvent
    def __init__(self, chat_id: _Optional[str] = ..., seq: _Optional[int] = ..., server_id: _Optional[int] = ..., sender_user_id: _Optional[str] = ..., sender_device_id: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., body: _Optional[bytes] = ..., media_ids: _Optional[_Iterable[str]] = ..., created_at_ms: _Optional[int] = ..., membership: _Optional[_Union[MembershipEvent, _Mapping]] = ...) -> None: ...

class MembershipEvent(_message.Message):
    __slots__ = ("action", "actor_user_id", "user_ids")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[MembershipEvent.Action]
        ADDED: _ClassVar[MembershipEvent.Action]
        REMOVED: _ClassVar[MembershipEvent.Action]
    ACTION_UNSPECIFIED: MembershipEvent.Action
    ADDED: MembershipEvent.Action
    REMOVED: MembershipEvent.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    action: MembershipEvent.Action
    actor_user_id: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, action: _Optional[_Union[MembershipEvent.Action, str]] = ..., actor_user_id: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Send(_message.Message):
    __slots__ = ("client_msg_id", "chat_id", "body", "media_ids", "e2e")
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    E2E_FIELD_NUMBER: _ClassVar[int]
    client_msg_id: str
    chat_id: str
    body: bytes
    media_ids: _containers.RepeatedScalarFieldContainer[str]
    e2e: bool
    def __init__(self, client_msg_id: _Optional[str] = ..., chat_id: _Optional[str] = ..., body: _Optional[bytes] = ..., media_ids: _Optional[_Iterable[str]] = ..., e2e: _Optional[bool] = ...) -> None: ...

class SendAck(_message.Message):
    __slots__ = ("client_msg_id", "chat_id", "seq", "server_id", "created_at_ms", "duplicate")
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    client_msg_id: str
    chat_id: str
    seq: int
    server_id: int
    created_at_ms: int
    duplicate: bool
    def __init__(self, client_msg_id: _Optional[str] = ..., chat_id: _Optional[str] = ..., seq: _Optional[int] = ..., server_id: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class Deliver(_message.Message):
    __slots__ = ("messages", "floors")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FLOORS_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    floors: _containers.RepeatedCompositeFieldContainer[ChatSeq]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., floors: _Optional[_Iterable[_Union[ChatSeq, _Mapping]]] = ...) -> None: ...

class ChatSeq(_message.Message):
    __slots__ = ("chat_id", "seq")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    seq: int
    def __init__(self, chat_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[ChatSeq]
    def __init__(self, acks: _Optional[_Iterable[_Union[ChatSeq, _Mapping]]] = ...) -> None: ...

class Sync(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncComplete(_message.Message):
    __slots__ = ("chats", "messages")
    CHATS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    chats: int
    messages: int
    def __init__(self, chats: _Optional[int] = ..., messages: _Optional[int] = ...) -> None: ...

class History(_message.Message):
    __slots__ = ("chat_id", "before_seq", "limit")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    before_seq: int
    limit: int
    def __init__(self, chat_id: _Optional[str] = ..., before_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryPage(_message.Message):
    __slots__ = ("chat_id", "messages", "has_more")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    has_more: bool
    def __init__(self, chat_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., has_more: _Optional[bool] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("user_id", "role")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    role: Role
    def __init__(self, user_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ...) -> None: ...

class CreateChat(_message.Message):
    __slots__ = ("kind", "member_user_ids", "title")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MEMBER_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    kind: ChatKind
    member_user_ids: _containers.RepeatedScalarFieldContainer[str]
    title: str
    def __init__(self, kind: _Optional[_Union[ChatKind, str]] = ..., member_user_ids: _Optional[_Iterable[str]] = ..., title: _Optional[str] = ...) -> None: ...

class AddMembers(_message.Message):
    __slots__ = ("chat_id", "user_ids")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, chat_id: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveMembers(_message.Message):
    __slots__ = ("chat_id", "user_ids")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, chat_id: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ChatInfo(_message.Message):
    __slots__ = ("chat_id", "kind", "title", "members", "head_seq", "created_at_ms")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    kind: ChatKind
    title: str
    members: _containers.RepeatedCompositeFieldContainer[Member]
    head_seq: int
    created_at_ms: int
    def __init__(self, chat_id: _Optional[str] = ..., kind: _Optional[_Union[ChatKind, str]] = ..., title: _Optional[str] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., head_seq: _Optional[int] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class ListChats(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChatSummary(_message.Message):
    __slots__ = ("chat_id", "kind", "title", "head_seq", "read_seq", "member_count", "unread_count")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNREAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    kind: ChatKind
    title: str
    head_seq: int
    read_seq: int
    member_count: int
    unread_count: int
    def __init__(self, chat_id: _Optional[str] = ..., kind: _Optional[_Union[ChatKind, str]] = ..., title: _Optional[str] = ..., head_seq: _Optional[int] = ..., read_seq: _Optional[int] = ..., member_count: _Optional[int] = ..., unread_count: _Optional[int] = ...) -> None: ...

class ChatList(_message.Message):
    __slots__ = ("chats",)
    CHATS_FIELD_NUMBER: _ClassVar[int]
    chats: _containers.RepeatedCompositeFieldContainer[ChatSummary]
    def __init__(self, chats: _Optional[_Iterable[_Union[ChatSummary, _Mapping]]] = ...) -> None: ...

class MarkRead(_message.Message):
    __slots__ = ("chat_id", "seq")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    seq: int
    def __init__(self, chat_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class ReadAck(_message.Message):
    __slots__ = ("chat_id", "read_seq")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    read_seq: int
    def __init__(self, chat_id: _Optional[str] = ..., read_seq: _Optional[int] = ...) -> None: ...

class MemberReceipt(_message.Message):
    __slots__ = ("user_id", "delivered_seq", "read_seq")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_SEQ_FIELD_NUMBER: _ClassVar[int]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    delivered_seq: int
    read_seq: int
    def __init__(self, user_id: _Optional[str] = ..., delivered_seq: _Optional[int] = ..., read_seq: _Optional[int] = ...) -> None: ...

class ReceiptUpdate(_message.Message):
    __slots__ = ("chat_id", "members", "delivered_all_seq", "read_all_seq")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_ALL_SEQ_FIELD_NUMBER: _ClassVar[int]
    READ_ALL_SEQ_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    members: _containers.RepeatedCompositeFieldContainer[MemberReceipt]
    delivered_all_seq: int
    read_all_seq: int
    def __init__(self, chat_id: _Optional[str] = ..., members: _Optional[_Iterable[_Union[MemberReceipt, _Mapping]]] = ..., delivered_all_seq: _Optional[int] = ..., read_all_seq: _Optional[int] = ...) -> None: ...

class GetReceipts(_message.Message):
    __slots__ = ("chat_id", "seq")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    seq: int
    def __init__(self, chat_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class ReceiptStatus(_message.Message):
    __slots__ = ("chat_id", "seq", "member_count", "delivered_count", "read_count", "read_by")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    READ_COUNT_FIELD_NUMBER: _ClassVar[int]
    READ_BY_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    seq: int
    member_count: int
    delivered_count: int
    read_count: int
    read_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, chat_id: _Optional[str] = ..., seq: _Optional[int] = ..., member_count: _Optional[int] = ..., delivered_count: _Optional[int] = ..., read_count: _Optional[int] = ..., read_by: _Optional[_Iterable[str]] = ...) -> None: ...

class SubscribePresence(_message.Message):
    __slots__ = ("user_ids",)
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UnsubscribePresence(_message.Message):
    __slots__ = ("user_ids",)
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Presence(_message.Message):
    __slots__ = ("user_id", "online", "last_seen_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    online: bool
    last_seen_ms: int
    def __init__(self, user_id: _Optional[str] = ..., online: _Optional[bool] = ..., last_seen_ms: _Optional[int] = ...) -> None: ...

class Typing(_message.Message):
    __slots__ = ("chat_id", "typing")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPING_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    typing: bool
    def __init__(self, chat_id: _Optional[str] = ..., typing: _Optional[bool] = ...) -> None: ...

class TypingUpdate(_message.Message):
    __slots__ = ("chat_id", "user_id", "device_id", "typing", "expires_in_ms")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPING_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_MS_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    user_id: str
    device_id: str
    typing: bool
    expires_in_ms: int
    def __init__(self, chat_id: _Optional[str] = ..., user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., typing: _Optional[bool] = ..., expires_in_ms: _Optional[int] = ...) -> None: ...

class UpdateSettings(_message.Message):
    __slots__ = ("read_receipts", "last_seen", "invisible")
    READ_RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    INVISIBLE_FIELD_NUMBER: _ClassVar[int]
    read_receipts: bool
    last_seen: Visibility
    invisible: bool
    def __init__(self, read_receipts: _Optional[bool] = ..., last_seen: _Optional[_Union[Visibility, str]] = ..., invisible: _Optional[bool] = ...) -> None: ...

class Settings(_message.Message):
    __slots__ = ("read_receipts", "last_seen", "invisible")
    READ_RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    INVISIBLE_FIELD_NUMBER: _ClassVar[int]
    read_receipts: bool
    last_seen: Visibility
    invisible: bool
    def __init__(self, read_receipts: _Optional[bool] = ..., last_seen: _Optional[_Union[Visibility, str]] = ..., invisible: _Optional[bool] = ...) -> None: ...

class ListDevices(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Device(_message.Message):
    __slots__ = ("device_id", "online", "last_seen_ms", "first_seen_ms")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    online: bool
    last_seen_ms: int
    first_seen_ms: int
    def __init__(self, device_id: _Optional[str] = ..., online: _Optional[bool] = ..., last_seen_ms: _Optional[int] = ..., first_seen_ms: _Optional[int] = ...) -> None: ...

class DeviceList(_message.Message):
    __slots__ = ("devices", "max_devices")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    max_devices: int
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., max_devices: _Optional[int] = ...) -> None: ...

class RevokeDevice(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    def __init__(self, device_id: _Optional[str] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class Unblock(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListBlocked(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BlockedList(_message.Message):
    __slots__ = ("user_ids",)
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetServerInfo(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "node", "max_group_members", "max_devices", "max_media_ids", "max_presence_subscriptions", "max_history_limit", "max_event_users", "sends_per_second", "send_burst", "chats_per_minute", "history_per_second", "media_max_bytes", "media_max_thumbnail_bytes", "media_types", "push_enabled")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUP_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVICES_FIELD_NUMBER: _ClassVar[int]
    MAX_MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_PRESENCE_SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_HISTORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENT_USERS_FIELD_NUMBER: _ClassVar[int]
    SENDS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SEND_BURST_FIELD_NUMBER: _ClassVar[int]
    CHATS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MEDIA_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEDIA_MAX_THUMBNAIL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPES_FIELD_NUMBER: _ClassVar[int]
    PUSH_ENABLED_FIELD_NUMBER: _ClassVar[int]
    version: str
    node: str
    max_group_members: int
    max_devices: int
    max_media_ids: int
    max_presence_subscriptions: int
    max_history_limit: int
    max_event_users: int
    sends_per_second: float
    send_burst: float
    chats_per_minute: float
    history_per_second: float
    media_max_bytes: int
    media_max_thumbnail_bytes: int
    media_types: _containers.RepeatedScalarFieldContainer[str]
    push_enabled: bool
    def __init__(self, version: _Optional[str] = ..., node: _Optional[str] = ..., max_group_members: _Optional[int] = ..., max_devices: _Optional[int] = ..., max_media_ids: _Optional[int] = ..., max_presence_subscriptions: _Optional[int] = ..., max_history_limit: _Optional[int] = ..., max_event_users: _Optional[int] = ..., sends_per_second: _Optional[float] = ..., send_burst: _Optional[float] = ..., chats_per_minute: _Optional[float] = ..., history_per_second: _Optional[float] = ..., media_max_bytes: _Optional[int] = ..., media_max_thumbnail_bytes: _Optional[int] = ..., media_types: _Optional[_Iterable[str]] = ..., push_enabled: _Optional[bool] = ...) -> None: ...

class RegisterPush(_message.Message):
    __slots__ = ("platform", "token", "topic", "previews")
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PREVIEWS_FIELD_NUMBER: _ClassVar[int]
    platform: PushPlatform
    token: str
    topic: str
    previews: bool
    def __init__(self, platform: _Optional[_Union[PushPlatform, str]] = ..., token: _Optional[str] = ..., topic: _Optional[str] = ..., previews: _Optional[bool] = ...) -> None: ...

class UnregisterPush(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MuteChat(_message.Message):
    __slots__ = ("chat_id", "muted_until_ms")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    MUTED_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    muted_until_ms: int
    def __init__(self, chat_id: _Optional[str] = ..., muted_until_ms: _Optional[int] = ...) -> None: ...

class ListMutes(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChatMute(_message.Message):
    __slots__ = ("chat_id", "muted_until_ms")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    MUTED_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    muted_until_ms: int
    def __init__(self, chat_id: _Optional[str] = ..., muted_until_ms: _Optional[int] = ...) -> None: ...

class MuteList(_message.Message):
    __slots__ = ("mutes",)
    MUTES_FIELD_NUMBER: _ClassVar[int]
    mutes: _containers.RepeatedCompositeFieldContainer[ChatMute]
    def __init__(self, mutes: _Optional[_Iterable[_Union[ChatMute, _Mapping]]] = ...) -> None: ...

class CreateUpload(_message.Message):
    __slots__ = ("size", "content_type", "sha256", "thumbnail_of")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_OF_FIELD_NUMBER: _ClassVar[int]
    size: int
    content_type: str
    sha256: bytes
    thumbnail_of: str
    def __init__(self, size: _Optional[int] = ..., content_type: _Optional[str] = ..., sha256: _Optional[bytes] = ..., thumbnail_of: _Optional[str] = ...) -> None: ...

class UploadPart(_message.Message):
    __slots__ = ("number", "offset", "size", "url", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    number: int
    offset: int
    size: int
    url: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, number: _Optional[int] = ..., offset: _Optional[int] = ..., size: _Optional[int] = ..., url: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UploadSlot(_message.Message):
    __slots__ = ("media_id", "complete", "part_size", "part_count", "parts", "expires_at_ms")
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PART_SIZE_FIELD_NUMBER: _ClassVar[int]
    PART_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    media_id: str
    complete: bool
    part_size: int
    part_count: int
    parts: _containers.RepeatedCompositeFieldContainer[UploadPart]
    expires_at_ms: int
    def __init__(self, media_id: _Optional[str] = ..., complete: _Optional[bool] = ..., part_size: _Optional[int] = ..., part_count: _Optional[int] = ..., parts: _Optional[_Iterable[_Union[UploadPart, _Mapping]]] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class CompleteUpload(_message.Message):
    __slots__ = ("media_id",)
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    media_id: str
    def __init__(self, media_id: _Optional[str] = ...) -> None: ...

class MediaInfo(_message.Message):
    __slots__ = ("media_id", "size", "content_type", "sha256", "thumbnail_id", "thumbnail_of", "owner_user_id")
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_ID_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_OF_FIELD_NUMBER: _ClassVar[int]
    OWNER_USER_ID_FIELD_NUMBER: _ClassVar[int]
    media_id: str
    size: int
    content_type: str
    sha256: bytes
    thumbnail_id: str
    thumbnail_of: str
    owner_user_id: str
    def __init__(self, media_id: _Optional[str] = ..., size: _Optional[int] = ..., content_type: _Optional[str] = ..., sha256: _Optional[bytes] = ..., thumbnail_id: _Optional[str] = ..., thumbnail_of: _Optional[str] = ..., owner_user_id: _Optional[str] = ...) -> None: ...

class GetMedia(_message.Message):
    __slots__ = ("media_id", "chat_id", "seq")
    MEDIA_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    media_id: str
    chat_id: str
    seq: int
    def __init__(self, media_id: _Optional[str] = ..., chat_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class MediaUrls(_message.Message):
    __slots__ = ("media", "url", "expires_at_ms", "thumbnail", "thumbnail_url")
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_URL_FIELD_NUMBER: _ClassVar[int]
    media: MediaInfo
    url: str
    expires_at_ms: int
    thumbnail: MediaInfo
    thumbnail_url: str
    def __init__(self, media: _Optional[_Union[MediaInfo, _Mapping]] = ..., url: _Optional[str] = ..., expires_at_ms: _Optional[int] = ..., thumbnail: _Optional[_Union[MediaInfo, _Mapping]] = ..., thumbnail_url: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "detail", "retry_after_ms", "chat_id", "client_msg_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    detail: str
    retry_after_ms: int
    chat_id: str
    client_msg_id: str
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., detail: _Optional[str] = ..., retry_after_ms: _Optional[int] = ..., chat_id: _Optional[str] = ..., client_msg_id: _Optional[str] = ...) -> None: ...
