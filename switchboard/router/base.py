"""What the gateway needs from the cluster, whatever its size, and what the cluster needs from
the gateway.

`Router` is the gateway's only way to reach other nodes. `LocalRouter` (one node owns every
chat) implements it by calling straight back into this node; `MeshRouter` (cluster.py)
forwards sends to the chat's owner and carries fan-out, pushes, invalidations, presence and
kicks over the mesh. Every method that acts "everywhere" acts on this node too, through
`LocalNode`, so the gateway never does a local step beside a router call. Both honour the whole
contract, and errors of the cluster's own parts (the registry not answering) are translated
inside the router: nothing but DomainError and StoreError comes out of it, and only where a
method says so (tests/contract/test_router_contract.py runs both through it).

`LocalNode` is the gateway as the router sees it: the effects a node has on its own devices
and caches. The gateway implements it (gateway/node.py); the router never imports the gateway.
"""
from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any, Protocol

from switchboard.core.futures import Done
from switchboard.core.metrics import Metric
from switchboard.core.model import CommitResult, MembershipEvent, SendRequest, StoredMessage


class Invalidation(enum.IntEnum):
    """Cached state every node must reload (values are mesh.proto's Invalidate.Kind)."""
    CHAT_MEMBERS = 0
    USER_SETTINGS = 1
    USER_BLOCKS = 2  # key: a user someone blocked or unblocked (who blocked them changed)


class LocalNode(Protocol):
    def deliver(self, chat_id: str, members: Mapping[str, Any], messages: list[StoredMessage]) -> None:
        """Offer a chat's freshly committed messages (seq order) to the connected devices of
        `members` (only the keys matter)."""

    def push(self, users: Collection[str], data: bytes, exclude: tuple[str, str] | None) -> None:
        """An encoded ServerFrame to every connected device of `users` but `exclude` (user, device)."""

    def note_receipt(self, chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        """A watermark change of a chat this node owns: coalesce and push it."""

    def note_delivered(self, chat_id: str, delivered: dict[str, int]) -> None:
        """Delivered watermarks of a chat this node owns that moved (user -> seq; the dict is
        the node's to keep): coalesce and push them."""

    def invalidate(self, kind: Invalidation, key: str, removed: Sequence[str]) -> None:
        """Reload cached state; CHAT_MEMBERS with `removed`: those users' devices recheck where
        their range of the chat ends."""

    def kick(self, user: str, device: str, code: int, reason: str, before_ms: int) -> None:
        """Close the device's connections opened before `before_ms` with `code`."""

    def online_devices(self, user: str) -> set[str]:
        """The user's devices connected here."""

    def sessions(self) -> list[tuple[str, str]]:
        """(user, device) of every open connection: what a re-registered node puts again."""

    def presence_snapshot(self) -> list[tuple[str, bool, int]]:
        """(user, online, last_seen_ms) for every user with a device here: sent to a new peer."""

    def remote_presence(self, node_id: str, states: list[tuple[str, bool, int]],
                        snapshot: bool) -> None:
        """Presence of users through another node; `snapshot` replaces all that node said before."""

    def node_gone(self, node_id: str) -> None:
        """A peer's link went down: whatever it said about presence no longer holds."""

    async def catch_up(self) -> None:
        """Pushes to this node may have been lost (its sessions were invisible, a link was
        down): every connection compares its chats with the store and fills what it missed."""

    def cluster_changed(self) -> None:
        """The ring changed: cached state may have missed broadcasts or belong to chats this
        node no longer owns; reload it all on next use."""

    def move_devices(self, count: int, reconnect_spread_ms: int, settled_ms: int) -> int:
        """Ask up to `count` devices connected here for at least `settled_ms` to reconnect
        elsewhere (Goaway with a delay uniform in [0, reconnect_spread_ms], close 1001);
        returns how many were asked."""


class Router(Protocol):
    sees_every_commit: bool
    """True when every commit of every chat is offered to this node's devices, in commit order
    (one node): a chat's first offer then continues what a device has. False in a cluster,
    where a push can be missed and a chat's first offer must start from the device's stored
    cursor."""

    async def start(self) -> None:
        """Join the cluster (a no-op for a single node)."""

    async def stop(self) -> None:
        """Leave: other nodes take this node's chats at once (links close)."""

    async def close(self) -> None:
        """After the drain closed every connection (their sessions were dropped): release the
        rest (the registry's connections)."""

    def readiness(self) -> dict[str, bool]:
        """The router's own checks for /readyz (name -> passed); empty when it has none."""

    def submit_send(self, send: SendRequest, done: Done) -> None:
        """Hand a send to the chat's owner. Raises DomainError for what is refused at once;
        else `done` (core/futures.py) is called once: with the result when the message is
        durable, or with DomainError or StoreError (UNAVAILABLE: outcome unknown, retry with the
        same client_msg_id). On the owner it is called as the commit settles, no future between."""

    def submit_event(self, chat_id: str, event: MembershipEvent) -> asyncio.Future[CommitResult]:
        """Hand a membership change to the chat's owner, which commits it as the chat's next
        entry in order with its sends; the future has the outcome submit_send's `done` would
        get (UNAVAILABLE: outcome unknown, check the members before repeating it)."""

    def note_receipt(self, chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        """A watermark moved (already persisted): the chat's owner coalesces the pushes."""

    def note_delivered(self, chat_id: str, delivered: dict[str, int]) -> None:
        """A loop turn's delivered watermarks of one chat (user -> seq, its devices' acks; the
        dict is the router's to keep): to the chat's owner, like note_receipt."""

    def push(self, users: Collection[str], data: bytes,
             exclude: tuple[str, str] | None = None) -> None:
        """An encoded ServerFrame to the users' devices wherever they are connected."""

    def invalidate(self, kind: Invalidation, key: str, removed: Sequence[str] = ()) -> None:
        """Every node (this one too) reloads the cached state named."""

    def session_opened(self, user: str, device: str, opened_ms: int) -> Awaitable[bool] | None:
        """Record where the device is before it syncs (so a fan-out that misses the sync finds
        it), and close an older connection of the same device on another node (4010). None:
        nothing to wait for (one node); else await it before the device's first sync: False
        means the session could not be recorded (refuse the device, it would miss pushes)."""

    def session_closed(self, user: str, device: str) -> None:
        """The device's connection here is gone."""

    def presence_changed(self, user: str, online: bool, last_seen_ms: int) -> None:
        """Whether the user is online through this node changed."""

    def kick(self, user: str, device: str, code: int, reason: str) -> None:
        """Close the device's connections on every node (revocation: 4011)."""

    async def online_devices(self, user: str) -> set[str]:
        """The user's devices connected anywhere (as far as this router can tell)."""

    async def last_seen(self, user: str) -> int | None:
        """When the user's last device went, as the cluster's registry knows it (None: ask the
        store)."""

    async def share_usage(self, usage: Mapping[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        """Per-user rate limits across nodes: add what this node let each (kind, user) spend
        since the last call to the cluster's running totals and return those totals (empty
        when this router shares nothing: one node, static peers, or a registry that does not
        answer)."""

    def metrics(self) -> list[Metric]:
        """The router's own numbers for /metrics, each named and documented; none for a single
        node."""
