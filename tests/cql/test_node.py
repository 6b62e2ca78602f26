"""The single test node and what the ScyllaDB store will rely on from it: each test's keyspace
is its own, and conditional statements (lightweight transactions) answer applied or not as the
fencing of stale writers needs, for single statements and for single-partition batches."""
from __future__ import annotations

import asyncio

import pytest

from switchboard.core.cql import connect

SEEN_KEYSPACES: list[str] = []


@pytest.fixture
async def cql(cql_keyspace):
    session = await connect(cql_keyspace.settings())
    yield session
    await session.close()


@pytest.mark.parametrize("writer", ["first", "second"])
async def test_each_test_has_a_private_keyspace_dropped_after_it(cql, cql_keyspace, writer):
    # The keyspaces of the tests before this one are gone, and this one's name is new.
    names = {row.keyspace_name for row in (await cql.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces")).rows}
    assert cql_keyspace.keyspace in names
    assert not names & set(SEEN_KEYSPACES)
    SEEN_KEYSPACES.append(cql_keyspace.keyspace)
    # Same table name in every test: a shared keyspace would show the other test's row.
    await cql.execute("CREATE TABLE t (k text PRIMARY KEY)", prepare=False)
    await cql.execute("INSERT INTO t (k) VALUES (?)", (writer,))
    rows = (await cql.execute("SELECT k FROM t")).rows
    assert [row.k for row in rows] == [writer]


async def test_insert_if_not_exists_applies_once(cql):
    await cql.execute("CREATE TABLE dedup (chat text, sender text, client_msg_id text, seq int, "
                      "PRIMARY KEY ((chat, sender, client_msg_id)))", prepare=False)
    insert = ("INSERT INTO dedup (chat, sender, client_msg_id, seq) VALUES (?, ?, ?, ?) "
              "IF NOT EXISTS")
    first = await cql.execute(insert, ("c1", "alice", "m1", 7))
    assert first.applied
    again = await cql.execute(insert, ("c1", "alice", "m1", 8))
    assert not again.applied
    assert again.rows[0].seq == 7  # the losing write sees the row that won


@pytest.fixture
async def messages(cql):
    """The brief's fencing layout: the chat's head is a static column of the message
    partition, moved by a conditional batch together with the messages' inserts."""
    await cql.execute("CREATE TABLE messages (chat text, bucket int, seq int, head int static, "
                      "body text, PRIMARY KEY ((chat, bucket), seq))", prepare=False)
    created = await cql.execute("INSERT INTO messages (chat, bucket, head) VALUES (?, ?, ?) "
                                "IF NOT EXISTS", ("c1", 0, 0))
    assert created.applied
    return cql


def _flush(head: int, bodies: list[str]) -> list[tuple[str, tuple]]:
    """One writer's flush: move the head from `head` past `bodies`, if nobody else moved it."""
    new_head = head + len(bodies)
    return [("UPDATE messages SET head = ? WHERE chat = ? AND bucket = ? IF head = ?",
             (new_head, "c1", 0, head)),
            *(("INSERT INTO messages (chat, bucket, seq, body) VALUES (?, ?, ?, ?)",
               ("c1", 0, head + 1 + i, body)) for i, body in enumerate(bodies))]


async def _stored(cql) -> list[tuple[int, str]]:
    rows = (await cql.execute("SELECT seq, body FROM messages WHERE chat = ? AND bucket = ?",
                              ("c1", 0))).rows
    return [(row.seq, row.body) for row in rows if row.seq is not None]


async def test_conditional_batch_applies_on_the_expected_head_only(messages):
    cql = messages
    result = await cql.batch(_flush(0, ["a", "b"]))
    assert result.applied
    stale = await cql.batch(_flush(0, ["stale"]))  # a writer that still believes head = 0
    assert not stale.applied
    assert stale.rows[0].head == 2  # what it must re-read from
    assert await _stored(cql) == [(1, "a"), (2, "b")]  # nothing of the losing batch
    assert (await cql.batch(_flush(2, ["c"]))).applied
    assert await _stored(cql) == [(1, "a"), (2, "b"), (3, "c")]


async def test_two_racing_writers_on_one_chat_one_wins(messages):
    cql = messages
    outcomes = await asyncio.gather(*(cql.batch(_flush(0, [f"{writer}-1", f"{writer}-2"]))
                                      for writer in ("x", "y")))
    assert sorted(outcome.applied for outcome in outcomes) == [False, True]
    winner = "x" if outcomes[0].applied else "y"
    assert await _stored(cql) == [(1, f"{winner}-1"), (2, f"{winner}-2")]
