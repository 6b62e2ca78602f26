"""The Store contract (switchboard/core/store.py), run against every implementation.

Each store factory gets a fresh, private backing (a file, a keyspace, a MemoryData) per test
and returns a callable that makes a new, unopened store on it; calling it twice gives two
stores on the same data, which is how "survives a restart" and "a new owner continues the
sequence" are tested. The sync snapshot and the chat list are checked through the domain code
that builds them from the narrow reads (core/backlog.py, ChatService.list_chats).
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import random
import sqlite3
from pathlib import Path
from typing import Callable

import pytest

from switchboard.core.backlog import read_backlog
from switchboard.core.chats import ChatService, membership_message
from switchboard.core.model import (MUTE_FOREVER, Batch, Chat, ChatKind, ChatSummaryRow,
                                    CommitResult, DeviceStatus, MediaRecord, MemberAction,
                                    MembershipEvent, Membership, NewMessage, Period, PushPlatform,
                                    PushToken, QueuedPush, Receipt, Role, StoredMessage,
                                    UserSettings, Visibility)
from switchboard.core.store import Store
from switchboard.core.store_memory import MemoryData, MemoryStore
from switchboard.core.store_sqlite import SQLiteStore
from tests.support.waiting import wait_for

StoreMaker = Callable[[], Store]


def sqlite_backing(request) -> StoreMaker:
    path = request.getfixturevalue("tmp_path") / "store.db"
    return lambda: SQLiteStore(path)


def memory_backing(request) -> StoreMaker:
    data = MemoryData()
    return lambda: MemoryStore(data)


def scylla_backing(request) -> StoreMaker:
    """An emptied keyspace on the session's Cassandra node (tests/support/cassandra.py)."""
    from switchboard.core.store_scylla import ScyllaStore, replication_map
    target = request.getfixturevalue("cql_emptied_keyspace")
    settings = target.settings(keyspace=None)
    return lambda: ScyllaStore(settings, keyspace=target.keyspace,
                               replication=replication_map("SimpleStrategy", 1, {}))


class Stores:
    """Opens stores on one backing and closes whatever a test left open."""

    def __init__(self, make: StoreMaker) -> None:
        self._make = make
        self._open: list[Store] = []

    async def open(self) -> Store:
        store = self._make()
        await store.open()
        self._open.append(store)
        return store

    async def close(self, store: Store) -> None:
        self._open.remove(store)
        await store.close()

    async def reopen(self, store: Store) -> Store:
        await self.close(store)
        return await self.open()

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])


@pytest.fixture(params=[sqlite_backing, memory_backing, scylla_backing],
                ids=["sqlite", "memory", "scylla"])
async def stores(request):
    opened = Stores(request.param(request))
    yield opened
    await opened.close_all()


@pytest.fixture
async def store(stores) -> Store:
    return await stores.open()


# ---------------------------------------------------------------------------- helpers
_server_ids = iter(range(1_000_000, 10**12))


def msg(chat: str, client_msg_id: str, *, user: str = "alice", device: str = "phone",
        body: bytes | None = None, media: tuple[str, ...] = ()) -> NewMessage:
    return NewMessage(chat, user, device, client_msg_id,
                      body if body is not None else f"{chat}/{client_msg_id}".encode(),
                      media, next(_server_ids), 1_700_000_000_000 + len(client_msg_id))


def stored(m: NewMessage, seq: int) -> StoredMessage:
    return StoredMessage(m.chat_id, seq, m.server_id, m.sender_user, m.sender_device,
                         m.client_msg_id, m.body, m.media_ids, m.created_at_ms, m.event)


async def commit(store: Store, *messages: NewMessage, cursors=None, reads=None,
                 delivered=None, public_reads=None) -> list[CommitResult]:
    """Commit a batch that must land whole; its results, in batch order."""
    outcome = await store.commit(Batch(list(messages), dict(cursors or {}), dict(reads or {}),
                                       dict(delivered or {}), dict(public_reads or {})))
    assert outcome.failed == {} and len(outcome.unsaved) == 0
    assert None not in outcome.results and len(outcome.results) == len(messages)
    return outcome.results


async def list_chats(store: Store, user_id: str) -> list[ChatSummaryRow]:
    return await ChatService(store).list_chats(user_id)


async def group(store: Store, chat_id: str, members: dict[str, Role], *, title: str = "t",
                kind: ChatKind = ChatKind.GROUP) -> Chat:
    return await store.create_chat(Chat(chat_id, kind, title, 1_700_000_000_000), members)


async def fill(store: Store, chat_id: str, n: int, *, prefix: str = "m",
               user: str = "alice") -> list[NewMessage]:
    messages = [msg(chat_id, f"{prefix}{i}", user=user) for i in range(n)]
    await commit(store, *messages)
    return messages


def seqs(messages: list[StoredMessage]) -> list[int]:
    return [m.seq for m in messages]


def event(chat_id: str, action: MemberAction, *users: str, actor: str = "alice") -> NewMessage:
    return membership_message(chat_id, MembershipEvent(action, actor, users), next(_server_ids))


async def add(store: Store, chat_id: str, *users: str, actor: str = "alice") -> int:
    """Commit a membership event adding `users`; its seq."""
    [result] = await commit(store, event(chat_id, MemberAction.ADDED, *users, actor=actor))
    return result.message.seq


async def remove(store: Store, chat_id: str, *users: str, actor: str = "alice") -> int:
    [result] = await commit(store, event(chat_id, MemberAction.REMOVED, *users, actor=actor))
    return result.message.seq


def backlog_rows(rows) -> list[tuple]:
    return [(b.chat_id, b.cursor, b.head) for b in rows]


# ---------------------------------------------------------------------------- sequencing
async def test_unknown_chat_is_empty(store):
    assert await store.head_seq("nope") == 0
    assert await store.read_messages("nope", 0, 10) == []
    assert await store.read_history("nope", 0, 0, 10) == []
    assert await store.get_chat("nope") is None
    assert await store.members("nope") == {}
    assert await list_chats(store, "nobody") == []
    assert await read_backlog(store, "nobody", "phone") == []
    assert await store.read_seq("nope", "nobody") == 0


async def test_commit_assigns_gap_free_seq_in_list_order_per_chat(store):
    batch = [msg("a", "1"), msg("b", "1"), msg("a", "2"), msg("a", "3"), msg("b", "2")]
    results = await commit(store, *batch)
    assert [(r.message.chat_id, r.message.seq, r.duplicate) for r in results] == [
        ("a", 1, False), ("b", 1, False), ("a", 2, False), ("a", 3, False), ("b", 2, False)]
    assert [r.message for r in results] == [stored(m, r.message.seq) for m, r in zip(batch, results)]
    assert await store.head_seq("a") == 3
    assert await store.head_seq("b") == 2


async def test_seq_continues_across_batches(store):
    for round_ in range(5):
        results = await commit(store, *(msg("a", f"{round_}.{i}") for i in range(7)),
                               msg("b", f"{round_}"))
        assert seqs([r.message for r in results]) == [*range(round_ * 7 + 1, round_ * 7 + 8),
                                                      round_ + 1]
    assert seqs(await store.read_messages("a", 0, 100)) == list(range(1, 36))
    assert seqs(await store.read_messages("b", 0, 100)) == [1, 2, 3, 4, 5]


async def test_concurrent_commits_to_different_chats(store):
    async def send(chat: str) -> list[int]:
        got = []
        for i in range(10):
            got += seqs([r.message for r in await commit(store, msg(chat, f"{i}a"),
                                                         msg(chat, f"{i}b"))])
        return got

    per_chat = await asyncio.gather(*(send(f"c{n}") for n in range(6)))
    assert all(got == list(range(1, 21)) for got in per_chat)


async def test_message_fields_round_trip(store):
    rich = msg("a", "rich", user="bob", device="tablet", body=bytes(range(256)) * 4,
               media=("img-1", "vid:2", "ünï\x1fcode"))
    empty = msg("a", "empty", body=b"", media=())
    await commit(store, rich, empty)
    assert await store.read_messages("a", 0, 10) == [stored(rich, 1), stored(empty, 2)]


async def test_empty_batch_and_updates_only_batch(store):
    assert await commit(store) == []
    await group(store, "g", {"alice": Role.MEMBER, "bob": Role.MEMBER})
    await fill(store, "g", 3)
    assert await commit(store, cursors={("bob", "phone", "g"): 2}, reads={("g", "bob"): 1},
                        delivered={("g", "bob"): 2}) == []
    assert await store.head_seq("g") == 3
    assert await store.read_seq("g", "bob") == 1
    assert (await store.receipts("g"))["bob"] == Receipt(2, 1, 0)
    assert [(b.cursor, b.head) for b in await read_backlog(store, "bob", "phone")] == [(2, 3)]


# ---------------------------------------------------------------------------- dedup
async def test_duplicate_in_the_same_batch_returns_the_first(store):
    first = msg("a", "x")
    retry = msg("a", "x", device="tablet", body=b"other body")
    results = await commit(store, first, msg("a", "y"), retry)
    assert [(r.message.seq, r.duplicate) for r in results] == [(1, False), (2, False), (1, True)]
    assert results[2].message == stored(first, 1)
    assert await store.head_seq("a") == 2


async def test_duplicate_across_batches_returns_the_original(store):
    first = msg("a", "x", media=("m1",))
    await commit(store, first, msg("a", "y"))
    retry = msg("a", "x", body=b"changed")
    results = await commit(store, retry, msg("a", "z"))
    assert results[0].duplicate and results[0].message == stored(first, 1)
    assert (results[1].message.seq, results[1].duplicate) == (3, False)
    assert seqs(await store.read_messages("a", 0, 10)) == [1, 2, 3]


async def test_dedup_key_is_chat_sender_and_client_msg_id(store):
    results = await commit(store, msg("a", "x"), msg("a", "x", user="bob"), msg("b", "x"))
    assert [(r.message.chat_id, r.message.seq, r.duplicate) for r in results] == [
        ("a", 1, False), ("a", 2, False), ("b", 1, False)]


async def test_dedup_and_sequence_survive_reopen(stores):
    store = await stores.open()
    first = msg("a", "x")
    await commit(store, first, msg("a", "y"))
    store = await stores.reopen(store)
    results = await commit(store, msg("a", "x", body=b"retry after restart"), msg("a", "z"))
    assert results[0].duplicate and results[0].message == stored(first, 1)
    assert (results[1].message.seq, results[1].duplicate) == (3, False)


async def test_a_second_store_on_the_same_data_continues_the_sequence(stores):
    """What a new chat owner does after a ring change: read the head, carry on."""
    one, two = await stores.open(), await stores.open()
    for i in range(4):
        writer = one if i % 2 == 0 else two
        results = await commit(writer, msg("a", f"{i}.1"), msg("a", f"{i}.2"))
        assert seqs([r.message for r in results]) == [2 * i + 1, 2 * i + 2]
    assert (await commit(two, msg("a", "0.1")))[0].message.seq == 1
    assert seqs(await one.read_messages("a", 0, 100)) == list(range(1, 9))


async def test_two_stores_racing_on_one_chat_never_share_or_skip_a_seq(stores):
    """A stale and a new owner committing to one chat at once (SQLite: processes sharing the
    file serialise on BEGIN IMMEDIATE and read the head inside the transaction)."""
    one, two = await stores.open(), await stores.open()

    async def send(store: Store, name: str) -> list[int]:
        got = []
        for i in range(30):
            got += seqs([r.message for r in await commit(store, msg("a", f"{name}{i}"),
                                                         msg("a", f"{name}{i}b"))])
        return got

    mine, theirs = await asyncio.gather(send(one, "x"), send(two, "y"))
    assert sorted(mine + theirs) == list(range(1, 121))
    assert mine == sorted(mine) and theirs == sorted(theirs)
    assert seqs(await one.read_messages("a", 0, 1000)) == list(range(1, 121))
    assert await two.head_seq("a") == 120


async def test_everything_survives_reopen(stores):
    store = await stores.open()
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER}, title="trip")
    messages = await fill(store, "g", 4)
    await commit(store, cursors={("bob", "phone", "g"): 3}, reads={("g", "bob"): 2},
                 delivered={("g", "bob"): 3})
    store = await stores.reopen(store)
    assert await store.get_chat("g") == Chat("g", ChatKind.GROUP, "trip", 1_700_000_000_000)
    assert await store.members("g") == {"alice": Membership(Role.ADMIN, 0),
                                        "bob": Membership(Role.MEMBER, 0)}
    assert await store.read_messages("g", 0, 10) == [stored(m, i + 1) for i, m in enumerate(messages)]
    assert await store.head_seq("g") == 4
    assert await store.read_seq("g", "bob") == 2
    assert await store.receipts("g") == {"alice": Receipt(4, 4, 0), "bob": Receipt(3, 2, 0)}
    assert [(b.chat_id, b.cursor, b.head) for b in await read_backlog(store, "bob", "phone")] == [("g", 3, 4)]


async def test_random_batches_match_a_simple_model(store):
    """Many batches mixing chats, senders, in-batch and cross-batch retries, checked against
    a dict model of what the store must hold."""
    rng = random.Random(20240607)
    model: dict[tuple[str, str, str], StoredMessage] = {}
    heads: dict[str, int] = {}
    for _ in range(60):
        batch = [msg(rng.choice("abc"), f"m{rng.randrange(120)}", user=rng.choice(("u1", "u2")))
                 for _ in range(rng.randrange(1, 25))]
        results = await commit(store, *batch)
        for m, result in zip(batch, results):
            key = (m.chat_id, m.sender_user, m.client_msg_id)
            if key in model:
                assert result.duplicate and result.message == model[key]
            else:
                heads[m.chat_id] = heads.get(m.chat_id, 0) + 1
                assert not result.duplicate and result.message == stored(m, heads[m.chat_id])
                model[key] = result.message
    for chat_id, head in heads.items():
        assert await store.head_seq(chat_id) == head
        expected = sorted((m for m in model.values() if m.chat_id == chat_id), key=lambda m: m.seq)
        assert await store.read_messages(chat_id, 0, 10_000) == expected


# ---------------------------------------------------------------------------- watermarks
async def test_cursors_never_move_backwards(store):
    await group(store, "g", {"bob": Role.MEMBER})
    await fill(store, "g", 10)
    key = ("bob", "phone", "g")
    for cursor, expected in ((5, 5), (3, 5), (5, 5), (7, 7), (0, 7)):
        await commit(store, cursors={key: cursor})
        assert [b.cursor for b in await read_backlog(store, "bob", "phone")] == [expected]


async def test_read_watermark_never_moves_backwards(store):
    for seq, expected in ((4, 4), (2, 4), (9, 9), (0, 9)):
        await commit(store, reads={("g", "bob"): seq})
        assert await store.read_seq("g", "bob") == expected
    assert await store.read_seq("g", "alice") == 0
    assert await store.read_seq("other", "bob") == 0


async def test_updates_and_messages_commit_together(store):
    await group(store, "g", {"bob": Role.MEMBER})
    await commit(store, msg("g", "1"), msg("g", "2"),
                 cursors={("bob", "phone", "g"): 1}, reads={("g", "bob"): 2})
    assert await store.read_seq("g", "bob") == 2
    assert [(b.cursor, b.head) for b in await read_backlog(store, "bob", "phone")] == [(1, 2)]


# ---------------------------------------------------------------------------- narrow reads
async def test_multi_chat_reads_answer_each_chat_and_leave_out_the_rest(store):
    one = await group(store, "g1", {"alice": Role.ADMIN, "bob": Role.MEMBER}, title="one")
    two = await group(store, "g2", {"alice": Role.ADMIN}, title="two")
    await fill(store, "g1", 3, user="carol")
    await fill(store, "loose", 2, user="dave")  # messages in a chat nobody created
    await commit(store, reads={("g1", "alice"): 2, ("g2", "bob"): 1})
    ids = ["g1", "g2", "loose", "nope"]
    assert await store.heads(ids) == {"g1": 3, "loose": 2}
    assert await store.chats(ids) == {"g1": one, "g2": two}
    assert await store.member_counts(ids) == {"g1": 2, "g2": 1}
    assert await store.read_seqs("alice", ids) == {"g1": 2}
    assert await store.read_seqs("bob", ids) == {"g2": 1}
    assert await store.read_seqs("carol", ids) == {"g1": 3}
    for read in (store.heads, store.chats, store.member_counts):
        assert await read([]) == {}
    assert await store.read_seqs("alice", []) == {}


async def test_multi_chat_reads_take_many_ids(store):
    for i in range(0, 300, 30):
        await fill(store, f"c{i}", 1 + i // 30)
    ids = [f"c{i}" for i in range(300)]
    assert await store.heads(ids) == {f"c{i}": 1 + i // 30 for i in range(0, 300, 30)}
    assert await store.heads({"c0", "c30", "c31"}) == {"c0": 1, "c30": 2}


async def test_user_chats_carry_the_joined_seq(store):
    await group(store, "g", {"alice": Role.ADMIN})
    await group(store, "h", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    await fill(store, "g", 4)
    assert await add(store, "g", "bob") == 5  # the event is the first message bob sees
    assert await store.user_chats("alice") == {"g": 0, "h": 0}
    assert await store.user_chats("bob") == {"g": 4, "h": 0}
    await remove(store, "h", "bob")
    assert await store.user_chats("bob") == {"g": 4}
    assert await store.user_chats("nobody") == {}


async def test_cursors_are_per_device(store):
    await commit(store, cursors={("bob", "phone", "g"): 3, ("bob", "phone", "h"): 1,
                                 ("bob", "laptop", "g"): 2, ("alice", "phone", "g"): 9})
    assert await store.cursors("bob", "phone") == {"g": 3, "h": 1}
    assert await store.cursors("bob", "laptop") == {"g": 2}
    assert await store.cursors("bob", "watch") == {}


# ---------------------------------------------------------------------------- backlog
async def test_backlog_starts_at_joined_seq_and_follows_the_device_cursor(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    await group(store, "quiet", {"bob": Role.MEMBER})
    await group(store, "h", {"bob": Role.MEMBER})
    await fill(store, "g", 5)
    await fill(store, "h", 2)
    assert [(b.chat_id, b.cursor, b.head) for b in await read_backlog(store, "bob", "phone")] == [
        ("g", 0, 5), ("h", 0, 2)]
    await commit(store, cursors={("bob", "phone", "g"): 5, ("bob", "phone", "h"): 1})
    assert [(b.chat_id, b.cursor, b.head) for b in await read_backlog(store, "bob", "phone")] == [
        ("h", 1, 2)]
    assert [(b.chat_id, b.cursor) for b in await read_backlog(store, "bob", "laptop")] == [
        ("g", 0), ("h", 0)]
    await fill(store, "g", 1, prefix="later")
    assert [(b.chat_id, b.cursor, b.head) for b in await read_backlog(store, "bob", "phone")] == [
        ("g", 5, 6), ("h", 1, 2)]


async def test_backlog_of_a_late_joiner_and_a_removed_member(store):
    await group(store, "g", {"alice": Role.ADMIN})
    await fill(store, "g", 3)
    await add(store, "g", "carol")  # seq 4
    [row] = await read_backlog(store, "carol", "phone")
    assert (row.chat_id, row.cursor, row.head, row.periods, row.jumped) == ("g", 3, 4, None, True)
    await fill(store, "g", 2, prefix="after")
    assert backlog_rows(await read_backlog(store, "carol", "phone")) == [("g", 3, 6)]
    await commit(store, cursors={("carol", "phone", "g"): 5})
    assert await remove(store, "g", "carol") == 7
    await fill(store, "g", 1, prefix="gone")
    # what is left of its range, up to the event that removed it, and nothing after
    [row] = await read_backlog(store, "carol", "phone")
    assert (row.cursor, row.head, row.periods, row.jumped) == (5, 7, (Period(3, 7),), False)
    await commit(store, cursors={("carol", "phone", "g"): 7})
    assert await read_backlog(store, "carol", "phone") == []
    assert await read_backlog(store, "stranger", "phone") == []


# ---------------------------------------------------------------------------- reading
async def test_read_messages_pages_forward(store):
    await fill(store, "a", 25)
    pages, after = [], 0
    while page := await store.read_messages("a", after, 10):
        pages.append(seqs(page))
        after = page[-1].seq
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert seqs(await store.read_messages("a", 24, 10)) == [25]
    assert await store.read_messages("a", 25, 10) == []


async def test_read_history_bounds_order_and_limit(store):
    await fill(store, "a", 20)
    assert seqs(await store.read_history("a", 0, 0, 5)) == [20, 19, 18, 17, 16]
    assert seqs(await store.read_history("a", 16, 0, 5)) == [15, 14, 13, 12, 11]
    assert seqs(await store.read_history("a", 0, 17, 10)) == [20, 19, 18]
    assert seqs(await store.read_history("a", 10, 7, 10)) == [9, 8]
    assert seqs(await store.read_history("a", 3, 0, 10)) == [2, 1]
    assert await store.read_history("a", 1, 0, 10) == []
    assert await store.read_history("a", 0, 20, 10) == []
    assert (await store.read_history("a", 0, 0, 1))[0].body == b"a/m19"


# ---------------------------------------------------------------------------- chats
async def test_create_chat_is_idempotent_by_chat_id(store):
    chat = Chat("g", ChatKind.GROUP, "first", 1_700_000_000_000)
    assert await store.create_chat(chat, {"alice": Role.ADMIN, "bob": Role.MEMBER}) == chat
    again = await store.create_chat(Chat("g", ChatKind.DIRECT, "second", 5), {"eve": Role.ADMIN})
    assert again == chat
    assert await store.get_chat("g") == chat
    assert await store.members("g") == {"alice": Membership(Role.ADMIN, 0),
                                        "bob": Membership(Role.MEMBER, 0)}
    assert await list_chats(store, "eve") == []


async def test_direct_chat_round_trips(store):
    chat = await group(store, "d:a:b", {"a": Role.MEMBER, "b": Role.MEMBER}, title="",
                       kind=ChatKind.DIRECT)
    assert chat.kind is ChatKind.DIRECT
    assert (await store.get_chat("d:a:b")).kind is ChatKind.DIRECT


async def test_an_added_event_joins_at_its_seq_and_leaves_members_alone(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    await fill(store, "g", 4)
    assert await add(store, "g", "bob", "carol", "dave") == 5
    expected = {"alice": Membership(Role.ADMIN, 0), "bob": Membership(Role.MEMBER, 0),
                "carol": Membership(Role.MEMBER, 4), "dave": Membership(Role.MEMBER, 4)}
    assert await store.members("g") == expected
    assert [c.chat_id for c in await list_chats(store, "carol")] == ["g"]
    assert await store.member_periods("g") == {"alice": [Period(0)], "bob": [Period(0)],
                                               "carol": [Period(4)], "dave": [Period(4)]}


async def test_an_added_event_in_an_empty_chat_is_its_first_message(store):
    await group(store, "g", {"alice": Role.ADMIN})
    assert await add(store, "g", "bob") == 1
    assert (await store.members("g"))["bob"] == Membership(Role.MEMBER, 0)


async def test_a_removed_event_ends_the_range_at_its_seq(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER, "carol": Role.MEMBER})
    await fill(store, "g", 2)
    assert await remove(store, "g", "bob", "nobody") == 3
    remaining = {"alice": Membership(Role.ADMIN, 0), "carol": Membership(Role.MEMBER, 0)}
    assert await store.members("g") == remaining
    assert await list_chats(store, "bob") == []
    assert await store.member_counts(["g"]) == {"g": 2}
    assert await store.member_periods("g", "bob") == {"bob": [Period(0, 3)]}
    assert await store.member_periods("g", "nobody") == {}
    assert await store.user_periods("bob") == {"g": [Period(0, 3)]}


async def test_a_membership_event_is_a_message_of_the_log(store):
    await group(store, "g", {"alice": Role.ADMIN})
    await fill(store, "g", 1)
    added = event("g", MemberAction.ADDED, "bob", "carol")
    [result] = await commit(store, added)
    assert result.message == stored(added, 2)
    assert result.message.event == MembershipEvent(MemberAction.ADDED, "alice", ("bob", "carol"))
    assert result.message.sender_device == "" and result.message.body == b""
    [row] = await store.read_messages("g", 1, 10)
    assert row.event == result.message.event
    assert [m.event for m in await store.read_history("g", 0, 0, 10)] == [row.event, None]
    assert await store.senders_between("g", 1, 2) == {"alice"}
    # the actor has read what they did, like a sender
    assert (await store.receipts("g"))["alice"] == Receipt(2, 2, 0)


async def test_a_duplicate_event_changes_nothing_again(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    removal = event("g", MemberAction.REMOVED, "bob")
    await commit(store, removal)
    await add(store, "g", "bob")
    [again] = await commit(store, removal)
    assert again.duplicate and again.message.seq == 1
    assert "bob" in await store.members("g")
    assert await store.member_periods("g", "bob") == {"bob": [Period(0, 1), Period(1)]}


async def test_an_operators_event_raises_no_watermark(store):
    await group(store, "g", {"alice": Role.ADMIN})
    await add(store, "g", "bob", actor="")
    assert await store.receipts("g") == {}
    assert (await store.read_messages("g", 0, 1))[0].event.actor == ""


async def test_events_and_messages_of_one_batch_apply_in_seq_order(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    await commit(store, msg("g", "1"), event("g", MemberAction.REMOVED, "bob"), msg("g", "2"),
                 event("g", MemberAction.ADDED, "bob", "carol"), msg("g", "3"))
    assert await store.head_seq("g") == 5
    periods = await store.member_periods("g")
    assert periods == {"alice": [Period(0)], "bob": [Period(0, 2), Period(3)],
                       "carol": [Period(3)]}
    assert await store.user_periods("bob") == {"g": [Period(0, 2), Period(3)]}
    assert (await store.members("g"))["bob"] == Membership(Role.MEMBER, 3)


async def test_rejoin_periods_and_backlog_skip_the_gap(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    await fill(store, "g", 2)
    await commit(store, cursors={("bob", "phone", "g"): 1})
    assert await remove(store, "g", "bob") == 3
    await fill(store, "g", 3, prefix="while-away")
    assert await add(store, "g", "bob") == 7
    assert (await store.members("g"))["bob"].joined_seq == 6
    await fill(store, "g", 1, prefix="back")
    assert await store.user_periods("bob") == {"g": [Period(0, 3), Period(6)]}
    # the rest of the first range (2, 3), then from the event that re-added it (7, 8)
    [row] = await read_backlog(store, "bob", "phone")
    assert (row.cursor, row.head, row.periods, row.jumped) == (
        1, 8, (Period(0, 3), Period(6)), False)
    # a device that got the first range starts where the second begins, and is told so
    await commit(store, cursors={("bob", "phone", "g"): 3})
    [row] = await read_backlog(store, "bob", "phone")
    assert (row.cursor, row.head, row.periods, row.jumped) == (6, 8, None, True)
    [row] = await read_backlog(store, "bob", "laptop")  # no cursor: from the start
    assert (row.cursor, row.head, row.periods, row.jumped) == (
        0, 8, (Period(0, 3), Period(6)), False)


async def test_list_chats_reports_head_read_and_member_count(store):
    await group(store, "g1", {"alice": Role.ADMIN, "bob": Role.MEMBER, "carol": Role.MEMBER},
                title="one")
    await group(store, "g2", {"alice": Role.ADMIN}, title="two")
    await group(store, "g3", {"bob": Role.ADMIN}, title="not alice's")
    await fill(store, "g1", 6, user="carol")
    await commit(store, reads={("g1", "alice"): 4, ("g1", "bob"): 6})
    rows = sorted(await list_chats(store, "alice"), key=lambda r: r.chat_id)
    assert [(r.chat_id, r.kind, r.title, r.head_seq, r.read_seq, r.member_count) for r in rows] == [
        ("g1", ChatKind.GROUP, "one", 6, 4, 3), ("g2", ChatKind.GROUP, "two", 0, 0, 1)]
    await remove(store, "g1", "carol")
    assert {r.chat_id: r.member_count for r in await list_chats(store, "bob")} == {"g1": 2, "g3": 1}


# ---------------------------------------------------------------------------- receipts
async def test_delivered_watermark_keeps_the_max_through_commit(store):
    for seq, expected in ((3, 3), (1, 3), (3, 3), (7, 7), (0, 7)):
        await commit(store, delivered={("g", "bob"): seq})
        assert (await store.receipts("g"))["bob"] == Receipt(expected, 0, 0)
    assert await store.read_seq("g", "bob") == 0


async def test_delivered_and_read_watermarks_move_independently_and_read_implies_delivered(store):
    await commit(store, delivered={("g", "bob"): 5}, reads={("g", "bob"): 2})
    assert (await store.receipts("g"))["bob"] == Receipt(5, 2, 0)
    await commit(store, reads={("g", "bob"): 8})
    assert (await store.receipts("g"))["bob"] == Receipt(8, 8, 0)
    await commit(store, delivered={("g", "bob"): 6}, reads={("g", "bob"): 4})
    assert (await store.receipts("g"))["bob"] == Receipt(8, 8, 0)
    await commit(store, delivered={("g", "bob"): 9})
    assert (await store.receipts("g"))["bob"] == Receipt(9, 8, 0)


async def test_a_devices_cursor_raises_its_users_delivered_watermark_and_revoking_keeps_it(store):
    for device in ("phone", "laptop"):
        assert await store.register_device("bob", device, 100, 5) is DeviceStatus.OK
    await commit(store, cursors={("bob", "phone", "g"): 4, ("bob", "laptop", "g"): 6,
                                 ("bob", "phone", "h"): 2},
                 delivered={("g", "bob"): 5}, reads={("g", "bob"): 3})
    assert (await store.receipts("g"))["bob"] == Receipt(6, 3, 0)
    assert await store.receipts("h") == {"bob": Receipt(2, 0, 0)}
    await commit(store, cursors={("bob", "phone", "g"): 7}, delivered={("g", "bob"): 7})
    await commit(store, cursors={("bob", "phone", "g"): 5}, delivered={("g", "bob"): 5})
    assert (await store.receipts("g"))["bob"] == Receipt(7, 3, 0)
    await commit(store, delivered={("g", "bob"): 9})  # a raise no cursor carries
    assert (await store.receipts("g"))["bob"] == Receipt(9, 3, 0)
    assert await store.revoke_device("bob", "phone") is True
    assert await store.cursors("bob", "phone") == {}
    assert await store.cursors("bob", "laptop") == {"g": 6}
    assert await store.receipts("g") == {"bob": Receipt(9, 3, 0)}
    assert await store.receipts("h") == {"bob": Receipt(2, 0, 0)}


async def test_public_reads_raise_all_three_and_private_ones_never_the_public(store):
    await commit(store, reads={("g", "bob"): 6})  # read with read receipts off
    assert (await store.receipts("g"))["bob"] == Receipt(6, 6, 0)
    await commit(store, public_reads={("g", "bob"): 4})  # on again: earlier reads stay private
    assert (await store.receipts("g"))["bob"] == Receipt(6, 6, 4)
    await commit(store, public_reads={("g", "bob"): 9}, reads={("g", "bob"): 12},
                 delivered={("g", "bob"): 10})
    assert (await store.receipts("g"))["bob"] == Receipt(12, 12, 9)
    await commit(store, public_reads={("g", "bob"): 7})
    assert (await store.receipts("g"))["bob"] == Receipt(12, 12, 9)
    assert await store.read_seq("g", "bob") == 12


async def test_a_new_message_moves_its_senders_watermarks_to_its_seq(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER, "carol": Role.MEMBER})
    await commit(store, msg("g", "1"), msg("g", "2", user="bob"), msg("g", "3"), msg("h", "1"))
    assert await store.receipts("g") == {"alice": Receipt(3, 3, 0), "bob": Receipt(2, 2, 0)}
    assert await store.read_seq("g", "alice") == 3
    assert await store.receipts("h") == {"alice": Receipt(1, 1, 0)}
    assert [c.read_seq for c in await list_chats(store, "bob")] == [2]
    # the same batch may also carry the sender's acks: the max wins either way
    await commit(store, msg("g", "4", user="bob"), delivered={("g", "bob"): 3},
                 reads={("g", "bob"): 3})
    assert (await store.receipts("g"))["bob"] == Receipt(4, 4, 0)


async def test_a_message_of_a_sender_with_read_receipts_on_moves_the_public_read_too(store):
    public = msg("g", "1", user="bob")
    public.public_read = True
    await commit(store, public, msg("g", "2", user="bob"))
    assert (await store.receipts("g"))["bob"] == Receipt(2, 2, 1)


async def test_a_duplicate_does_not_move_its_senders_watermarks(store):
    await commit(store, msg("g", "1", user="bob"), msg("g", "2"), msg("g", "3"))
    results = await commit(store, msg("g", "1", user="bob", body=b"retry"))
    assert results[0].duplicate and results[0].message.seq == 1
    results = await commit(store, msg("g", "4"), msg("g", "1", user="bob"))
    assert [(r.message.seq, r.duplicate) for r in results] == [(4, False), (1, True)]
    assert await store.receipts("g") == {"alice": Receipt(4, 4, 0), "bob": Receipt(1, 1, 0)}
    assert await store.head_seq("g") == 4


async def test_sending_never_lowers_a_watermark(store):
    await commit(store, delivered={("g", "alice"): 10}, public_reads={("g", "bob"): 9})
    await commit(store, msg("g", "1"), msg("g", "2", user="bob"))
    assert await store.receipts("g") == {"alice": Receipt(10, 1, 0), "bob": Receipt(9, 9, 9)}


async def test_receipts_of_a_chat(store):
    assert await store.receipts("nope") == {}
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER, "carol": Role.MEMBER})
    await fill(store, "g", 5)
    await commit(store, delivered={("g", "bob"): 4, ("other", "carol"): 2},
                 reads={("g", "bob"): 3, ("other", "dave"): 1})
    receipts = await store.receipts("g")
    assert receipts == {"alice": Receipt(5, 5, 0), "bob": Receipt(4, 3, 0)}
    assert "carol" not in receipts  # a member without a row is absent
    assert await store.receipts("other") == {"carol": Receipt(2, 0, 0), "dave": Receipt(1, 1, 0)}


async def test_senders_between_bounds(store):
    senders = ["alice", "bob", "carol", "alice", "dave", "bob"]
    await commit(store, *(msg("g", str(i), user=user) for i, user in enumerate(senders)))
    await commit(store, msg("h", "x", user="eve"))
    assert await store.senders_between("g", 0, 6) == {"alice", "bob", "carol", "dave"}
    assert await store.senders_between("g", 1, 3) == {"bob", "carol"}  # seq 2 and 3
    assert await store.senders_between("g", 0, 1) == {"alice"}
    assert await store.senders_between("g", 3, 4) == {"alice"}
    assert await store.senders_between("g", 4, 4) == set()
    assert await store.senders_between("g", 5, 3) == set()
    assert await store.senders_between("g", 6, 100) == set()
    assert await store.senders_between("g", 5, 100) == {"bob"}
    assert await store.senders_between("h", 0, 100) == {"eve"}
    assert await store.senders_between("nope", 0, 100) == set()


# ---------------------------------------------------------------------------- settings
async def test_settings_default_and_partial_updates(store):
    assert await store.get_settings("alice") == UserSettings(True, Visibility.EVERYONE)
    off = await store.update_settings("alice", False, None)
    assert off == UserSettings(False, Visibility.EVERYONE)
    assert off.read_receipts is False and off.last_seen is Visibility.EVERYONE
    assert await store.update_settings("alice", None, Visibility.NOBODY) == UserSettings(
        False, Visibility.NOBODY)
    assert await store.update_settings("alice", None, None) == UserSettings(False, Visibility.NOBODY)
    assert await store.update_settings("alice", True, Visibility.CONTACTS) == UserSettings(
        True, Visibility.CONTACTS)
    got = await store.get_settings("alice")
    assert got == UserSettings(True, Visibility.CONTACTS)
    assert got.read_receipts is True and got.last_seen is Visibility.CONTACTS
    # a first update of one setting leaves the other at its default
    assert await store.update_settings("bob", None, Visibility.NOBODY) == UserSettings(
        True, Visibility.NOBODY)
    assert await store.update_settings("carol", False, None) == UserSettings(
        False, Visibility.EVERYONE)
    assert await store.get_settings("dave") == UserSettings()


async def test_settings_survive_reopen(stores):
    store = await stores.open()
    await store.update_settings("alice", False, Visibility.CONTACTS)
    await store.update_settings("bob", None, Visibility.NOBODY)
    store = await stores.reopen(store)
    assert await store.get_settings("alice") == UserSettings(False, Visibility.CONTACTS)
    assert await store.get_settings("bob") == UserSettings(True, Visibility.NOBODY)
    assert await store.get_settings("carol") == UserSettings()


# ---------------------------------------------------------------------------- devices
def device_ids(rows) -> list[str]:
    return [d.device_id for d in rows]


async def test_register_device_admits_up_to_the_limit(store):
    assert await store.register_device("alice", "phone", 100, 2) is DeviceStatus.OK
    assert await store.register_device("alice", "laptop", 200, 2) is DeviceStatus.OK
    assert await store.register_device("alice", "tablet", 300, 2) is DeviceStatus.TOO_MANY
    assert await store.register_device("alice", "phone", 400, 2) is DeviceStatus.OK  # known
    assert await store.register_device("bob", "tablet", 300, 2) is DeviceStatus.OK  # per user
    assert device_ids(await store.list_devices("alice")) == ["phone", "laptop"]
    assert await store.register_device("alice", "tablet", 500, 3) is DeviceStatus.OK
    assert device_ids(await store.list_devices("alice")) == ["phone", "laptop", "tablet"]


async def test_a_revoked_device_is_refused_forever(stores):
    store = await stores.open()
    for device, now in (("phone", 100), ("stolen", 200), ("laptop", 300)):
        assert await store.register_device("alice", device, now, 3) is DeviceStatus.OK
    assert await store.revoke_device("alice", "stolen") is True
    assert await store.revoke_device("alice", "stolen") is False  # already revoked
    assert device_ids(await store.list_devices("alice")) == ["phone", "laptop"]
    assert await store.register_device("alice", "stolen", 400, 3) is DeviceStatus.REVOKED
    assert await store.register_device("alice", "stolen", 400, 100) is DeviceStatus.REVOKED
    # the freed slot is taken by a new device; the revoked one still does not count
    assert await store.register_device("alice", "tablet", 500, 3) is DeviceStatus.OK
    assert await store.register_device("alice", "watch", 600, 3) is DeviceStatus.TOO_MANY
    assert await store.register_device("bob", "stolen", 700, 3) is DeviceStatus.OK  # per user
    store = await stores.reopen(store)
    other = await stores.open()
    for s in (store, other):
        assert await s.register_device("alice", "stolen", 800, 100) is DeviceStatus.REVOKED
        assert device_ids(await s.list_devices("alice")) == ["phone", "laptop", "tablet"]


async def test_list_devices_oldest_first_without_revoked(store):
    assert await store.list_devices("alice") == []
    for device, now in (("b", 300), ("a", 100), ("c", 200)):  # arrival order is not age order
        await store.register_device("alice", device, now, 10)
    await store.register_device("bob", "z", 50, 10)
    rows = await store.list_devices("alice")
    assert [(d.device_id, d.first_seen_ms) for d in rows] == [("a", 100), ("c", 200), ("b", 300)]
    await store.revoke_device("alice", "c")
    assert device_ids(await store.list_devices("alice")) == ["a", "b"]
    assert device_ids(await store.list_devices("bob")) == ["z"]


async def test_revoke_of_an_unknown_device_is_false(store):
    assert await store.revoke_device("alice", "never-seen") is False
    await store.register_device("bob", "phone", 100, 5)
    assert await store.revoke_device("alice", "phone") is False  # bob's, not alice's
    assert device_ids(await store.list_devices("bob")) == ["phone"]
    assert await store.register_device("alice", "never-seen", 200, 5) is DeviceStatus.OK


async def test_revoke_drops_that_devices_cursors(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    await fill(store, "g", 2)
    await add(store, "g", "carol")  # seq 3: joined_seq 2
    await fill(store, "g", 3, prefix="later")
    for user, device in (("bob", "phone"), ("bob", "laptop"), ("carol", "phone")):
        assert await store.register_device(user, device, 100, 5) is DeviceStatus.OK
    await commit(store, cursors={("bob", "phone", "g"): 5, ("bob", "laptop", "g"): 4,
                                 ("carol", "phone", "g"): 5})
    assert await store.revoke_device("bob", "phone") is True
    assert await store.revoke_device("carol", "phone") is True
    backlog = {(user, device): [(b.chat_id, b.cursor, b.head) for b in
                                await read_backlog(store, user, device)]
               for user, device in (("bob", "phone"), ("bob", "laptop"), ("carol", "phone"))}
    assert backlog == {("bob", "phone"): [("g", 0, 6)], ("bob", "laptop"): [("g", 4, 6)],
                       ("carol", "phone"): [("g", 2, 6)]}


async def test_touch_device_and_last_seen(stores):
    store = await stores.open()
    assert await store.last_seen("alice") == 0
    await store.register_device("alice", "phone", 100, 5)
    await store.register_device("alice", "laptop", 200, 5)
    await store.register_device("bob", "phone", 300, 5)
    await store.touch_device("alice", "phone", 1_000)
    assert await store.last_seen("alice") == 1_000
    await store.touch_device("alice", "laptop", 700)
    assert await store.last_seen("alice") == 1_000
    await store.touch_device("alice", "laptop", 2_000)
    assert await store.last_seen("alice") == 2_000
    rows = {d.device_id: (d.first_seen_ms, d.last_seen_ms) for d in await store.list_devices("alice")}
    assert rows == {"phone": (100, 1_000), "laptop": (200, 2_000)}
    await store.touch_device("alice", "unknown", 5_000)  # touching does not admit a device
    assert device_ids(await store.list_devices("alice")) == ["phone", "laptop"]
    store = await stores.reopen(store)
    assert await store.last_seen("alice") == 2_000
    assert await store.last_seen("bob") < 2_000


async def test_touch_devices_many_at_once_keeps_each_max(stores):
    store = await stores.open()
    for i in range(50):
        await store.register_device(f"u{i}", "phone", 100, 5)
    await store.touch_device("u0", "phone", 9_000)
    await store.touch_devices([(f"u{i}", "phone", 1_000 + i) for i in range(50)]
                              + [("nobody", "phone", 5_000)])
    assert await store.last_seen("u0") == 9_000  # the max is kept
    assert [await store.last_seen(f"u{i}") for i in range(1, 50)] == \
        [1_000 + i for i in range(1, 50)]
    assert await store.list_devices("nobody") == []
    await store.touch_devices([])


async def test_concurrent_registrations_never_exceed_the_limit(stores):
    one, two = await stores.open(), await stores.open()
    statuses = await asyncio.gather(*(
        (one if i % 2 else two).register_device("alice", f"d{i}", 100 + i, 3) for i in range(12)))
    assert sorted(s.value for s in statuses) == sorted(["ok"] * 3 + ["too_many"] * 9)
    assert len(await one.list_devices("alice")) == 3


# ---------------------------------------------------------------------------- push
def apns(token: str, previews: bool = False) -> PushToken:
    return PushToken(PushPlatform.APNS, token, "com.example.chat", previews, 1_000)


async def test_push_tokens_one_per_device_replaced_and_dropped(stores):
    store = await stores.open()
    assert await store.push_tokens("alice") == {}
    await store.set_push_token("alice", "phone", apns("a" * 64))
    await store.set_push_token("alice", "tablet", PushToken(PushPlatform.FCM, "f:1", "", True, 5))
    await store.set_push_token("alice", "phone", apns("b" * 64, previews=True))  # a new token
    await store.set_push_token("bob", "phone", apns("c" * 64))
    store = await stores.reopen(store)
    assert await store.push_tokens("alice") == {
        "phone": apns("b" * 64, previews=True),
        "tablet": PushToken(PushPlatform.FCM, "f:1", "", True, 5)}
    # a provider's word about the old token does not remove the one registered since
    assert await store.drop_push_token("alice", "phone", "a" * 64) is False
    assert await store.drop_push_token("alice", "phone", "b" * 64) is True
    assert await store.drop_push_token("alice", "tablet") is True
    assert await store.drop_push_token("alice", "tablet") is False
    assert await store.push_tokens("alice") == {}
    assert list(await store.push_tokens("bob")) == ["phone"]


async def test_revoking_a_device_drops_its_push_token(store):
    for device in ("phone", "laptop"):
        await store.register_device("alice", device, 100, 5)
        await store.set_push_token("alice", device, apns(device * 8))
    assert await store.revoke_device("alice", "phone") is True
    assert list(await store.push_tokens("alice")) == ["laptop"]


async def test_mutes_expire_and_unmute(stores):
    store = await stores.open()
    now = 1_000_000
    await store.set_mute("alice", "g1", now + 60_000, now)
    await store.set_mute("alice", "g2", MUTE_FOREVER, now)
    await store.set_mute("alice", "g3", now + 5_000, now)
    await store.set_mute("bob", "g1", now + 60_000, now)
    store = await stores.reopen(store)
    assert await store.mutes("alice", now) == {"g1": now + 60_000, "g2": MUTE_FOREVER,
                                               "g3": now + 5_000}
    assert await store.mutes("alice", now + 10_000) == {"g1": now + 60_000, "g2": MUTE_FOREVER}
    await store.set_mute("alice", "g1", 0, now)  # unmute
    await store.set_mute("alice", "g4", now - 1, now)  # already over: nothing muted
    assert await store.mutes("alice", now) == {"g2": MUTE_FOREVER, "g3": now + 5_000}
    assert await store.mutes("carol", now) == {}


def queued(device: str, chat: str, first: int, last: int, due: int = 10) -> QueuedPush:
    return QueuedPush("bob", device, chat, first, last, last - first + 1, "alice", "", due)


async def test_push_queue_keeps_the_newest_entry_and_drops_only_what_was_sent(stores):
    store = await stores.open()
    assert await store.queued_pushes() == []
    await store.put_pushes([queued("phone", "c1", 1, 3), queued("phone", "c2", 1, 1),
                            queued("tablet", "c1", 2, 3)])
    await store.put_pushes([queued("phone", "c1", 1, 5, due=20)])  # more messages
    await store.put_pushes([queued("phone", "c1", 1, 4, due=30)])  # an older put, landing late
    store = await stores.reopen(store)
    key = lambda p: (p.device_id, p.chat_id)  # noqa: E731
    assert sorted(await store.queued_pushes(), key=key) == [
        queued("phone", "c1", 1, 5, due=20), queued("phone", "c2", 1, 1),
        queued("tablet", "c1", 2, 3)]
    # sent up to 3 while message 5 was queued meanwhile: the entry stays
    await store.drop_pushes([("bob", "phone", "c1", 3), ("bob", "tablet", "c1", 3),
                             ("bob", "phone", "c2", 1)])
    assert await store.queued_pushes() == [queued("phone", "c1", 1, 5, due=20)]
    await store.drop_pushes([("bob", "phone", "c1", 5)])
    assert await store.queued_pushes() == []
    # a push queued again after its drop (a new message) is kept
    await store.put_pushes([queued("phone", "c1", 6, 6)])
    assert await store.queued_pushes() == [queued("phone", "c1", 6, 6)]


async def test_push_queue_spans_many_chats(store):
    pushes = [queued("phone", f"chat{i}", 1, i + 1) for i in range(300)]
    await store.put_pushes(pushes)
    assert sorted(p.last_seq for p in await store.queued_pushes()) == list(range(1, 301))
    await store.drop_pushes([("bob", "phone", p.chat_id, p.last_seq) for p in pushes])
    assert await store.queued_pushes() == []


# ---------------------------------------------------------------------------- SQLite only
async def test_sqlite_file_is_in_wal_mode(tmp_path):
    store = SQLiteStore(tmp_path / "wal.db")
    await store.open()
    try:
        await commit(store, msg("a", "1"))
        with sqlite3.connect(tmp_path / "wal.db") as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.close()


async def test_sqlite_a_writer_queues_on_the_write_lock_another_process_holds(tmp_path):
    """Writers of several processes on one file take an flock on <file>-writelock before BEGIN
    IMMEDIATE: while another holds it a commit waits in the kernel's queue (not in SQLite's
    busy handler, which polls with sleeps up to 100 ms), and commits once it is let go."""
    path = tmp_path / "shared.db"
    store = SQLiteStore(path)
    await store.open()
    holder = os.open(f"{path}-writelock", os.O_RDWR)  # another process's writer, in effect
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        pending = asyncio.ensure_future(commit(store, msg("a", "1")))
        await wait_for(lambda: _flock_waiters(f"{path}-writelock") == 1,
                       message="the commit queued on the lock")
        assert not pending.done()
        fcntl.flock(holder, fcntl.LOCK_UN)
        [result] = await asyncio.wait_for(pending, 15)
        assert result.message.seq == 1
    finally:
        os.close(holder)
        await store.close()


def _flock_waiters(path: str) -> int:
    """Processes (or descriptions) blocked on an flock of `path`, from /proc/locks."""
    inode = str(os.stat(path).st_ino)
    with open("/proc/locks") as locks:
        return sum(1 for line in locks
                   if " -> FLOCK " in line and line.split()[-3].rsplit(":", 1)[1] == inode)


async def test_sqlite_senders_between_scans_the_seq_range(tmp_path):
    """Not the whole chat in the dedup index (which a bare DISTINCT would pick)."""
    from switchboard.core.store_sqlite import SCHEMA, SQL_SENDERS
    with sqlite3.connect(":memory:") as raw:
        raw.executescript(SCHEMA)
        plan = " ".join(row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {SQL_SENDERS}",
                                                       ("g", 1, 2)))
    assert "PRIMARY KEY (chat_id=? AND seq>? AND seq<?)" in plan, plan


async def test_sqlite_a_file_without_the_new_tables_is_upgraded(tmp_path):
    store = SQLiteStore(tmp_path / "old.db")
    await store.open()
    await commit(store, msg("a", "1"))
    await store.close()
    with sqlite3.connect(tmp_path / "old.db") as raw:
        raw.executescript("DROP TABLE users; DROP TABLE devices;")
    store = SQLiteStore(tmp_path / "old.db")
    await store.open()
    try:
        assert await store.head_seq("a") == 1
        assert await store.get_settings("alice") == UserSettings()
        assert await store.register_device("alice", "phone", 1, 1) is DeviceStatus.OK
    finally:
        await store.close()


async def test_sqlite_last_seen_counts_revoked_devices(tmp_path):
    store = SQLiteStore(tmp_path / "seen.db")
    await store.open()
    try:
        await store.register_device("alice", "phone", 100, 5)
        await store.register_device("alice", "old", 100, 5)
        await store.touch_device("alice", "phone", 1_000)
        await store.touch_device("alice", "old", 3_000)
        await store.revoke_device("alice", "old")
        assert await store.last_seen("alice") == 3_000
    finally:
        await store.close()


# ---------------------------------------------------------------------------- blocks
async def test_block_unblock_and_both_views(stores):
    store = await stores.open()
    assert await store.blocked("alice") == [] and await store.blockers("bob") == set()
    await store.block("alice", "mallory")
    await store.block("alice", "bob")
    await store.block("alice", "bob")  # again: nothing new
    await store.block("carol", "mallory")
    assert await store.blocked("alice") == ["bob", "mallory"]
    assert await store.blockers("mallory") == {"alice", "carol"}
    assert await store.blockers("bob") == {"alice"}
    await store.unblock("alice", "mallory")
    await store.unblock("alice", "mallory")  # again, and a block that never was: no-ops
    await store.unblock("dave", "bob")
    store = await stores.reopen(store)
    assert await store.blocked("alice") == ["bob"]
    assert await store.blockers("mallory") == {"carol"}
    assert await store.blocked("mallory") == []


# ---------------------------------------------------------------------------- SQLite migration
OLD_SCHEMA = (Path(__file__).parent / "schema_before_periods.sql").read_text()


def old_database(path) -> None:
    """A file as the version before membership periods left it: a group whose member bob was
    re-added (joined_seq 5), receipts of bob and of carol (read receipts off), a cursor."""
    with sqlite3.connect(path) as raw:
        raw.executescript(OLD_SCHEMA)
        raw.execute("INSERT INTO chats VALUES ('g', 2, 'old', 1)")
        raw.executemany("INSERT INTO members VALUES ('g', ?, ?, ?)",
                        [("alice", 2, 0), ("bob", 1, 5), ("carol", 1, 0)])
        raw.executemany("INSERT INTO user_chats VALUES (?, 'g')", [("alice",), ("bob",), ("carol",)])
        raw.executemany("INSERT INTO messages VALUES ('g', ?, ?, 'alice', 'phone', ?, ?, NULL, 1)",
                        [(seq, 1000 + seq, f"m{seq}", f"old {seq}".encode()) for seq in range(1, 7)])
        raw.execute("INSERT INTO chat_heads VALUES ('g', 6)")
        raw.executemany("INSERT INTO receipts VALUES ('g', ?, ?, ?)",
                        [("alice", 6, 6), ("bob", 6, 6), ("carol", 4, 4)])
        raw.execute("INSERT INTO users VALUES ('carol', 0, 1)")
        raw.execute("INSERT INTO device_cursors VALUES ('bob', 'phone', 'g', 4)")


async def assert_upgraded(one: Store, two: Store) -> None:
    """Two stores on the data of `old_database` (or the ScyllaDB test's old keyspace), upgraded:
    what the old version knew reads as it should, and everything new works on it (membership
    events, public reads, blocks, push tokens, media)."""
    assert await two.head_seq("g") == 6
    assert [m.event for m in await one.read_messages("g", 0, 10)] == [None] * 6
    # membership before the upgrade is known as each member's current period only
    assert await one.member_periods("g") == {"alice": [Period(0)], "bob": [Period(5)],
                                             "carol": [Period(0)]}
    assert await one.user_periods("bob") == {"g": [Period(5)]}
    # reads are public for users whose read receipts are on now, private otherwise
    assert await one.receipts("g") == {"alice": Receipt(6, 6, 6), "bob": Receipt(6, 6, 6),
                                       "carol": Receipt(4, 4, 0)}
    # the device's cursor is from before bob's current period: it is told where it starts
    assert await two.cursors("bob", "phone") == {"g": 4}
    [row] = await read_backlog(one, "bob", "phone")
    assert (row.cursor, row.head, row.jumped) == (5, 6, True)
    assert await remove(one, "g", "bob") == 7
    assert await add(two, "g", "bob") == 8
    assert await one.member_periods("g", "bob") == {"bob": [Period(5, 7), Period(7)]}
    await commit(one, public_reads={("g", "carol"): 8})
    assert (await two.receipts("g"))["carol"] == Receipt(8, 8, 8)
    await two.block("carol", "bob")
    assert await one.blockers("bob") == {"carol"}
    token = PushToken(PushPlatform.FCM, "fcm:bob", "", False, 1)
    await one.set_push_token("bob", "phone", token)
    assert await two.push_tokens("bob") == {"phone": token}
    await one.create_media(MediaRecord("m1", "alice", 5, "image/png", bytes(32), 1, 5))
    assert await two.complete_media("m1") is not None
    assert (await one.claim_media("alice", "g", ["m1"]))["m1"].refs == {"g"}


async def test_sqlite_a_file_of_the_previous_schema_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    old_database(path)
    stores = Stores(lambda: SQLiteStore(path))
    try:
        # two processes opening it at once upgrade it once
        one, two = await asyncio.gather(stores.open(), stores.open())
        await assert_upgraded(one, two)
        await stores.close_all()
        one = await stores.open()  # a second open finds nothing left to do
        assert await one.member_periods("g", "bob") == {"bob": [Period(5, 7), Period(7)]}
    finally:
        await stores.close_all()


def test_sqlite_stores_opening_a_new_file_at_once_all_open(tmp_path):
    """`serve --workers` opens one new file from every worker at once: each goes through the
    WAL switch, the migration and the schema in turn, and none fails with "database is
    locked" (which a stale snapshot meets at once, whatever the busy timeout)."""
    import threading
    openers = 4
    for attempt in range(6):
        path = tmp_path / f"fresh{attempt}.db"
        barrier = threading.Barrier(openers)
        failures: list[BaseException] = []

        async def open_and_close() -> None:
            store = SQLiteStore(path)
            barrier.wait()
            await store.open()
            await store.close()

        def opener() -> None:
            try:
                asyncio.run(open_and_close())
            except BaseException as exc:  # reported below, with the attempt
                failures.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(openers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not failures, f"attempt {attempt}: {failures!r}"
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = 'messages'"
                               ).fetchone() == (1,)
