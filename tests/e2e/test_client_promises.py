"""Promises a client written from docs/protocol.md alone relies on, where server and document
once disagreed: acking your own SendAcks (8.3), every accepted send answered before a drain's
1001 (8.17), the first Presence after the Ok (2, 8.13), your own read position on your other
devices with read receipts off (8.11, 8.12)."""
from __future__ import annotations

import asyncio

from switchboard.core.store_sqlite import SQLiteStore
from switchboard.app import build_gateway
from switchboard.proto.v1 import client_pb2 as pb
from tests.e2e.test_receipts import member, receipt_until
from tests.support.raw import RawClient
from tests.support.rawflow import authed, direct, receive_and_ack, request, send
from tests.support.server import fast_config
from tests.support.waiting import wait_for


async def no_error_before_pong(client: RawClient) -> None:
    """Everything the server answered before a Pong; asserts none of it is an Error."""
    rid = client.send(ping=pb.Ping())
    while True:
        frame = await client.recv()
        assert frame.WhichOneof("body") != "error", frame
        if frame.request_id == rid and frame.WhichOneof("body") == "pong":
            return


async def test_acking_your_own_sendack_is_accepted(server):
    """8.3: after a SendAck the client counts its seq as held and acks it, also in a chat this
    connection never delivered (here: a retried send answered duplicate=true after a
    reconnect, with the device's cursor already at the head)."""
    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    first = await send(alice, chat, b"one", cmid="m1")
    alice.close()
    again = await authed(server, "alice")
    rid = again.send(send=pb.Send(client_msg_id="m1", chat_id=chat, body=b"one"))
    ack = (await again.reply(rid)).send_ack
    assert (ack.seq, ack.duplicate) == (first.seq, True)
    again.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=ack.seq)]))
    await no_error_before_pong(again)
    # a fresh send in that chat, acked before any Deliver of the chat on this connection
    second = await send(again, chat, b"two")
    again.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=second.seq)]))
    await no_error_before_pong(again)
    # beyond what was delivered or acknowledged here it is still refused
    rid = again.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=second.seq + 1)]))
    assert (await again.reply(rid)).error.code == pb.ACK_INVALID


class SlowMembers(SQLiteStore):
    """The real SQLite store whose member-map reads wait at a gate, so a test can hold sends
    between acceptance and the writer while a drain starts."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.gate: asyncio.Event | None = None
        self.waiting = 0

    async def members(self, chat_id):
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
        return await super().members(chat_id)


async def test_drain_answers_every_accepted_send_before_goaway(tmp_path):
    """8.17: sends the server accepted before the drain (here: waiting for their chat's member
    map) are made durable and acknowledged before Goaway and 1001; later ones get UNAVAILABLE."""
    config = fast_config(tmp_path, server__drain_spread=0.0)
    store = SlowMembers(tmp_path / "switchboard.db")
    gateway = build_gateway(config, store=store)
    await gateway.start()
    url = f"ws://127.0.0.1:{gateway.port}/v1/ws"
    tokens = gateway.tokens
    alice = await RawClient.connect(url, tokens.mint("alice", "phone"))
    await alice.recv("sync_complete")
    chat = (await request(alice, create_chat=pb.CreateChat(
        kind=pb.DIRECT, member_user_ids=["bob"]))).chat.chat_id
    gateway.services.chats.forget(chat)
    store.gate = asyncio.Event()
    rids = [alice.send(send=pb.Send(client_msg_id=f"d{i}", chat_id=chat, body=b"x"))
            for i in range(5)]
    await wait_for(lambda: store.waiting >= 1, message="a send waiting for the member map")
    stopping = asyncio.ensure_future(gateway.stop())
    await wait_for(lambda: gateway.draining)
    late = alice.send(send=pb.Send(client_msg_id="late", chat_id=chat, body=b"x"))
    store.gate.set()
    order = []
    while True:
        frame = await alice.recv(timeout=10)
        order.append(frame.WhichOneof("body"))
        if order[-1] == "goaway":
            break
        if frame.request_id in rids:
            assert order[-1] == "send_ack", frame
            rids.remove(frame.request_id)
        elif frame.request_id == late:
            assert frame.error.code == pb.UNAVAILABLE
            late = None
    assert rids == [] and late is None, order
    assert (await alice.closed())[0] == 1001
    await stopping


async def test_first_presence_comes_after_the_ok(make_server):
    server = await make_server(timers__presence_interval=0.1)
    watcher = await authed(server, "watcher")
    await authed(server, "bob")
    watcher.send(subscribe_presence=pb.SubscribePresence(user_ids=["bob", "carol"]))
    kinds = [(await watcher.recv()).WhichOneof("body") for _ in range(3)]
    assert kinds == ["ok", "presence", "presence"], kinds


async def test_own_read_position_reaches_your_other_devices_with_receipts_off(server):
    phone = await authed(server, "bob", "phone")
    laptop = await authed(server, "bob", "laptop")
    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    await request(phone, update_settings=pb.UpdateSettings(read_receipts=False))
    ack = await send(alice, chat)
    await receive_and_ack(phone, 1)
    await receive_and_ack(laptop, 1)
    await request(phone, mark_read=pb.MarkRead(chat_id=chat, seq=ack.seq))
    update = await receipt_until(laptop, chat, lambda u: any(
        m.user_id == "bob" and m.read_seq == ack.seq for m in u.members))
    assert member(update, "bob").read_seq == ack.seq
