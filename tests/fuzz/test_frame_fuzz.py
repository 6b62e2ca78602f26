"""Fuzzing the edge (docs/guarantees.md F11, F12): random ClientFrames with hostile field values, random
bytes, and a valid byte stream split at arbitrary points. The server must answer each frame with
a ServerFrame or a documented close code, never crash, and keep serving everyone else."""
from __future__ import annotations

import asyncio
import base64
import os
import random
import struct

from google.protobuf.descriptor import FieldDescriptor

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.rawflow import authed, direct, request

SEED = int(os.environ.get("SWITCHBOARD_FUZZ_SEED", "20261122"))
DOCUMENTED_CLOSES = {1002, 1003, 1007, 1009, 4000, 4001, 4029}
STRINGS = ["", "a", "d:alice:bob", "g:x", "x" * 200, "é☃\u0000", "../../etc", "d:bob:mallory"]


def random_value(rng: random.Random, field: FieldDescriptor, depth: int):
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return random_message(rng, field.message_type._concrete_class, depth + 1)
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(STRINGS)
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 1, 10, 1000]))
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.TYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values] + [99])
    return rng.choice([0, 1, 2, 7, 2 ** 31 - 1, 2 ** 32 - 1] + ([2 ** 64 - 1] if kind in (
        FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64) else []))


def random_message(rng: random.Random, cls, depth: int = 0):
    message = cls()
    if depth > 3:
        return message
    for field in cls.DESCRIPTOR.fields:
        if field.containing_oneof is not None or rng.random() < 0.3:
            continue
        if field.is_repeated:
            values = [random_value(rng, field, depth) for _ in range(rng.choice([0, 1, 3]))]
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(message, field.name).extend(values)
            else:
                getattr(message, field.name)[:] = values
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(random_value(rng, field, depth))
        else:
            setattr(message, field.name, random_value(rng, field, depth))
    return message


def random_client_frame(rng: random.Random) -> pb.ClientFrame:
    oneof = pb.ClientFrame.DESCRIPTOR.oneofs_by_name["body"]
    field = rng.choice([f for f in oneof.fields if f.name != "auth"])
    frame = pb.ClientFrame(request_id=rng.randrange(1, 2 ** 32))
    getattr(frame, field.name).CopyFrom(random_value(rng, field, 0))
    return frame


async def test_random_client_frames_never_crash_the_server(server):
    rng = random.Random(SEED)
    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    fuzzer = await authed(server, "mallory")
    for i in range(1500):
        if fuzzer.listener.closed.is_set():
            code, _ = await fuzzer.closed()
            assert code in DOCUMENTED_CLOSES, f"seed {SEED} frame {i}: close {code}"
            fuzzer = await authed(server, f"mallory{i}")
        fuzzer.send_bytes(random_client_frame(rng).SerializeToString())
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    internal = [f for f in fuzzer.stash if f.WhichOneof("body") == "error" and f.error.code == pb.INTERNAL]
    while fuzzer.pending() and not internal:
        frame = await fuzzer.recv()
        if frame.WhichOneof("body") == "error" and frame.error.code == pb.INTERNAL:
            internal.append(frame)
    assert internal == [], f"seed {SEED}: INTERNAL error {internal[:1]}"
    # mallory is in no chat of alice's: nothing of alice's was touched
    history = await request(alice, history=pb.History(chat_id=chat))
    assert list(history.history_page.messages) == []
    reply = await request(alice, ping=pb.Ping(client_time_ms=3))
    assert reply.pong.client_time_ms == 3


async def test_random_bytes_get_a_documented_close(server):
    rng = random.Random(SEED)
    for i in range(40):
        client = await authed(server, f"mallory{i}")
        client.send_bytes(rng.randbytes(rng.randrange(1, 300)))
        client.send(ping=pb.Ping())
        # frames are handled in order: a close for the bytes, or else the Ping's Pong (the bytes
        # happened to be a valid, if odd, ClientFrame: still served); whichever, however slow
        pong = asyncio.ensure_future(client.recv("pong", timeout=30))
        closed = asyncio.ensure_future(client.closed(timeout=30))
        await asyncio.wait({pong, closed}, return_when=asyncio.FIRST_COMPLETED)
        code = None if pong.done() and not pong.exception() else (await closed)[0]
        pong.cancel()
        closed.cancel()
        await asyncio.gather(pong, closed, return_exceptions=True)
        assert code is None or code in DOCUMENTED_CLOSES, f"seed {SEED} case {i}: close {code}"
        client.close()
    alice = await authed(server, "alice")
    assert (await request(alice, ping=pb.Ping(client_time_ms=1))).pong.client_time_ms == 1


def ws_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """A masked client frame, as RFC 6455 requires from clients."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


async def test_stream_split_at_arbitrary_points_is_framed_correctly(server):
    """One byte stream holding an Auth frame and 30 sends, written in random slices (down to
    one byte): every send is acknowledged, in order, exactly as if written at once."""
    rng = random.Random(SEED)
    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.gateway.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b"101" in (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0]
    stream = ws_frame(pb.ClientFrame(auth=pb.Auth(token=server.token("alice", "sliced")))
                      .SerializeToString())
    for i in range(30):
        stream += ws_frame(pb.ClientFrame(request_id=i + 1, send=pb.Send(
            client_msg_id=f"s{i}", chat_id=chat, body=rng.randbytes(rng.randrange(0, 300))))
            .SerializeToString())
    position = 0
    while position < len(stream):
        size = rng.choice([1, 1, 2, 3, 7, 50, 500])
        writer.write(stream[position:position + size])
        await writer.drain()
        position += size
        if rng.random() < 0.2:
            await asyncio.sleep(0.001)
    acks = []
    while len(acks) < 30:
        header = await asyncio.wait_for(reader.readexactly(2), 5)
        size = header[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(size)
        if header[0] & 0x0F != 0x2:
            continue  # a heartbeat Ping (the test may outlast heartbeat_interval on a busy box)
        frame = pb.ServerFrame.FromString(payload)
        if frame.WhichOneof("body") == "send_ack":
            acks.append((frame.request_id, frame.send_ack.seq))
    assert acks == [(i + 1, i + 1) for i in range(30)]
    writer.close()
