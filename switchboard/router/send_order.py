"""Send order across an owner change (docs/cluster.md, "Send order across an owner change").

Sends of one chat from this node reach the store in the order they came, also when the chat
changes owner: sends still with the previous owner are let finish first (the new ones wait in
the chat's FIFO gate, then go to the new owner in order), as two writers would otherwise race
and a device's pipelined sends could be stored out of their order.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from switchboard.core.gate import ChatGate
from switchboard.core.metrics import Metric, counter
from switchboard.core.model import CommitResult, SendRequest

ToOwner = Callable[[str, SendRequest], "asyncio.Future[CommitResult]"]


class SendOrder:
    def __init__(self, owner: Callable[[str], str], to_owner: ToOwner) -> None:
        """owner(chat_id): the chat's owner now; to_owner(owner, send): hand a send to it."""
        self._owner = owner
        self._to_owner = to_owner
        # chat -> (owner, future of the latest send dispatched): what an owner change waits for
        self._flights: dict[str, tuple[str, asyncio.Future]] = {}
        self._held = ChatGate()
        self.held_sends = 0

    def submit(self, send: SendRequest) -> asyncio.Future[CommitResult]:
        chat_id = send.chat_id
        if chat_id in self._held:
            self.held_sends += 1
            return self._held.hold(send)
        owner = self._owner(chat_id)
        flight = self._flights.get(chat_id)
        if flight is not None and flight[0] != owner and not flight[1].done():
            self.held_sends += 1
            future = self._held.hold(send)
            flight[1].add_done_callback(lambda _: self._held.release(chat_id, self._dispatch))
            return future
        return self._dispatch(send, owner)

    def _dispatch(self, send: SendRequest, owner: str | None = None) -> asyncio.Future[CommitResult]:
        chat_id = send.chat_id
        owner = self._owner(chat_id) if owner is None else owner
        future = self._to_owner(owner, send)
        self._flights[chat_id] = (owner, future)
        future.add_done_callback(partial(self._landed, chat_id))
        return future

    def _landed(self, chat_id: str, future: asyncio.Future) -> None:
        flight = self._flights.get(chat_id)
        if flight is not None and flight[1] is future:
            del self._flights[chat_id]

    def metrics(self) -> list[Metric]:
        return [counter("cluster_held_sends",
                        "sends held until the chat's previous owner finished its sends",
                        self.held_sends)]
