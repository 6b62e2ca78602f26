"""This node's connected devices: user -> device -> Connection, and local fan-out.

A user with one device here (the common case) is kept as that Connection alone, a user with
several as a dict by device: a dict per user is ~185 bytes per connection, on a host where
memory per idle connection is what limits it.

Fan-out of a large group is sliced: the offers of one commit go out FANOUT_SLICE recipients per
loop turn, so the event loop stays responsive (SendAcks, other chats, acks) while a group of
10,000 gets its message, and the frames of each slice leave in that turn's writes. Fan-outs
queue behind one being sliced, so every chat's commits still reach each device in commit order.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from switchboard.core.model import StoredMessage
from switchboard.core.session import deliver_frames, offer_each

if TYPE_CHECKING:
    from .connection import Connection


FANOUT_SLICE = 500  # recipients offered a commit per loop turn


class _FanOut:
    """A commit being offered to a large group, slice by slice."""
    __slots__ = ("chat_id", "users", "messages", "chunks", "done")

    def __init__(self, chat_id: str, users: list[str], messages: list[StoredMessage],
                 chunks: list) -> None:
        self.chat_id = chat_id
        self.users = users
        self.messages = messages
        self.chunks = chunks
        self.done = 0  # users offered so far


class Hub:
    def __init__(self, max_frame_bytes: int) -> None:
        # user -> its one connection here, or its connections by device
        self._by_user: dict[str, Connection | dict[str, Connection]] = {}
        self._max_frame_bytes = max_frame_bytes
        self._fanouts: deque[_FanOut] = deque()
        self.connections = 0

    def add(self, conn: Connection) -> Connection | None:
        """Register an authenticated connection; returns the one it replaces (same device)."""
        by_user = self._by_user
        devices = by_user.get(conn.user)
        if devices is None:
            by_user[conn.user] = conn
            old = None
        elif isinstance(devices, dict):
            old = devices.get(conn.device)
            devices[conn.device] = conn
        elif devices.device == conn.device:
            by_user[conn.user] = conn
            old = devices
        else:
            by_user[conn.user] = {devices.device: devices, conn.device: conn}
            old = None
        if old is None:
            self.connections += 1
        return old

    def remove(self, conn: Connection) -> None:
        by_user = self._by_user
        devices = by_user.get(conn.user)
        if devices is conn:
            del by_user[conn.user]
        elif isinstance(devices, dict) and devices.get(conn.device) is conn:
            del devices[conn.device]
            if len(devices) == 1:
                by_user[conn.user] = next(iter(devices.values()))
        else:
            return
        self.connections -= 1

    def devices_of(self, user: str) -> list[Connection]:
        devices = self._by_user.get(user)
        if devices is None:
            return []
        return list(devices.values()) if isinstance(devices, dict) else [devices]

    def all(self) -> list[Connection]:
        conns: list[Connection] = []
        for devices in self._by_user.values():
            if isinstance(devices, dict):
                conns.extend(devices.values())
            else:
                conns.append(devices)
        return conns

    def deliver(self, chat_id: str, members: Mapping[str, object],
                messages: list[StoredMessage]) -> None:
        """Offer a chat's freshly committed messages to every connected device of its members:
        at once for a small group (walking whichever is smaller, the member map or the
        connected users), in slices across loop turns for a large one."""
        chunks = deliver_frames(messages, self._max_frame_bytes)
        if self._fanouts or len(members) > FANOUT_SLICE:
            self._fanouts.append(_FanOut(chat_id, list(members), messages, chunks))
            if len(self._fanouts) == 1:
                asyncio.get_running_loop().call_soon(self._next_slice)
            return
        by_user = self._by_user
        users = (list(members) if len(members) <= len(by_user)
                 else [user for user in by_user if user in members])
        offer_each(by_user, users, 0, len(users), chat_id, messages, chunks)

    def _next_slice(self) -> None:
        """Offer the next FANOUT_SLICE recipients of the queued fan-outs, then yield the loop."""
        budget = FANOUT_SLICE
        by_user = self._by_user
        fanouts = self._fanouts
        while fanouts and budget:
            job = fanouts[0]
            end = min(len(job.users), job.done + budget)
            offer_each(by_user, job.users, job.done, end, job.chat_id, job.messages, job.chunks)
            budget -= end - job.done
            job.done = end
            if end == len(job.users):
                fanouts.popleft()
        if fanouts:
            asyncio.get_running_loop().call_soon(self._next_slice)

    def push_to_users(self, users: Iterable[str], data: bytes,
                      exclude: tuple[str, str] | None = None) -> None:
        """One frame to every connected device of the users but `exclude` (user, device)."""
        for user in users:
            for conn in self.devices_of(user):
                if exclude is None or (conn.user, conn.device) != exclude:
                    conn.send_frame(data)

    def recheck_chat(self, chat_id: str, users: list[str]) -> None:
        """Members left the chat: their connections read where their range of it ends before
        they send any more of it (its tail up to their removal is still theirs)."""
        for user in users:
            for conn in self.devices_of(user):
                conn.recheck_chat(chat_id)
