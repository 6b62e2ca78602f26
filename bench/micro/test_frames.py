"""The codec on the message path: what a Send costs to encode (device) and parse (server), what
a Deliver costs to encode (server, once per chat per flush) and parse (every device), and the
SendAck. These are the protobuf calls the chat profile charges to the gateway's frame handlers.
"""
from __future__ import annotations

import pytest

from switchboard.client import frames as client_frames
from switchboard.core.model import StoredMessage
from switchboard.gateway import frames as server_frames
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


def test_send_encode(benchmark):
    send = _send()
    benchmark(client_frames.encode, 7, send=send)


def test_send_decode(benchmark):
    data = client_frames.encode(7, send=_send())
    frame = benchmark(pb.ClientFrame.FromString, data)
    assert frame.WhichOneof("body") == "send"


def test_send_ack_encode(benchmark):
    row = _row(42)
    benchmark(server_frames.send_ack, 7, row, False)


@pytest.mark.parametrize("batch", [1, 32])
def test_deliver_encode(benchmark, batch):
    rows = [_row(seq) for seq in range(1, batch + 1)]
    chunks = benchmark(server_frames.deliver, rows, MAX_FRAME)
    assert sum(c.count for c in chunks) == batch


@pytest.mark.parametrize("batch", [1, 32])
def test_deliver_decode(benchmark, batch):
    [chunk] = server_frames.deliver([_row(seq) for seq in range(1, batch + 1)], MAX_FRAME)
    frame = benchmark(client_frames.decode, chunk.data)
    assert len(frame.deliver.messages) == batch


def test_ack_encode(benchmark):
    benchmark(client_frames.ack, [("d:alice:bob", 42)])
