"""bench cluster's placement: over N^3 pairs every (sender's gateway, receiver's gateway, chat
owner) placement occurs once, and the user ids it picks give the direct chat to the intended
owner on the ring the gateways build (the same native Ring, names gw0..gw(N-1))."""
from __future__ import annotations

from collections import Counter

import pytest

from bench.scenarios.cluster import flow_class, owned_pair, placement
from switchboard.core.chats import direct_chat_id
from switchboard.router.ring import Ring


@pytest.mark.parametrize("nodes", [1, 2, 3, 4])
def test_every_placement_once_and_each_chat_owned_where_placed(nodes):
    ring = Ring([f"gw{n}" for n in range(nodes)], 0)
    seen = Counter()
    for i in range(nodes ** 3):
        a_node, b_node, owner = placement(i, nodes)
        seen[(a_node, b_node, owner)] += 1
        a, b = owned_pair("run1-", i, owner, nodes)
        assert ring.owner(direct_chat_id(a, b)) == f"gw{owner}"
    assert len(seen) == nodes ** 3 and set(seen.values()) == {1}


def test_classes_of_three_gateways():
    """Both directions of each of the 27 placements: 6 of 54 messages stay on one gateway,
    12 have sender and receiver together apart from the owner, 24 cross with the owner at one
    end (one mesh hop) and 12 pass three gateways."""
    kinds = Counter()
    for i in range(27):
        a_node, b_node, owner = placement(i, 3)
        kinds[flow_class(a_node, b_node, owner)] += 1
        kinds[flow_class(b_node, a_node, owner)] += 1
    assert kinds == {"local": 6, "same": 12, "cross1": 24, "cross2": 12}
