"""The history checker (tests/support/history.py) on hand-built histories: a clean one passes,
and each kind of violation is found and named (a checker that cannot fail proves nothing)."""
from __future__ import annotations

from tests.support.history import History, Observed

CHAT = "c1"


def msg(seq: int, sender: str = "alice", device: str = "phone", cmid: str | None = None,
        body: bytes | None = None, chat: str = CHAT) -> Observed:
    return Observed(chat, seq, sender, device, cmid or f"{sender}-{seq}",
                    body if body is not None else f"{sender} {seq}".encode())


def clean() -> History:
    """alice/phone and bob/phone chat in c1; bob also has a laptop. Every send acked, every
    device got everything but its own sends, and the store agrees."""
    h = History()
    h.member(CHAT, ["alice", "bob"])
    for seq, sender in ((1, "alice"), (2, "bob"), (3, "alice")):
        record = h.invoke(CHAT, sender, "phone", f"{sender}-{seq}", f"{sender} {seq}".encode())
        h.ok(record, seq)
    for seq in (2,):
        h.received("alice", "phone", msg(seq, "bob"))
    for seq in (1, 3):
        h.received("bob", "phone", msg(seq))
    for seq, sender in ((1, "alice"), (2, "bob"), (3, "alice")):
        h.received("bob", "laptop", msg(seq, sender))
    for dev in (("alice", "phone"), ("bob", "phone"), ("bob", "laptop")):
        h.final(*dev, {CHAT: 3})
    h.stored(CHAT, [msg(1), msg(2, "bob"), msg(3)])
    return h


def kinds(violations: list[str]) -> list[str]:
    return sorted({v.split(":", 1)[0] for v in violations})


def test_a_clean_history_has_no_violation():
    h = clean()
    assert h.check() == []
    assert "3 sends" in h.summary()


def test_an_unknown_send_may_exist_once_or_not_at_all():
    h = clean()
    absent = h.invoke(CHAT, "alice", "phone", "lost-1", b"maybe")
    h.info(absent, "TimeoutError")
    present = h.invoke(CHAT, "bob", "phone", "lost-2", b"maybe too")
    h.info(present, "ConnectionLost")
    # lost-2 was stored as seq 4: everyone but its sender device got it
    m4 = msg(4, "bob", cmid="lost-2", body=b"maybe too")
    h.received("alice", "phone", m4)
    h.received("bob", "laptop", m4)
    for dev in (("alice", "phone"), ("bob", "phone"), ("bob", "laptop")):
        h.final(*dev, {CHAT: 4})
    h.stored(CHAT, [msg(1), msg(2, "bob"), msg(3), m4])
    assert h.check() == []  # bob/phone holds #4 as its own send, found in others' logs


def test_acked_message_missing_from_a_member_device():
    h = clean()
    h.streams[("bob", "laptop")] = [m for m in h.streams[("bob", "laptop")] if m.seq != 3]
    violations = h.check()
    assert kinds(violations) == ["I1 lost", "I3 gap"]
    assert any("bob/laptop never got send alice/phone c1 'alice-3'" in v for v in violations)


def test_acked_message_missing_from_the_store():
    h = clean()
    h.stored(CHAT, [msg(1), msg(2, "bob")])
    assert kinds(h.check()) == ["I1 lost from the store"]


def test_seq_reused_with_another_content():
    h = clean()
    h.received("bob", "phone", msg(3, "carol", cmid="other", body=b"not alice's"))
    h.sends.append(h.invoke(CHAT, "carol", "phone", "other", b"not alice's"))
    violations = h.check()
    assert "I4 seq reuse" in kinds(violations)
    assert any("c1#3 has 2 contents" in v for v in violations)


def test_same_seq_delivered_twice_to_one_device():
    h = clean()
    h.received("bob", "phone", msg(3))
    violations = h.check()
    assert kinds(violations) == ["I2 duplicate delivery"]
    assert "bob/phone got c1#3 again" in violations[0]


def test_order_broken_in_a_device_stream():
    h = clean()
    stream = h.streams[("bob", "laptop")]
    stream[1], stream[2] = stream[2], stream[1]  # 1, 3, 2
    violations = h.check()
    assert kinds(violations) == ["I3 order"]
    assert "got c1#2 after #3" in violations[0]


def test_gap_in_a_final_log():
    h = clean()
    # the chat's head moved to 5 (the store says so), but nobody's log holds 4 and 5; a send
    # of bob's with unknown outcome could be #4, not #5: a gap on every device
    h.stored(CHAT, [msg(1), msg(2, "bob"), msg(3), msg(4, "bob"), msg(5, "bob")])
    for seq in (4, 5):
        h.info(h.invoke(CHAT, "bob", "phone", f"bob-{seq}", f"bob {seq}".encode()), "timeout")
    h.received("alice", "phone", msg(5, "bob"))
    violations = h.check()
    assert kinds(violations) == ["I3 gap"]
    assert any("alice/phone's final log of c1 (head 5) lacks seqs 4" in v for v in violations)
    assert any("bob/laptop's final log of c1 (head 5) lacks seqs 4-5" in v for v in violations)


def test_gap_in_the_store():
    h = clean()
    h.stored(CHAT, [msg(1), msg(3)])
    assert "store gap" in kinds(h.check())


def test_one_client_msg_id_stored_under_two_seqs():
    h = clean()
    retry = h.invoke(CHAT, "alice", "phone", "alice-3", b"alice 3")
    h.ok(retry, 4)  # the retry was acked as a new message instead of a duplicate of #3
    h.received("bob", "phone", msg(4, cmid="alice-3", body=b"alice 3"))
    h.received("bob", "laptop", msg(4, cmid="alice-3", body=b"alice 3"))
    h.stored(CHAT, [msg(1), msg(2, "bob"), msg(3), msg(4, cmid="alice-3", body=b"alice 3")])
    violations = h.check()
    assert kinds(violations) == ["I2 duplicate message"]
    assert "'alice-3' stored under seqs [3, 4]" in violations[0]


def test_an_unknown_send_stored_twice_is_a_duplicate_too():
    h = clean()
    h.info(h.invoke(CHAT, "bob", "phone", "u1", b"x"), "timeout")
    for seq in (4, 5):
        h.received("alice", "phone", msg(seq, "bob", cmid="u1", body=b"x"))
    assert "I2 duplicate message" in kinds(h.check())


def test_a_refused_or_never_sent_message_that_exists_is_a_phantom():
    h = clean()
    h.fail(h.invoke(CHAT, "bob", "phone", "refused", b"too big"), "BODY_TOO_LARGE")
    h.received("alice", "phone", msg(4, "bob", cmid="refused", body=b"too big"))
    h.received("alice", "phone", msg(5, "mallory", cmid="forged"))
    violations = h.check()
    assert any("exists but its send was refused" in v for v in violations)
    assert any("from mallory/phone 'forged' was never sent" in v for v in violations)


def test_a_violation_names_the_fault_before_it():
    h = clean()
    h.fault("kill -9 g1")
    h.received("bob", "phone", msg(3))
    [violation] = h.check()
    assert violation.endswith("(after fault: kill -9 g1)")


def test_a_membership_event_is_no_phantom_but_still_holds_its_seq():
    h = clean()
    event = Observed(CHAT, 4, "alice", "", "membership:1", b"", membership=True)
    for dev in (("alice", "phone"), ("bob", "phone"), ("bob", "laptop")):
        h.received(*dev, event)
        h.final(*dev, {CHAT: 4})
    h.stored(CHAT, [msg(1), msg(2, "bob"), msg(3), event])
    assert h.check() == []
    # the same seq with another content is still a reuse, and a missing event still a gap
    h.received("bob", "laptop", msg(4, "bob", cmid="x", body=b"x"))
    h.streams[("alice", "phone")].pop()
    assert kinds(h.check()) == ["I2 duplicate delivery", "I3 gap", "I4 seq reuse", "phantom"]
