"""The SDK's dedup and per-chat ordering (switchboard/client/ordering.py), without sockets:
docs/protocol.md "Client dedup algorithm" rule by rule, plus a model check that any mix of
retransmits, reorders and gaps ends in each message exactly once, in order."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.client import ChatOrder
from switchboard.proto.v1 import client_pb2 as pb

ME, MY_DEVICE = "alice", "phone"


def msg(seq: int, chat: str = "c1", user: str = "bob", device: str = "phone") -> pb.Message:
    return pb.Message(chat_id=chat, seq=seq, sender_user_id=user, sender_device_id=device,
                      body=f"{chat}#{seq}".encode())


def order(**kwargs) -> ChatOrder:
    return ChatOrder(user_id=ME, device_id=MY_DEVICE, **kwargs)


def feed_all(o: ChatOrder, messages) -> list[tuple[str, int]]:
    return [(m.chat_id, m.seq) for message in messages for m in o.feed(message)]


def test_in_order_messages_are_yielded_and_acked_once_per_chat():
    o = order()
    assert feed_all(o, [msg(1), msg(2), msg(1, "c2"), msg(3)]) == [("c1", 1), ("c1", 2),
                                                                  ("c2", 1), ("c1", 3)]
    assert o.have == {"c1": 3, "c2": 1}
    assert sorted(o.take_acks()) == [("c1", 3), ("c2", 1)]  # cumulative, one per chat
    assert o.take_acks() == []


def test_duplicates_are_dropped_counted_and_acked_again():
    o = order()
    feed_all(o, [msg(1), msg(2)])
    o.take_acks()
    assert feed_all(o, [msg(1), msg(2)]) == []  # a retransmit: the server missed the ack
    assert o.duplicates == 2
    assert o.take_acks() == [("c1", 2)]


def test_first_message_of_a_chat_starts_the_watermark_anywhere():
    o = order()
    assert feed_all(o, [msg(41)]) == [("c1", 41)]  # earlier ones were acked by a previous run
    assert feed_all(o, [msg(40), msg(42)]) == [("c1", 42)]


def test_persisted_watermark_drops_what_the_app_already_has():
    o = order(have={"c1": 5})
    assert feed_all(o, [msg(4), msg(5), msg(6)]) == [("c1", 6)]
    assert o.duplicates == 2


def membership(seq: int, action: int, *users: str, chat: str = "c1") -> pb.Message:
    return pb.Message(chat_id=chat, seq=seq, sender_user_id="admin", membership=pb.MembershipEvent(
        action=action, actor_user_id="admin", user_ids=users))


def test_an_event_adding_me_starts_my_range_again():
    o = order(have={"c1": 6})  # removed at 6 (the last message of the old range)
    assert feed_all(o, [msg(9)]) == []  # held: a gap like any other
    assert o.needs_sync
    assert feed_all(o, [membership(14, pb.MembershipEvent.ADDED, "carol", ME), msg(15)]) == [
        ("c1", 14), ("c1", 15)]
    assert o.have == {"c1": 15} and o.buffered == 0 and not o.needs_sync
    assert o.take_acks() == [("c1", 15)]
    # an event adding someone else is no reason to jump
    assert feed_all(o, [membership(17, pb.MembershipEvent.ADDED, "dave")]) == []
    assert o.have == {"c1": 15}


def test_a_floor_raises_the_watermark_and_drains_what_it_unblocks():
    o = order(have={"c1": 2})
    assert feed_all(o, [msg(8), msg(9)]) == []  # a gap after 2 that no replay fills
    assert [(m.chat_id, m.seq) for m in o.floor("c1", 7)] == [("c1", 8), ("c1", 9)]
    assert o.have == {"c1": 9} and o.buffered == 0
    assert o.floor("c1", 5) == [] and o.have == {"c1": 9}  # never lowers it
    assert o.floor("c2", 30) == [] and o.have["c2"] == 30  # an unknown chat starts there
    assert feed_all(o, [msg(30, "c2"), msg(31, "c2")]) == [("c2", 31)]
    assert sorted(o.take_acks()) == [("c1", 9), ("c2", 31)]


def test_gap_is_buffered_until_filled_then_drained_in_order():
    o = order()
    feed_all(o, [msg(1)])
    assert feed_all(o, [msg(4), msg(3)]) == []
    assert o.needs_sync and o.buffered == 2 and o.have["c1"] == 1
    o.sync_started()
    assert not o.needs_sync
    assert feed_all(o, [msg(2)]) == [("c1", 2), ("c1", 3), ("c1", 4)]
    assert o.have["c1"] == 4 and o.buffered == 0 and not o.needs_sync


def test_a_resent_held_message_is_not_new_evidence_for_another_sync():
    o = order()
    feed_all(o, [msg(1), msg(3)])
    o.sync_started()
    feed_all(o, [msg(3)])  # the sync replayed it; 2 is still missing
    assert not o.needs_sync
    feed_all(o, [msg(4)])  # a new message behind the gap is
    assert o.needs_sync


def test_gaps_in_one_chat_do_not_hold_back_another():
    o = order()
    feed_all(o, [msg(1), msg(3)])
    assert feed_all(o, [msg(1, "c2"), msg(2, "c2")]) == [("c2", 1), ("c2", 2)]


def test_ack_never_covers_a_gap():
    o = order()
    feed_all(o, [msg(1), msg(2), msg(5)])
    assert o.take_acks() == [("c1", 2)]


def test_own_device_messages_advance_have_but_are_not_yielded():
    o = order()
    mine = msg(2, user=ME, device=MY_DEVICE)
    same_device_name_other_user = msg(3, user="bob", device=MY_DEVICE)
    my_other_device = msg(4, user=ME, device="laptop")
    assert feed_all(o, [msg(1), mine, same_device_name_other_user, my_other_device]) == [
        ("c1", 1), ("c1", 3), ("c1", 4)]
    assert o.have["c1"] == 4


def test_own_message_held_in_the_buffer_is_skipped_by_the_drain():
    o = order()
    feed_all(o, [msg(1), msg(3, user=ME, device=MY_DEVICE), msg(4)])
    assert feed_all(o, [msg(2)]) == [("c1", 2), ("c1", 4)]
    assert o.have["c1"] == 4


def test_send_ack_counts_our_seq_when_contiguous():
    o = order()
    feed_all(o, [msg(1)])
    assert o.on_send_ack("c1", 2) == []
    assert o.have["c1"] == 2
    assert feed_all(o, [msg(3)]) == [("c1", 3)]  # no gap: the server never echoes seq 2 to us
    assert o.take_acks() == [("c1", 3)]


def test_send_ack_arriving_after_the_next_delivery_unblocks_it():
    o = order()
    feed_all(o, [msg(1), msg(3)])  # 2 is ours; its SendAck is still on its way
    assert [(m.chat_id, m.seq) for m in o.on_send_ack("c1", 2)] == [("c1", 3)]
    assert o.have["c1"] == 3 and o.buffered == 0 and not o.needs_sync


def test_send_ack_ahead_of_have_waits_as_a_marker():
    o = order()
    feed_all(o, [msg(1)])
    assert o.on_send_ack("c1", 3) == []
    assert o.have["c1"] == 1 and not o.needs_sync  # our own seq is no reason to sync
    assert feed_all(o, [msg(2), msg(4)]) == [("c1", 2), ("c1", 4)]
    assert o.have["c1"] == 4


def test_repeated_or_old_send_ack_changes_nothing():
    o = order()
    feed_all(o, [msg(1), msg(2)])
    assert o.on_send_ack("c1", 2) == [] and o.on_send_ack("c1", 1) == []
    assert o.have["c1"] == 2 and o.buffered == 0


def test_send_ack_in_a_new_chat():
    o = order()
    assert o.on_send_ack("new", 1) == []  # the first message of the chat is ours
    assert o.have["new"] == 1
    assert feed_all(o, [msg(2, "new")]) == [("new", 2)]


def test_send_ack_in_an_unknown_chat_does_not_start_the_watermark():
    # Older messages of the chat may still be on their way (sync): they must not become
    # "duplicates" of a watermark started by our own send.
    o = order()
    assert o.on_send_ack("c1", 5) == []
    assert "c1" not in o.have
    assert feed_all(o, [msg(3), msg(4), msg(6)]) == [("c1", 3), ("c1", 4), ("c1", 6)]
    assert o.have["c1"] == 6 and o.buffered == 0


def test_first_delivery_above_a_marker_prunes_it():
    o = order()
    o.on_send_ack("c1", 5)
    assert feed_all(o, [msg(9)]) == [("c1", 9)]
    assert feed_all(o, [msg(10)]) == [("c1", 10)]  # nothing stale left to step over


def test_buffer_is_bounded_and_what_it_drops_comes_back():
    o = order(max_buffered=2)
    feed_all(o, [msg(1), msg(3), msg(4)])
    o.sync_started()
    assert feed_all(o, [msg(5)]) == []  # full: dropped, not acked, so the server resends it
    assert o.dropped == 1 and o.buffered == 2 and o.needs_sync
    assert feed_all(o, [msg(2)]) == [("c1", 2), ("c1", 3), ("c1", 4)]
    assert o.needs_sync  # still owed a sync for the dropped message
    assert o.take_acks() == [("c1", 4)]
    assert feed_all(o, [msg(5)]) == [("c1", 5)]


def test_own_send_markers_are_never_dropped():
    # The server does not send a connection its own sends: a lost marker could be a gap forever.
    o = order(max_buffered=1)
    feed_all(o, [msg(1), msg(5)])
    assert o.on_send_ack("c1", 3) == [] and o.on_send_ack("c1", 4) == []
    assert [m.seq for m in o.on_send_ack("c1", 2)] == [5]
    assert o.have["c1"] == 5 and o.dropped == 0


def test_buffer_bound_is_shared_by_all_chats():
    o = order(max_buffered=1)
    feed_all(o, [msg(1, "a"), msg(1, "b"), msg(3, "a"), msg(3, "b")])
    assert o.buffered == 1 and o.dropped == 1


def test_after_reconnect_the_first_replayed_duplicate_acks_all_that_is_held():
    # Persisted have=10 but the server's cursor is 3: one ack of 10 lets it skip 5..10.
    o = order(have={"c1": 10})
    o.ack("c2", 1)
    assert o.take_acks() == []  # nothing delivered on this connection yet: the server refuses
    feed_all(o, [msg(4)])
    assert o.take_acks() == [("c1", 10)]


def test_new_connection_forgets_per_connection_ack_state():
    o = order()
    feed_all(o, [msg(1), msg(2)])
    o.new_connection()
    assert o.take_acks() == []  # the old connection's acks are moot: the server replays
    feed_all(o, [msg(2)])
    assert o.take_acks() == [("c1", 2)]
    assert o.have == {"c1": 2}


def test_manual_ack_sends_only_what_the_app_acked():
    o = order(auto_ack=False)
    feed_all(o, [msg(1), msg(2), msg(3)])
    assert o.take_acks() == []
    o.ack("c1", 2)
    assert o.take_acks() == [("c1", 2)]
    o.ack("c1", 99)  # never beyond what is held
    assert o.take_acks() == [("c1", 3)]
    feed_all(o, [msg(3)])  # a replay re-acks what the app acked
    assert o.take_acks() == [("c1", 3)]


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**31), st.integers(min_value=1, max_value=40),
       st.sampled_from([2, 64]))
def test_any_resend_pattern_yields_each_message_once_in_order(seed, count, max_buffered):
    """Model of the server: each connection sends the chat in order from its cursor (the
    device's highest ack), never this device's own messages (their SendAcks arrive at random
    moments instead), sometimes rewinds to the cursor (retransmit), sometimes loses one (a gap),
    and then breaks off. Then syncs replay everything above the cursor until the device holds
    the whole chat. The app must see every other message exactly once, in order."""
    rng = random.Random(seed)
    o = order(max_buffered=max_buffered)
    mine = {s for s in range(1, count + 1) if rng.random() < 0.2}
    stream = {s: msg(s) for s in range(1, count + 1)}
    unacked_sends = sorted(mine)
    got: list[int] = []
    cursor = 0

    def take_acks() -> None:
        nonlocal cursor
        for _, seq in o.take_acks():
            cursor = max(cursor, seq)

    def maybe_send_ack(probability: float) -> None:
        if unacked_sends and rng.random() < probability:
            seq = unacked_sends.pop(rng.randrange(len(unacked_sends)))
            got.extend(m.seq for m in o.on_send_ack("c1", seq))

    for _ in range(rng.randint(0, 5)):
        o.new_connection()
        seq = cursor + 1
        while seq <= count and rng.random() < 0.95:
            lost = "c1" in o.have and rng.random() < 0.1
            if seq not in mine and not lost:
                got.extend(m.seq for m in o.feed(stream[seq]))
            maybe_send_ack(0.2)
            if rng.random() < 0.2:
                take_acks()
            seq = cursor + 1 if rng.random() < 0.05 else seq + 1
        take_acks()
    for _ in range(count + 1):  # syncs, each replaying everything above the cursor
        take_acks()
        o.new_connection()
        for seq in range(cursor + 1, count + 1):
            if seq not in mine:
                got.extend(m.seq for m in o.feed(stream[seq]))
            maybe_send_ack(0.5)
        while unacked_sends:
            maybe_send_ack(1.0)
        if o.have.get("c1") == count:
            break
    assert got == [s for s in range(1, count + 1) if s not in mine]
    assert o.have["c1"] == count and o.buffered == 0
