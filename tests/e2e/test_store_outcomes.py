"""Commits the gateway gets no clean answer from, over a real SQLite file with faults injected
in front of it (tests/support/faulty_store.py): a send stored but reported failed, and one chat
of a flush failing while the others land (what a partitioned store does)."""
from __future__ import annotations

import gc

import pytest

from switchboard.core.store_sqlite import SQLiteStore
from switchboard.app import build_gateway
from switchboard.gateway.server import Gateway
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.faulty_store import FaultyStore
from tests.support.raw import RawClient
from tests.support.rawflow import direct, receive_and_ack, request
from tests.support.server import fast_config
from tests.support.waiting import wait_for


@pytest.fixture
async def gateway(tmp_path):
    store = FaultyStore(SQLiteStore(tmp_path / "switchboard.db"))
    gateway = build_gateway(fast_config(tmp_path), store=store)
    await gateway.start()
    yield gateway
    await gateway.stop()


async def connect(gateway: Gateway, user: str) -> RawClient:
    client = await RawClient.connect(f"ws://127.0.0.1:{gateway.port}/v1/ws",
                                     gateway.tokens.mint(user, "phone"))
    await client.recv("welcome")
    await client.recv("sync_complete")
    return client


def send(client: RawClient, chat: str, cmid: str) -> int:
    return client.send(send=pb.Send(client_msg_id=cmid, chat_id=chat, body=cmid.encode()))


async def test_a_send_stored_but_reported_failed_reaches_the_recipient_on_retry(gateway):
    """The commit applied, then its answer was lost: the sender sees UNAVAILABLE and nothing
    was fanned out. The retry is a duplicate, acknowledged with the original seq, and it is
    what brings the message to the online recipient."""
    alice, bob = await connect(gateway, "alice"), await connect(gateway, "bob")
    chat = await direct(alice, "bob")
    gateway.services.store.apply_then_raise(1)
    failed = await alice.reply(send(alice, chat, "m1"))
    assert failed.error.code == pb.UNAVAILABLE and failed.error.retry_after_ms > 0
    retry = (await alice.reply(send(alice, chat, "m1"))).send_ack
    assert (retry.seq, retry.duplicate) == (1, True)
    assert [(m.seq, m.body) for m in await receive_and_ack(bob, 1)] == [(1, b"m1")]
    ack = (await alice.reply(send(alice, chat, "m2"))).send_ack
    assert (ack.seq, ack.duplicate) == (2, False)
    assert [m.seq for m in await receive_and_ack(bob, 1)] == [2]


async def test_a_failed_chat_fails_only_its_own_sends(gateway):
    store = gateway.services.store
    alice = await connect(gateway, "alice")
    with_bob, with_carol = await direct(alice, "bob"), await direct(alice, "carol")
    store.fail_chats(1, with_carol)
    rids = [send(alice, with_bob, "b1"), send(alice, with_carol, "c1"), send(alice, with_bob, "b2")]
    replies = [await alice.reply(rid) for rid in rids]
    assert [r.WhichOneof("body") for r in replies] == ["send_ack", "error", "send_ack"]
    assert [replies[0].send_ack.seq, replies[2].send_ack.seq] == [1, 2]
    assert replies[1].error.code == pb.UNAVAILABLE and replies[1].error.retry_after_ms > 0
    assert (await alice.reply(send(alice, with_carol, "c1"))).send_ack.seq == 1
    history = (await request(alice, history=pb.History(chat_id=with_carol, limit=10))).history_page
    assert [m.client_msg_id for m in history.messages] == ["c1"]


async def test_a_send_failing_after_its_sender_left_leaves_no_unretrieved_error(gateway,
                                                                                  caplog):
    """The device is gone when the commit fails: nobody gets the answer, and the failure is
    not left in its future for asyncio to report as 'exception was never retrieved'."""
    store = gateway.services.store
    alice = await connect(gateway, "alice")
    chat = await direct(alice, "bob")
    store.hold()
    store.fail_next_commits(1)
    try:
        send(alice, chat, "m1")
        await wait_for(lambda: store.held == 1, message="the commit held")
        alice.close()
        await wait_for(lambda: gateway.hub.connections == 0, message="the connection closed")
    finally:
        store.release()
    await wait_for(lambda: gateway.sends_in_flight == 0, message="the send answered")
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
