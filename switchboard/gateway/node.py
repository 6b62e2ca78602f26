"""This gateway as the router sees it (router/base.py LocalNode): what a node does to its own
connections and caches when the cluster, or this node itself, says so."""
from __future__ import annotations

import asyncio
import random
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from switchboard.core.blocks import Blocks
from switchboard.core.chats import ChatService
from switchboard.core.devices import Devices
from switchboard.core.ids import now_ms
from switchboard.core.model import StoredMessage
from switchboard.core.receipts import ReceiptService
from switchboard.core.settings import Settings
from switchboard.core.tasks import TaskGroup
from switchboard.proto.codes import Close
from switchboard.push.service import PushService
from switchboard.router.base import Invalidation

from . import frames
from .hub import Hub
from .presence import PresenceFanout


CATCH_UP_SLICE = 256  # connections whose cursors are read at once


class GatewayNode:
    def __init__(self, hub: Hub, presence: PresenceFanout, chats: ChatService,
                 settings: Settings, devices: Devices, receipts: ReceiptService, blocks: Blocks,
                 push: PushService, tasks: TaskGroup) -> None:
        self._hub = hub
        self._presence = presence
        self._chats = chats
        self._settings = settings
        self._devices = devices
        self._receipts = receipts
        self._blocks = blocks
        self._push = push
        self._tasks = tasks

    def deliver(self, chat_id: str, members: Mapping[str, Any], messages: list[StoredMessage]) -> None:
        self._hub.deliver(chat_id, members, messages)

    def push(self, users: Collection[str], data: bytes, exclude: tuple[str, str] | None) -> None:
        self._hub.push_to_users(users, data, exclude)

    def note_receipt(self, chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        self._receipts.note(chat_id, user, delivered, read, public_read)

    def note_delivered(self, chat_id: str, delivered: dict[str, int]) -> None:
        self._receipts.note_delivered(chat_id, delivered)

    def invalidate(self, kind: Invalidation, key: str, removed: Sequence[str]) -> None:
        if kind is Invalidation.CHAT_MEMBERS:
            self._chats.forget(key)
            self._hub.recheck_chat(key, removed)
        elif kind is Invalidation.USER_SETTINGS:
            self._settings.forget(key)
            self._push.forget(key)  # push tokens and mutes are cached with the settings
            self._tasks.spawn(self._presence.refresh_privacy(key))
        elif kind is Invalidation.USER_BLOCKS:
            self._blocks.forget(key)
            for conn in self._hub.devices_of(key):
                self._tasks.spawn(self._presence.recheck(conn))

    def kick(self, user: str, device: str, code: int, reason: str, before_ms: int) -> None:
        if code == Close.DEVICE_REVOKED:
            self._devices.forget(user, device)
        for conn in self._hub.devices_of(user):
            if conn.device == device and conn.opened_ms < before_ms:
                conn.close(code, reason)

    def online_devices(self, user: str) -> set[str]:
        return {conn.device for conn in self._hub.devices_of(user)}

    def sessions(self) -> list[tuple[str, str]]:
        return [(conn.user, conn.device) for conn in self._hub.all()]

    def presence_snapshot(self) -> list[tuple[str, bool, int]]:
        return self._presence.registry.local_states()

    def remote_presence(self, node_id: str, states: list[tuple[str, bool, int]],
                        snapshot: bool) -> None:
        registry = self._presence.registry
        if snapshot:
            registry.forget_node(node_id)
        for user, online, last_seen_ms in states:
            registry.remote(node_id, user, online, last_seen_ms)

    def node_gone(self, node_id: str) -> None:
        self._presence.registry.forget_node(node_id)

    async def catch_up(self) -> None:
        """In slices, so a node with many connections does not start every store read at once."""
        conns = self._hub.all()
        for start in range(0, len(conns), CATCH_UP_SLICE):
            await asyncio.gather(*(conn.catch_up() for conn in conns[start:start + CATCH_UP_SLICE]))

    def move_devices(self, count: int, reconnect_spread_ms: int, settled_ms: int) -> int:
        settled = now_ms() - settled_ms
        candidates = [conn for conn in self._hub.all() if conn.opened_ms <= settled]
        chosen = random.sample(candidates, min(count, len(candidates)))
        for conn in chosen:
            conn.send_frame(frames.goaway(random.randint(0, reconnect_spread_ms),
                                          "rebalancing: reconnect to another gateway"))
            conn.close(Close.GOING_AWAY, "rebalancing")
        return len(chosen)

    def cluster_changed(self) -> None:
        for service in (self._chats, self._settings, self._devices, self._receipts, self._blocks):
            service.forget_all()
        self._push.ring_changed()
