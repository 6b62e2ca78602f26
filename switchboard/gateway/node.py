"""This gateway as the router sees it (router/base.py LocalNode): what a node does to its own
connections and caches when the cluster, or this node itself, says so."""
from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from switchboard.core.model import StoredMessage
from switchboard.router.base import Invalidation

from .connection import Close

CATCH_UP_SLICE = 256  # connections whose cursors are read at once

if TYPE_CHECKING:
    from .server import Gateway


class GatewayNode:
    def __init__(self, gw: Gateway) -> None:
        self._gw = gw

    def deliver(self, chat_id: str, members: Mapping[str, Any], messages: list[StoredMessage]) -> None:
        self._gw.hub.deliver(chat_id, members, messages)

    def push(self, users: Collection[str], data: bytes, exclude: tuple[str, str] | None) -> None:
        self._gw.hub.push_to_users(users, data, exclude)

    def note_receipt(self, chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        self._gw.services.receipts.note(chat_id, user, delivered, read, public_read)

    def invalidate(self, kind: Invalidation, key: str, removed: Sequence[str]) -> None:
        gw = self._gw
        if kind is Invalidation.CHAT_MEMBERS:
            gw.services.chats.forget(key)
            gw.hub.recheck_chat(key, removed)
        elif kind is Invalidation.USER_SETTINGS:
            gw.services.settings.forget(key)
            gw.spawn(gw.presence.refresh_privacy(key))
        elif kind is Invalidation.USER_BLOCKS:
            gw.services.blocks.forget(key)
            for conn in gw.hub.devices_of(key):
                gw.spawn(gw.presence.recheck(conn))

    def kick(self, user: str, device: str, code: int, reason: str, before_ms: int) -> None:
        if code == Close.DEVICE_REVOKED:
            self._gw.services.devices.forget(user, device)
        for conn in self._gw.hub.devices_of(user):
            if conn.device == device and conn.opened_ms < before_ms:
                conn.close(code, reason)

    def online_devices(self, user: str) -> set[str]:
        return {conn.device for conn in self._gw.hub.devices_of(user)}

    def sessions(self) -> list[tuple[str, str]]:
        return [(conn.user, conn.device) for conn in self._gw.hub.all()]

    def presence_snapshot(self) -> list[tuple[str, bool, int]]:
        return self._gw.presence.registry.local_states()

    def remote_presence(self, node_id: str, states: list[tuple[str, bool, int]],
                        snapshot: bool) -> None:
        registry = self._gw.presence.registry
        if snapshot:
            registry.forget_node(node_id)
        for user, online, last_seen_ms in states:
            registry.remote(node_id, user, online, last_seen_ms)

    def node_gone(self, node_id: str) -> None:
        self._gw.presence.registry.forget_node(node_id)

    async def catch_up(self) -> None:
        """In slices, so a node with many connections does not start every store read at once."""
        conns = self._gw.hub.all()
        for start in range(0, len(conns), CATCH_UP_SLICE):
            await asyncio.gather(*(conn.catch_up() for conn in conns[start:start + CATCH_UP_SLICE]))

    def cluster_changed(self) -> None:
        services = self._gw.services
        for service in (services.chats, services.settings, services.devices, services.receipts,
                        services.blocks):
            service.forget_all()
