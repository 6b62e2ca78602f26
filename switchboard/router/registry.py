"""The session registry and presence facts shared by every node of a cluster.

Three kinds of fact live here, all of them soft state that the nodes can rebuild:

* Node membership: each node holds a lease (registered with a TTL, refreshed by the node).
  Every `register_node` starts a new life of that node id under a higher epoch, so a node that
  restarted (or was paused past its lease) is told apart from its previous life.
* Sessions: user -> device -> (node id, node epoch). An entry is written when a device connects,
  disconnects or moves, never on heartbeats (see the design brief's scale arithmetic). Whether it
  counts is decided when it is read: an entry is visible only while its node's lease is live
  and carries the epoch stored in the entry. A dead node's sessions therefore vanish the moment
  its lease lapses, without touching (or expiring) millions of session keys.
* Presence facts: `last_seen`, written when a user's last device goes.

Guarantees every implementation gives (tests/contract/test_registry_contract.py checks them):

* Writes are idempotent: retrying any write after an error or a timeout whose outcome is
  unknown leaves the same state as one success. `register_node` is the exception that proves
  the rule: a retry may burn an epoch number, which is harmless because only "higher than any
  earlier life" matters.
* `put_session` / `drop_session` on one (user, device) are atomic; `drop_session` removes an
  entry only if it still names the calling node, so a late disconnect on the old node never
  removes the entry a device's new connection wrote elsewhere.
* Reads see every write that completed before they started (no read-your-writes lag).
* Methods raise `RegistryUnavailable` when the backend cannot answer within the
  implementation's deadline; the outcome of a write is then unknown (retry it).

What survives a failure of the backend (a Redis Cluster failover, see docs/cluster.md): writes
acknowledged shortly before a master died may be lost, and an epoch counter may go back. The
registry never hides that silently: `refresh_node` returns False when the lease is gone *or*
when the backend may have lost writes since the node's last refresh. A node that gets False
must register anew (new epoch) and put every session it holds again; that is the whole recovery
procedure, the same as after a restart. Nothing here ever assigns message sequence numbers, so
lost or repeated registry state can misroute a push for a moment but never lose or reorder a
stored message.

Registries that record no sessions. With a static member list (`cluster.peers`) nothing is
shared between the nodes, so `StaticRegistry` (registry_static.py) records no session: every
lookup of where a user is (`put_session`'s previous entry, `sessions_many`) answers `EVERYWHERE`, an entry naming `ANY_NODE`, and the router sends to every node. `sessions` (the
devices it knows) is empty, `last_seen` None and `add_usage` shares nothing.
"""
from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from switchboard.core.metrics import Metric


class NodeInfo(NamedTuple):
    address: str
    """Where other nodes reach this node's mesh listener (host:port)."""
    epoch: int
    """This life of the node id; higher than every earlier registration of the same id."""


class SessionEntry(NamedTuple):
    node_id: str
    node_epoch: int


ANY_NODE = "*"
"""The node id of an entry that says "on any node": the registry does not know where."""
EVERYWHERE = SessionEntry(ANY_NODE, 0)


class RegistryUnavailable(Exception):
    """The backend did not answer within the deadline; a write's outcome is unknown."""


class Registry(abc.ABC):
    """Node leases, sessions and presence facts; see the module docstring for guarantees.

    Times are seconds (float) for TTLs and epoch milliseconds (int) for `last_seen`, the unit
    the protocol's `last_seen_ms` uses.
    """

    # ------------------------------------------------------------------ node membership
    @abc.abstractmethod
    async def register_node(self, node_id: str, address: str, ttl: float) -> int:
        """Start a new life of `node_id`: returns its epoch, higher than any earlier life's.

        Takes the lease for `ttl` seconds. Sessions written under earlier epochs of this id
        stop being visible at once, so a restarted node must put its sessions again (it holds
        none right after a restart anyway)."""

    @abc.abstractmethod
    async def refresh_node(self, node_id: str, epoch: int, ttl: float) -> bool:
        """Extend the lease of this life to `ttl` seconds from now.

        False means: the lease lapsed, a newer life of the id registered, or the backend may
        have lost writes since the last refresh (failover). The caller must then stop relying
        on its sessions being visible, `register_node` again and put all its sessions again
        under the new epoch. The lease is never extended for a stale epoch, so a paused node
        that wakes up cannot keep a successor's lease alive in its own name."""

    @abc.abstractmethod
    async def nodes(self) -> dict[str, NodeInfo]:
        """The nodes whose lease is live, with their current address and epoch."""

    # ------------------------------------------------------------------ sessions
    @abc.abstractmethod
    async def put_session(self, user: str, device: str, node_id: str,
                          node_epoch: int) -> SessionEntry | None:
        """Record that `device` of `user` is connected to `node_id` in life `node_epoch`.

        Returns the entry it replaced, whatever the state of that entry's node, so the caller
        can tell a previous node to close its now stale connection."""

    @abc.abstractmethod
    async def drop_session(self, user: str, device: str, node_id: str) -> bool:
        """Remove the device's entry if it still names `node_id`; True if it did.

        An entry written by another node since (the device moved) is left alone."""

    @abc.abstractmethod
    async def sessions(self, user: str) -> dict[str, SessionEntry]:
        """device -> entry for the user's visible sessions: the node's lease is live and the
        entry's epoch is that node's current epoch. Other entries stay stored but are
        invisible."""

    @abc.abstractmethod
    async def sessions_many(self, users: Iterable[str]) -> dict[str, dict[str, SessionEntry]]:
        """`sessions` for many users at once: every user asked for is a key, mapping to {} when
        it has no visible session. Implementations batch the reads (Redis Cluster: every read
        in flight at once)."""

    # ------------------------------------------------------------------ presence facts
    @abc.abstractmethod
    async def set_last_seen(self, user: str, ms: int) -> None:
        """Record when the user's last device went. Never moves backwards: a value older than
        the stored one is ignored, since nodes' clocks differ."""

    @abc.abstractmethod
    async def last_seen(self, user: str) -> int | None:
        """The latest `set_last_seen` value, or None when this registry does not know it (never
        set, forgotten after its retention, or lost in a failover): ask the store then."""

    # ------------------------------------------------------------------ rate limits
    @abc.abstractmethod
    async def add_usage(self, usage: Mapping[tuple[str, str], int],
                        ttl: float) -> dict[tuple[str, str], int]:
        """Add each (kind, user)'s count (0 allowed: just read) to its running total, kept
        `ttl` seconds after its last change; returns the totals. One batch per call (the
        per-user rate limits share consumption across nodes this way, never per send)."""

    # ------------------------------------------------------------------ lifecycle
    def metrics(self) -> list[Metric]:
        """The backend's own numbers for /metrics (Redis: timeouts, retries); none by default."""
        return []

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Leases are not released: a stopped node's sessions vanish when
        its lease lapses, as they would after a crash."""


def visible_sessions(entries: dict[str, SessionEntry],
                     live: dict[str, NodeInfo]) -> dict[str, SessionEntry]:
    """The entries whose node is live in the same life the entry was written in: the one
    visibility rule, shared by every implementation."""
    return {device: entry for device, entry in entries.items()
            if (info := live.get(entry.node_id)) is not None and info.epoch == entry.node_epoch}


def nodes_named(nodes: Iterable[str], every_node: Iterable[str], own: str) -> set[str]:
    """The nodes other than `own` among `nodes` (node ids of entries); ANY_NODE (a registry
    that records no sessions) names `every_node`."""
    named = set(nodes)
    if ANY_NODE in named:
        return set(every_node) - {own}
    named.discard(own)
    return named
