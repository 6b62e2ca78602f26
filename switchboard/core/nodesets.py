"""Maps of key -> the nodes it is on, kept compact for the common case of one node.

Every node of a cluster keeps such a map with an entry for each user connected to any *other*
node (where to route, who is online), so its per-entry cost is paid once per connection per
peer: a set per entry is ~216 bytes, ~2.3 KiB per connection with 12 workers. Here the value
is the node's name itself (one str shared by all of that node's entries: no allocation) and
becomes a set only while a key is on several nodes.
"""
from __future__ import annotations

from collections.abc import Iterable

NodeSet = str | set[str]


def add(nodes_of: dict[str, NodeSet], key: str, node: str) -> None:
    nodes = nodes_of.get(key)
    if nodes is None:
        nodes_of[key] = node
    elif isinstance(nodes, set):
        nodes.add(node)
    elif nodes != node:
        nodes_of[key] = {nodes, node}


def discard(nodes_of: dict[str, NodeSet], key: str, node: str) -> None:
    nodes = nodes_of.get(key)
    if isinstance(nodes, set):
        nodes.discard(node)
        if len(nodes) == 1:
            nodes_of[key] = nodes.pop()
    elif nodes == node:
        del nodes_of[key]


def members(nodes: NodeSet | None) -> Iterable[str]:
    """The nodes of one entry (none for a missing key)."""
    if nodes is None:
        return ()
    return (nodes,) if isinstance(nodes, str) else nodes


def forget(nodes_of: dict[str, NodeSet], node: str) -> list[str]:
    """Drop `node` from every entry (a scan: nodes leave rarely, and keeping an index of each
    node's keys would cost another entry per key); returns the keys it was dropped from."""
    keys = [key for key, nodes in nodes_of.items()
            if nodes == node or (isinstance(nodes, set) and node in nodes)]
    for key in keys:
        discard(nodes_of, key, node)
    return keys
