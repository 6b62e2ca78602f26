"""The codec on the message path: what a Send costs to read (server) and a SendAck and a
Deliver to write (server, a Deliver once per chat per flush), natively (core/_native/wire.pyx,
what the gateway runs) and with the protobuf library (what it ran before, and what devices
run: Send encode, Deliver decode)."""
from __future__ import annotations

import pytest

from switchboard.client import frames as client_frames
from switchboard.core._native import wire
from switchboard.core.model import StoredMessage
from switchboard.gateway.wire import session_frame
from switchboard.proto.codec import message_to_pb
from switchboard.proto.v1 import client_pb2 as pb

BODY = b"x" * 64
MAX_FRAME = 128 * 1024


def _row(seq: int) -> StoredMessage:
    return StoredMessage(chat_id="d:alice:bob", seq=seq, server_id=(1 << 40) + seq,
                         sender_user="alice", sender_device="phone",
                         client_msg_id=f"0f8fad5b-d9cb-469f-a165-{seq:012d}", body=BODY,
                         media_ids=(), created_at_ms=1_760_000_000_000)


def _send() -> pb.Send:
    return pb.Send(client_msg_id="0f8fad5b-d9cb-469f-a165-70867728950e", chat_id="d:alice:bob",
                   body=BODY)


def test_send_encode_library(benchmark):
    send = _send()
    benchmark(client_frames.encode, 7, send=send)


def test_send_read_native(benchmark):
    data = client_frames.encode(7, send=_send())
    kind, rid, fields = benchmark(wire.decode, data)
    assert (kind, rid, fields[1]) == ("send", 7, "d:alice:bob")


def test_send_read_library(benchmark):
    """protobuf parse plus gateway/wire.py's range checks: the path the native reader saves."""
    data = client_frames.encode(7, send=_send())
    kind, rid, fields, problem = benchmark(session_frame, data)
    assert (kind, problem) == ("send", None)


def test_ack_read_native(benchmark):
    data = client_frames.ack([("d:alice:bob", 42)])
    assert benchmark(wire.decode, data)[2] == [("d:alice:bob", 42)]


def test_send_ack_write_native(benchmark):
    row = _row(42)
    benchmark(wire.send_ack, 7, row.client_msg_id, row.chat_id, row.seq, row.server_id,
              row.created_at_ms, False)


def test_send_ack_write_library(benchmark):
    row = _row(42)

    def encode():
        return pb.ServerFrame(request_id=7, send_ack=pb.SendAck(
            client_msg_id=row.client_msg_id, chat_id=row.chat_id, seq=row.seq,
            server_id=row.server_id, created_at_ms=row.created_at_ms)).SerializeToString()
    benchmark(encode)


@pytest.mark.parametrize("batch", [1, 32])
def test_deliver_write_native(benchmark, batch):
    rows = [_row(seq) for seq in range(1, batch + 1)]
    chunks = benchmark(wire.deliver_frames, rows, MAX_FRAME)
    assert sum(c.count for c in chunks) == batch


@pytest.mark.parametrize("batch", [1, 32])
def test_deliver_write_library(benchmark, batch):
    rows = [_row(seq) for seq in range(1, batch + 1)]

    def encode():
        return pb.ServerFrame(deliver=pb.Deliver(
            messages=[message_to_pb(r) for r in rows])).SerializeToString()
    benchmark(encode)


@pytest.mark.parametrize("batch", [1, 32])
def test_deliver_decode_library(benchmark, batch):
    [chunk] = wire.deliver_frames([_row(seq) for seq in range(1, batch + 1)], MAX_FRAME)
    payload = chunk.frame[2:] if len(chunk.frame) < 128 else chunk.frame[4:]
    frame = benchmark(client_frames.decode, payload)
    assert len(frame.deliver.messages) == batch


def test_ack_encode_library(benchmark):
    benchmark(client_frames.ack, [("d:alice:bob", 42)])
