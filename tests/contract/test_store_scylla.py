"""What the ScyllaDB store adds to the contract, against a real Cassandra node: the seq fenced by
conditional batches (two writers racing on one chat, membership events among their sends),
bucket boundaries, the window between a conditional batch and its index (dedup rows, an event's
effects), an owner paused while it applies an event, an unknown outcome after a frozen node,
max-upserts under concurrent writers, and the schema's migration and upgrade."""
from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from switchboard.core import store_scylla
from switchboard.core.cql import connect
from switchboard.core.model import (Batch, Chat, ChatKind, MemberAction, Membership, NewMessage,
                                    Period, Receipt, Role, StoredMessage)
from switchboard.core.store import StoreError
from switchboard.core.store_memory import MemoryStore
from switchboard.core.store_scylla import ScyllaStore, replication_map
from tests.contract.test_store_contract import assert_upgraded, commit, event, group, msg, seqs
from tests.support.waiting import wait_for

SINGLE = replication_map("SimpleStrategy", 1, {})


@pytest.fixture
async def make_store(cql_emptied_keyspace):
    """Stores on the test's keyspace (several = several gateways); closed at teardown."""
    opened: list[ScyllaStore] = []

    async def make(**settings) -> ScyllaStore:
        store = ScyllaStore(cql_emptied_keyspace.settings(keyspace=None, **settings),
                            keyspace=cql_emptied_keyspace.keyspace, replication=SINGLE)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def stored_log(store: ScyllaStore, chat: str) -> list[StoredMessage]:
    return await store.read_messages(chat, 0, 100_000)


def assert_gap_free_and_unique(log: list[StoredMessage], sent: set[tuple[str, str]]) -> None:
    """Seq 1..n with no hole, each (sender, client_msg_id) exactly once, nothing foreign."""
    assert seqs(log) == list(range(1, len(log) + 1))
    keys = [(m.sender_user, m.client_msg_id) for m in log]
    assert len(keys) == len(set(keys)) and set(keys) == sent


async def assert_membership_follows_the_log(store: ScyllaStore, chat: str,
                                            created: dict[str, Role], users: list[str]) -> None:
    """Every membership read of the chat and of `users` is what the memory store holds after
    the same creation and the stored log committed in seq order: the log's state, exactly."""
    model = MemoryStore()
    await model.open()
    await model.create_chat(Chat(chat, ChatKind.GROUP, "", 1), created)
    log = await stored_log(store, chat)
    await model.commit(Batch([NewMessage(m.chat_id, m.sender_user, m.sender_device,
                                         m.client_msg_id, m.body, m.media_ids, m.server_id,
                                         m.created_at_ms, event=m.event) for m in log]))
    assert await store.member_periods(chat) == await model.member_periods(chat)
    assert await store.members(chat) == await model.members(chat)
    assert await store.member_counts([chat]) == await model.member_counts([chat])
    for user in users:
        assert await store.user_periods(user) == await model.user_periods(user), user
        assert await store.user_chats(user) == await model.user_chats(user), user


# ---------------------------------------------------------------------------- the fence
async def test_a_stale_and_a_new_owner_racing_on_one_chat(make_store):
    """Two stores (a paused owner woken up, and its successor) commit to one chat at the same
    moment, round after round, each also retrying sends the other may have stored already.
    Membership events race the sends: each round one side adds or removes some users, and the
    other side retries that event the round after (a duplicate: it applies nothing again)."""
    stale, new = await make_store(), await make_store()
    created = {"stale": Role.ADMIN, "new": Role.MEMBER, "u0": Role.MEMBER}
    await group(stale, "race", created)
    pool = [f"u{i}" for i in range(6)]
    rng = random.Random(7)
    sent: set[tuple[str, str]] = set()
    previous: dict[str, NewMessage] = {}
    for round_ in range(40):
        batches = []
        for name in ("stale", "new"):
            other = "new" if name == "stale" else "stale"
            batch = [msg("race", f"{name}{round_}.{i}", user=name) for i in range(rng.randint(1, 4))]
            if round_:  # the other side's send of the round before, retried here
                batch.append(msg("race", f"{other}{round_ - 1}.0", user=other))
                if other in previous:
                    batch.append(previous.pop(other))
            if rng.random() < 0.6:  # an ADD or REMOVE racing the other side's sends
                change = event("race", rng.choice(list(MemberAction)),
                               *rng.sample(pool, rng.randint(1, 3)),
                               actor=rng.choice((name, "")))
                batch.insert(rng.randrange(len(batch) + 1), change)
                previous[name] = change
            batches.append(batch)
            sent.update((m.sender_user, m.client_msg_id) for m in batch)
        outcomes = await asyncio.gather(stale.commit(Batch(batches[0])), new.commit(Batch(batches[1])))
        for outcome in outcomes:
            assert outcome.failed == {} and None not in outcome.results
    log = await stored_log(new, "race")
    assert_gap_free_and_unique(log, sent)
    assert sum(m.event is not None for m in log) > 20
    await assert_membership_follows_the_log(stale, "race", created, pool + ["stale", "new"])
    by_key = {(m.sender_user, m.client_msg_id): m.seq for m in log}
    # every answer either store gave is the stored truth: a duplicate names the original's seq
    again = await asyncio.gather(*(s.commit(Batch([msg("race", key[1], user=key[0])]))
                                   for s, key in zip((stale, new) * len(by_key), by_key)))
    assert all(o.results[0].duplicate and o.results[0].message.seq == by_key[key]
               for o, key in zip(again, by_key))
    assert await new.head_seq("race") == len(log)
    assert stale.stats.conditional_lost + new.stats.conditional_lost > 0  # they did collide


async def test_bucket_boundaries_are_crossed_by_commits_reads_and_races(make_store, monkeypatch):
    monkeypatch.setattr(store_scylla, "BUCKET_SIZE", 10)
    one, two = await make_store(), await make_store()
    sent = set()
    for round_ in range(6):  # 7 + 3 messages a round: flushes that end on, before, after a bound
        a = [msg("b", f"one{round_}.{i}") for i in range(7)]
        b = [msg("b", f"two{round_}.{i}", user="bob") for i in range(3)]
        sent.update((m.sender_user, m.client_msg_id) for m in a + b)
        await asyncio.gather(commit(one, *a), commit(two, *b))
    log = await stored_log(one, "b")
    assert_gap_free_and_unique(log, sent)
    assert seqs(await one.read_messages("b", 8, 5)) == [9, 10, 11, 12, 13]
    assert seqs(await two.read_messages("b", 19, 100)) == list(range(20, 61))
    assert seqs(await one.read_history("b", 0, 0, 15)) == list(range(60, 45, -1))
    assert seqs(await one.read_history("b", 32, 18, 100)) == list(range(31, 18, -1))
    assert await one.senders_between("b", 9, 11) == {m.sender_user for m in log[9:11]}
    first = next(m for m in log if m.client_msg_id == "one0.0")  # in bucket 0
    assert (await commit(one, msg("b", "one0.0")))[0].message == first
    big = [msg("big", str(i), body=b"x" * 100_000) for i in range(25)]  # > one batch of bytes
    assert seqs([r.message for r in await commit(two, *big)]) == list(range(1, 26))
    assert [m.body for m in await stored_log(one, "big")] == [m.body for m in big]


# ---------------------------------------------------------------------------- unknown outcomes
async def test_a_batch_stored_without_its_dedup_rows_is_found_by_the_next_commit(make_store):
    """A store killed between its conditional batch and its dedup rows (or whose batch timed
    out after it applied): whichever store commits to the chat next indexes it first."""
    crashed, successor = await make_store(), await make_store()
    await commit(crashed, msg("w", "1"), msg("w", "2"))
    orphan = [StoredMessage("w", 3 + i, 900 + i, "alice", "phone", f"lost{i}", b"x", (), 1)
              for i in range(2)]
    assert await crashed._conditional_append("w", 2, orphan)  # the batch, and then nothing
    assert await successor.head_seq("w") == 2  # readers' hint: not written either
    results = await commit(successor, msg("w", "lost1"), msg("w", "new"), msg("w", "lost0"))
    assert [(r.message.seq, r.duplicate) for r in results] == [(4, True), (5, False), (3, True)]
    assert results[0].message == orphan[1]
    assert await successor.head_seq("w") == 5
    assert (await commit(crashed, msg("w", "lost0")))[0].duplicate  # its own cache learns too
    assert seqs(await stored_log(successor, "w")) == [1, 2, 3, 4, 5]


async def test_an_event_stored_without_its_effects_is_applied_by_the_next_commit(make_store):
    """A membership event's batch landed and nothing after it (the store died, or its answer
    was lost): the chat's members are unchanged until the next commit, which applies it before
    anything of its own; the retry of the event is a duplicate and applies nothing again."""
    crashed, successor = await make_store(), await make_store()
    created = {"alice": Role.ADMIN, "bob": Role.MEMBER}
    await group(crashed, "o", created)
    await commit(crashed, msg("o", "1"))
    removal, addition = (event("o", MemberAction.REMOVED, "bob"),
                         event("o", MemberAction.ADDED, "carol", "bob", actor=""))
    orphan = [StoredMessage("o", seq, m.server_id, m.sender_user, "", m.client_msg_id, b"", (),
                            m.created_at_ms, m.event) for seq, m in ((2, removal), (3, addition))]
    assert await crashed._conditional_append("o", 1, orphan)
    assert set(await successor.members("o")) == {"alice", "bob"}
    results = await commit(successor, msg("o", "2", user="carol"), removal)
    assert [(r.message.seq, r.duplicate) for r in results] == [(4, False), (2, True)]
    assert results[1].message == orphan[0]
    assert await successor.members("o") == {"alice": Membership(Role.ADMIN, 0),
                                            "bob": Membership(Role.MEMBER, 2),
                                            "carol": Membership(Role.MEMBER, 2)}
    assert await successor.member_periods("o", "bob") == {"bob": [Period(0, 2), Period(2)]}
    assert (await successor.receipts("o"))["carol"] == Receipt(4, 4, 0)
    assert "bob" not in await successor.receipts("o")  # the operator's event raised nothing
    await assert_membership_follows_the_log(crashed, "o", created, ["alice", "bob", "carol"])


@pytest.mark.parametrize("paused", ["_event_effects", "_write_grouped"],
                         ids=["before-reading-periods", "before-writing-effects"])
async def test_an_owner_paused_while_applying_an_event_undoes_nothing_later(make_store, paused):
    """The paused owner (F3) inside an event's commit: its batch landed, then it stops - before
    it reads the chat's periods, or with its writes decided but not sent. Meanwhile the next
    owner commits on top (applying the event too, then later ones that undo part of it). When
    the paused one wakes up its reads and writes land after all of that, and change nothing."""
    stale, new = await make_store(), await make_store()
    created = {"alice": Role.ADMIN, "bob": Role.MEMBER}
    await group(stale, "p", created)
    await commit(stale, msg("p", "1"))
    holding, wake = asyncio.Event(), asyncio.Event()
    step = getattr(stale, paused)

    async def paused_step(chat_or_groups, *args):
        if "p" in chat_or_groups and not wake.is_set():  # the event's chat, not the watermarks
            holding.set()
            await wake.wait()
        return await step(chat_or_groups, *args)
    setattr(stale, paused, paused_step)
    adding = asyncio.ensure_future(commit(stale, event("p", MemberAction.ADDED, "carol", "dave")))
    await asyncio.wait_for(holding.wait(), 30)
    results = await commit(new, event("p", MemberAction.REMOVED, "carol"), msg("p", "2", user="bob"),
                           event("p", MemberAction.ADDED, "erin", "carol"))
    assert seqs([r.message for r in results]) == [3, 4, 5]
    wake.set()
    [added] = await asyncio.wait_for(adding, 30)
    assert (added.message.seq, added.duplicate) == (2, False)
    assert await stale.members("p") == {"alice": Membership(Role.ADMIN, 0),
                                        "bob": Membership(Role.MEMBER, 0),
                                        "carol": Membership(Role.MEMBER, 4),
                                        "dave": Membership(Role.MEMBER, 1),
                                        "erin": Membership(Role.MEMBER, 4)}
    assert await stale.user_periods("carol") == {"p": [Period(1, 3), Period(4)]}
    assert await stale.member_counts(["p"]) == {"p": 5}
    assert await new.head_seq("p") == 5
    await assert_membership_follows_the_log(stale, "p", created,
                                            ["alice", "bob", "carol", "dave", "erin"])


async def test_a_frozen_node_fails_the_chat_and_the_retry_makes_one_copy(make_store,
                                                                         cassandra_node):
    store = await make_store(request_timeout=1.5)
    await commit(store, msg("f", "before"))
    sends = [msg("f", str(i)) for i in range(5)]
    cassandra_node.pause(0)
    try:
        outcome = await asyncio.wait_for(store.commit(Batch(sends[:3], reads={("f", "bob"): 1})), 30)
    finally:
        cassandra_node.resume(0)
    assert outcome.results == [None] * 3 and isinstance(outcome.failed["f"], StoreError)
    assert outcome.unsaved.reads == {("f", "bob"): 1}

    async def retried() -> list:
        again = await store.commit(Batch(sends))
        return again.results if not again.failed else None
    results = await wait_for(retried, timeout=60, interval=0.2,
                             message="the node to answer again")
    assert [r.message.client_msg_id for r in results] == [m.client_msg_id for m in sends]
    log = await stored_log(store, "f")
    assert_gap_free_and_unique(log, {("alice", "before")} | {("alice", m.client_msg_id)
                                                            for m in sends})


# ---------------------------------------------------------------------------- watermarks
async def test_watermarks_keep_the_max_under_concurrent_writers(make_store):
    """Max-upserts without Paxos: cells written USING TIMESTAMP = value, so whichever order
    concurrent writes land in, the highest stays."""
    stores = [await make_store() for _ in range(3)]
    rng = random.Random(11)
    values = list(range(1, 301))
    rng.shuffle(values)
    await asyncio.gather(*(
        stores[i % 3].commit(Batch([], cursors={("bob", "phone", "g"): v},
                                   delivered={("g", "bob"): v},
                                   reads={("g", "carol"): v // 2}))
        for i, v in enumerate(values)))
    assert await stores[0].cursors("bob", "phone") == {"g": 300}
    assert await stores[1].receipts("g") == {"bob": Receipt(300, 0), "carol": Receipt(150, 150)}
    await stores[2].commit(Batch([], reads={("g", "bob"): 7}, delivered={("g", "carol"): 3}))
    assert await stores[0].receipts("g") == {"bob": Receipt(300, 7), "carol": Receipt(150, 150)}


# ---------------------------------------------------------------------------- schema
async def test_schema_is_created_idempotently_and_required(cql_keyspace):
    settings = cql_keyspace.settings(keyspace=None)
    bare = ScyllaStore(settings, keyspace=cql_keyspace.keyspace, replication=SINGLE,
                       create_schema=False)
    with pytest.raises(StoreError, match="store migrate"):
        await bare.open()
    for _ in range(2):
        store = ScyllaStore(settings, keyspace=cql_keyspace.keyspace, replication=SINGLE)
        await store.open()
        await commit(store, msg("s", "1"))
        await store.close()
    await bare.open()
    try:
        assert seqs(await bare.read_messages("s", 0, 10)) == [1]
    finally:
        await bare.close()


def test_replication_maps():
    assert replication_map("SimpleStrategy", 1, {"dc1": 3}) == (
        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    assert replication_map("NetworkTopologyStrategy", 3, {}) == (
        "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}")
    assert replication_map("NetworkTopologyStrategy", 3, {"eu": 3, "us": 2}) == (
        "{'class': 'NetworkTopologyStrategy', 'eu': 3, 'us': 2}")


# ---------------------------------------------------------------------------- upgrade
OLD_SCHEMA = (Path(__file__).parent / "cql_schema_before_periods.cql").read_text()


async def old_keyspace(target) -> None:
    """A keyspace as the version before membership periods (and blocks, push and media) left
    it: a group whose member bob was re-added (joined_seq 5), receipts of bob and of carol
    (read receipts off), a cursor; the same data as the SQLite upgrade test's file, the
    watermarks and the head written `USING TIMESTAMP` their value as that version wrote them."""
    session = await connect(target.settings())
    ks = target.keyspace
    try:
        for statement in OLD_SCHEMA.split(";"):
            lines = [line for line in statement.splitlines() if not line.startswith("--")]
            if "".join(lines).strip():
                await session.execute("\n".join(lines).format(ks=ks), prepare=False)
        writes = [(f"INSERT INTO {ks}.chats (chat_id, kind, title, created_at_ms) "
                   "VALUES ('g', 2, 'old', 1)", ()),
                  (f"UPDATE {ks}.chat_heads USING TIMESTAMP 6 SET head = 6 WHERE chat_id = 'g'",
                   ()),
                  (f"UPDATE {ks}.messages SET head = 6 WHERE chat_id = 'g' AND bucket = 0", ()),
                  (f"INSERT INTO {ks}.users (user_id, read_receipts, last_seen_visibility) "
                   "VALUES ('carol', false, 1)", ()),
                  (f"UPDATE {ks}.device_cursors USING TIMESTAMP 4 SET acked_seq = 4 "
                   "WHERE user_id = 'bob' AND device_id = 'phone' AND chat_id = 'g'", ())]
        for user, role, joined in [("alice", 2, 0), ("bob", 1, 5), ("carol", 1, 0)]:
            writes += [(f"INSERT INTO {ks}.members (chat_id, user_id, role, joined_seq) "
                        "VALUES ('g', ?, ?, ?)", (user, role, joined)),
                       (f"INSERT INTO {ks}.user_chats (user_id, chat_id, joined_seq) "
                        "VALUES (?, 'g', ?)", (user, joined))]
        for seq in range(1, 7):
            writes += [(f"INSERT INTO {ks}.messages (chat_id, bucket, seq, server_id, sender_user, "
                        "sender_device, client_msg_id, body, created_at_ms) "
                        "VALUES ('g', 0, ?, ?, 'alice', 'phone', ?, ?, 1)",
                        (seq, 1000 + seq, f"m{seq}", f"old {seq}".encode())),
                       (f"INSERT INTO {ks}.dedup (chat_id, sender_user, client_msg_id, seq) "
                        "VALUES ('g', 'alice', ?, ?)", (f"m{seq}", seq))]
        for user, delivered, read in [("alice", 6, 6), ("bob", 6, 6), ("carol", 4, 4)]:
            writes.append((f"UPDATE {ks}.receipts USING TIMESTAMP ? SET delivered_seq = ?, "
                           "read_seq = ? WHERE chat_id = 'g' AND user_id = ?",
                           (read, delivered, read, user)))
        for cql, params in writes:
            await session.execute(cql, params)
    finally:
        await session.close()


def admin_store_migrate(target, data_dir: Path) -> dict:
    """`switchboard admin store migrate` against the target's keyspace, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_STORE_KIND="scylla", SWITCHBOARD_STORE_HOSTS=",".join(target.hosts),
               SWITCHBOARD_STORE_PORT=str(target.port),
               SWITCHBOARD_STORE_KEYSPACE=target.keyspace,
               SWITCHBOARD_STORE_REPLICATION_STRATEGY="SimpleStrategy",
               SWITCHBOARD_STORE_REPLICATION_FACTOR="1")
    done = subprocess.run([sys.executable, "-m", "switchboard", "admin", "--data-dir",
                           str(data_dir), "--json", "store", "migrate"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, (done.stdout, done.stderr)
    [line] = done.stdout.splitlines()
    return orjson.loads(line)


async def test_admin_store_migrate_upgrades_a_keyspace_of_the_previous_version(cql_keyspace,
                                                                              tmp_path):
    await old_keyspace(cql_keyspace)
    settings = cql_keyspace.settings(keyspace=None)

    def bare() -> ScyllaStore:
        return ScyllaStore(settings, keyspace=cql_keyspace.keyspace, replication=SINGLE,
                           create_schema=False)
    with pytest.raises(StoreError, match="store migrate"):
        await bare().open()
    answer = await asyncio.to_thread(admin_store_migrate, cql_keyspace, tmp_path)
    assert answer["schema"] == "up to date"
    one, two = bare(), bare()
    await one.open()
    await two.open()
    try:
        await assert_upgraded(one, two)
        receipts = await one.receipts("g")
    finally:
        await one.close()
        await two.close()
    # a second migrate finds nothing left to do and changes nothing
    await asyncio.to_thread(admin_store_migrate, cql_keyspace, tmp_path)
    again = bare()
    await again.open()
    try:
        assert await again.member_periods("g", "bob") == {"bob": [Period(5, 7), Period(7)]}
        assert await again.receipts("g") == receipts
    finally:
        await again.close()
