from switchboard.proto.v1 import client_pb2 as _client_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Feature(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_NONE: _ClassVar[Feature]
    FEATURE_LOCATED_REPLACED: _ClassVar[Feature]
FEATURE_NONE: Feature
FEATURE_LOCATED_REPLACED: Feature

class MeshFrame(_message.Message):
    __slots__ = ("hello", "heartbeat", "forward_send", "send_result", "deliver", "push", "receipt_note", "invalidate", "presence", "kick", "located", "located_ack", "load", "hello_proof")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    FORWARD_SEND_FIELD_NUMBER: _ClassVar[int]
    SEND_RESULT_FIELD_NUMBER: _ClassVar[int]
    DELIVER_FIELD_NUMBER: _ClassVar[int]
    PUSH_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_NOTE_FIELD_NUMBER: _ClassVar[int]
    INVALIDATE_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    KICK_FIELD_NUMBER: _ClassVar[int]
    LOCATED_FIELD_NUMBER: _ClassVar[int]
    LOCATED_ACK_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    HELLO_PROOF_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    forward_send: ForwardSend
    send_result: SendResult
    deliver: Deliver
    push: Push
    receipt_note: ReceiptNote
    invalidate: Invalidate
    presence: PresenceStates
    kick: Kick
    located: Located
    located_ack: LocatedAck
    load: Load
    hello_proof: HelloProof
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., forward_send: _Optional[_Union[ForwardSend, _Mapping]] = ..., send_result: _Optional[_Union[SendResult, _Mapping]] = ..., deliver: _Optional[_Union[Deliver, _Mapping]] = ..., push: _Optional[_Union[Push, _Mapping]] = ..., receipt_note: _Optional[_Union[ReceiptNote, _Mapping]] = ..., invalidate: _Optional[_Union[Invalidate, _Mapping]] = ..., presence: _Optional[_Union[PresenceStates, _Mapping]] = ..., kick: _Optional[_Union[Kick, _Mapping]] = ..., located: _Optional[_Union[Located, _Mapping]] = ..., located_ack: _Optional[_Union[LocatedAck, _Mapping]] = ..., load: _Optional[_Union[Load, _Mapping]] = ..., hello_proof: _Optional[_Union[HelloProof, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_id", "epoch", "protocol", "nonce", "proof", "features")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    epoch: int
    protocol: int
    nonce: bytes
    proof: bytes
    features: int
    def __init__(self, node_id: _Optional[str] = ..., epoch: _Optional[int] = ..., protocol: _Optional[int] = ..., nonce: _Optional[bytes] = ..., proof: _Optional[bytes] = ..., features: _Optional[int] = ...) -> None: ...

class HelloProof(_message.Message):
    __slots__ = ("proof",)
    PROOF_FIELD_NUMBER: _ClassVar[int]
    proof: bytes
    def __init__(self, proof: _Optional[bytes] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardSend(_message.Message):
    __slots__ = ("request_id", "user_id", "device_id", "chat_id", "client_msg_id", "body", "media_ids", "membership", "e2e")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    MEDIA_IDS_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    E2E_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    user_id: str
    device_id: str
    chat_id: str
    client_msg_id: str
    body: bytes
    media_ids: _containers.RepeatedScalarFieldContainer[str]
    membership: _client_pb2.MembershipEvent
    e2e: bool
    def __init__(self, request_id: _Optional[int] = ..., user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., chat_id: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., body: _Optional[bytes] = ..., media_ids: _Optional[_Iterable[str]] = ..., membership: _Optional[_Union[_client_pb2.MembershipEvent, _Mapping]] = ..., e2e: _Optional[bool] = ...) -> None: ...

class SendResult(_message.Message):
    __slots__ = ("request_id", "message", "duplicate", "error", "error_message", "retry_after_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    message: _client_pb2.Message
    duplicate: bool
    error: _client_pb2.ErrorCode
    error_message: str
    retry_after_ms: int
    def __init__(self, request_id: _Optional[int] = ..., message: _Optional[_Union[_client_pb2.Message, _Mapping]] = ..., duplicate: _Optional[bool] = ..., error: _Optional[_Union[_client_pb2.ErrorCode, str]] = ..., error_message: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class Deliver(_message.Message):
    __slots__ = ("chat_id", "user_ids", "messages")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    messages: _containers.RepeatedCompositeFieldContainer[_client_pb2.Message]
    def __init__(self, chat_id: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[_Union[_client_pb2.Message, _Mapping]]] = ...) -> None: ...

class Push(_message.Message):
    __slots__ = ("user_ids", "frame", "exclude_user_id", "exclude_device_id")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    frame: bytes
    exclude_user_id: str
    exclude_device_id: str
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., frame: _Optional[bytes] = ..., exclude_user_id: _Optional[str] = ..., exclude_device_id: _Optional[str] = ...) -> None: ...

class ReceiptNote(_message.Message):
    __slots__ = ("chat_id", "user_id", "delivered_seq", "read_seq", "public_read_seq")
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_SEQ_FIELD_NUMBER: _ClassVar[int]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    chat_id: str
    user_id: str
    delivered_seq: int
    read_seq: int
    public_read_seq: int
    def __init__(self, chat_id: _Optional[str] = ..., user_id: _Optional[str] = ..., delivered_seq: _Optional[int] = ..., read_seq: _Optional[int] = ..., public_read_seq: _Optional[int] = ...) -> None: ...

class Invalidate(_message.Message):
    __slots__ = ("kind", "key", "removed_user_ids")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CHAT_MEMBERS: _ClassVar[Invalidate.Kind]
        USER_SETTINGS: _ClassVar[Invalidate.Kind]
        USER_BLOCKS: _ClassVar[Invalidate.Kind]
    CHAT_MEMBERS: Invalidate.Kind
    USER_SETTINGS: Invalidate.Kind
    USER_BLOCKS: Invalidate.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REMOVED_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    kind: Invalidate.Kind
    key: str
    removed_user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[_Union[Invalidate.Kind, str]] = ..., key: _Optional[str] = ..., removed_user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PresenceStates(_message.Message):
    __slots__ = ("users", "snapshot")
    USERS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[UserPresence]
    snapshot: bool
    def __init__(self, users: _Optional[_Iterable[_Union[UserPresence, _Mapping]]] = ..., snapshot: _Optional[bool] = ...) -> None: ...

class UserPresence(_message.Message):
    __slots__ = ("user_id", "online", "last_seen_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    online: bool
    last_seen_ms: int
    def __init__(self, user_id: _Optional[str] = ..., online: _Optional[bool] = ..., last_seen_ms: _Optional[int] = ...) -> None: ...

class Kick(_message.Message):
    __slots__ = ("user_id", "device_id", "close_code", "reason", "before_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSE_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    device_id: str
    close_code: int
    reason: str
    before_ms: int
    def __init__(self, user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., close_code: _Optional[int] = ..., reason: _Optional[str] = ..., before_ms: _Optional[int] = ...) -> None: ...

class Located(_message.Message):
    __slots__ = ("here", "gone", "snapshot", "barrier", "replaced")
    HERE_FIELD_NUMBER: _ClassVar[int]
    GONE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    BARRIER_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    here: _containers.RepeatedScalarFieldContainer[str]
    gone: _containers.RepeatedScalarFieldContainer[str]
    snapshot: bool
    barrier: int
    replaced: _containers.RepeatedCompositeFieldContainer[Replaced]
    def __init__(self, here: _Optional[_Iterable[str]] = ..., gone: _Optional[_Iterable[str]] = ..., snapshot: _Optional[bool] = ..., barrier: _Optional[int] = ..., replaced: _Optional[_Iterable[_Union[Replaced, _Mapping]]] = ...) -> None: ...

class Replaced(_message.Message):
    __slots__ = ("user_id", "device_id", "before_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    BEFORE_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    device_id: str
    before_ms: int
    def __init__(self, user_id: _Optional[str] = ..., device_id: _Optional[str] = ..., before_ms: _Optional[int] = ...) -> None: ...

class LocatedAck(_message.Message):
    __slots__ = ("barrier",)
    BARRIER_FIELD_NUMBER: _ClassVar[int]
    barrier: int
    def __init__(self, barrier: _Optional[int] = ...) -> None: ...

class Load(_message.Message):
    __slots__ = ("connections",)
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    connections: int
    def __init__(self, connections: _Optional[int] = ...) -> None: ...
