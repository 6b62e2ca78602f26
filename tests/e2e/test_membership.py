"""Membership changes as entries of the chat's log: a member removed and added again sees the
chat in two ranges, with no gap its device waits for forever.

The scenario an outside client (written from docs/protocol.md alone) reported: removed at one
seq, re-added later, it was offered messages after a gap that Sync could not fill, never acked,
and the server retransmitted without end. Here the reference SDK goes through the same steps,
connected throughout and offline throughout; its watermark must stay continuous, the server's
stream for it must be fully acked (nothing left to retransmit), and History must show both
ranges and nothing between them.
"""
from __future__ import annotations

import asyncio

import pytest

from switchboard.client import Client
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.clients import connect, receive
from tests.support.raw import OPEN_CLIENTS
from tests.support.rawflow import authed, group, request, send
from tests.support.waiting import wait_for

ADDED, REMOVED = pb.MembershipEvent.ADDED, pb.MembershipEvent.REMOVED


async def sends(client: Client, chat: str, label: str, count: int) -> list[int]:
    return [(await client.send(chat, f"{label} {i}".encode())).seq for i in range(count)]


def settled(server, user: str, chat: str, head: int):
    """The user's connection holds an acked stream of the chat up to `head` (so nothing is in
    flight for it and nothing can be retransmitted), or has let go of it: its range ended."""
    def check():
        [conn] = server.gateway.hub.devices_of(user)
        stream = conn.streams.get(chat)
        return conn.inflight == 0 and (stream is None or stream.acked == head)
    return check


def async_equal(read, expected):
    async def check():
        return await read() == expected
    return check


async def history_seqs(client: Client, chat: str) -> list[int]:
    seqs, before = [], 0
    while True:
        page = await client.history(chat, before_seq=before, limit=4)
        seqs += [m.seq for m in page.messages]
        if not page.has_more:
            return seqs
        before = page.messages[-1].seq


async def test_removed_and_re_added_while_connected(server):
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    chat = (await alice.create_group("team", ["bob"])).chat_id
    first = await sends(alice, chat, "before", 5)  # 1..5
    removed = (await alice.remove_members(chat, ["bob"])).head_seq  # 6
    away = await sends(alice, chat, "while away", 7)  # 7..13
    back = (await alice.add_members(chat, ["bob"])).head_seq  # 14
    again = await sends(alice, chat, "back", 5)  # 15..19
    assert (first, removed, away, back, again) == (
        [1, 2, 3, 4, 5], 6, list(range(7, 14)), 14, list(range(15, 20)))

    got = await receive(bob, 5 + 1 + 1 + 5)
    assert [m.seq for m in got] == [1, 2, 3, 4, 5, 6, 14, 15, 16, 17, 18, 19]
    assert (got[5].membership.action, list(got[5].membership.user_ids)) == (REMOVED, ["bob"])
    assert (got[6].membership.action, list(got[6].membership.user_ids)) == (ADDED, ["bob"])
    assert bob.have[chat] == 19  # continuous over both ranges: it acks the head
    await wait_for(settled(server, "bob", chat, 19), message="bob's stream acked to the head")
    [conn] = server.gateway.hub.devices_of("bob")
    assert conn.retransmits == 0 and bob.stats.duplicates == 0 and bob.stats.gap_syncs == 0
    # the live path sends nothing from the gap, and neither does a Sync
    await bob.sync()
    assert bob.have[chat] == 19
    assert await history_seqs(bob, chat) == [19, 18, 17, 16, 15, 14, 6, 5, 4, 3, 2, 1]


async def test_removed_and_re_added_while_offline(server):
    """The tail of the first range it had not received, then where the second starts."""
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    chat = (await alice.create_group("team", ["bob"])).chat_id
    await sends(alice, chat, "seen", 3)
    assert [m.seq for m in await receive(bob, 3)] == [1, 2, 3]
    await wait_for(settled(server, "bob", chat, 3), message="bob acked 3")
    have = bob.have
    await bob.close()
    OPEN_CLIENTS.remove(bob)

    await sends(alice, chat, "missed", 4)  # 4..7: bob's, not received yet
    await alice.remove_members(chat, ["bob"])  # 8
    await sends(alice, chat, "while away", 20)  # 9..28
    await alice.add_members(chat, ["bob"])  # 29
    await sends(alice, chat, "back", 3)  # 30..32

    bob = Client(server.url, server.token("bob"), have=have)
    OPEN_CLIENTS.append(bob)
    await bob.connect()
    got = await receive(bob, 4 + 1 + 1 + 3)
    assert [m.seq for m in got] == [4, 5, 6, 7, 8, 29, 30, 31, 32]
    await bob.wait_synced(timeout=10)
    assert bob.have[chat] == 32
    await wait_for(settled(server, "bob", chat, 32), message="bob's stream acked to the head")
    [conn] = server.gateway.hub.devices_of("bob")
    assert conn.retransmits == 0 and bob.stats.gap_syncs == 0
    assert conn.streams[chat].ranges is None  # past the gap: live messages go straight out again
    assert await history_seqs(bob, chat) == [32, 31, 30, 29, 8, 7, 6, 5, 4, 3, 2, 1]


async def test_a_removed_member_gets_the_rest_of_its_range_and_nothing_after(server):
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    chat = (await alice.create_group("team", ["bob"])).chat_id
    await sends(alice, chat, "seen", 2)
    await receive(bob, 2)
    await wait_for(settled(server, "bob", chat, 2), message="bob acked 2")
    have = bob.have
    await bob.close()
    OPEN_CLIENTS.remove(bob)
    await sends(alice, chat, "missed", 2)  # 3, 4
    await alice.remove_members(chat, ["bob"])  # 5
    await sends(alice, chat, "after", 3)  # 6..8: never bob's

    bob = Client(server.url, server.token("bob"), have=have)
    OPEN_CLIENTS.append(bob)
    await bob.connect()
    got = await receive(bob, 3)
    assert [m.seq for m in got] == [3, 4, 5] and got[2].membership.action == REMOVED
    await bob.wait_synced(timeout=10)
    await wait_for(settled(server, "bob", chat, 5), message="bob's tail acked")
    with pytest.raises(asyncio.TimeoutError):
        await receive(bob, 1, timeout=0.3)
    [conn] = server.gateway.hub.devices_of("bob")
    assert chat not in conn.streams  # done with the chat: nothing is kept for it


async def test_a_gap_no_sync_can_fill_is_closed_by_the_servers_floor(server):
    """A device whose persisted watermark is below what it acked (it acked, then lost what it
    had) is told where this connection resumes when it asks Sync about the gap."""
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    chat = (await alice.create_direct("bob")).chat_id
    await sends(alice, chat, "acked", 6)
    await receive(bob, 6)
    store = server.gateway.services.store
    await wait_for(async_equal(lambda: store.cursors("bob", "phone"), {chat: 6}),
                   message="bob's cursor stored at 6")
    await bob.close()
    OPEN_CLIENTS.remove(bob)
    bob = Client(server.url, server.token("bob"), have={chat: 2})
    OPEN_CLIENTS.append(bob)
    await bob.connect()
    await sends(alice, chat, "new", 2)  # 7, 8: a gap after 2 that a replay from 6 cannot fill
    got = await receive(bob, 2)
    assert [m.seq for m in got] == [7, 8]
    assert bob.have[chat] == 8 and bob.stats.gap_syncs == 1
    await wait_for(settled(server, "bob", chat, 8), message="bob acked 8")


async def test_a_member_added_while_connected_starts_at_the_event(server):
    alice = await connect(server, "alice")
    carol = await connect(server, "carol")
    chat = (await alice.create_group("team", ["bob"])).chat_id
    await sends(alice, chat, "before", 3)
    await alice.add_members(chat, ["carol"])  # 4
    await sends(alice, chat, "after", 2)
    got = await receive(carol, 3)
    assert [m.seq for m in got] == [4, 5, 6] and got[0].membership.action == ADDED
    assert carol.have[chat] == 6
    assert await history_seqs(carol, chat) == [6, 5, 4]
    summary = next(c for c in await carol.list_chats() if c.chat_id == chat)
    # unread: what carol may see (4..6), not what came before her
    assert (summary.head_seq, summary.member_count, summary.unread_count) == (6, 3, 3)


async def test_the_gap_is_crossed_once_the_first_range_is_acked_with_a_floor(server):
    """On the wire: a device that has not acked the end of its first range yet gets nothing of
    the second; once it acks, a floor, then the second range."""
    alice = await authed(server, "alice")
    bob = await authed(server, "bob")
    chat = await group(alice, ["bob"])
    await send(alice, chat, b"1")
    await request(alice, remove_members=pb.RemoveMembers(chat_id=chat, user_ids=["bob"]))
    await send(alice, chat, b"3: not bob's")
    await request(alice, add_members=pb.AddMembers(chat_id=chat, user_ids=["bob"]))
    await send(alice, chat, b"5")
    seen = []
    while len(seen) < 2:
        seen += [m.seq for m in (await bob.recv("deliver")).deliver.messages]
    assert seen == [1, 2]
    with pytest.raises(asyncio.TimeoutError):
        await bob.recv("deliver", timeout=0.3)
    bob.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=2)]))
    floor = (await bob.recv("deliver")).deliver
    assert ([(f.chat_id, f.seq) for f in floor.floors], list(floor.messages)) == ([(chat, 3)], [])
    rest = []
    while len(rest) < 2:
        rest += (await bob.recv("deliver")).deliver.messages
    assert [(m.seq, m.membership.action) for m in rest] == [(4, ADDED), (5, 0)]


async def test_a_large_change_is_written_as_several_events_each_within_a_frame(server):
    alice = await connect(server, "alice")
    chat = (await alice.create_group("big", [])).chat_id
    users = [f"member-{i:03d}-" + "x" * 100 for i in range(300)]
    info = await alice.add_members(chat, users)
    assert (info.head_seq, len(info.members)) == (2, 301)
    page = await alice.history(chat)
    assert [len(m.membership.user_ids) for m in page.messages] == [44, 256]
    assert [u for m in reversed(page.messages) for u in m.membership.user_ids] == users
    limit = server.gateway.config.limits.max_frame_bytes
    watcher = await connect(server, users[0], "tablet")
    await alice.remove_members(chat, users[1:])  # 299: two events more
    got = await receive(watcher, 4)
    assert [(m.membership.action, len(m.membership.user_ids)) for m in got] == [
        (ADDED, 256), (ADDED, 44), (REMOVED, 256), (REMOVED, 43)]
    assert all(len(pb.ServerFrame(deliver=pb.Deliver(messages=[m])).SerializeToString()) < limit
               for m in got)
