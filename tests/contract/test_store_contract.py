"""The Store contract (switchboard/core/store.py), run against every implementation.

Each store factory gets a fresh, private backing (a file, a keyspace) per test and returns a
callable that makes a new, unopened store on it; calling it twice gives two stores on the
same data, which is how "survives a restart" and "a new owner continues the sequence" are
tested. The ScyllaDB entry runs only when SWITCHBOARD_SCYLLA_HOSTS (comma-separated) is set.
"""
from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import uuid
from typing import Callable

import pytest

from switchboard.core.model import (Batch, Chat, ChatKind, Membership, NewMessage, Role,
                                    StoredMessage)
from switchboard.core.store import Store
from switchboard.core.store_sqlite import SQLiteStore

StoreMaker = Callable[[], Store]


def sqlite_backing(tmp_path) -> StoreMaker:
    return lambda: SQLiteStore(tmp_path / "store.db")


def scylla_backing(tmp_path) -> StoreMaker:
    hosts = os.environ.get("SWITCHBOARD_SCYLLA_HOSTS")
    if not hosts:
        pytest.skip("SWITCHBOARD_SCYLLA_HOSTS is not set")
    from switchboard.core.store_scylla import ScyllaStore
    keyspace = f"sb_contract_{uuid.uuid4().hex[:12]}"
    return lambda: ScyllaStore(hosts=hosts.split(","), keyspace=keyspace)


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


@pytest.fixture(params=[sqlite_backing, scylla_backing], ids=["sqlite", "scylla"])
async def stores(request, tmp_path):
    opened = Stores(request.param(tmp_path))
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
                         m.client_msg_id, m.body, m.media_ids, m.created_at_ms)


async def commit(store: Store, *messages: NewMessage, cursors=None, reads=None):
    return await store.commit(Batch(list(messages), dict(cursors or {}), dict(reads or {})))


async def group(store: Store, chat_id: str, members: dict[str, Role], *, title: str = "t",
                kind: ChatKind = ChatKind.GROUP) -> Chat:
    return await store.create_chat(Chat(chat_id, kind, title, 1_700_000_000_000), members)


async def fill(store: Store, chat_id: str, n: int, *, prefix: str = "m") -> list[NewMessage]:
    messages = [msg(chat_id, f"{prefix}{i}") for i in range(n)]
    await commit(store, *messages)
    return messages


def seqs(messages: list[StoredMessage]) -> list[int]:
    return [m.seq for m in messages]


# ---------------------------------------------------------------------------- sequencing
async def test_unknown_chat_is_empty(store):
    assert await store.head_seq("nope") == 0
    assert await store.read_messages("nope", 0, 10) == []
    assert await store.read_history("nope", 0, 0, 10) == []
    assert await store.get_chat("nope") is None
    assert await store.members("nope") == {}
    assert await store.list_chats("nobody") == []
    assert await store.backlog("nobody", "phone") == []
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
    await group(store, "g", {"alice": Role.MEMBER})
    await fill(store, "g", 3)
    assert await commit(store, cursors={("alice", "phone", "g"): 2}, reads={("g", "alice"): 1}) == []
    assert await store.head_seq("g") == 3
    assert await store.read_seq("g", "alice") == 1
    assert [(b.cursor, b.head) for b in await store.backlog("alice", "phone")] == [(2, 3)]


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


async def test_everything_survives_reopen(stores):
    store = await stores.open()
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER}, title="trip")
    messages = await fill(store, "g", 4)
    await commit(store, cursors={("bob", "phone", "g"): 3}, reads={("g", "bob"): 2})
    store = await stores.reopen(store)
    assert await store.get_chat("g") == Chat("g", ChatKind.GROUP, "trip", 1_700_000_000_000)
    assert await store.members("g") == {"alice": Membership(Role.ADMIN, 0),
                                        "bob": Membership(Role.MEMBER, 0)}
    assert await store.read_messages("g", 0, 10) == [stored(m, i + 1) for i, m in enumerate(messages)]
    assert await store.head_seq("g") == 4
    assert await store.read_seq("g", "bob") == 2
    assert [(b.chat_id, b.cursor, b.head) for b in await store.backlog("bob", "phone")] == [("g", 3, 4)]


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
        assert [b.cursor for b in await store.backlog("bob", "phone")] == [expected]


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
    assert [(b.cursor, b.head) for b in await store.backlog("bob", "phone")] == [(1, 2)]


# ---------------------------------------------------------------------------- backlog
async def test_backlog_starts_at_joined_seq_and_follows_the_device_cursor(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    await group(store, "quiet", {"bob": Role.MEMBER})
    await group(store, "h", {"bob": Role.MEMBER})
    await fill(store, "g", 5)
    await fill(store, "h", 2)
    assert [(b.chat_id, b.cursor, b.head) for b in await store.backlog("bob", "phone")] == [
        ("g", 0, 5), ("h", 0, 2)]
    await commit(store, cursors={("bob", "phone", "g"): 5, ("bob", "phone", "h"): 1})
    assert [(b.chat_id, b.cursor, b.head) for b in await store.backlog("bob", "phone")] == [
        ("h", 1, 2)]
    assert [(b.chat_id, b.cursor) for b in await store.backlog("bob", "laptop")] == [
        ("g", 0), ("h", 0)]
    await fill(store, "g", 1, prefix="later")
    assert [(b.chat_id, b.cursor, b.head) for b in await store.backlog("bob", "phone")] == [
        ("g", 5, 6), ("h", 1, 2)]


async def test_backlog_of_a_late_joiner_and_a_removed_member(store):
    await group(store, "g", {"alice": Role.ADMIN})
    await fill(store, "g", 3)
    await store.add_members("g", {"carol": Role.MEMBER})
    assert await store.backlog("carol", "phone") == []
    await fill(store, "g", 2, prefix="after")
    assert [(b.chat_id, b.cursor, b.head) for b in await store.backlog("carol", "phone")] == [
        ("g", 3, 5)]
    await store.remove_members("g", ["carol"])
    await fill(store, "g", 1, prefix="gone")
    assert await store.backlog("carol", "phone") == []
    assert await store.backlog("stranger", "phone") == []


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
    assert await store.list_chats("eve") == []


async def test_direct_chat_round_trips(store):
    chat = await group(store, "d:a:b", {"a": Role.MEMBER, "b": Role.MEMBER}, title="",
                       kind=ChatKind.DIRECT)
    assert chat.kind is ChatKind.DIRECT
    assert (await store.get_chat("d:a:b")).kind is ChatKind.DIRECT


async def test_add_members_joins_at_head_and_leaves_existing_alone(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    await fill(store, "g", 4)
    members = await store.add_members("g", {"bob": Role.ADMIN, "carol": Role.MEMBER,
                                            "dave": Role.ADMIN})
    expected = {"alice": Membership(Role.ADMIN, 0), "bob": Membership(Role.MEMBER, 0),
                "carol": Membership(Role.MEMBER, 4), "dave": Membership(Role.ADMIN, 4)}
    assert members == expected
    assert await store.members("g") == expected
    assert [c.chat_id for c in await store.list_chats("carol")] == ["g"]


async def test_add_members_to_an_empty_chat_joins_at_zero(store):
    await group(store, "g", {"alice": Role.ADMIN})
    assert (await store.add_members("g", {"bob": Role.MEMBER}))["bob"] == Membership(Role.MEMBER, 0)


async def test_remove_members(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER, "carol": Role.MEMBER})
    remaining = await store.remove_members("g", iter(["bob", "nobody"]))
    assert remaining == {"alice": Membership(Role.ADMIN, 0), "carol": Membership(Role.MEMBER, 0)}
    assert await store.members("g") == remaining
    assert await store.list_chats("bob") == []
    assert await store.remove_members("g", []) == remaining


async def test_rejoin_starts_at_the_new_joined_seq(store):
    await group(store, "g", {"alice": Role.ADMIN, "bob": Role.MEMBER})
    await fill(store, "g", 2)
    await commit(store, cursors={("bob", "phone", "g"): 1})
    await store.remove_members("g", ["bob"])
    await fill(store, "g", 3, prefix="while-away")
    assert (await store.add_members("g", {"bob": Role.MEMBER}))["bob"].joined_seq == 5
    await fill(store, "g", 1, prefix="back")
    assert [(b.cursor, b.head) for b in await store.backlog("bob", "phone")] == [(5, 6)]


async def test_list_chats_reports_head_read_and_member_count(store):
    await group(store, "g1", {"alice": Role.ADMIN, "bob": Role.MEMBER, "carol": Role.MEMBER},
                title="one")
    await group(store, "g2", {"alice": Role.ADMIN}, title="two")
    await group(store, "g3", {"bob": Role.ADMIN}, title="not alice's")
    await fill(store, "g1", 6)
    await commit(store, reads={("g1", "alice"): 4, ("g1", "bob"): 6})
    rows = sorted(await store.list_chats("alice"), key=lambda r: r.chat_id)
    assert [(r.chat_id, r.kind, r.title, r.head_seq, r.read_seq, r.member_count) for r in rows] == [
        ("g1", ChatKind.GROUP, "one", 6, 4, 3), ("g2", ChatKind.GROUP, "two", 0, 0, 1)]
    await store.remove_members("g1", ["carol"])
    assert {r.chat_id: r.member_count for r in await store.list_chats("bob")} == {"g1": 2, "g3": 1}


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


async def test_sqlite_two_stores_on_one_file_interleave_without_gaps(tmp_path):
    """Processes sharing the file: BEGIN IMMEDIATE and the head read inside the transaction
    keep seq gap-free even when both write the same chat at once."""
    one, two = SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")
    await one.open()
    await two.open()
    try:
        async def send(store: Store, name: str) -> None:
            for i in range(30):
                await commit(store, msg("a", f"{name}{i}"), msg("a", f"{name}{i}b"))

        await asyncio.gather(send(one, "x"), send(two, "y"))
        assert seqs(await one.read_messages("a", 0, 1000)) == list(range(1, 121))
        assert await two.head_seq("a") == 120
    finally:
        await one.close()
        await two.close()
