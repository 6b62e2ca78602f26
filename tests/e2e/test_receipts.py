"""Sent -> Delivered -> Read as per-(chat, user) watermarks, coalesced pushes, group rollups,
the read-receipts privacy setting, durability across a restart, and the drain's last pushes."""
from __future__ import annotations

import asyncio

import pytest

from switchboard.gateway import server as gateway_server
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.rawflow import authed, direct, group, receive_and_ack, request, send
from tests.support.waiting import wait_for


async def receipt_until(client, chat: str, predicate, timeout: float = 5.0) -> pb.ReceiptUpdate:
    async def loop():
        while True:
            update = (await client.recv("receipt_update", timeout=timeout)).receipt_update
            if update.chat_id == chat and predicate(update):
                return update
    return await asyncio.wait_for(loop(), timeout)


def member(update: pb.ReceiptUpdate, user: str) -> pb.MemberReceipt:
    return next(m for m in update.members if m.user_id == user)


async def test_one_to_one_ticks(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    ack = await send(alice, chat, b"hi")  # one tick: Sent
    assert ack.seq == 1
    await receive_and_ack(bob, 1)  # bob's device acks: Delivered
    update = await receipt_until(alice, chat, lambda u: u.delivered_all_seq >= 1)
    assert (member(update, "bob").delivered_seq, member(update, "bob").read_seq) == (1, 0)
    read = await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=1))  # Read
    assert read.read_ack.read_seq == 1
    update = await receipt_until(alice, chat, lambda u: u.read_all_seq >= 1)
    assert member(update, "bob").read_seq == 1
    # watermarks never go back
    assert (await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=0))).read_ack.read_seq == 1


async def test_updates_are_coalesced_per_flush(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    for _ in range(30):
        await send(alice, chat)
    await receive_and_ack(bob, 30)  # 30 messages acked in a handful of frames
    await receipt_until(alice, chat, lambda u: u.delivered_all_seq == 30)
    await asyncio.sleep(0.3)
    extra = 0
    while alice.pending():
        frame = await alice.recv()
        extra += frame.WhichOneof("body") == "receipt_update"
    assert server.gateway.services.receipts.updates_pushed <= 10


async def test_group_rollup_and_read_by_k_of_n(server):
    users = [f"m{i}" for i in range(20)]
    sender = await authed(server, "sender")
    clients = {u: await authed(server, u) for u in users}
    chat = await group(sender, users)
    ack = await send(sender, chat, b"to the group")
    for i, user in enumerate(users):
        await receive_and_ack(clients[user], 1)
    update = await receipt_until(sender, chat, lambda u: u.delivered_all_seq >= ack.seq)
    assert update.read_all_seq == 0
    for user in users[:7]:
        await request(clients[user], mark_read=pb.MarkRead(chat_id=chat, seq=ack.seq))
    status = (await request(sender, get_receipts=pb.GetReceipts(chat_id=chat, seq=ack.seq))).receipt_status
    assert (status.member_count, status.delivered_count, status.read_count) == (20, 20, 7)
    assert list(status.read_by) == sorted(users[:7])
    for user in users[7:]:
        await request(clients[user], mark_read=pb.MarkRead(chat_id=chat, seq=ack.seq))
    await receipt_until(sender, chat, lambda u: u.read_all_seq >= ack.seq)


async def test_receipts_go_to_senders_not_to_bystanders(server):
    a, b, c = [await authed(server, u) for u in ("a", "b", "c")]
    chat = await group(a, ["b", "c"])
    await send(a, chat)
    await receive_and_ack(b, 1)
    await receive_and_ack(c, 1)
    await receipt_until(a, chat, lambda u: u.delivered_all_seq >= 1)
    # c sent nothing: b's delivery concerns only the sender a (and b's own devices)
    with pytest.raises(asyncio.TimeoutError):
        await receipt_until(c, chat, lambda u: any(m.user_id == "b" for m in u.members), timeout=0.5)


async def test_a_sender_is_told_only_of_watermarks_that_moved_over_its_messages(server):
    """b's delivered watermark moving from c's message to a's later one concerns a alone: c's
    message lies below where it moved from (b never read, which must not widen the span)."""
    a, b, c = [await authed(server, u) for u in ("a", "b", "c")]
    chat = await group(a, ["b", "c"])
    await send(a, chat)
    from_c = await send(c, chat)
    await receive_and_ack(b, 2)
    await receipt_until(c, chat, lambda u: any(
        m.user_id == "b" and m.delivered_seq >= from_c.seq for m in u.members))
    later = await send(a, chat)
    await receive_and_ack(b, 1)
    await receipt_until(a, chat, lambda u: any(
        m.user_id == "b" and m.delivered_seq >= later.seq for m in u.members))
    with pytest.raises(asyncio.TimeoutError):
        await receipt_until(c, chat, lambda u: any(
            m.user_id == "b" and m.delivered_seq >= later.seq for m in u.members), timeout=0.5)


async def test_read_receipts_off_is_mutual(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    settings = await request(bob, update_settings=pb.UpdateSettings(read_receipts=False))
    assert settings.settings.read_receipts is False
    ack = await send(alice, chat)
    await receive_and_ack(bob, 1)
    await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=ack.seq))
    update = await receipt_until(alice, chat, lambda u: u.delivered_all_seq >= ack.seq)
    assert member(update, "bob").read_seq == 0 and update.read_all_seq == 0
    status = (await request(alice, get_receipts=pb.GetReceipts(chat_id=chat, seq=ack.seq))).receipt_status
    assert (status.delivered_count, status.read_count) == (1, 0)
    # and bob sees no read information about alice
    back = await send(bob, chat)
    await receive_and_ack(alice, 1)
    await request(alice, mark_read=pb.MarkRead(chat_id=chat, seq=back.seq))
    status = (await request(bob, get_receipts=pb.GetReceipts(chat_id=chat, seq=back.seq))).receipt_status
    assert (status.delivered_count, status.read_count) == (1, 0)


async def test_reading_on_one_device_clears_the_others(server):
    phone = await authed(server, "bob", "phone")
    laptop = await authed(server, "bob", "laptop")
    alice = await authed(server, "alice")
    chat = await direct(alice, "bob")
    for _ in range(3):
        await send(alice, chat)
    await receive_and_ack(phone, 3)
    await receive_and_ack(laptop, 3)
    chats = (await request(laptop, list_chats=pb.ListChats())).chat_list.chats
    assert chats[0].unread_count == 3
    await request(phone, mark_read=pb.MarkRead(chat_id=chat, seq=3))
    update = await receipt_until(laptop, chat, lambda u: any(
        m.user_id == "bob" and m.read_seq == 3 for m in u.members))
    assert update.chat_id == chat
    chats = (await request(laptop, list_chats=pb.ListChats())).chat_list.chats
    assert (chats[0].read_seq, chats[0].unread_count) == (3, 0)


async def test_an_ack_is_not_echoed_to_its_own_user_a_read_is(server):
    """Delivered alone changes no badge: the acking user's devices hear nothing of it (a large
    group would otherwise get two frames per message); a read reaches them."""
    phone = await authed(server, "bob", "phone")
    laptop = await authed(server, "bob", "laptop")
    alice = await authed(server, "alice")
    chat = await group(alice, ["bob"])
    ack = await send(alice, chat)
    await receive_and_ack(phone, 1)
    update = await receipt_until(alice, chat, lambda u: u.delivered_all_seq >= ack.seq)
    assert member(update, "bob").delivered_seq == ack.seq
    receipts = server.gateway.services.receipts
    pushed = receipts.updates_pushed
    await request(phone, mark_read=pb.MarkRead(chat_id=chat, seq=ack.seq))
    # the read's update is the first either of bob's devices gets: the ack's was not echoed
    for device in (phone, laptop):
        update = await receipt_until(device, chat, lambda u: True)
        assert [(m.user_id, m.read_seq) for m in update.members] == [("bob", ack.seq)]
    assert receipts.updates_pushed > pushed


async def test_get_receipts_refuses_non_members_and_unknown_seq(server):
    alice = await authed(server, "alice")
    mallory = await authed(server, "mallory")
    chat = await direct(alice, "bob")
    await send(alice, chat)
    reply = await request(mallory, get_receipts=pb.GetReceipts(chat_id=chat, seq=1))
    assert reply.error.code == pb.NOT_MEMBER
    reply = await request(alice, get_receipts=pb.GetReceipts(chat_id=chat, seq=99))
    assert reply.error.code == pb.NOT_FOUND


async def test_receipts_survive_a_restart(make_server):
    server = await make_server()
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    ack = await send(alice, chat)
    await receive_and_ack(bob, 1)
    await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=ack.seq))
    await receipt_until(alice, chat, lambda u: u.read_all_seq >= 1)
    await server.stop()
    again = await make_server()
    alice = await authed(again, "alice")
    status = (await request(alice, get_receipts=pb.GetReceipts(chat_id=chat, seq=ack.seq))).receipt_status
    assert (status.delivered_count, status.read_count) == (1, 1)
    chats = (await request(await authed(again, "bob"), list_chats=pb.ListChats())).chat_list.chats
    assert chats[0].read_seq == 1


async def test_a_drain_pushes_pending_receipts_before_closing_the_store(make_server, caplog):
    """Receipt pushes still waiting for their flush when a drain starts go out while the store
    is open (no "skipped" warning per chat); changes arriving later are only counted."""
    server = await make_server(timers__receipt_flush=30.0)  # nothing flushes on its own
    senders = [await authed(server, f"s{i}") for i in range(20)]
    bob = await authed(server, "bob")
    chats = [await direct(sender, "bob") for sender in senders]
    for sender, chat in zip(senders, chats):
        await send(sender, chat, b"hi")
    await receive_and_ack(bob, 20)
    receipts = server.gateway.services.receipts
    await wait_for(lambda: len(receipts._dirty_delivered) == 20,
                   message="20 chats with a pending push")
    with caplog.at_level("INFO", logger="switchboard"):
        await server.stop()
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]
    for sender, chat in zip(senders, chats):  # each got its Delivered tick before the Goaway
        update = await receipt_until(sender, chat, lambda u: u.delivered_all_seq >= 1)
        assert member(update, "bob").delivered_seq == 1
    assert receipts.updates_pushed >= 20 and receipts.not_pushed == 0
    receipts.note(chats[0], "bob", 1, 1, 1)  # after the drain: counted, never scheduled
    assert receipts.not_pushed == 1 and receipts._flush_handle is None


async def test_acks_go_on_together_and_a_drain_stores_those_gathered(make_server, monkeypatch):
    """Devices' acks wait for their hand-off to the writer and the receipts (ACK_HAND_OFF after
    the first); a drain hands off what is gathered before the writer closes, so the device's
    delivered watermark is stored and seen after a restart."""
    monkeypatch.setattr(gateway_server, "ACK_HAND_OFF", 3600.0)  # only the drain hands off
    server = await make_server()
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    ack = await send(alice, chat, b"hi")
    await receive_and_ack(bob, 1)
    gateway = server.gateway
    await wait_for(lambda: gateway.session_stats.acks >= 1, message="bob's ack read")
    writer = gateway.services.messages.writer
    # gathered, not yet handed off
    assert ("bob", "phone", chat) not in writer._cursors and (chat, "bob") not in writer._delivered
    await server.stop()
    again = await make_server()
    alice = await authed(again, "alice")
    status = (await request(alice, get_receipts=pb.GetReceipts(chat_id=chat, seq=ack.seq))
              ).receipt_status
    assert status.delivered_count == 1


async def test_reads_made_with_read_receipts_off_stay_private_when_turned_on(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    first = await send(alice, chat, b"read in private")
    await receive_and_ack(bob, 1)
    await request(bob, update_settings=pb.UpdateSettings(read_receipts=False))
    read = await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=first.seq))
    assert read.read_ack.read_seq == first.seq  # bob's own devices: the real position
    await request(bob, update_settings=pb.UpdateSettings(read_receipts=True))
    status = (await request(alice, get_receipts=pb.GetReceipts(
        chat_id=chat, seq=first.seq))).receipt_status
    assert (status.delivered_count, status.read_count, list(status.read_by)) == (1, 0, [])
    # a read made with them on again is public, and it covers what comes before it
    second = await send(alice, chat, b"read in public")
    await receive_and_ack(bob, 1)
    await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=second.seq))
    update = await receipt_until(alice, chat, lambda u: u.read_all_seq >= second.seq)
    assert member(update, "bob").read_seq == second.seq
    status = (await request(alice, get_receipts=pb.GetReceipts(
        chat_id=chat, seq=second.seq))).receipt_status
    assert list(status.read_by) == ["bob"]
    chats = (await request(bob, list_chats=pb.ListChats())).chat_list.chats
    assert (chats[0].read_seq, chats[0].unread_count) == (second.seq, 0)


async def test_a_send_with_read_receipts_off_reveals_no_read_position(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await direct(alice, "bob")
    first = await send(alice, chat, b"unread")
    await receive_and_ack(bob, 1)
    await request(bob, update_settings=pb.UpdateSettings(read_receipts=False))
    await send(bob, chat, b"a reply reads nothing in public")
    await receive_and_ack(alice, 1)
    await request(bob, update_settings=pb.UpdateSettings(read_receipts=True))
    status = (await request(alice, get_receipts=pb.GetReceipts(
        chat_id=chat, seq=first.seq))).receipt_status
    assert (status.read_count, list(status.read_by)) == (0, [])


async def test_read_by_k_of_n_counts_only_who_was_a_member_then(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await group(alice, ["bob"])
    old = await send(alice, chat, b"before carol")
    await receive_and_ack(bob, 1)
    await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=old.seq))
    await request(alice, add_members=pb.AddMembers(chat_id=chat, user_ids=["carol"]))  # seq 2
    status = (await request(alice, get_receipts=pb.GetReceipts(
        chat_id=chat, seq=old.seq))).receipt_status
    assert (status.member_count, status.delivered_count, status.read_count) == (1, 1, 1)
    # carol, who can never hold it, does not hold "delivered/read by all" back either
    update = await receipt_until(alice, chat, lambda u: u.read_all_seq >= old.seq)
    assert update.delivered_all_seq >= old.seq
    new = await send(alice, chat, b"after carol")
    status = (await request(alice, get_receipts=pb.GetReceipts(
        chat_id=chat, seq=new.seq))).receipt_status
    assert (status.member_count, status.delivered_count) == (2, 0)


async def test_read_by_of_a_member_removed_and_added_again_follows_its_ranges(server):
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await group(alice, ["bob"])
    seen = await send(alice, chat, b"in bob's first range")
    await receive_and_ack(bob, 1)
    await request(alice, remove_members=pb.RemoveMembers(chat_id=chat, user_ids=["bob"]))
    gap = await send(alice, chat, b"while bob is away")
    await request(alice, add_members=pb.AddMembers(chat_id=chat, user_ids=["bob"]))
    await receive_and_ack(bob, 2)  # the removal, then (after a floor) the re-add
    await request(bob, mark_read=pb.MarkRead(chat_id=chat, seq=gap.seq + 1))
    counts = {}
    for seq in (seen.seq, gap.seq):
        status = (await request(alice, get_receipts=pb.GetReceipts(
            chat_id=chat, seq=seq))).receipt_status
        counts[seq] = (status.member_count, status.delivered_count, status.read_count)
    assert counts == {seen.seq: (1, 1, 1), gap.seq: (0, 0, 0)}
