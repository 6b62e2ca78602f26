"""Users connected to other nodes, as the peers tell it: on which nodes each one has a
connection (where a delivery goes: router/locations.py) and through which nodes it is online (a
visible device there: gateway/presence_registry.py), in one entry per user for both.

Every node keeps an entry for each user connected to any *other* node, so an entry's cost is
paid once per connection per peer (with 12 workers, 11 times for every connection). Two maps,
one for routing and one for presence, cost a dict entry and a copy of the user's name each
(~100 bytes per map; each decodes its own copy from its own mesh frame). Here the common case,
a user connected to one node and online through it, is one entry whose value is that node's
name: one str shared by all of that node's entries, no allocation. A user connected without
being online (invisible devices, or between the two frames that tell it) keeps a `_Split` of
the two node sets instead; a node set is a node's name, or a set while the user is on several.
"""
from __future__ import annotations

from collections.abc import Iterable

NodeSet = str | set[str]


class _Split:
    """The nodes a user is connected to and those it is online through, when they differ."""
    __slots__ = ("connected", "online")

    def __init__(self, connected: NodeSet | None, online: NodeSet | None) -> None:
        self.connected = connected
        self.online = online


def members(nodes: NodeSet | None) -> Iterable[str]:
    """The nodes of one node set (none for None)."""
    if nodes is None:
        return ()
    return (nodes,) if isinstance(nodes, str) else nodes


def _with(nodes: NodeSet | None, node: str) -> NodeSet:
    if nodes is None:
        return node
    if isinstance(nodes, set):
        nodes.add(node)
        return nodes
    return nodes if nodes == node else {nodes, node}


def _without(nodes: NodeSet | None, node: str) -> NodeSet | None:
    if isinstance(nodes, set):
        nodes.discard(node)
        return next(iter(nodes)) if len(nodes) == 1 else nodes
    return None if nodes == node else nodes


def _has(nodes: NodeSet | None, node: str) -> bool:
    return nodes == node or (isinstance(nodes, set) and node in nodes)


class RemoteUsers:
    __slots__ = ("_entries", "connected_users")

    def __init__(self) -> None:
        self._entries: dict[str, str | _Split] = {}
        self.connected_users = 0  # users with a connection on some peer

    # ------------------------------------------------------------------ routing
    def connected_on(self, user: str) -> Iterable[str]:
        return members(self._parts(user)[0])

    def by_node(self, users: Iterable[str]) -> dict[str, list[str]]:
        """node -> those of `users` connected there."""
        by_node: dict[str, list[str]] = {}
        entries = self._entries
        for user in users:
            entry = entries.get(user)
            if entry is None:
                continue
            nodes = entry if isinstance(entry, str) else entry.connected
            if isinstance(nodes, str):
                by_node.setdefault(nodes, []).append(user)
            elif nodes is not None:
                for node in nodes:
                    by_node.setdefault(node, []).append(user)
        return by_node

    def connect(self, user: str, node: str) -> None:
        connected, online = self._parts(user)
        self._put(user, connected, _with(connected, node), online)

    def disconnect(self, user: str, node: str) -> None:
        connected, online = self._parts(user)
        self._put(user, connected, _without(connected, node), online)

    def forget_connections(self, node: str) -> None:
        """Nothing the node said about connections holds any more (a scan: nodes leave rarely,
        and an index of each node's users would cost another entry per user)."""
        for user in self._users(node, connected=True):
            self.disconnect(user, node)

    # ------------------------------------------------------------------ presence
    def online_elsewhere(self, user: str) -> bool:
        entry = self._entries.get(user)
        return entry is not None and (isinstance(entry, str) or entry.online is not None)

    def set_online(self, user: str, node: str, online: bool) -> None:
        connected, nodes = self._parts(user)
        self._put(user, connected, connected, _with(nodes, node) if online else _without(nodes, node))

    def forget_online(self, node: str) -> list[str]:
        """Nobody is online through the node any more; returns the users it was dropped from."""
        users = self._users(node, connected=False)
        for user in users:
            self.set_online(user, node, False)
        return users

    # ------------------------------------------------------------------ the entries
    def _parts(self, user: str) -> tuple[NodeSet | None, NodeSet | None]:
        entry = self._entries.get(user)
        if entry is None:
            return None, None
        if isinstance(entry, str):
            return entry, entry
        return entry.connected, entry.online

    def _put(self, user: str, was_connected: NodeSet | None, connected: NodeSet | None,
             online: NodeSet | None) -> None:
        """An entry that already exists keeps its key: the first copy of the name stays the
        only one."""
        entries = self._entries
        if connected is None and online is None:
            entries.pop(user, None)
        elif isinstance(connected, str) and connected == online:
            entries[user] = connected
        else:
            entry = entries.get(user)
            if isinstance(entry, _Split):
                entry.connected, entry.online = connected, online
            else:
                entries[user] = _Split(connected, online)
        self.connected_users += (connected is not None) - (was_connected is not None)

    def _users(self, node: str, connected: bool) -> list[str]:
        found = []
        for user, entry in self._entries.items():
            nodes = entry if isinstance(entry, str) else \
                entry.connected if connected else entry.online
            if _has(nodes, node):
                found.append(user)
        return found
