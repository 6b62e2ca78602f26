"""Hostile peers: every bad input gets its documented HTTP status, Error or close code, nothing
is stored, and the server keeps serving everyone else (docs/protocol.md; docs/guarantees.md F11, F13)."""
from __future__ import annotations

import asyncio

import pytest
from picows import WSError, WSMsgType

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.raw import RawClient
from tests.support.rawflow import authed, direct


async def assert_still_serving(server) -> None:
    """A fresh pair of users can still chat end to end."""
    alice = await authed(server, "healthy-a")
    bob = await authed(server, "healthy-b")
    chat = await direct(alice, "healthy-b")
    rid = alice.send(send=pb.Send(client_msg_id="h1", chat_id=chat, body=b"still here"))
    assert (await alice.reply(rid)).send_ack.seq >= 1
    delivered = await bob.recv("deliver")
    assert delivered.deliver.messages[-1].body == b"still here"
    alice.close()
    bob.close()


async def test_bad_token_in_header_is_refused_at_upgrade(server):
    with pytest.raises(WSError) as info:
        await RawClient.connect(server.url, "not-a-jwt")
    assert info.value.response.status == 401
    assert b"invalid token" in info.value.raw_body
    await assert_still_serving(server)


async def test_expired_token_is_refused_with_reason(server):
    expired = server.tokens.mint("alice", "phone", ttl=-60)
    with pytest.raises(WSError) as info:
        await RawClient.connect(server.url, expired)
    assert info.value.response.status == 401
    assert b"token expired" in info.value.raw_body


async def test_token_signed_with_another_key_is_refused(server):
    from switchboard.core.auth import TokenAuthority
    forged = TokenAuthority(b"k" * 48).mint("alice", "phone")
    with pytest.raises(WSError) as info:
        await RawClient.connect(server.url, forged)
    assert info.value.response.status == 401


async def test_first_frame_auth_works_and_bad_one_closes_4001(server):
    good = await RawClient.connect(server.url)
    good.send(auth=pb.Auth(token=server.token("alice")))
    assert (await good.recv("welcome")).welcome.user_id == "alice"
    bad = await RawClient.connect(server.url)
    bad.send(auth=pb.Auth(token="garbage"))
    assert await bad.closed() == (4001, "invalid token")
    good.close()


async def test_frame_before_auth_closes_4001_and_stores_nothing(server):
    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    intruder = await RawClient.connect(server.url)
    intruder.send(send=pb.Send(client_msg_id="x", chat_id=chat, body=b"sneaky"))
    assert await intruder.closed() == (4001, "auth required")
    rid = alice.send(history=pb.History(chat_id=chat))
    assert list((await alice.reply(rid)).history_page.messages) == []
    await assert_still_serving(server)


async def test_silent_connection_is_closed_by_the_auth_deadline(server):
    silent = await RawClient.connect(server.url)
    code, _ = await silent.closed(timeout=5)
    assert code == 4002
    assert server.gateway.pending_auth == 0


async def test_malformed_protobuf_closes_4000(server):
    client = await authed(server, "alice")
    client.send_bytes(b"\xff\xff\xff\xff\x0f garbage")
    assert (await client.closed())[0] == 4000
    await assert_still_serving(server)


async def test_text_frame_closes_1003(server):
    client = await authed(server, "alice")
    client.send_bytes(b"hello", WSMsgType.TEXT)
    assert (await client.closed())[0] == 1003


async def test_unknown_frame_gets_error_and_connection_stays(server):
    client = await authed(server, "alice")
    # field 99 is not a known body: a frame from a newer protocol version
    client.send_bytes(pb.ClientFrame(request_id=7).SerializeToString() + b"\x9a\x06\x00")
    reply = await client.reply(7)
    assert reply.error.code == pb.UNKNOWN_FRAME
    rid = client.send(ping=pb.Ping(client_time_ms=1))
    assert (await client.reply(rid)).pong.client_time_ms == 1


async def test_oversized_frame_closes_1009_and_nothing_is_stored(server):
    client = await authed(server, "alice")
    chat = await direct(client, "bob")
    limit = server.config.limits.max_frame_bytes
    client.send(send=pb.Send(client_msg_id="big", chat_id=chat, body=b"x" * (limit + 10)))
    assert (await client.closed())[0] == 1009
    again = await authed(server, "alice", "tablet")
    rid = again.send(history=pb.History(chat_id=chat))
    assert list((await again.reply(rid)).history_page.messages) == []
    await assert_still_serving(server)


async def test_body_over_limit_gets_body_too_large(server):
    client = await authed(server, "alice")
    chat = await direct(client, "bob")
    body = b"x" * (server.config.limits.max_body_bytes + 1)
    rid = client.send(send=pb.Send(client_msg_id="b1", chat_id=chat, body=body))
    error = (await client.reply(rid)).error
    assert (error.code, error.client_msg_id, error.chat_id) == (pb.BODY_TOO_LARGE, "b1", chat)


@pytest.mark.parametrize("send,code", [
    (pb.Send(client_msg_id="", chat_id="d:a:b", body=b"x"), pb.INVALID_ARGUMENT),
    (pb.Send(client_msg_id="m" * 65, chat_id="d:a:b", body=b"x"), pb.INVALID_ARGUMENT),
    (pb.Send(client_msg_id="m", chat_id="", body=b"x"), pb.INVALID_ARGUMENT),
    (pb.Send(client_msg_id="m", chat_id="d:a:b", body=b"x", media_ids=["m"] * 17),
     pb.INVALID_ARGUMENT),
    (pb.Send(client_msg_id="m", chat_id="no-such-chat", body=b"x"), pb.NOT_MEMBER),
])
async def test_invalid_sends_are_refused(server, send, code):
    client = await authed(server, "alice")
    rid = client.send(send=send)
    assert (await client.reply(rid)).error.code == code


async def test_non_member_can_neither_send_nor_read(server):
    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    rid = alice.send(send=pb.Send(client_msg_id="a1", chat_id=chat, body=b"private"))
    await alice.reply(rid)
    mallory = await authed(server, "mallory")
    rid = mallory.send(send=pb.Send(client_msg_id="m1", chat_id=chat, body=b"spam"))
    assert (await mallory.reply(rid)).error.code == pb.NOT_MEMBER
    rid = mallory.send(history=pb.History(chat_id=chat))
    assert (await mallory.reply(rid)).error.code == pb.NOT_MEMBER
    rid = mallory.send(mark_read=pb.MarkRead(chat_id=chat, seq=1))
    assert (await mallory.reply(rid)).error.code == pb.NOT_MEMBER
    rid = mallory.send(add_members=pb.AddMembers(chat_id=chat, user_ids=["mallory"]))
    assert (await mallory.reply(rid)).error.code == pb.NOT_MEMBER
    # acking someone else's chat is refused and moves nothing
    rid = mallory.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=1)]))
    assert (await mallory.reply(rid)).error.code == pb.ACK_INVALID
    with pytest.raises(asyncio.TimeoutError):
        await mallory.recv("deliver", timeout=0.3)


async def test_spoofed_sender_fields_are_ignored(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    send = pb.Send(client_msg_id="s1", chat_id=chat, body=b"hi").SerializeToString()
    # append sender fields claiming to be bob, at numbers Send does not define (4 and 5, those of
    # Message.sender_user_id and sender_device_id, are Send's media_ids and e2e)
    forged = send + b"\xa2\x06\x03bob" + b"\xaa\x06\x05phone"  # fields 100 and 101
    frame = pb.ClientFrame(request_id=1).SerializeToString() + b"\x1a" + bytes([len(forged)]) + forged
    alice.send_bytes(frame)
    assert (await alice.reply(1)).send_ack.seq == 1
    got = (await bob.recv("deliver")).deliver.messages[0]
    assert (got.sender_user_id, got.sender_device_id) == ("alice", "phone")


async def test_ack_beyond_what_was_delivered_is_refused(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    rid = alice.send(send=pb.Send(client_msg_id="1", chat_id=chat, body=b"one"))
    await alice.reply(rid)
    await bob.recv("deliver")
    rid = bob.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=50)]))
    assert (await bob.reply(rid)).error.code == pb.ACK_INVALID


async def test_second_auth_is_an_error(server):
    client = await authed(server, "alice")
    rid = client.send(auth=pb.Auth(token=server.token("bob")))
    assert (await client.reply(rid)).error.code == pb.ALREADY_AUTHENTICATED
    rid = client.send(ping=pb.Ping())
    assert (await client.reply(rid)).WhichOneof("body") == "pong"


async def test_send_flood_is_rate_limited_without_losing_accepted_messages(make_server):
    server = await make_server(limits__sends_per_second=5.0, limits__send_burst=10.0)
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    rids = [alice.send(send=pb.Send(client_msg_id=f"f{i}", chat_id=chat, body=b"x"))
            for i in range(30)]
    replies = [await alice.reply(rid) for rid in rids]
    acked = [r for r in replies if r.WhichOneof("body") == "send_ack"]
    limited = [r for r in replies if r.WhichOneof("body") == "error"]
    assert 10 <= len(acked) < 30
    assert all(r.error.code == pb.RATE_LIMITED and r.error.retry_after_ms > 0 for r in limited)
    assert sorted(r.send_ack.seq for r in acked) == list(range(1, len(acked) + 1))
    seen = []
    while len(seen) < len(acked):
        seen += [m.seq for m in (await bob.recv("deliver")).deliver.messages]
    assert seen == list(range(1, len(acked) + 1))


async def test_frame_flood_closes_4029(make_server):
    server = await make_server(limits__frames_per_second=20.0, limits__frame_burst=40.0)
    client = await authed(server, "alice")
    for _ in range(200):
        client.send(ping=pb.Ping())
    assert (await client.closed())[0] == 4029
    await assert_still_serving(server)

