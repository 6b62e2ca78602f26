"""The coalescing writer against the in-memory store (it passes the same contract suite as the
durable ones), with faults injected by FaultyStore."""
from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from switchboard.core.backlog import read_backlog
from switchboard.core.futures import into
from switchboard.core.model import Chat, ChatKind, CommitResult, NewMessage, Receipt, Role
from switchboard.core.store import StoreError
from switchboard.core.store_memory import MemoryStore
from switchboard.core.writer import Backpressure, CoalescingWriter
from tests.support.faulty_store import FaultyStore
from tests.support.waiting import wait_for

_server_ids = itertools.count(1)


def msg(chat: str, client_msg_id: str, body: bytes = b"hi", user: str = "alice") -> NewMessage:
    return NewMessage(chat, user, "phone", client_msg_id, body, (), next(_server_ids), 1)


def ack_delivery(writer: CoalescingWriter, user: str, device: str, chat: str, seq: int) -> None:
    """One device's ack, as a loop turn's batch of one (core/acks.py)."""
    writer.ack_deliveries({(user, device, chat): seq}, {chat: {user: seq}})


def submit(writer: CoalescingWriter, message: NewMessage) -> asyncio.Future[CommitResult]:
    """writer.submit with the message's outcome as a future."""
    future = asyncio.get_running_loop().create_future()
    writer.submit(message, into(future))
    return future


async def settled(futures, timeout: float = 5.0) -> list:
    """Results (or exceptions) of the futures, in order."""
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout)


def other_tasks() -> set[asyncio.Task]:
    return asyncio.all_tasks() - {asyncio.current_task()}


@pytest.fixture
async def memory():
    store = MemoryStore()
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def faulty(memory) -> FaultyStore:
    return FaultyStore(memory)


@pytest.fixture
async def make_writer():
    """Writers made here are closed at teardown, after their store's gate is opened."""
    made: list[tuple[CoalescingWriter, FaultyStore | None]] = []

    def make(store, **options) -> CoalescingWriter:
        writer = CoalescingWriter(store, **options)
        made.append((writer, store if isinstance(store, FaultyStore) else None))
        return writer

    yield make
    for writer, faulty_store in made:
        if faulty_store is not None:
            faulty_store.release()
        await writer.close()


async def hold_first_flush(faulty: FaultyStore, writer: CoalescingWriter) -> asyncio.Future:
    """Put one message in a commit that stays in flight until faulty.release()."""
    faulty.hold()
    first = submit(writer, msg("warmup", "first"))
    await wait_for(lambda: faulty.held == 1, message="the first flush to reach the store")
    return first


# ---------------------------------------------------------------------------- batching
async def test_a_lone_message_is_committed_at_once_and_the_writer_goes_idle(memory, make_writer):
    writer = make_writer(memory)
    assert not other_tasks()
    result = await asyncio.wait_for(submit(writer, msg("a", "1")), 5)
    assert (result.message.seq, result.duplicate) == (1, False)
    assert (writer.batches, writer.rows, writer.last_batch_rows) == (1, 1, 1)
    assert writer.flush_seconds_total > 0
    await wait_for(lambda: not other_tasks(), message="the flush task to finish")


async def test_rows_queued_during_a_flush_go_in_one_next_batch(faulty, make_writer):
    writer = make_writer(faulty)
    first = await hold_first_flush(faulty, writer)
    futures = [submit(writer, msg("a", str(i))) for i in range(50)]
    faulty.release()
    results = await settled([first, *futures])
    assert [r.message.seq for r in results[1:]] == list(range(1, 51))
    assert [len(b.messages) for b in faulty.batches] == [1, 50]
    assert (writer.batches, writer.rows, writer.last_batch_rows) == (2, 51, 50)


async def test_messages_within_the_commit_floor_share_the_next_commit(faulty, make_writer):
    """At light load a message that comes right after a commit waits for the floor, and those
    that come meanwhile go with it (the floor here is long: nothing but the close ends it)."""
    writer = make_writer(faulty, commit_floor=60.0)
    await asyncio.wait_for(submit(writer, msg("a", "0")), 5)  # the first goes at once
    later = submit(writer, msg("a", "1"))
    await asyncio.sleep(0)
    assert not later.done() and len(faulty.batches) == 1
    also = submit(writer, msg("b", "2"))
    await writer.close()  # a drain does not wait for the floor
    results = await settled([later, also])
    assert [r.message.seq for r in results] == [2, 1]
    assert [len(b.messages) for b in faulty.batches] == [1, 2]


async def test_a_full_batch_does_not_wait_for_the_commit_floor(faulty, make_writer):
    writer = make_writer(faulty, commit_floor=60.0, max_rows=3)
    await asyncio.wait_for(submit(writer, msg("a", "0")), 5)
    futures = [submit(writer, msg("a", str(i))) for i in range(1, 4)]
    results = await settled(futures)
    assert [r.message.seq for r in results] == [2, 3, 4]
    assert [len(b.messages) for b in faulty.batches] == [1, 3]


async def test_max_rows_splits_the_backlog(faulty, make_writer):
    writer = make_writer(faulty, max_rows=10)
    first = await hold_first_flush(faulty, writer)
    futures = [submit(writer, msg("a", str(i))) for i in range(25)]
    faulty.release()
    results = await settled([first, *futures])
    assert [len(b.messages) for b in faulty.batches] == [1, 10, 10, 5]
    assert [r.message.seq for r in results[1:]] == list(range(1, 26))


async def test_max_bytes_splits_the_backlog_and_an_oversized_body_goes_alone(faulty, make_writer):
    writer = make_writer(faulty, max_bytes=100)
    first = await hold_first_flush(faulty, writer)
    bodies = [b"x" * 40] * 3 + [b"y" * 500] + [b"z" * 60] * 2
    futures = [submit(writer, msg("a", str(i), body)) for i, body in enumerate(bodies)]
    faulty.release()
    await settled([first, *futures])
    assert [[len(m.body) for m in b.messages] for b in faulty.batches[1:]] == [
        [40, 40], [40], [500], [60], [60]]


async def test_heavy_load_batches_and_keeps_per_chat_order(memory, make_writer):
    writer = make_writer(memory, max_rows=256)
    sent = [msg(f"c{i % 7}", str(i)) for i in range(3000)]
    futures = [submit(writer, m) for m in sent]
    results = await settled(futures, timeout=30)
    assert writer.batches < 100 and writer.rows == 3000
    per_chat: dict[str, list[int]] = {}
    for m, result in zip(sent, results):
        assert result.message.client_msg_id == m.client_msg_id
        per_chat.setdefault(m.chat_id, []).append(result.message.seq)
    assert all(got == list(range(1, len(got) + 1)) for got in per_chat.values())


# ---------------------------------------------------------------------------- failures
async def test_a_failed_batch_fails_all_its_futures_and_a_retry_succeeds(faulty, make_writer):
    writer = make_writer(faulty)
    faulty.fail_next_commits(1)
    sent = [msg("a", str(i)) for i in range(5)]
    outcomes = await settled([submit(writer, m) for m in sent])
    assert all(isinstance(o, StoreError) for o in outcomes)
    assert (writer.failures, writer.batches) == (1, 0)
    assert await faulty.head_seq("a") == 0
    retried = await settled([submit(writer, msg("a", m.client_msg_id)) for m in sent])
    assert [(r.message.seq, r.duplicate) for r in retried] == [(i, False) for i in range(1, 6)]


async def test_retry_after_applied_but_raised_creates_no_duplicate(faulty, make_writer):
    writer = make_writer(faulty)
    faulty.apply_then_raise(1)
    sent = [msg("a", str(i)) for i in range(3)]
    outcomes = await settled([submit(writer, m) for m in sent])
    assert all(isinstance(o, StoreError) for o in outcomes)
    assert await faulty.head_seq("a") == 3
    retried = await settled([submit(writer, msg("a", m.client_msg_id, b"retry")) for m in sent])
    assert [(r.message.seq, r.duplicate) for r in retried] == [(1, True), (2, True), (3, True)]
    assert [r.message.server_id for r in retried] == [m.server_id for m in sent]
    assert [r.message.body for r in retried] == [b"hi"] * 3
    assert await faulty.head_seq("a") == 3


async def test_rows_queued_behind_a_failed_batch_still_go_out(faulty, make_writer):
    writer = make_writer(faulty)
    faulty.fail_next_commits(1)
    first = await hold_first_flush(faulty, writer)
    later = [submit(writer, msg("a", str(i))) for i in range(4)]
    faulty.release()
    outcomes = await settled([first, *later])
    assert isinstance(outcomes[0], StoreError)
    assert [r.message.seq for r in outcomes[1:]] == [1, 2, 3, 4]


async def test_a_cancelled_commit_fails_its_futures_and_the_writer_recovers(faulty, make_writer):
    writer = make_writer(faulty)
    faulty.fail_next_commits(1, asyncio.CancelledError())
    outcomes = await settled([submit(writer, msg("a", "1")), writer.mark_read("a", "bob", 1)])
    assert all(isinstance(o, StoreError) for o in outcomes)
    assert (await asyncio.wait_for(submit(writer, msg("a", "2")), 5)).message.seq == 1


async def test_a_failed_chat_fails_only_its_own_messages(faulty, make_writer):
    fanned_out: list[CommitResult] = []
    writer = make_writer(faulty, on_commit=fanned_out.extend)
    faulty.fail_chats(1, "b")
    sent = [msg("a", "1"), msg("b", "1"), msg("a", "2"), msg("b", "2"), msg("c", "1")]
    outcomes = await settled([submit(writer, m) for m in sent])
    assert len(faulty.batches) == 1
    assert [type(o) for o in outcomes] == [CommitResult, StoreError, CommitResult, StoreError,
                                           CommitResult]
    landed = [("a", 1), ("a", 2), ("c", 1)]
    assert [(o.message.chat_id, o.message.seq) for o in outcomes[::2]] == landed
    assert [(r.message.chat_id, r.message.seq) for r in fanned_out] == landed
    assert (writer.failures, writer.failed_chats, writer.batches, writer.rows) == (1, 1, 1, 3)
    assert await faulty.head_seq("b") == 0
    retried = await settled([submit(writer, msg("b", "1")), submit(writer, msg("b", "2"))])
    assert [(r.message.seq, r.duplicate) for r in retried] == [(1, False), (2, False)]


async def test_watermarks_of_a_failed_chat_are_merged_back_and_its_read_marks_fail(faulty,
                                                                                 make_writer):
    writer = make_writer(faulty)
    faulty.fail_chats(1, "b")
    writer.ack_cursor("bob", "phone", "a", 3)
    ack_delivery(writer, "bob", "phone", "b", 5)
    outcomes = await settled([writer.mark_read("a", "bob", 2), writer.mark_read("b", "bob", 6),
                              submit(writer, msg("b", "1"))])
    assert outcomes[0] is None and isinstance(outcomes[1], StoreError)
    assert isinstance(outcomes[2], StoreError)
    assert await faulty.cursors("bob", "phone") == {"a": 3}
    assert await faulty.read_seq("a", "bob") == 2
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(faulty.batches) == 1, "a failure alone must not trigger another commit"
    writer.ack_cursor("bob", "phone", "a", 1)  # the next flush takes the merged-back ones along
    await wait_for(lambda: len(faulty.batches) == 2 and not other_tasks())
    assert faulty.batches[1].cursors == {("bob", "phone", "a"): 1, ("bob", "phone", "b"): 5}
    assert (faulty.batches[1].delivered, faulty.batches[1].reads) == ({("b", "bob"): 5},
                                                                      {("b", "bob"): 6})
    assert await faulty.cursors("bob", "phone") == {"a": 3, "b": 5}
    assert await faulty.receipts("b") == {"bob": Receipt(6, 6)}


async def test_public_read_marks_go_apart_fail_with_their_chat_and_are_merged_back(faulty,
                                                                                 make_writer):
    writer = make_writer(faulty)
    faulty.fail_chats(1, "b")
    outcomes = await settled([writer.mark_read("a", "bob", 4, public=True),
                              writer.mark_read("a", "bob", 6),
                              writer.mark_read("b", "bob", 3, public=True),
                              submit(writer, msg("b", "1"))])  # the fault needs a message of b
    assert outcomes[:2] == [None, None] and isinstance(outcomes[2], StoreError)
    assert isinstance(outcomes[3], StoreError)
    assert (faulty.batches[0].public_reads, faulty.batches[0].reads) == (
        {("a", "bob"): 4, ("b", "bob"): 3}, {("a", "bob"): 6})
    assert await faulty.receipts("a") == {"bob": Receipt(6, 6, 4)}  # public <= private
    writer.ack_cursor("bob", "phone", "a", 1)
    await wait_for(lambda: len(faulty.batches) == 2 and not other_tasks())
    assert faulty.batches[1].public_reads == {("b", "bob"): 3}
    assert await faulty.receipts("b") == {"bob": Receipt(3, 3, 3)}


# ---------------------------------------------------------------------------- backpressure
async def test_backpressure_counts_queued_and_in_flight_rows(faulty, make_writer):
    writer = make_writer(faulty, max_pending=5, max_rows=5)
    first = await hold_first_flush(faulty, writer)
    queued = [submit(writer, msg("a", str(i))) for i in range(4)]
    with pytest.raises(Backpressure) as refused:
        submit(writer, msg("a", "over"))
    assert refused.value.retry_after_ms > 0
    faulty.release()
    await settled([first, *queued])
    assert (await asyncio.wait_for(submit(writer, msg("a", "over")), 5)).message.seq == 5


# ---------------------------------------------------------------------------- cursors, reads
async def test_ack_cursor_coalesces_to_the_max_and_is_durable(faulty, make_writer):
    await faulty.create_chat(Chat("g", ChatKind.GROUP, "", 1), {"bob": Role.MEMBER})
    writer = make_writer(faulty)
    first = await hold_first_flush(faulty, writer)
    sent = [submit(writer, msg("g", str(i))) for i in range(9)]
    for seq in (3, 8, 5):
        writer.ack_cursor("bob", "phone", "g", seq)
    faulty.release()
    await settled([first, *sent])
    assert faulty.batches[1].cursors == {("bob", "phone", "g"): 8}
    assert [(b.cursor, b.head) for b in await read_backlog(faulty, "bob", "phone")] == [(8, 9)]


async def test_ack_cursor_alone_schedules_a_flush(memory, make_writer):
    await memory.create_chat(Chat("g", ChatKind.GROUP, "", 1), {"bob": Role.MEMBER})
    writer = make_writer(memory)
    await settled([submit(writer, msg("g", str(i))) for i in range(3)])
    writer.ack_cursor("bob", "phone", "g", 2)

    async def cursor_is_2() -> bool:
        return [b.cursor for b in await read_backlog(memory, "bob", "phone")] == [2]
    await wait_for(cursor_is_2)
    await wait_for(lambda: not other_tasks(), message="the flush task to finish")


async def test_acks_alone_wait_for_company_and_a_message_takes_them_along(faulty, make_writer):
    """With ack_delay, acks do not commit on their own at once: the next message commits at
    once and takes them along; acks with nothing to go with commit when the delay is up."""
    await faulty.create_chat(Chat("g", ChatKind.GROUP, "", 1), {"bob": Role.MEMBER})
    writer = make_writer(faulty, ack_delay=60)  # beyond the test: only a message takes them
    await settled([submit(writer, msg("g", str(i))) for i in range(3)])
    commits = len(faulty.batches)
    ack_delivery(writer, "bob", "phone", "g", 1)
    await settled([submit(writer, msg("g", "3"))])
    assert len(faulty.batches) == commits + 1  # no commit of the acks alone came first
    along = faulty.batches[-1]
    assert (len(along.messages), along.cursors, along.delivered) == (
        1, {("bob", "phone", "g"): 1}, {("g", "bob"): 1})
    assert [b.cursor for b in await read_backlog(faulty, "bob", "phone")] == [1]

    alone = make_writer(faulty, ack_delay=0.2)
    started = asyncio.get_running_loop().time()
    alone.ack_cursor("bob", "phone", "g", 4)

    async def cursor_is_4() -> bool:
        return not await read_backlog(faulty, "bob", "phone")
    await wait_for(cursor_is_4)
    assert asyncio.get_running_loop().time() - started >= 0.19  # alone: after the delay
    assert (faulty.batches[-1].messages, faulty.batches[-1].cursors) == (
        [], {("bob", "phone", "g"): 4})


async def test_a_message_takes_at_most_max_acks_along_and_the_rest_follow_at_once(faulty,
                                                                                  make_writer):
    """A large group's acks do not all ride with the next message: it commits with max_acks of
    each kind, and the others go in one commit of acks after it."""
    users = [f"u{i}" for i in range(11)]
    await faulty.create_chat(Chat("g", ChatKind.GROUP, "", 1), dict.fromkeys(users, Role.MEMBER))
    writer = make_writer(faulty, ack_delay=60, max_acks=2)
    await settled([submit(writer, msg("g", "0"))])
    commits = len(faulty.batches)
    for user in users:
        ack_delivery(writer, user, "phone", "g", 1)
    await settled([submit(writer, msg("g", "1"))])
    along = faulty.batches[commits]
    assert (len(along.messages), len(along.cursors), len(along.delivered)) == (1, 2, 2)

    await wait_for(lambda: len(faulty.batches) == commits + 2, message="the other acks' commit")
    for user in users:
        assert [(b.cursor, b.head) for b in await read_backlog(faulty, user, "phone")] == [(1, 2)]
    rest = faulty.batches[commits + 1:]
    assert [(len(b.messages), len(b.cursors), len(b.delivered)) for b in rest] == [(0, 9, 9)]
    assert {key for b in faulty.batches[commits:] for key in b.cursors} == {
        (user, "phone", "g") for user in users}
    assert {key for b in faulty.batches[commits:] for key in b.delivered} == {
        ("g", user) for user in users}


async def test_ack_deliveries_coalesce_to_the_max_and_is_durable(faulty, make_writer):
    writer = make_writer(faulty)
    first = await hold_first_flush(faulty, writer)
    for seq in (3, 8, 5):
        ack_delivery(writer, "bob", "phone", "g", seq)
    ack_delivery(writer, "carol", "tablet", "g", 2)
    faulty.release()
    await settled([first])
    await wait_for(lambda: len(faulty.batches) == 2 and not other_tasks())
    assert faulty.batches[1].delivered == {("g", "bob"): 8, ("g", "carol"): 2}
    assert faulty.batches[1].cursors == {("bob", "phone", "g"): 8, ("carol", "tablet", "g"): 2}
    assert await faulty.receipts("g") == {"bob": Receipt(8, 0), "carol": Receipt(2, 0)}


async def test_a_turns_delivered_acks_per_chat_merge_into_the_pending_and_are_copied(
        faulty, make_writer):
    """A loop turn hands the delivered watermarks per chat, the dicts the receipts keep and
    later raise: the writer merges them into its own (the higher seq per (chat, user)), so a
    later change to the receipts' dicts does not reach the store."""
    writer = make_writer(faulty)
    first = await hold_first_flush(faulty, writer)
    ack_delivery(writer, "bob", "phone", "g", 6)
    turn = {"g": {"bob": 4, "carol": 3}, "h": {"bob": 1}}
    writer.ack_deliveries({}, turn)
    turn["g"]["carol"] = 9  # the receipts merge a later turn into the dict they keep
    faulty.release()
    await settled([first])
    await wait_for(lambda: len(faulty.batches) == 2 and not other_tasks())
    assert faulty.batches[1].delivered == {("g", "bob"): 6, ("g", "carol"): 3, ("h", "bob"): 1}


async def test_ack_deliveries_alone_schedule_a_flush(memory, make_writer):
    writer = make_writer(memory)
    ack_delivery(writer, "bob", "phone", "g", 2)

    async def delivered_is_2() -> bool:
        return (await memory.receipts("g")).get("bob") == Receipt(2, 0)
    await wait_for(delivered_is_2)
    await wait_for(lambda: not other_tasks(), message="the flush task to finish")


async def test_mark_read_coalesces_and_resolves_when_durable(faulty, make_writer):
    writer = make_writer(faulty)
    first = await hold_first_flush(faulty, writer)
    marks = [writer.mark_read("g", "bob", seq) for seq in (2, 7, 5)]
    await asyncio.sleep(0)
    assert not any(m.done() for m in marks)
    faulty.release()
    assert await settled([first, *marks]) == [await first, None, None, None]
    assert faulty.batches[1].reads == {("g", "bob"): 7}
    assert await faulty.read_seq("g", "bob") == 7


async def test_updates_of_a_failed_batch_are_merged_back_without_a_retry_loop(faulty, make_writer):
    await faulty.create_chat(Chat("g", ChatKind.GROUP, "", 1), {"bob": Role.MEMBER})
    writer = make_writer(faulty)
    await settled([submit(writer, msg("g", str(i))) for i in range(9)])
    faulty.fail_next_commits(1)
    ack_delivery(writer, "bob", "phone", "g", 5)
    outcome = await settled([writer.mark_read("g", "bob", 6)])
    assert isinstance(outcome[0], StoreError)
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(faulty.batches) == 2, "a failure alone must not trigger another commit"
    ack_delivery(writer, "bob", "phone", "g", 3)
    await wait_for(lambda: len(faulty.batches) == 3 and not other_tasks())
    assert faulty.batches[2].cursors == {("bob", "phone", "g"): 5}
    assert faulty.batches[2].delivered == {("g", "bob"): 5}
    assert faulty.batches[2].reads == {("g", "bob"): 6}
    assert await faulty.read_seq("g", "bob") == 6
    assert [b.cursor for b in await read_backlog(faulty, "bob", "phone")] == [5]


# ---------------------------------------------------------------------------- on_commit
async def test_completions_are_called_in_submission_order_then_on_commit(memory, make_writer):
    """The completions are called first, in the order of submission, so the SendAcks they
    write are queued before anything the fan-out queues."""
    calls: list[tuple] = []

    def on_commit(results: list[CommitResult]) -> None:
        calls.append(("on_commit", [(r.message.chat_id, r.message.seq, r.duplicate)
                                    for r in results]))

    def done(name: str):
        return lambda result, error: calls.append((name, result.message.seq, error))

    writer = make_writer(memory, on_commit=on_commit)
    for name, m in (("a1", msg("a", "1")), ("b1", msg("b", "1")), ("a2", msg("a", "2")),
                    ("a1 again", msg("a", "1"))):
        writer.submit(m, done(name))
    await wait_for(lambda: len(calls) == 5, message="the batch settled")
    assert calls == [("a1", 1, None), ("b1", 1, None), ("a2", 2, None), ("a1 again", 1, None),
                     ("on_commit", [("a", 1, False), ("b", 1, False), ("a", 2, False),
                                    ("a", 1, True)])]


async def test_a_failing_completion_is_logged_and_the_others_still_run(memory, make_writer,
                                                                       caplog):
    def broken(result, error) -> None:
        raise RuntimeError("answer blew up")

    committed: list[CommitResult] = []
    writer = make_writer(memory, on_commit=committed.extend)
    with caplog.at_level(logging.ERROR, logger="switchboard.core.writer"):
        writer.submit(msg("a", "1"), broken)
        result = await asyncio.wait_for(submit(writer, msg("a", "2")), 5)
    assert result.message.seq == 2
    assert [r.message.seq for r in committed] == [1, 2]
    assert "completion of a message of a failed" in caplog.text


async def test_a_failing_on_commit_is_logged_and_does_not_touch_the_futures(memory, make_writer,
                                                                            caplog):
    def on_commit(results: list[CommitResult]) -> None:
        raise RuntimeError("fan-out blew up")

    writer = make_writer(memory, on_commit=on_commit)
    with caplog.at_level(logging.ERROR, logger="switchboard.core.writer"):
        results = await settled([submit(writer, msg("a", "1")), submit(writer, msg("a", "2"))])
    assert [r.message.seq for r in results] == [1, 2]
    assert "on_commit failed" in caplog.text
    assert (await asyncio.wait_for(submit(writer, msg("a", "3")), 5)).message.seq == 3


# ---------------------------------------------------------------------------- close, cancel
async def test_close_flushes_everything_then_refuses_work(faulty, make_writer):
    await faulty.create_chat(Chat("g", ChatKind.GROUP, "", 1), {"bob": Role.MEMBER})
    writer = make_writer(faulty, max_rows=8)
    first = await hold_first_flush(faulty, writer)
    sent = [submit(writer, msg("g", str(i))) for i in range(20)]
    ack_delivery(writer, "bob", "phone", "g", 20)
    read = writer.mark_read("g", "bob", 19)
    closing = asyncio.ensure_future(writer.close())
    await asyncio.sleep(0)
    assert not closing.done()
    faulty.release()
    await asyncio.wait_for(closing, 5)
    assert all(f.done() and not f.exception() for f in [first, *sent, read])
    assert await faulty.head_seq("g") == 20
    assert await faulty.read_seq("g", "bob") == 19
    assert (await faulty.receipts("g"))["bob"] == Receipt(20, 19)
    assert await read_backlog(faulty, "bob", "phone") == []
    with pytest.raises(RuntimeError):
        submit(writer, msg("g", "late"))
    with pytest.raises(RuntimeError):
        writer.mark_read("g", "bob", 20)
    writer.ack_cursor("bob", "phone", "g", 21)
    ack_delivery(writer, "bob", "phone", "g", 21)
    assert not other_tasks()


async def test_close_flushes_updates_merged_back_from_a_failed_batch(faulty, make_writer):
    writer = make_writer(faulty)
    faulty.fail_next_commits(1)
    ack_delivery(writer, "bob", "phone", "g", 4)
    await wait_for(lambda: writer.failures == 1 and not other_tasks())
    await asyncio.wait_for(writer.close(), 5)
    assert len(faulty.batches) == 2 and faulty.batches[1].delivered == {("g", "bob"): 4}
    assert (await faulty.receipts("g"))["bob"] == Receipt(4, 0)


async def test_close_of_an_idle_writer_returns_at_once(memory, make_writer):
    writer = make_writer(memory)
    await asyncio.wait_for(writer.close(), 1)
    assert writer.batches == 0 and not other_tasks()


async def test_senders_gone_are_harmless_and_their_messages_still_commit(faulty, make_writer):
    results: list[CommitResult] = []
    writer = make_writer(faulty, on_commit=results.extend)
    first = await hold_first_flush(faulty, writer)
    futures = [submit(writer, msg("a", str(i))) for i in range(3)]
    first.cancel()
    futures[1].cancel()
    faulty.release()
    outcomes = await settled([futures[0], futures[2]])
    assert [o.message.seq for o in outcomes] == [1, 3]
    assert [r.message.client_msg_id for r in results] == ["first", "0", "1", "2"]
    assert await faulty.head_seq("a") == 3
    assert (await asyncio.wait_for(submit(writer, msg("a", "3")), 5)).message.seq == 4
