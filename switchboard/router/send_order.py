"""Send order across an owner change (docs/cluster.md, "Send order across an owner change").

Sends of one chat from this node reach the store in the order they came, also when the chat
changes owner: sends still with the previous owner are let finish first (the new ones wait in
the chat's FIFO gate, then go to the new owner in order), as two writers would otherwise race
and a device's pipelined sends could be stored out of their order.
"""
from __future__ import annotations

from collections.abc import Callable

from switchboard.core.futures import Done
from switchboard.core.gate import ChatGate
from switchboard.core.metrics import Metric, counter
from switchboard.core.model import CommitResult, SendRequest

ToOwner = Callable[[str, SendRequest, Done], None]


class SendOrder:
    def __init__(self, owner: Callable[[str], str], to_owner: ToOwner) -> None:
        """owner(chat_id): the chat's owner now; to_owner(owner, send, done): hand a send to it
        (raises DomainError for what is refused at once, like Router.submit_send)."""
        self._owner = owner
        self._to_owner = to_owner
        # chat -> (owner, mark of the latest send dispatched and not yet settled): what an
        # owner change waits for
        self._flights: dict[str, tuple[str, object]] = {}
        self._held = ChatGate()
        self.held_sends = 0

    def submit(self, send: SendRequest, done: Done) -> None:
        chat_id = send.chat_id
        if chat_id in self._held:
            self.held_sends += 1
            self._held.hold(send, done)
            return
        owner = self._owner(chat_id)
        flight = self._flights.get(chat_id)
        if flight is not None and flight[0] != owner:
            # released when that send settles: no send of the chat is dispatched before then
            self.held_sends += 1
            self._held.hold(send, done)
            return
        self._dispatch(send, done, owner)

    def _dispatch(self, send: SendRequest, done: Done, owner: str | None = None) -> None:
        chat_id = send.chat_id
        owner = self._owner(chat_id) if owner is None else owner
        mark = object()

        def landed(result: CommitResult | None, error: BaseException | None) -> None:
            flight = self._flights.get(chat_id)
            last = flight is not None and flight[1] is mark
            if last:
                del self._flights[chat_id]
            done(result, error)
            if last and chat_id in self._held:
                self._held.release(chat_id, self._dispatch)

        self._to_owner(owner, send, landed)
        self._flights[chat_id] = (owner, mark)  # after: a send refused at once is no flight

    def metrics(self) -> list[Metric]:
        return [counter("cluster_held_sends",
                        "sends held until the chat's previous owner finished its sends",
                        self.held_sends)]
