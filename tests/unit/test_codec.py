"""proto/codec.py: domain records to and from the wire, and a peer's record this node cannot
read refused as BadRecord (the one error the router drops a record for), never a bare
ValueError out of a mesh handler."""
import pytest

from switchboard.core.model import MemberAction, MembershipEvent
from switchboard.proto.codec import BadRecord, event_from_pb, event_to_pb
from switchboard.proto.v1 import client_pb2 as pb


@pytest.mark.parametrize("action", list(MemberAction))
def test_membership_events_go_both_ways(action):
    event = MembershipEvent(action, "alice", ("bob", "carol"))
    assert event_from_pb(event_to_pb(event)) == event


@pytest.mark.parametrize("action", [0, 3, 1 << 20])
def test_an_unknown_action_is_a_bad_record(action):
    with pytest.raises(BadRecord, match=f"unknown action {action}"):
        event_from_pb(pb.MembershipEvent(action=action, actor_user_id="alice", user_ids=["bob"]))
