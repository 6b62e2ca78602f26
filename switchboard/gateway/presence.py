"""Presence updates to subscribers only, coalesced and filtered by the subject's privacy.

A device subscribes to the users it shows (contact list, open chat); nothing goes to whole
groups. Changes mark the subject dirty and a flush every `interval` sends each subscriber at
most one update per subject, and only when what it would see changed: a device that flaps 200
times a second costs each subscriber at most one update per interval.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from switchboard.core.chats import ChatService, direct_chat_id
from switchboard.core.ids import valid_id
from switchboard.core.model import Visibility
from switchboard.core.receipts import Settings
from switchboard.core.store import Store
from switchboard.proto.v1 import client_pb2 as pb
from switchboard.router.presence import PresenceRegistry

if TYPE_CHECKING:
    from .connection import Connection

HIDDEN = (False, 0)


class PresenceFanout:
    def __init__(self, store: Store, chats: ChatService, settings: Settings, *,
                 interval: float, max_subscriptions: int) -> None:
        self._store = store
        self._chats = chats
        self._settings = settings
        self.interval = interval
        self.max_subscriptions = max_subscriptions
        self.registry = PresenceRegistry(self.changed)
        self._subscribers: dict[str, set[Connection]] = {}
        self._dirty: set[str] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self.updates_sent = 0

    # ------------------------------------------------------------------ subscriptions
    async def subscribe(self, conn: Connection, subjects: list[str]) -> None:
        subs = conn.presence if conn.presence is not None else {}
        fresh = [s for s in dict.fromkeys(subjects) if s not in subs]
        if len(subs) + len(fresh) > self.max_subscriptions:
            raise ValueError(f"at most {self.max_subscriptions} presence subscriptions")
        bad = next((s for s in fresh if not valid_id(s)), None)
        if bad is not None:
            raise ValueError(f"bad user id {bad[:64]!r}")
        conn.presence = subs
        for subject in fresh:
            allowed = await self._allowed(conn.user, subject)
            state = await self._state(subject) if allowed else HIDDEN
            if not conn.registered:  # closed while we looked: drop() has run already
                return
            subs[subject] = state if allowed else None
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
            if conn.presence is None or subject not in conn.presence:
                continue
            allowed = await self._allowed(conn.user, subject)
            state = await self._state(subject) if allowed else HIDDEN
            if conn.presence is None or subject not in conn.presence:
                continue  # closed or unsubscribed while we looked
            if conn.presence.get(subject) != (state if allowed else None):
                conn.presence[subject] = state if allowed else None
                conn.send_frame(_frame(subject, state))

    # ------------------------------------------------------------------ changes
    def changed(self, subject: str) -> None:
        if subject not in self._subscribers:
            return
        self._dirty.add(subject)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self.interval, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for subject in dirty:
            online = self.registry.is_online(subject)
            state = (online, 0 if online else (self.registry.last_seen(subject) or 0))
            for conn in tuple(self._subscribers.get(subject, ())):
                subs = conn.presence
                if subs is None or subs.get(subject) is None or subs[subject] == state:
                    continue
                subs[subject] = state
                conn.send_frame(_frame(subject, state))
                self.updates_sent += 1

    # ------------------------------------------------------------------ privacy
    async def _allowed(self, viewer: str, subject: str) -> bool:
        if viewer == subject:
            return True
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
        return False, last if last is not None else await self._store.last_seen(subject)


def _frame(subject: str, state: tuple[bool, int]) -> bytes:
    return pb.ServerFrame(presence=pb.Presence(
        user_id=subject, online=state[0], last_seen_ms=state[1])).SerializeToString()
