"""This node's connected devices: user -> device -> Connection, and local fan-out."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from switchboard.core.model import StoredMessage

from . import frames

if TYPE_CHECKING:
    from .connection import Connection


class Hub:
    def __init__(self, max_frame_bytes: int) -> None:
        self._by_user: dict[str, dict[str, Connection]] = {}
        self._max_frame_bytes = max_frame_bytes
        self.connections = 0

    def add(self, conn: Connection) -> Connection | None:
        """Register an authenticated connection; returns the one it replaces (same device)."""
        devices = self._by_user.setdefault(conn.user, {})
        old = devices.get(conn.device)
        devices[conn.device] = conn
        if old is None:
            self.connections += 1
        return old

    def remove(self, conn: Connection) -> None:
        devices = self._by_user.get(conn.user)
        if devices is None or devices.get(conn.device) is not conn:
            return
        del devices[conn.device]
        self.connections -= 1
        if not devices:
            del self._by_user[conn.user]

    def devices_of(self, user: str) -> list[Connection]:
        return list(self._by_user.get(user, {}).values())

    def all(self) -> list[Connection]:
        return [conn for devices in self._by_user.values() for conn in devices.values()]

    def deliver(self, chat_id: str, members: Mapping[str, object],
                messages: list[StoredMessage]) -> None:
        """Offer a chat's freshly committed messages to every connected device of its members.
        Walks whichever is smaller: the member map or the connected users."""
        chunks = frames.deliver(messages, self._max_frame_bytes)
        by_user = self._by_user
        if len(members) <= len(by_user):
            targets = (by_user.get(user) for user in members)
        else:
            targets = (devices for user, devices in by_user.items() if user in members)
        for devices in targets:
            if devices:
                # a copy: an offer may close a slow connection, which unregisters it
                for conn in tuple(devices.values()):
                    conn.offer(chat_id, messages, chunks)

    def push_to_users(self, users: Iterable[str], data: bytes,
                      exclude: tuple[str, str] | None = None) -> None:
        """One frame to every connected device of the users but `exclude` (user, device)."""
        by_user = self._by_user
        for user in users:
            devices = by_user.get(user)
            if devices:
                for conn in tuple(devices.values()):
                    if exclude is None or (conn.user, conn.device) != exclude:
                        conn.send_frame(data)

    def recheck_chat(self, chat_id: str, users: list[str]) -> None:
        """Members left the chat: their connections read where their range of it ends before
        they send any more of it (its tail up to their removal is still theirs)."""
        for user in users:
            for conn in self.devices_of(user):
                conn.recheck_chat(chat_id)
