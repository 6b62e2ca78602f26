"""core/remote_users.py: the one map of other nodes' users says the same as two plain dicts of
sets (connected on, online through) under any sequence of changes and forgotten nodes, and
keeps the common case, connected to one node and online through it, as one entry whose value
is the node's shared name; the router's location map and the presence registry share it, so a
user of another node costs one entry and one copy of its name."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from switchboard.core.remote_users import RemoteUsers, members
from switchboard.gateway.presence_registry import PresenceRegistry
from switchboard.proto.v1 import mesh_pb2 as mesh
from switchboard.router.locations import Locations
from switchboard.router.mesh import Mesh

USERS = st.sampled_from(["alice", "bob", "carol"])
NODES = st.sampled_from(["a", "b", "c"])
OPS = st.lists(st.tuples(st.sampled_from(["connect", "disconnect", "online", "offline",
                                          "forget_connections", "forget_online"]),
                         USERS, NODES), max_size=80)


@given(OPS)
def test_agrees_with_two_dicts_of_sets(ops):
    remote = RemoteUsers()
    connected: dict[str, set[str]] = {}
    online: dict[str, set[str]] = {}
    for op, user, node in ops:
        if op == "connect":
            remote.connect(user, node)
            connected.setdefault(user, set()).add(node)
        elif op == "disconnect":
            remote.disconnect(user, node)
            connected.get(user, set()).discard(node)
        elif op == "online":
            remote.set_online(user, node, True)
            online.setdefault(user, set()).add(node)
        elif op == "offline":
            remote.set_online(user, node, False)
            online.get(user, set()).discard(node)
        elif op == "forget_connections":
            remote.forget_connections(node)
            for nodes in connected.values():
                nodes.discard(node)
        else:
            dropped = remote.forget_online(node)
            assert sorted(dropped) == sorted(u for u, nodes in online.items() if node in nodes)
            for nodes in online.values():
                nodes.discard(node)
        for user in ("alice", "bob", "carol"):
            assert set(remote.connected_on(user)) == connected.get(user, set())
            assert remote.online_elsewhere(user) == bool(online.get(user))
        assert remote.connected_users == sum(1 for nodes in connected.values() if nodes)
        expected: dict[str, list[str]] = {}
        for user in ("alice", "bob", "carol"):
            for node in sorted(connected.get(user, ())):
                expected.setdefault(node, []).append(user)
        assert {n: sorted(us) for n, us in remote.by_node(["alice", "bob", "carol"]).items()} \
            == expected
        # an entry only for users some node said something about, and nothing left behind
        assert set(remote._entries) == {u for u in ("alice", "bob", "carol")
                                        if connected.get(u) or online.get(u)}


def test_connected_and_online_through_one_node_is_that_nodes_shared_name():
    remote = RemoteUsers()
    node = "gateway-7"
    for user in ("alice", "bob"):
        remote.connect(user, node)
        remote.set_online(user, node, True)
    assert remote._entries["alice"] is node and remote._entries["bob"] is node
    remote.set_online("bob", node, False)  # invisible: connected, not online
    assert list(remote.connected_on("bob")) == [node] and not remote.online_elsewhere("bob")
    assert list(members(None)) == [] and list(remote.connected_on("carol")) == []


class PeerLink:
    """What Locations reads of the link a frame came on: the peer's name (no barrier here, so
    no acknowledgement goes back)."""
    node_id = "worker-3"

    def send(self, frame) -> None:
        raise AssertionError("no acknowledgement is asked for here")


def test_routing_and_presence_share_one_entry_and_one_copy_of_each_name():
    """The Located snapshot and the PresenceStates snapshot of a peer each decode their own
    copy of every name; the entry keeps the first, so the second is dropped."""
    remote = RemoteUsers()
    locations = Locations(Mesh("worker-0", 0, None), lambda *kick: None, remote)
    changes: list[str] = []
    registry = PresenceRegistry(changes.append, remote=remote)
    users = [f"user{i}" for i in range(50)]
    located = mesh.MeshFrame.FromString(mesh.MeshFrame(located=mesh.Located(
        snapshot=True, here=users)).SerializeToString()).located
    presence = mesh.MeshFrame.FromString(mesh.MeshFrame(presence=mesh.PresenceStates(
        snapshot=True, users=[mesh.UserPresence(user_id=u, online=True) for u in users[:40]])
    ).SerializeToString()).presence
    link = PeerLink()
    locations.on_located(link, located)
    names = {name: name for name in remote._entries}  # the copies the Located frame brought
    for state in presence.users:
        registry.remote(link.node_id, state.user_id, state.online, state.last_seen_ms)
    assert len(remote._entries) == 50 and remote.connected_users == 50
    assert all(key is names[key] for key in remote._entries)
    assert all(remote._entries[u] is link.node_id for u in users[:40])
    assert sorted(changes) == sorted(users[:40])
    assert registry.is_online("user0") and not registry.is_online("user45")
    assert locations.nodes_for(["user0", "user45", "nobody"]) == {
        "worker-3": ["user0", "user45"]}
    registry.forget_node(link.node_id)  # its presence gone, its connections still told
    assert not registry.is_online("user0") and remote.connected_users == 50
    locations.link_down(link.node_id)
    assert remote._entries == {} and remote.connected_users == 0
