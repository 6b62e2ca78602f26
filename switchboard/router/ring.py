"""Which node owns a chat: the consistent-hash ring every node builds from the same members.

Determinism. Ownership is part of the cluster protocol: the owner of a chat is the only node that
assigns its seq, so two nodes that disagree about an owner could both assign one. Every node
therefore builds the ring from the member list alone, with a fixed 64-bit hash (FNV-1a with a
MurmurHash3 finaliser, specified in core/_native/ring.pyx) that does not depend on the process,
the machine or the order of the members; Python's hash() is salted per process and is never used.
Changing the hash or the vnodes count moves many chats: do it only with every node at once.

Epoch. Members join and leave, so rings succeed one another; the epoch numbers them. The ring
does not interpret it (the same members give the same owners whatever the epoch): it travels
with the ring so that work and ownership decisions can name the ring they were made under, and
a node can tell a decision made under an older ring from a current one. How ownership moves are
fenced is in docs/cluster.md.

Why vnodes. With one point per node the arcs between points, and so the nodes' shares of the
chats, differ by ~100%. Each node gets `weight * vnodes` points; a node's share is the sum of that
many arcs, whose relative spread falls as 1/sqrt(points):

    points per node     160    320    512
    spread (1 sd)       ~8%    ~6%    ~4.4%

so with 160 (the default) the node furthest from its share among ten equal ones is typically
~14% off, and keeping all ten within 15% reliably needs ~500 points. A point costs 12 bytes in every process that
holds the ring. Adding or removing a node moves only the chats on its own arcs, ~1/N of them.

The native ring is required: importing this module fails if core/_native was not built.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from switchboard.core._native import native

_ring = native("ring")
DEFAULT_VNODES = _ring.DEFAULT_VNODES
HashRing = _ring.HashRing

__all__ = ["DEFAULT_VNODES", "Ring"]

# Keys on which moved() compares two rings: fixed, so that the figure is reproducible.
_MOVED_SAMPLE = tuple(f"moved-sample:{i}" for i in range(20_000))


class Ring(HashRing):
    """Ring(members, epoch, vnodes=160): chat ownership among the cluster's nodes.

    members: {node_id: weight} (weight >= 1: a node of weight 2 owns twice the chats) or an
    iterable of node ids, each of weight 1. The order of members never matters.

    It is the native HashRing itself (only the constructor's arguments are normalised here), so
    owner() costs no Python-level call and Cython code can take a Ring where a HashRing is
    declared and call owner_index() on it. Immutable; safe to share between tasks and threads.

    owner(chat_id) -> node id; owners(chat_id, n) -> up to n distinct node ids, the owner first
    (replicas, hand-off); nodes (sorted ids), weights, vnodes, epoch, members.
    """

    __slots__ = ()

    def __new__(cls, members: Mapping[str, int] | Iterable[str], epoch: int,
                vnodes: int = DEFAULT_VNODES) -> Ring:
        if isinstance(members, (str, bytes)):
            # A str is an iterable of node ids, one per character: never what was meant.
            raise TypeError(f"members must be a mapping or an iterable of node ids, "
                            f"not {type(members).__name__}")
        if isinstance(members, Mapping):
            pairs = list(members.items())
        else:
            pairs = [(node_id, 1) for node_id in members]
        return super().__new__(cls, pairs, epoch, vnodes)

    @property
    def members(self) -> dict[str, int]:
        """{node_id: weight}, ready to build the next ring from (add or drop a node, epoch + 1)."""
        return dict(zip(self.nodes, self.weights))

    def moved(self, other: Ring) -> float:
        """Fraction of a fixed sample of 20,000 keys whose owner differs between the two rings:
        what a membership change costs in ownership moves (~1/N for one node in or out)."""
        owner, other_owner = self.owner, other.owner
        changed = sum(owner(key) != other_owner(key) for key in _MOVED_SAMPLE)
        return changed / len(_MOVED_SAMPLE)
