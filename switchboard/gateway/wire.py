"""What the gateway takes from a device's bytes, decided in one place: parsing a ClientFrame and
the valid range of every number in it.

Every numeric field a client can send has an entry in RANGES; the module refuses to import if
client.proto gains one without it, so no handler ever passes an unchecked wire number to the
store (SQLite integers are signed 64-bit: a uint64 seq of 2^64-1 would overflow there).

A frame whose bytes are not a ClientFrame closes the connection (4000). A frame that is one
except for a string field holding invalid UTF-8 (proto3 requires UTF-8) or a number out of its
field's range is answered INVALID_ARGUMENT naming the field, with its request_id, and the
connection stays: it is a bad request, not a broken stream.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from switchboard.proto.v1 import client_pb2 as pb

MAX_SEQ = 2 ** 63 - 1      # seqs are stored as signed 64-bit integers
MAX_UINT32 = 2 ** 32 - 1
MAX_UINT64 = 2 ** 64 - 1
MAX_HISTORY = 200          # messages per History page (0 means the default, 50)

# (message, field) -> inclusive valid range of every number a client can send; proto3 leaves
# zero values off the wire, so a range applies to the values a client actually set.
RANGES: dict[tuple[str, str], tuple[int, int]] = {
    ("ClientFrame", "request_id"): (0, MAX_UINT32),
    ("Ping", "client_time_ms"): (0, MAX_UINT64),  # echoed in Pong, never stored
    ("ChatSeq", "seq"): (0, MAX_SEQ),
    ("History", "before_seq"): (0, MAX_SEQ),
    ("History", "limit"): (0, MAX_HISTORY),
    ("CreateChat", "kind"): (pb.DIRECT, pb.GROUP),
    ("MarkRead", "seq"): (0, MAX_SEQ),
    ("GetReceipts", "seq"): (0, MAX_SEQ),
    ("UpdateSettings", "last_seen"): (pb.EVERYONE, pb.NOBODY),
    ("RegisterPush", "platform"): (pb.APNS, pb.FCM),
    ("MuteChat", "muted_until_ms"): (0, MAX_SEQ),  # MAX_SEQ itself: muted for good
    ("CreateUpload", "size"): (0, MAX_SEQ),  # the media limit is checked by core/media.py
    ("GetMedia", "seq"): (0, MAX_SEQ),
}

_NOT_NUMBERS = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES,
                FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_MESSAGE)


class Malformed(Exception):
    """The bytes are not a ClientFrame: close 4000."""


class BadField(Exception):
    """A ClientFrame with a field no request may carry: INVALID_ARGUMENT, connection stays."""

    def __init__(self, request_id: int, kind: str | None, detail: str) -> None:
        super().__init__(detail)
        self.request_id = request_id
        self.kind = kind
        self.detail = detail


def decode(payload: bytes) -> pb.ClientFrame:
    """A checked ClientFrame; raises Malformed or BadField."""
    try:
        frame = pb.ClientFrame.FromString(payload)
    except DecodeError:
        raise _diagnose(payload) from None
    problem = out_of_range(frame)
    if problem is not None:
        raise BadField(frame.request_id, frame.WhichOneof("body"), problem)
    return frame


def session_frame(payload: bytes) -> tuple[str | None, int, object, str | None] | None:
    """A ClientFrame as a session takes it (core/session.py SessionPort.decode): (kind,
    request_id, fields, problem), or None for bytes that are not a ClientFrame."""
    try:
        frame = decode(payload)
    except Malformed:
        return None
    except BadField as exc:
        return exc.kind, exc.request_id, None, exc.detail
    kind = frame.WhichOneof("body")
    if kind == "send":
        send = frame.send
        fields = (send.client_msg_id, send.chat_id, send.body, list(send.media_ids), send.e2e)
    elif kind == "ack":
        fields = [(item.chat_id, item.seq) for item in frame.ack.acks]
    elif kind == "auth":
        fields = frame.auth.token
    else:
        fields = frame
    return kind, frame.request_id, fields, None


def out_of_range(message: Message) -> str | None:
    """The first number of `message` (nested messages included) outside its RANGES entry."""
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in (value if field.is_repeated else (value,)):
                problem = out_of_range(item)
                if problem is not None:
                    return problem
        elif field.type not in _NOT_NUMBERS:
            low, high = RANGES[(field.containing_type.name, field.name)]
            for number in (value if field.is_repeated else (value,)):
                if not low <= number <= high:
                    return (f"{field.containing_type.name}.{field.name}: {number} is out of "
                            f"range {low}..{high}")
    return None


def numeric_fields(descriptor: Descriptor = pb.ClientFrame.DESCRIPTOR,
                   seen: set[str] | None = None) -> set[tuple[str, str]]:
    """(message, field) of every number reachable from a ClientFrame."""
    seen = set() if seen is None else seen
    seen.add(descriptor.full_name)
    found = set()
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name not in seen:
                found |= numeric_fields(field.message_type, seen)
        elif field.type not in _NOT_NUMBERS:
            found.add((descriptor.name, field.name))
    return found


def _lenient_frame_class() -> type[Message]:
    """ClientFrame with every string field read as bytes: parses what protobuf refused for
    invalid UTF-8 alone, so the reply can name the field and carry the request_id."""
    file_proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(file_proto)
    for message in file_proto.message_type:
        for field in message.field:
            if field.type == FieldDescriptor.TYPE_STRING:
                field.type = FieldDescriptor.TYPE_BYTES
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("switchboard.v1.ClientFrame"))


_LENIENT = _lenient_frame_class()
_STRING_FIELDS = {(m.name, f.name) for m in pb.DESCRIPTOR.message_types_by_name.values()
                  for f in m.fields if f.type == FieldDescriptor.TYPE_STRING}


def _diagnose(payload: bytes) -> Exception:
    try:
        frame = _LENIENT.FromString(payload)
    except DecodeError:
        return Malformed("not a ClientFrame")
    field = _bad_utf8(frame)
    if field is None:  # not a UTF-8 problem after all
        return Malformed("not a ClientFrame")
    return BadField(frame.request_id, frame.WhichOneof("body"), f"{field}: not valid UTF-8")


def _bad_utf8(message: Message) -> str | None:
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in (value if field.is_repeated else (value,)):
                found = _bad_utf8(item)
                if found is not None:
                    return found
        elif (field.containing_type.name, field.name) in _STRING_FIELDS:
            for raw in (value if field.is_repeated else (value,)):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return f"{field.containing_type.name}.{field.name}"
    return None


_UNRANGED = numeric_fields() - RANGES.keys()
if _UNRANGED:
    raise RuntimeError(f"client.proto numbers without a range in gateway/wire.py: {_UNRANGED}")
