"""What a device's bytes may hold, over real sockets: every number of every request at its
extremes, strings that are not UTF-8, and RFC 6455 fragmented messages (docs/protocol.md 2, 5, 6)."""
from __future__ import annotations

import pytest
from picows import WSMsgType

from switchboard.gateway import wire
from switchboard.proto.v1 import client_pb2 as pb
from tests.e2e.test_hostile import assert_still_serving
from tests.support.raw import RawClient
from tests.support.rawflow import authed, direct, request, send

EXTREMES = [0, 1, 2, 3, 4, 200, 201, 2 ** 31 - 1, 2 ** 32 - 1, wire.MAX_SEQ, wire.MAX_SEQ + 1,
            2 ** 64 - 1]


def framed(key: tuple[str, str], value: int, chat: str) -> dict:
    """ClientFrame body arguments that set the numeric field `key` to `value`."""
    message, field = key
    body = {
        "ClientFrame": lambda: {"ping": pb.Ping()},
        "Ping": lambda: {"ping": pb.Ping(client_time_ms=value)},
        "ChatSeq": lambda: {"ack": pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=value)])},
        "History": lambda: {"history": pb.History(chat_id=chat, **{field: value})},
        "CreateChat": lambda: {"create_chat": pb.CreateChat(kind=value, member_user_ids=["carol"])},
        "MarkRead": lambda: {"mark_read": pb.MarkRead(chat_id=chat, seq=value)},
        "GetReceipts": lambda: {"get_receipts": pb.GetReceipts(chat_id=chat, seq=value)},
        "UpdateSettings": lambda: {"update_settings": pb.UpdateSettings(last_seen=value)},
        "RegisterPush": lambda: {"register_push": pb.RegisterPush(platform=value, token="a1" * 32)},
        "MuteChat": lambda: {"mute_chat": pb.MuteChat(chat_id=chat, muted_until_ms=value)},
        "CreateUpload": lambda: {"create_upload": pb.CreateUpload(
            size=value, content_type="image/jpeg", sha256=bytes(32))},
        "GetMedia": lambda: {"get_media": pb.GetMedia(media_id="m1", chat_id=chat, seq=value)},
    }[message]()
    return body


def fits(key: tuple[str, str], value: int) -> bool:
    """Whether the field's wire type can carry `value` at all."""
    if key in (("ClientFrame", "request_id"), ("History", "limit")):
        return value <= 2 ** 32 - 1
    if key in (("CreateChat", "kind"), ("UpdateSettings", "last_seen"),
               ("RegisterPush", "platform")):
        return value <= 2 ** 31 - 1
    return True


async def test_every_number_at_its_extremes_gets_a_documented_answer(server):
    """Numbers out of their field's range are INVALID_ARGUMENT naming the field, never INTERNAL
    (2^64-1 used to overflow SQLite's integers); in range, the request is served."""
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    await send(alice, chat, b"one")
    await bob.recv("deliver")
    assert wire.RANGES.keys() == wire.numeric_fields()
    checked = 0
    for key, (low, high) in sorted(wire.RANGES.items()):
        for value in EXTREMES:
            if not fits(key, value):
                continue
            body = framed(key, value, chat)
            rid = value if key == ("ClientFrame", "request_id") else 7
            frame = pb.ClientFrame(request_id=rid, **body)
            bob.send_bytes(frame.SerializeToString())
            kind = next(iter(body))
            in_range = value == 0 or low <= value <= high  # a zero is not on the wire at all
            if kind == "ack" and in_range:
                # acks have no answer unless refused; a ping after it proves it was handled
                reply = await request(bob, ping=pb.Ping(client_time_ms=value % 1000))
                while reply.WhichOneof("body") != "pong":
                    assert reply.error.code == pb.ACK_INVALID, (key, value, reply)
                    reply = await bob.recv("pong")
                bob.drain()
                continue
            reply = await (bob.reply(rid) if rid else bob.recv("pong"))
            answer = reply.WhichOneof("body")
            if in_range:
                # a zero is the field unset, which these refuse as required: "kind must be
                # DIRECT or GROUP", "RegisterPush.platform: required", "size 0"
                unset = kind in ("create_chat", "register_push", "create_upload") and value == 0
                assert answer != "error" or reply.error.code not in (
                    pb.INTERNAL, pb.INVALID_ARGUMENT) or unset, (key, value, reply)
            else:
                assert answer == "error" and reply.error.code == pb.INVALID_ARGUMENT, (key, value, reply)
                assert f"{key[0]}.{key[1]}" in reply.error.detail
            checked += 1
            bob.drain()
    assert checked > 40
    assert not bob.listener.closed.is_set()
    await assert_still_serving(server)


async def test_invalid_utf8_in_a_string_is_invalid_argument_and_the_connection_stays(server):
    client = await authed(server, "alice")
    raw = pb.ClientFrame(request_id=9, send=pb.Send(
        client_msg_id="m1", chat_id="QQ", body=b"x")).SerializeToString()
    client.send_bytes(raw.replace(b"QQ", b"\xc3\x28"))  # an invalid two-byte sequence
    error = (await client.reply(9)).error
    assert (error.code, error.detail) == (pb.INVALID_ARGUMENT, "Send.chat_id: not valid UTF-8")
    reply = await request(client, ping=pb.Ping(client_time_ms=5))
    assert reply.pong.client_time_ms == 5


async def test_invalid_utf8_token_in_an_auth_frame_closes_4001(server):
    client = await RawClient.connect(server.url)
    raw = pb.ClientFrame(auth=pb.Auth(token="TT")).SerializeToString()
    client.send_bytes(raw.replace(b"TT", b"\xff\xfe"))
    assert await client.closed() == (4001, "invalid token")


def fragments(payload: bytes, size: int) -> list[bytes]:
    return [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]


def send_fragmented(client: RawClient, payload: bytes, size: int, pings: bool = False) -> None:
    """One binary message as a first frame and continuation frames, optionally with WebSocket
    pings between the fragments (control frames may interleave, RFC 6455 5.4)."""
    parts = fragments(payload, size)
    for i, part in enumerate(parts):
        kind = WSMsgType.BINARY if i == 0 else WSMsgType.CONTINUATION
        client.transport.send(kind, part, fin=i == len(parts) - 1)
        if pings and i < len(parts) - 1:
            client.transport.send_ping(b"between")


async def test_fragmented_messages_are_reassembled(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    body = bytes(range(256)) * 200  # 51200 bytes, under max_body_bytes
    for i, (size, pings) in enumerate([(1000, False), (7, False), (4096, True)]):
        frame = pb.ClientFrame(request_id=100 + i, send=pb.Send(
            client_msg_id=f"frag{i}", chat_id=chat, body=body[:size * 30]))
        send_fragmented(alice, frame.SerializeToString(), size, pings)
        assert (await alice.reply(100 + i)).send_ack.seq == i + 1
        got = (await bob.recv("deliver")).deliver.messages[0]
        assert got.body == body[:size * 30]
    # a fragmented request of another kind, and a single-frame one right after it
    send_fragmented(alice, pb.ClientFrame(request_id=200, ping=pb.Ping(
        client_time_ms=42)).SerializeToString(), 2)
    assert (await alice.reply(200)).pong.client_time_ms == 42


async def test_fragmented_auth_frame_authenticates(server):
    client = await RawClient.connect(server.url)
    send_fragmented(client, pb.ClientFrame(auth=pb.Auth(
        token=server.token("alice"))).SerializeToString(), 16)
    assert (await client.recv("welcome")).welcome.user_id == "alice"


async def test_fragmented_message_over_the_limit_closes_1009(server):
    client = await authed(server, "alice")
    limit = server.config.limits.max_frame_bytes
    piece = b"\x00" * (limit // 4)
    for i in range(5):  # each fragment is within the limit, the message is not
        client.transport.send(WSMsgType.BINARY if i == 0 else WSMsgType.CONTINUATION, piece,
                              fin=False)
    assert (await client.closed())[0] == 1009
    await assert_still_serving(server)


@pytest.mark.parametrize("frames_sent,code", [
    ([(WSMsgType.CONTINUATION, True)], 1002),                              # nothing to continue
    ([(WSMsgType.BINARY, False), (WSMsgType.BINARY, True)], 1002),          # restarted inside one
    ([(WSMsgType.TEXT, False), (WSMsgType.CONTINUATION, True)], 1003),      # text, fragmented
])
async def test_broken_fragment_sequences_are_closed(server, frames_sent, code):
    client = await authed(server, "alice")
    for kind, fin in frames_sent:
        client.transport.send(kind, b"\x08", fin=fin)
    assert (await client.closed())[0] == code


async def test_fragments_count_against_the_frame_flood_limit(make_server):
    server = await make_server(limits__frames_per_second=20.0, limits__frame_burst=40.0)
    client = await authed(server, "alice")
    for i in range(200):  # one message, 200 one-byte fragments: each is a frame
        client.transport.send(WSMsgType.BINARY if i == 0 else WSMsgType.CONTINUATION, b"\x00",
                              fin=False)
    assert (await client.closed())[0] == 4029
