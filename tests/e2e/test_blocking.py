"""Blocking a user: no direct chat with the blocker (new or existing: BLOCKED, nothing more
said), no presence or last seen of the blocker, no reads of the blocker, in groups too; groups
otherwise unaffected; unblocking restores everything."""
from __future__ import annotations

import asyncio

import pytest

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.rawflow import (authed, direct, group, presence_of, receive_and_ack, request,
                                   send)


async def refused(client, **body) -> pb.Error:
    reply = await request(client, **body)
    assert reply.WhichOneof("body") == "error", reply
    return reply.error


async def test_a_blocked_user_cannot_reach_the_blocker_in_a_direct_chat(make_server):
    server = await make_server(timers__presence_interval=0.05)
    alice = await authed(server, "alice")
    mallory = await authed(server, "mallory")
    chat = await direct(mallory, "alice")
    await send(mallory, chat, b"hello")
    await receive_and_ack(alice, 1)
    await request(mallory, subscribe_presence=pb.SubscribePresence(user_ids=["alice"]))
    assert (await presence_of(mallory, "alice")).online

    assert (await request(alice, block=pb.Block(user_id="mallory"))).WhichOneof("body") == "ok"
    assert list((await request(alice, list_blocked=pb.ListBlocked())).blocked_list.user_ids) == [
        "mallory"]
    error = await refused(mallory, send=pb.Send(client_msg_id="after", chat_id=chat, body=b"x"))
    assert (error.code, error.detail, error.chat_id) == (pb.BLOCKED, "refused", chat)
    error = await refused(mallory, create_chat=pb.CreateChat(kind=pb.DIRECT,
                                                             member_user_ids=["alice"]))
    assert error.code == pb.BLOCKED
    hidden = await presence_of(mallory, "alice")  # as if alice were never seen
    assert (hidden.online, hidden.last_seen_ms) == (False, 0)
    # typing of the blocked user does not reach the blocker either
    mallory.send(typing=pb.Typing(chat_id=chat, typing=True))
    with pytest.raises(asyncio.TimeoutError):
        await alice.recv("typing_update", timeout=0.3)
    # the blocker still writes (its own choice) and the blocked user still receives it
    await send(alice, chat, b"last word")
    assert [m.body for m in await receive_and_ack(mallory, 1)] == [b"last word"]

    await request(alice, unblock=pb.Unblock(user_id="mallory"))
    assert list((await request(alice, list_blocked=pb.ListBlocked())).blocked_list.user_ids) == []
    assert (await presence_of(mallory, "alice")).online
    await send(mallory, chat, b"thanks")
    assert [m.body for m in await receive_and_ack(alice, 1)] == [b"thanks"]
    assert (await request(mallory, create_chat=pb.CreateChat(
        kind=pb.DIRECT, member_user_ids=["alice"]))).chat.chat_id == chat


async def test_a_new_direct_chat_with_the_blocker_is_refused(server):
    alice = await authed(server, "alice")
    mallory = await authed(server, "mallory")
    await request(alice, block=pb.Block(user_id="mallory"))
    error = await refused(mallory, create_chat=pb.CreateChat(kind=pb.DIRECT,
                                                             member_user_ids=["alice"]))
    assert (error.code, error.detail) == (pb.BLOCKED, "refused")
    # the blocker may still open one: the block only binds the blocked user
    chat = await direct(alice, "mallory")
    error = await refused(mallory, send=pb.Send(client_msg_id="m", chat_id=chat, body=b"x"))
    assert error.code == pb.BLOCKED


async def test_groups_are_unaffected_but_the_blockers_reads_are_hidden(server):
    alice = await authed(server, "alice")
    mallory = await authed(server, "mallory")
    carol = await authed(server, "carol")
    chat = await group(carol, ["alice", "mallory"])
    await request(alice, block=pb.Block(user_id="mallory"))
    ack = await send(mallory, chat, b"still in the group")
    for reader in (alice, carol):
        await receive_and_ack(reader, 1)
        await request(reader, mark_read=pb.MarkRead(chat_id=chat, seq=ack.seq))
    # carol sees alice's read; mallory, whom alice blocked, does not
    status = (await request(carol, get_receipts=pb.GetReceipts(chat_id=chat, seq=ack.seq))
              ).receipt_status
    assert list(status.read_by) == ["alice", "carol"]
    status = (await request(mallory, get_receipts=pb.GetReceipts(chat_id=chat, seq=ack.seq))
              ).receipt_status
    assert (status.member_count, status.delivered_count, status.read_count) == (2, 2, 1)
    assert list(status.read_by) == ["carol"]

    async def receipt(where) -> pb.ReceiptUpdate:
        while True:
            update = (await mallory.recv("receipt_update")).receipt_update
            if where(update):
                return update
    update = await receipt(lambda u: any(m.user_id == "alice" for m in u.members))
    assert next(m for m in update.members if m.user_id == "alice").read_seq == 0
    assert update.read_all_seq == 0  # the rollup could be alice's: hidden while she is there
    await request(alice, unblock=pb.Unblock(user_id="mallory"))
    status = (await request(mallory, get_receipts=pb.GetReceipts(chat_id=chat, seq=ack.seq))
              ).receipt_status
    assert list(status.read_by) == ["alice", "carol"]


async def test_bad_block_requests(server):
    alice = await authed(server, "alice")
    for body in (pb.Block(user_id="alice"), pb.Block(user_id="bad id"), pb.Block(user_id=""),
                 pb.Unblock(user_id="alice")):
        kind = "block" if isinstance(body, pb.Block) else "unblock"
        assert (await refused(alice, **{kind: body})).code == pb.INVALID_ARGUMENT
    await request(alice, block=pb.Block(user_id="bob"))
    await request(alice, block=pb.Block(user_id="bob"))  # again: still one entry
    await request(alice, unblock=pb.Unblock(user_id="nobody"))  # not blocked: nothing to do
    assert list((await request(alice, list_blocked=pb.ListBlocked())).blocked_list.user_ids) == [
        "bob"]


async def test_the_block_list_is_bounded(server):
    alice = await authed(server, "alice")
    server.gateway.services.blocks.max_blocked = 3
    for user in ("u1", "u2", "u3"):
        await request(alice, block=pb.Block(user_id=user))
    error = await refused(alice, block=pb.Block(user_id="u4"))
    assert error.code == pb.INVALID_ARGUMENT and "at most 3" in error.detail
    await request(alice, block=pb.Block(user_id="u3"))  # already blocked: fine
    await request(alice, unblock=pb.Unblock(user_id="u1"))
    await request(alice, block=pb.Block(user_id="u4"))
