"""The push planner (switchboard/push/planner.py) on a clock the test moves: when an entry is
due, coalescing, backoff, what settles an entry."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core.model import QueuedPush
from switchboard.push.planner import Planner

GRACE, INTERVAL, MAX_BACKOFF = 2_000, 10_000, 60_000


def planner() -> Planner:
    return Planner(grace_ms=GRACE, interval_ms=INTERVAL, max_backoff_ms=MAX_BACKOFF,
                   max_pending=1000)


def add(p: Planner, seq: int, now: int, *, device: str = "phone", chat: str = "c",
        offline: bool = True) -> bool:
    return p.add("bob", device, chat, first_seq=seq, last_seq=seq, count=1, sender="alice",
                 preview="", offline=offline, now_ms=now, planned_at=0.0)


def test_offline_is_due_at_once_and_maybe_online_after_the_grace():
    p = planner()
    add(p, 1, 1_000, device="phone", offline=True)
    add(p, 1, 1_000, device="tablet", offline=False)
    assert [e.push.device_id for e in p.take_due(1_000, 10)] == ["phone"]
    assert p.take_due(2_999, 10) == []
    assert [e.push.device_id for e in p.take_due(3_000, 10)] == ["tablet"]


def test_messages_during_an_interval_go_as_one_push_with_their_count():
    p = planner()
    add(p, 1, 0)
    first = p.take_due(0, 10)
    p.sent(first[0], 0)
    for seq in range(2, 101):
        add(p, seq, seq * 10)  # 99 more within the first second
    assert p.take_due(INTERVAL - 1, 10) == []
    [second] = p.take_due(INTERVAL, 10)
    assert (second.push.first_seq, second.push.last_seq, second.push.count) == (2, 100, 99)


def test_an_entry_in_flight_counts_as_sent_for_the_interval():
    p = planner()
    add(p, 1, 0)
    [flying] = p.take_due(0, 10)
    add(p, 2, 5)  # arrives while the first push is still being sent
    assert p.take_due(5, 10) == []
    p.not_sent(flying)  # it turned out to be acked: no push went out
    add(p, 3, 6)
    assert [e.push.last_seq for e in p.take_due(6, 10)] == [3]


def test_a_failed_push_backs_off_doubling_up_to_the_cap_and_honours_retry_after():
    p = planner()
    add(p, 1, 0)
    now = 0
    waits = []
    for _ in range(10):
        [entry] = p.take_due(now, 10)
        push = p.retry(entry, now, 0)
        waits.append(push.due_ms - now)
        now = push.due_ms
    assert all(500 * 2 ** i <= w <= 1000 * 2 ** i for i, w in enumerate(waits[:5]))
    assert all(MAX_BACKOFF // 2 <= w <= MAX_BACKOFF for w in waits[7:])
    [entry] = p.take_due(now, 10)
    assert p.retry(entry, now, 600_000).due_ms == now + 600_000  # Retry-After: 600 s


def test_a_retry_merges_with_messages_that_came_meanwhile():
    p = planner()
    add(p, 1, 0)
    [entry] = p.take_due(0, 10)
    add(p, 2, 1)
    merged = p.retry(entry, 2, 0)
    assert (merged.first_seq, merged.last_seq, merged.count) == (1, 2, 2)
    assert len(p) == 1


def test_reading_settles_what_the_read_covers():
    p = planner()
    add(p, 3, 0, chat="c1")
    add(p, 5, 0, chat="c1", device="tablet")
    add(p, 4, 0, chat="c2")
    gone = p.resolved("bob", "c1", 4)
    assert [(g.device_id, g.chat_id) for g in gone] == [("phone", "c1")]
    assert len(p) == 2


def test_restored_entries_and_chats_that_moved():
    p = planner()
    p.restore(QueuedPush("bob", "phone", "c1", 1, 3, 3, "alice", "", 500))
    p.restore(QueuedPush("bob", "phone", "c2", 1, 1, 1, "alice", "", 500))
    add(p, 4, 0, chat="c1")  # a new message of c1 joins the restored entry
    assert p.keep_only(lambda chat: chat == "c1") == 1
    [entry] = p.take_due(500, 10)
    assert (entry.push.first_seq, entry.push.last_seq, entry.push.count) == (1, 4, 4)


def test_a_full_planner_counts_what_it_drops():
    p = Planner(grace_ms=0, interval_ms=1, max_backoff_ms=1, max_pending=2)
    assert [add(p, 1, 0, chat=f"c{i}") for i in range(3)] == [True, True, False]
    assert p.overflow == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3_000), st.booleans()), min_size=1, max_size=200))
def test_at_most_one_push_per_interval_and_every_message_counted(arrivals):
    """Messages at arbitrary times: every one is in exactly one push, and two pushes of the
    same (device, chat) are at least an interval apart."""
    p = planner()
    sends: list[tuple[int, int]] = []  # (time, count)
    seq = 0
    events = sorted((at * 10, offline) for at, offline in arrivals)
    now = 0
    for at, offline in events + [(10**9, True)]:
        while (due := p.next_due_ms()) is not None and due <= at:
            now = max(now, due)
            for entry in p.take_due(now, 100):
                p.sent(entry, now)
                sends.append((now, entry.push.count))
        if at == 10**9:
            break
        now = max(now, at)
        seq += 1
        add(p, seq, now, offline=offline)
    assert sum(count for _, count in sends) == seq
    times = [t for t, _ in sends]
    assert all(b - a >= INTERVAL for a, b in zip(times, times[1:]))
