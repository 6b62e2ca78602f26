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
CHAT_KIND_UNSPECIFIED: ChatKind
DIRECT: ChatKind
GROUP: ChatKind
ROLE_UNSPECIFIED: Role
MEMBER: Role
ADMIN: Role
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

class ClientFrame(_message.Message):
    __slots__ = ("request_id", "auth", "send", "ack", "sync", "history", "create_chat", "add_members", "remove_members", "list_chats", "mark_read", "ping")
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
    def __init__(self, request_id: _Optional[int] = ..., auth: _Optional[_Union[Auth, _Mapping]] = ..., send: _Optional[_Union[Send, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., sync: _Optional[_Union[Sync, _Mapping]] = ..., history: _Optional[_Union[History, _Mapping]] = ..., create_chat: _Optional[_Union[CreateChat, _Mapping]] = ..., add_members: _Optional[_Union[AddMembers, _Mapping]] = ..., remove_members: _Optional[_Union[RemoveMembers, _Mapping]] = ..., list_chats: _Optional[_Union[ListChats, _Mapping]] = ..., mark_read: _Optional[_Union[MarkRead, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("request_id", "welcome", "send_ack", "deliver", "sync_complete", "history_page", "chat", "chat_list", "error", "pong", "read_ack")
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
    def __init__(self, request_id: _Optional[int] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., send_ack: _Optional[_Union[SendAck, _Mapping]] = ..., deliver: _Optional[_Union[Deliver, _Mapping]] = ..., sync_complete: _Optional[_Union[SyncComplete, _Mapping]] = ..., history_page: _Optional[_Union[HistoryPage, _Mapping]] = ..., chat: _Optional[_Union[ChatInfo, _Mapping]] = ..., chat_list: _Optional[_Union[ChatList, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., read_ack: _Optional[_Union[ReadAck, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("chat_id", "seq", "server_id", "sender_user_id", "sender_device_id", "client_msg_id", "body", "media_ids", "created_at_ms")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_USER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    seq: int
    server_id: int
    sender_user_id: str
    sender_device_id: str
    client_msg_id: str
    body: bytes
    media_ids: _containers.RepeatedScalarFieldContainer[str]
    created_at_ms: int
    def __init__(self, chat_id: _Optional[str] = ..., seq: _Optional[int] = ..., server_id: _Optional[int] = ..., sender_user_id: _Optional[str] = ..., sender_device_id: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., body: _Optional[bytes] = ..., media_ids: _Optional[_Iterable[str]] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class Send(_message.Message):
    __slots__ = ("client_msg_id", "chat_id", "body", "media_ids")
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    client_msg_id: str
    chat_id: str
    body: bytes
    media_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, client_msg_id: _Optional[str] = ..., chat_id: _Optional[str] = ..., body: _Optional[bytes] = ..., media_ids: _Optional[_Iterable[str]] = ...) -> None: ...

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
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("chat_id", "kind", "title", "head_seq", "read_seq", "member_count")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    kind: ChatKind
    title: str
    head_seq: int
    read_seq: int
    member_count: int
    def __init__(self, chat_id: _Optional[str] = ..., kind: _Optional[_Union[ChatKind, str]] = ..., title: _Optional[str] = ..., head_seq: _Optional[int] = ..., read_seq: _Optional[int] = ..., member_count: _Optional[int] = ...) -> None: ...

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
