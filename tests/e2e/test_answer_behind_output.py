"""An answer that waits for room in the outbound buffer is sent once the buffer is written out,
even when the socket takes it all at once (so the transport never paused and no
resume_writing comes): the client gets its answer, not a slow-consumer close."""
from __future__ import annotations

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.raw import RawClient
from tests.support.server import InProcessServer, fast_config

MAX_FRAME = 1024
PINGS = 200  # their Pongs (about 20 bytes each) queue far more than a frame


def masked(payload: bytes) -> bytes:
    """A client's binary WebSocket frame, masked with the all-zero key (RFC 6455 5.3)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x82, 0x80 | size])
    else:
        head = bytes([0x82, 0x80 | 126]) + size.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


async def test_a_request_answered_while_output_waits_for_the_flush(tmp_path):
    server = await InProcessServer(fast_config(
        tmp_path, limits__max_frame_bytes=MAX_FRAME, limits__max_body_bytes=512,
        timers__retransmit_after=30.0)).start()
    try:
        client = await RawClient.connect(server.url, server.token("alice"))
        await client.recv("sync_complete")
        # one write: the request, then the pings whose Pongs fill the output before the flush
        # that runs after the request's task first looks for room
        frames = [pb.ClientFrame(request_id=1, list_chats=pb.ListChats())]
        frames += [pb.ClientFrame(request_id=2 + i, ping=pb.Ping(client_time_ms=i))
                   for i in range(PINGS)]
        client.transport.underlying_transport.write(
            b"".join(masked(frame.SerializeToString()) for frame in frames))
        answer = await client.reply(1, timeout=20)
        assert answer.WhichOneof("body") == "chat_list"
        assert not client.listener.closed.is_set()
    finally:
        await server.stop()
