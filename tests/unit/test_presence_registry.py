"""PresenceRegistry: this node's devices plus what other nodes say, and which flips are told
to whom (on_change: subscribers here; on_local_change: the other nodes)."""
from __future__ import annotations

from switchboard.gateway.presence_registry import PresenceRegistry


def make():
    changes: list[str] = []
    local: list[tuple[str, bool, int]] = []
    registry = PresenceRegistry(changes.append, lambda *state: local.append(state))
    return registry, changes, local


def test_a_user_online_elsewhere_stays_online_when_the_local_device_goes():
    registry, changes, local = make()
    registry.remote("b", "alice", True, 0)
    assert registry.is_online("alice") and changes == ["alice"] and local == []
    registry.connected("alice", "phone")
    assert changes == ["alice"]  # already online: no flip for subscribers
    assert local == [("alice", True, 0)]  # but the other nodes learn alice is here too
    registry.disconnected("alice", "phone")
    assert registry.is_online("alice") and changes == ["alice"]
    assert local[-1][:2] == ("alice", False) and local[-1][2] > 0
    registry.remote("b", "alice", False, 5)
    assert not registry.is_online("alice") and changes == ["alice", "alice"]
    assert registry.last_seen("alice") == local[-1][2]  # the later of the two last-seens


def test_last_seen_takes_the_largest_report():
    registry, _, _ = make()
    registry.remote("b", "bob", False, 2_000)
    registry.remote("c", "bob", False, 1_000)
    assert registry.last_seen("bob") == 2_000


def test_a_gone_node_takes_its_users_offline():
    registry, changes, _ = make()
    registry.remote("b", "alice", True, 0)
    registry.remote("b", "bob", True, 0)
    registry.remote("c", "bob", True, 0)
    changes.clear()
    registry.forget_node("b")
    assert not registry.is_online("alice") and registry.is_online("bob")
    assert changes == ["alice"]


def test_invisible_devices_count_for_nobody():
    registry, changes, local = make()
    registry.connected("alice", "phone", visible=False)
    assert not registry.is_online("alice") and changes == [] and local == []
    assert registry.local_states() == [("alice", False, 0)]
    registry.set_visible("alice", "phone", True)
    assert registry.is_online("alice") and local == [("alice", True, 0)]


def test_last_seen_is_kept_for_a_bounded_number_of_users():
    """One entry per user ever seen leaving would grow for the life of the process; the oldest
    are forgotten (None: the caller asks the store, which keeps last seen for good)."""
    registry = PresenceRegistry(lambda user: None, last_seen_kept=100)
    for i in range(1000):
        registry.connected(f"u{i}", "phone")
        registry.disconnected(f"u{i}", "phone")
    assert registry.last_seen("u999") is not None and registry.last_seen("u0") is None
    assert len(registry._last_seen) == 100


def test_a_user_online_through_several_nodes_stays_until_the_last_goes():
    """One node per user is kept as the node's name, several as a set: names that contain one
    another ("n1", "n12") are told apart either way."""
    registry, changes, _ = make()
    registry.remote("n12", "alice", True, 0)
    registry.remote("n12", "alice", True, 0)  # said twice: still one node
    registry.remote("n1", "bob", True, 0)
    registry.forget_node("n1")
    assert registry.is_online("alice") and not registry.is_online("bob")
    registry.remote("n1", "alice", True, 0)
    registry.remote("n2", "alice", True, 0)
    registry.remote("n12", "alice", False, 0)
    registry.forget_node("n1")
    assert registry.is_online("alice")
    changes.clear()
    registry.remote("n2", "alice", False, 7)
    assert not registry.is_online("alice") and changes == ["alice"]
    registry.remote("n2", "alice", False, 8)  # offline twice: nothing to flip
    assert changes == ["alice"] and registry.last_seen("alice") == 8


def test_devices_in_any_mix_of_visible_and_invisible():
    """One visible device is kept in its compact form; adding, hiding and removing devices in
    any order gives the same answers as a plain map would."""
    registry, changes, _ = make()
    registry.connected("alice", "phone")
    assert registry.is_online("alice") and registry.online_devices("alice") == {"phone"}
    registry.connected("alice", "laptop", visible=False)
    assert registry.online_devices("alice") == {"phone", "laptop"}
    registry.disconnected("alice", "phone")
    assert not registry.is_online("alice") and registry.online_devices("alice") == {"laptop"}
    registry.set_visible("alice", "laptop", True)
    assert registry.is_online("alice")
    registry.set_visible("alice", "tablet", True)  # not connected: nothing changes
    assert registry.online_devices("alice") == {"laptop"}
    registry.disconnected("alice", "laptop")
    assert not registry.is_online("alice") and registry.online_devices("alice") == set()
    assert changes == ["alice", "alice", "alice", "alice"]
    assert registry.local_states() == []
