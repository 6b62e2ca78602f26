"""Single-node routing: this process owns every chat, so a send goes straight to the local
MessageService and a committed batch is delivered to local connections only."""
from __future__ import annotations

import asyncio

from switchboard.core.messaging import MessageService
from switchboard.core.model import CommitResult

from .base import LocalDelivery


class LocalRouter:
    def __init__(self, messages: MessageService) -> None:
        self._messages = messages

    def submit_send(self, user: str, device: str, chat_id: str, client_msg_id: str, body: bytes,
                    media_ids: list[str]) -> asyncio.Future[CommitResult]:
        return self._messages.submit_send(user, device, chat_id, client_msg_id, body, media_ids)

    def set_local_delivery(self, deliver: LocalDelivery) -> None:
        self._messages.set_fanout(deliver)
