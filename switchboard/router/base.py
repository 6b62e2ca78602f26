"""What the gateway needs from the cluster, whatever its size.

`LocalRouter` (one node owns every chat) implements it today; the mesh router of cluster mode
implements the same methods by forwarding to the chat's owner node.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Callable, Protocol

from switchboard.core.model import CommitResult, Membership, StoredMessage

LocalDelivery = Callable[[str, Mapping[str, Membership], list[StoredMessage]], None]
"""deliver(chat_id, members, messages) to this node's connected devices."""


class Router(Protocol):
    def submit_send(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                    media_ids: list[str]) -> asyncio.Future[CommitResult]:
        """Hand a send to the chat's owner. Raises DomainError for what is refused at once; the
        future resolves when the message is durable (or fails: outcome unknown, retry with the
        same client_msg_id)."""

    def set_local_delivery(self, deliver: LocalDelivery) -> None:
        """Where committed messages for this node's devices go."""
