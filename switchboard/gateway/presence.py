"""Presence updates to subscribers only, coalesced and filtered by the subject's privacy.

A device subscribes to the users it shows (contact list, open chat); nothing goes to whole
groups. Changes mark the subject dirty and a flush every `interval` sends each subscriber at
most one update per subject, and only when what it would see changed: a device that flaps 200
times a second costs each subscriber at most one update per interval.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from switchboard.core.blocks import Blocks
from switchboard.core.chats import ChatService, direct_chat_id
from switchboard.core.ids import valid_id
from switchboard.core.model import Visibility
from switchboard.core.remote_users import RemoteUsers
from switchboard.core.settings import Settings
from switchboard.core.store import Store
from switchboard.proto.v1 import client_pb2 as pb

from .presence_registry import LocalChange, PresenceRegistry
if TYPE_CHECKING:
    from .connection import Connection

HIDDEN = (False, 0)


class PresenceFanout:
    def __init__(self, store: Store, chats: ChatService, settings: Settings, blocks: Blocks, *,
                 interval: float, max_subscriptions: int, on_local_change: LocalChange,
                 shared_last_seen: Callable[[str], Awaitable[int | None]],
                 remote: RemoteUsers | None = None) -> None:
        """on_local_change: whether a user is online through this node flipped (tell the other
        nodes); shared_last_seen: last seen as the cluster's registry knows it (another node
        saw the user go), asked before the store; remote: the other nodes' users, shared with
        the router."""
        self._store = store
        self._chats = chats
        self._settings = settings
        self._blocks = blocks
        self.interval = interval
        self.max_subscriptions = max_subscriptions
        self.registry = PresenceRegistry(self.changed, on_local_change, remote=remote)
        self._subscribers: dict[str, set[Connection]] = {}
        self._dirty: dict[str, float] = {}  # subject -> when it first changed since its last flush
        self._flush_handle: asyncio.TimerHandle | None = None
        self.updates_sent = 0
        self._shared_last_seen = shared_last_seen

    # ------------------------------------------------------------------ subscriptions
    def check(self, conn: Connection, subjects: list[str]) -> list[str]:
        """The subjects not yet subscribed; ValueError for a bad id or over the limit."""
        subs = conn.presence or {}
        fresh = [s for s in dict.fromkeys(subjects) if s not in subs]
        bad = next((s for s in fresh if not valid_id(s)), None)
        if bad is not None:
            raise ValueError(f"bad user id {bad[:64]!r}")
        if len(subs) + len(fresh) > self.max_subscriptions:
            raise ValueError(f"at most {self.max_subscriptions} presence subscriptions")
        return fresh

    async def subscribe(self, conn: Connection, fresh: list[str]) -> None:
        """Subscribe to `fresh` (from check()) and send each subject's current state."""
        if conn.presence is None:
            conn.presence = {}
        for subject in fresh:
            allowed = await self._allowed(conn.user, subject)
            state = await self._state(subject) if allowed else HIDDEN
            if not conn.registered:  # closed while we looked: drop() has run already
                return
            conn.presence[subject] = state if allowed else None
            self._subscribers.setdefault(subject, set()).add(conn)
            conn.send_frame(_frame(subject, state))

    def unsubscribe(self, conn: Connection, subjects: list[str]) -> None:
        for subject in subjects:
            if conn.presence and conn.presence.pop(subject, 0) != 0:
                self._discard(subject, conn)

    def drop(self, conn: Connection) -> None:
        if conn.presence:
            for subject in conn.presence:
                self._discard(subject, conn)
            conn.presence = None

    def _discard(self, subject: str, conn: Connection) -> None:
        conns = self._subscribers.get(subject)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._subscribers[subject]

    async def refresh_privacy(self, subject: str) -> None:
        """The subject changed who may see them: re-decide for every current subscriber."""
        for conn in list(self._subscribers.get(subject, ())):
            await self._redecide(conn, subject)

    async def recheck(self, conn: Connection) -> None:
        """Who blocked the connection's user changed: re-decide each of its subscriptions."""
        for subject in list(conn.presence or ()):
            await self._redecide(conn, subject)

    async def _redecide(self, conn: Connection, subject: str) -> None:
        if conn.presence is None or subject not in conn.presence:
            return
        allowed = await self._allowed(conn.user, subject)
        state = await self._state(subject) if allowed else HIDDEN
        if conn.presence is None or subject not in conn.presence:
            return  # closed or unsubscribed while we looked
        if conn.presence.get(subject) != (state if allowed else None):
            conn.presence[subject] = state if allowed else None
            conn.send_frame(_frame(subject, state))

    # ------------------------------------------------------------------ changes
    def changed(self, subject: str) -> None:
        """A subject's update goes out `interval` after its first change, carrying the state at
        that moment: flaps in between cost nothing, and a device that goes invisible right after
        connecting is never seen online."""
        if subject not in self._subscribers or subject in self._dirty:
            return
        loop = asyncio.get_running_loop()
        self._dirty[subject] = loop.time()
        if self._flush_handle is None:
            self._flush_handle = loop.call_later(self.interval, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        loop = asyncio.get_running_loop()
        due_before = loop.time() - self.interval + 1e-3
        due = [subject for subject, since in self._dirty.items() if since <= due_before]
        for subject in due:
            del self._dirty[subject]
            self._send_state(subject)
        if self._dirty:
            wait = min(self._dirty.values()) + self.interval - loop.time()
            self._flush_handle = loop.call_later(max(wait, 0.0), self._flush)

    def _send_state(self, subject: str) -> None:
        online = self.registry.is_online(subject)
        state = (online, 0 if online else (self.registry.last_seen(subject) or 0))
        for conn in tuple(self._subscribers.get(subject, ())):
            subs = conn.presence
            if subs is None or subs.get(subject) is None or subs[subject] == state:
                continue
            subs[subject] = state
            conn.send_frame(_frame(subject, state))
            self.updates_sent += 1

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    # ------------------------------------------------------------------ privacy
    async def _allowed(self, viewer: str, subject: str) -> bool:
        if viewer == subject:
            return True
        if subject in await self._blocks.blockers(viewer):
            return False
        visibility = (await self._settings.get(subject)).last_seen
        if visibility is Visibility.EVERYONE:
            return True
        if visibility is Visibility.NOBODY:
            return False
        members = await self._chats.members(direct_chat_id(viewer, subject))
        return viewer in members and subject in members

    async def _state(self, subject: str) -> tuple[bool, int]:
        if self.registry.is_online(subject):
            return True, 0
        last = self.registry.last_seen(subject)
        if last is None:
            last = await self._shared_last_seen(subject)
        return False, last if last is not None else await self._store.last_seen(subject)


def _frame(subject: str, state: tuple[bool, int]) -> bytes:
    return pb.ServerFrame(presence=pb.Presence(
        user_id=subject, online=state[0], last_seen_ms=state[1])).SerializeToString()
