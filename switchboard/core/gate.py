"""A per-chat FIFO gate for sends that must wait for something before they may go on: what
the owner's checks need being loaded, a membership event before them being committed
(MessageService), the chat's previous owner finishing its sends (router/send_order.py). While a
chat is held its sends queue in arrival order, later ones behind earlier ones; `release` hands
them all on in that order, `take` one at a time, so a device's pipelined sends reach the writer
in the order it sent them. An idle chat costs nothing: only held chats have an entry."""
from __future__ import annotations

from collections import deque

from .errors import RETRY_AFTER_MS, Code, DomainError
from .futures import Done, Submit
from .model import SendRequest


class ChatGate:
    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, deque[tuple[Done, SendRequest]]] = {}

    def __contains__(self, chat_id: str) -> bool:
        return chat_id in self._held

    def __len__(self) -> int:
        """Chats held."""
        return len(self._held)

    def hold(self, send: SendRequest, done: Done) -> None:
        """Queue `send` behind its chat's held sends (holding the chat from now on); `done`
        gets its outcome once it is released and settled."""
        held = self._held.get(send.chat_id)
        if held is None:
            self._held[send.chat_id] = deque([(done, send)])
        else:
            held.append((done, send))

    def release(self, chat_id: str, submit: Submit) -> None:
        """Hand the chat's sends to `submit` in arrival order; what it refuses fails that send
        alone (DomainError as raised, anything else as UNAVAILABLE: retry)."""
        for done, send in self._held.pop(chat_id, ()):
            try:
                submit(send, done)
            except DomainError as exc:
                done(None, exc)
            except Exception as exc:  # the writer closed meanwhile (drain)
                done(None, DomainError(Code.UNAVAILABLE, str(exc), RETRY_AFTER_MS))

    def take(self, chat_id: str) -> tuple[Done, SendRequest] | None:
        """The chat's oldest held send and its completion, out of the gate (the chat is no
        longer held once its last is taken); None when none is held."""
        held = self._held.get(chat_id)
        if held is None:
            return None
        entry = held.popleft()
        if not held:
            del self._held[chat_id]
        return entry
