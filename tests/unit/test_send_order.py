"""SendOrder (router/send_order.py): a chat's sends reach its owner in the order they came, also
across an owner change: those made while a send is still with the previous owner wait until it
settles, then go to the new owner in order. The owners are a recording port here; what is under
test is which send goes where, when, and that every sender hears its outcome once."""
from __future__ import annotations

import pytest

from switchboard.core.errors import Code, DomainError
from switchboard.core.model import CommitResult, SendRequest, StoredMessage
from switchboard.router.send_order import SendOrder


class Owners:
    """The chat's owner now, and every send handed to an owner with its completion."""

    def __init__(self) -> None:
        self.now = "n1"
        self.handed: list[tuple[str, str, object]] = []  # (owner, client_msg_id, done)
        self.refuse: set[str] = set()  # client_msg_ids refused at once

    def owner(self, chat_id: str) -> str:
        return self.now

    def to_owner(self, owner: str, send: SendRequest, done) -> None:
        if send.client_msg_id in self.refuse:
            raise DomainError(Code.NOT_MEMBER, "refused")
        self.handed.append((owner, send.client_msg_id, done))

    def where(self) -> list[tuple[str, str]]:
        return [(owner, client_msg_id) for owner, client_msg_id, _ in self.handed]

    def settle(self, client_msg_id: str, seq: int = 1) -> None:
        [done] = [done for _, cid, done in self.handed if cid == client_msg_id]
        done(CommitResult(StoredMessage("c1", seq, seq, "alice", "phone", client_msg_id, b"x", (), 0),
                          False), None)


@pytest.fixture
def setup():
    owners = Owners()
    answers: list[tuple[str, object]] = []
    order = SendOrder(owners.owner, owners.to_owner)

    def send(client_msg_id: str) -> None:
        order.submit(SendRequest("alice", "phone", "c1", client_msg_id, b"x", []),
                     lambda result, error: answers.append(
                         (client_msg_id, error if error is not None else result.message.seq)))
    return owners, order, send, answers


def test_sends_made_during_an_owner_change_wait_for_the_previous_owners_send(setup):
    owners, order, send, answers = setup
    send("m1")
    owners.now = "n2"
    send("m2")
    send("m3")
    assert owners.where() == [("n1", "m1")] and order.held_sends == 2
    owners.settle("m1", 1)
    assert answers == [("m1", 1)]
    assert owners.where() == [("n1", "m1"), ("n2", "m2"), ("n2", "m3")]
    owners.settle("m2", 2)
    owners.settle("m3", 3)
    send("m4")  # no change since: straight to n2
    assert owners.where()[-1] == ("n2", "m4") and order.held_sends == 2
    assert answers == [("m1", 1), ("m2", 2), ("m3", 3)]


def test_a_failed_send_at_the_previous_owner_releases_the_held_ones_too(setup):
    owners, order, send, answers = setup
    send("m1")
    owners.now = "n2"
    send("m2")
    unavailable = DomainError(Code.UNAVAILABLE, "owner n1 did not answer")
    [(_, _, done)] = owners.handed
    done(None, unavailable)
    assert answers == [("m1", unavailable)]
    assert owners.where() == [("n1", "m1"), ("n2", "m2")]


def test_only_the_latest_send_in_flight_holds_the_chat(setup):
    owners, order, send, answers = setup
    send("m1")
    send("m2")
    owners.now = "n2"
    send("m3")
    owners.settle("m1", 1)  # m2 is still with n1: m3 waits for it
    assert owners.where() == [("n1", "m1"), ("n1", "m2")]
    owners.settle("m2", 2)
    assert owners.where()[-1] == ("n2", "m3")
    assert [cid for cid, _ in answers] == ["m1", "m2"]


def test_a_send_refused_at_once_is_no_flight_and_a_refused_held_send_fails_alone(setup):
    owners, order, send, answers = setup
    owners.refuse.add("bad")
    with pytest.raises(DomainError):
        send("bad")
    owners.now = "n2"
    send("m1")  # nothing in flight: no wait for n1
    assert owners.where() == [("n2", "m1")]
    owners.now = "n3"
    send("bad")
    send("m2")
    owners.settle("m1", 1)
    assert owners.where() == [("n2", "m1"), ("n3", "m2")]
    assert answers[0] == ("m1", 1)
    assert answers[1][0] == "bad" and answers[1][1].code is Code.NOT_MEMBER
