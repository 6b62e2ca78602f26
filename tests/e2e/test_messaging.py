"""The message path over real sockets with the SDK: send/ack, fan-out to every device, offline
sync, history, chats admin, read watermark (docs/architecture.md, "The send path")."""
from __future__ import annotations

import asyncio

import pytest

from switchboard.client import ServerError
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.clients import acked_and_stored, connect, receive


async def test_two_devices_chat(server):
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    chat = await alice.create_direct("bob")
    assert chat.kind == pb.DIRECT and {m.user_id for m in chat.members} == {"alice", "bob"}
    ack = await alice.send(chat.chat_id, b"hello bob")
    assert (ack.seq, ack.duplicate) == (1, False) and ack.server_id > 0
    [got] = await receive(bob, 1)
    assert (got.chat_id, got.seq, got.body, got.sender_user_id) == (chat.chat_id, 1, b"hello bob", "alice")
    reply = await bob.send(chat.chat_id, b"hi alice")
    [back] = await receive(alice, 1)
    assert (back.seq, back.body) == (reply.seq, b"hi alice") == (2, b"hi alice")
    await alice.close()
    await bob.close()


async def test_direct_chat_is_one_per_pair(server):
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    first = await alice.create_direct("bob")
    second = await bob.create_direct("alice")
    assert first.chat_id == second.chat_id
    with pytest.raises(ServerError) as info:
        await alice.create_direct("alice")
    assert info.value.code == pb.INVALID_ARGUMENT


async def test_retry_with_same_client_msg_id_creates_nothing(server):
    alice = await connect(server, "alice")
    chat = (await alice.create_direct("bob")).chat_id
    first = await alice.send(chat, b"once", client_msg_id="fixed-id")
    again = await alice.send(chat, b"once", client_msg_id="fixed-id")
    assert (again.seq, again.server_id, again.duplicate) == (first.seq, first.server_id, True)
    page = await alice.history(chat)
    assert [m.body for m in page.messages] == [b"once"]


async def test_message_reaches_every_device_of_every_member_and_senders_other_devices(server):
    phone = await connect(server, "alice", "phone")
    laptop = await connect(server, "alice", "laptop")
    bob_phone = await connect(server, "bob", "phone")
    bob_tablet = await connect(server, "bob", "tablet")
    chat = (await phone.create_direct("bob")).chat_id
    ack = await phone.send(chat, b"to all")
    for device in (laptop, bob_phone, bob_tablet):
        [got] = await receive(device, 1)
        assert (got.seq, got.body, got.sender_device_id) == (ack.seq, b"to all", "phone")
    # the sending device gets no echo: its SendAck is its copy
    with pytest.raises(asyncio.TimeoutError):
        await receive(phone, 1, timeout=0.3)


async def test_offline_device_gets_everything_on_reconnect_in_order(server):
    alice = await connect(server, "alice")
    chat = (await alice.create_direct("bob")).chat_id
    bob = await connect(server, "bob")
    await alice.send(chat, b"while online")
    await receive(bob, 1)
    await acked_and_stored(server, "bob")
    await bob.close()
    sent = [await alice.send(chat, f"offline {i}".encode()) for i in range(300)]
    bob = await connect(server, "bob")  # the window (256) is smaller than the backlog
    got = await receive(bob, 300)
    assert [m.seq for m in got] == [a.seq for a in sent]
    assert [m.body for m in got] == [f"offline {i}".encode() for i in range(300)]


async def test_explicit_sync_reports_completion(server):
    alice = await connect(server, "alice")
    chat = (await alice.create_direct("bob")).chat_id
    for i in range(5):
        await alice.send(chat, b"x")
    bob = await connect(server, "bob", auto_ack=True)
    await receive(bob, 5)
    await acked_and_stored(server, "bob")
    done = await bob.sync()
    assert done.messages == 0  # everything was acked already


async def test_group_chat_admin_and_fanout(server):
    admin = await connect(server, "admin")
    members = [await connect(server, f"user{i}") for i in range(5)]
    group = await admin.create_group("team", [f"user{i}" for i in range(3)])
    assert group.kind == pb.GROUP and group.title == "team"
    roles = {m.user_id: m.role for m in group.members}
    assert roles == {"admin": pb.ADMIN, "user0": pb.MEMBER, "user1": pb.MEMBER, "user2": pb.MEMBER}
    with pytest.raises(ServerError) as info:
        await members[0].add_members(group.chat_id, ["user3"])
    assert info.value.code == pb.FORBIDDEN
    info_after = await admin.add_members(group.chat_id, ["user3", "user4"])
    assert len(info_after.members) == 6
    ack = await admin.send(group.chat_id, b"welcome all")
    for member in members:  # the change is an entry of the chat's log: members and newcomers
        added, welcome = await receive(member, 2)
        assert (added.seq, changed(added)) == (1, ("ADDED", "admin", ["user3", "user4"]))
        assert welcome.seq == ack.seq
    # a late joiner sees nothing from before it joined: its history starts at its addition
    late = await connect(server, "late")
    await admin.add_members(group.chat_id, ["late"])
    page = await late.history(group.chat_id)
    assert [changed(m) for m in page.messages] == [("ADDED", "admin", ["late"])]
    await admin.remove_members(group.chat_id, ["user4"])
    with pytest.raises(ServerError) as info:
        await members[4].send(group.chat_id, b"am I still in?")
    assert info.value.code == pb.NOT_MEMBER
    await members[3].remove_members(group.chat_id, ["user3"])  # leaving is allowed
    with pytest.raises(ServerError) as info:
        await members[0].remove_members(group.chat_id, ["user1"])
    assert info.value.code == pb.FORBIDDEN
    ack = await admin.send(group.chat_id, b"after removals")
    removed, left = ("REMOVED", "admin", ["user4"]), ("REMOVED", "user3", ["user3"])
    for member in members[:3]:
        got = await receive(member, 4)
        assert [changed(m) for m in got[:3]] == [("ADDED", "admin", ["late"]), removed, left]
        assert got[3].seq == ack.seq
    # each gone member saw the change that took it out, and nothing after it
    assert [changed(m) for m in await receive(members[3], 3)][1:] == [removed, left]
    assert [changed(m) for m in await receive(members[4], 2)][1:] == [removed]
    for gone in members[3:]:
        with pytest.raises(asyncio.TimeoutError):
            await receive(gone, 1, timeout=0.3)


def changed(message: pb.Message) -> tuple[str, str, list[str]]:
    """(action, actor, users) of a membership event."""
    event = message.membership
    return (pb.MembershipEvent.Action.Name(event.action), event.actor_user_id,
            list(event.user_ids))


async def test_group_size_limit(make_server):
    server = await make_server(limits__max_group_members=4)
    admin = await connect(server, "admin")
    with pytest.raises(ServerError) as info:
        await admin.create_group("big", ["a", "b", "c", "d"])
    assert info.value.code == pb.GROUP_FULL
    group = await admin.create_group("ok", ["a", "b"])
    await admin.add_members(group.chat_id, ["c"])
    with pytest.raises(ServerError) as info:
        await admin.add_members(group.chat_id, ["d"])
    assert info.value.code == pb.GROUP_FULL


async def test_history_pages_backwards(server):
    alice = await connect(server, "alice")
    chat = (await alice.create_direct("bob")).chat_id
    for i in range(1, 26):
        await alice.send(chat, f"{i}".encode())
    page = await alice.history(chat, limit=10)
    assert [m.seq for m in page.messages] == list(range(25, 15, -1)) and page.has_more
    page = await alice.history(chat, before_seq=16, limit=10)
    assert [m.seq for m in page.messages] == list(range(15, 5, -1)) and page.has_more
    page = await alice.history(chat, before_seq=6, limit=10)
    assert [m.seq for m in page.messages] == [5, 4, 3, 2, 1] and not page.has_more
    with pytest.raises(ServerError) as info:
        await alice.history(chat, limit=1000)
    assert info.value.code == pb.INVALID_ARGUMENT


async def test_list_chats_with_head_and_read_watermark(server):
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    direct = (await alice.create_direct("bob")).chat_id
    group = (await alice.create_group("g", ["bob", "carol"])).chat_id
    for _ in range(3):
        await alice.send(direct, b"x")
    read = await bob.mark_read(direct, 2)
    assert read.read_seq == 2
    assert (await bob.mark_read(direct, 1)).read_seq == 2  # never goes back
    chats = {c.chat_id: c for c in await bob.list_chats()}
    assert (chats[direct].head_seq, chats[direct].read_seq, chats[direct].unread_count) == (3, 2, 1)
    assert (await bob.mark_read(direct, 99)).read_seq == 3  # clamped to head
    chats = {c.chat_id: c for c in await bob.list_chats()}
    assert (chats[direct].read_seq, chats[direct].unread_count, chats[direct].member_count) == (3, 0, 2)
    assert (chats[group].head_seq, chats[group].read_seq, chats[group].member_count) == (0, 0, 3)
    assert chats[group].title == "g" and chats[group].kind == pb.GROUP
    mine = {c.chat_id: c for c in await alice.list_chats()}
    assert (mine[direct].read_seq, mine[direct].unread_count) == (3, 0)  # own messages are read


async def test_new_connection_of_same_device_replaces_old(server):
    first = await connect(server, "alice", "phone", reconnect=False)
    second = await connect(server, "alice", "phone")
    await asyncio.wait_for(_until(lambda: not first.connected), 5)
    assert first.last_close_code == 4010
    assert (await second.ping()).server_time_ms > 0


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
