"""The native codec of the hot frames against the protobuf library.

Writing: every frame the native codec writes is byte for byte the one its twin builds with the
library (tests/reference/wire_model.py), for any field values, and the library reads it back.
Reading: whatever the native reader accepts (it may leave a frame to the library) it reads
exactly as the library and gateway/wire.py do, for well-formed frames, frames with unknown
fields, every limit, and mutated or random bytes; and it does accept the plain shape a client
sends, which is the point of having it.
"""
from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from switchboard.core._native import session as native_session, wire
from switchboard.core.model import MemberAction, MembershipEvent, StoredMessage
from switchboard.gateway.wire import MAX_SEQ, session_frame
from switchboard.proto.codec import message_from_pb
from switchboard.proto.codes import Close
from switchboard.proto.v1 import client_pb2 as pb
from tests.reference import wire_model
from tests.support.sessions import split_frames

text = st.text(max_size=40)
u32 = st.integers(0, 2 ** 32 - 1)
u64 = st.integers(0, 2 ** 64 - 1)
seqs = st.integers(0, MAX_SEQ)


def payload_of(frame: bytes) -> bytes:
    [(opcode, payload)] = split_frames(frame)
    assert opcode == 0x2
    return payload


# ---------------------------------------------------------------------------- writing
@given(rid=u32, cmid=text, chat=text, seq=u64, server_id=u64, created=u64, dup=st.booleans())
def test_send_ack_is_the_librarys(rid, cmid, chat, seq, server_id, created, dup):
    native = wire.send_ack(rid, cmid, chat, seq, server_id, created, dup)
    assert native == wire_model.send_ack(rid, cmid, chat, seq, server_id, created, dup)
    ack = pb.ServerFrame.FromString(payload_of(native))
    assert (ack.request_id, ack.send_ack.client_msg_id, ack.send_ack.seq) == (rid, cmid, seq)


@given(rid=u32, code=st.sampled_from(list(pb.ErrorCode.values())), detail=text,
       retry=u32, chat=text, cmid=text)
def test_error_is_the_librarys(rid, code, detail, retry, chat, cmid):
    native = wire.error(rid, code, detail, retry, chat, cmid)
    assert native == wire_model.error(rid, code, detail, retry, chat, cmid)


@given(rid=u32, chats=u32, messages=u64)
def test_sync_complete_is_the_librarys(rid, chats, messages):
    assert wire.sync_complete(rid, chats, messages) == wire_model.sync_complete(rid, chats, messages)


@given(payload=st.binary(max_size=70_000))
@settings(max_examples=30)
@example(payload=b"x" * 125)
@example(payload=b"x" * 126)
@example(payload=b"x" * 65535)
@example(payload=b"x" * 65536)
def test_websocket_framing_at_every_length_class(payload):
    assert wire.ws_frame(0x2, payload) == wire_model.ws_frame(0x2, payload)


events = st.builds(MembershipEvent, action=st.sampled_from(MemberAction), actor=text,
                   users=st.lists(text, max_size=5).map(tuple))
rows = st.builds(
    StoredMessage, chat_id=text, seq=st.integers(1, MAX_SEQ), server_id=u64, sender_user=text,
    sender_device=text, client_msg_id=text, body=st.binary(max_size=3000),
    media_ids=st.lists(text, max_size=4).map(tuple), created_at_ms=u64,
    event=st.none() | events)


@given(batch=st.lists(rows, min_size=1, max_size=12), max_frame=st.integers(1, 8000))
def test_deliver_frames_are_the_librarys_in_the_same_chunks(batch, max_frame):
    native = wire.deliver_frames(batch, max_frame)
    model = wire_model.deliver_frames(batch, max_frame)
    assert [(c.last_seq, c.count, c.frame) for c in native] == list(model)
    got = [m for c in native for m in pb.ServerFrame.FromString(payload_of(c.frame)).deliver.messages]
    assert [message_from_pb(m) for m in got] == batch


@given(floors=st.lists(st.tuples(text, st.integers(0, MAX_SEQ)), max_size=5))
def test_floors_are_the_librarys(floors):
    assert wire.floors_frame(floors) == wire_model.floors_frame(floors)


# ---------------------------------------------------------------------------- reading
def library(payload: bytes):
    """What the session gets from the library path: (kind, request_id, fields) or a refusal."""
    decoded = session_frame(payload)
    if decoded is None or decoded[3] is not None:
        return ("refused", decoded)
    kind, rid, fields, _ = decoded
    return kind, rid, fields


def native(payload: bytes):
    """What the native reader makes of `payload`, in the library path's terms (None: left to
    the library)."""
    found = wire.decode(payload)
    if found is None:
        return None
    kind, rid, fields = found
    if kind in ("send", "ack"):
        return kind, rid, fields
    return ("other", kind, rid)


def agrees(payload: bytes) -> bool:
    """The native reading, where there is one, is the library's. For a body other than Send
    and Ack the session asks the library anyway: there only the kind must not be a Send or an
    Ack the library would have read."""
    mine = native(payload)
    if mine is None:
        return True
    theirs = library(payload)
    if mine[0] == "other":
        return theirs[0] not in ("send", "ack")
    return mine == theirs


sends = st.builds(pb.Send, client_msg_id=text, chat_id=text, body=st.binary(max_size=200),
                  media_ids=st.lists(text, max_size=3), e2e=st.booleans())
acks = st.builds(pb.Ack, acks=st.lists(st.builds(pb.ChatSeq, chat_id=text, seq=seqs), max_size=5))
client_frames = st.one_of(
    st.builds(lambda rid, s: pb.ClientFrame(request_id=rid, send=s), u32, sends),
    st.builds(lambda rid, a: pb.ClientFrame(request_id=rid, ack=a), u32, acks),
    st.builds(lambda rid, t: pb.ClientFrame(request_id=rid, auth=pb.Auth(token=t)), u32, text),
    st.builds(lambda rid: pb.ClientFrame(request_id=rid, sync=pb.Sync()), u32),
    st.builds(lambda rid, c: pb.ClientFrame(request_id=rid, history=pb.History(chat_id=c)), u32, text),
)


@given(frame=client_frames)
def test_plain_frames_are_read_natively_and_as_the_library_reads_them(frame):
    payload = frame.SerializeToString()
    mine = native(payload)
    assert mine is not None, "the plain shape must not need the library"
    assert agrees(payload)


def unknown_field() -> st.SearchStrategy[bytes]:
    """A field client.proto does not define, of every wire type a library skips."""
    return st.one_of(
        st.builds(lambda n, v: bytes([(n << 3) | 0]) + _varint(v), st.integers(6, 15), u64),
        st.builds(lambda n, b: bytes([(n << 3) | 2]) + _varint(len(b)) + b,
                  st.integers(6, 15), st.binary(max_size=20)),
        st.builds(lambda n, b: bytes([(n << 3) | 5]) + b, st.integers(6, 15),
                  st.binary(min_size=4, max_size=4)),
        st.builds(lambda n, b: bytes([(n << 3) | 1]) + b, st.integers(6, 15),
                  st.binary(min_size=8, max_size=8)))


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


@given(send=sends, rid=u32, extra=st.lists(unknown_field(), max_size=3), where=st.integers(0, 3))
def test_unknown_fields_inside_a_send_are_skipped_as_the_library_skips_them(send, rid, extra, where):
    body = send.SerializeToString()
    cut = min(len(body), where * 7)
    body = body[:cut] + b"".join(extra) + body[cut:]
    assume(session_frame(_frame(rid, 3, body)) is not None)
    payload = _frame(rid, 3, body)
    assert agrees(payload)


def _frame(rid: int, kind: int, body: bytes) -> bytes:
    return b"\x08" + _varint(rid) + bytes([(kind << 3) | 2]) + _varint(len(body)) + body


@given(frame=client_frames, data=st.data())
def test_mutated_frames_are_read_as_the_library_reads_them_or_left_to_it(frame, data):
    payload = bytearray(frame.SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        if op == "flip" and payload:
            i = data.draw(st.integers(0, len(payload) - 1))
            payload[i] = data.draw(st.integers(0, 255))
        elif op == "cut" and payload:
            del payload[data.draw(st.integers(0, len(payload) - 1)):]
        elif op == "insert":
            i = data.draw(st.integers(0, len(payload)))
            payload[i:i] = data.draw(st.binary(min_size=1, max_size=6))
        elif op == "dup":
            payload = payload + payload
    assert agrees(bytes(payload))


@given(payload=st.binary(max_size=64))
def test_random_bytes_are_read_as_the_library_reads_them_or_left_to_it(payload):
    assert agrees(payload)


@pytest.mark.parametrize("payload, why", [
    (pb.ClientFrame(ack=pb.Ack(acks=[pb.ChatSeq(chat_id="c", seq=MAX_SEQ + 1)])).SerializeToString(),
     "a seq past the store's range"),
    (_frame(1, 3, b"\x12\x01\xff"), "a chat_id that is not UTF-8"),
    (_frame(1, 3, b"\x12\x01a\x12\x01b"), "a field given twice (the library merges)"),
    (_frame(1, 3, b"") + _frame(2, 4, b""), "two bodies (the last one wins in the library)"),
    (b"\x08\x80\x80\x80\x80\x10" + _frame(0, 3, b"")[1:], "a request_id past 32 bits"),
    (_frame(1, 3, b"\x0b\x0c"), "a group"),
    (pb.ClientFrame(request_id=5).SerializeToString(), "no body"),
])
def test_what_only_the_library_may_judge_is_left_to_it(payload, why):
    assert wire.decode(payload) is None, why


def test_refusals_keep_their_wire_answers():
    """The library path's answers the session turns into close codes and errors."""
    bad_seq = pb.ClientFrame(request_id=3, ack=pb.Ack(acks=[pb.ChatSeq(chat_id="c", seq=2 ** 63)]))
    kind, rid, fields, problem = session_frame(bad_seq.SerializeToString())
    assert (kind, rid, fields) == ("ack", 3, None) and problem.startswith("ChatSeq.seq: ")
    assert session_frame(b"\xff\xff") is None  # not a ClientFrame: 4000


def test_the_codes_the_native_session_writes_are_the_protocols():
    assert native_session.CLOSE_CODES == {name: int(Close[name]) for name in native_session.CLOSE_CODES}
    assert native_session.ERROR_CODES == {name: pb.ErrorCode.Value(name)
                                          for name in native_session.ERROR_CODES}
