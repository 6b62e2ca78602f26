"""A per-chat FIFO gate for sends that must wait for something before they may go on: the
chat's member map being loaded (MessageService), the chat's previous owner finishing its sends
(router/send_order.py). While a chat is held its sends queue in arrival order, later ones
behind earlier ones; `release` hands them on in that order, so a device's pipelined sends reach
the writer in the order it sent them. An idle chat costs nothing: only held chats have an
entry."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from .errors import RETRY_AFTER_MS, Code, DomainError
from .futures import settle
from .model import CommitResult, SendRequest

Submit = Callable[[SendRequest], "asyncio.Future[CommitResult]"]


class ChatGate:
    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, list[tuple[asyncio.Future[CommitResult], SendRequest]]] = {}

    def __contains__(self, chat_id: str) -> bool:
        return chat_id in self._held

    def __len__(self) -> int:
        """Chats held."""
        return len(self._held)

    def hold(self, send: SendRequest) -> asyncio.Future[CommitResult]:
        """Queue `send` behind its chat's held sends (holding the chat from now on); the
        future gets the outcome of the send once released."""
        future = asyncio.get_running_loop().create_future()
        held = self._held.get(send.chat_id)
        if held is None:
            self._held[send.chat_id] = [(future, send)]
        else:
            held.append((future, send))
        return future

    def release(self, chat_id: str, submit: Submit) -> None:
        """Hand the chat's sends to `submit` in arrival order; what it refuses fails that send
        alone (DomainError as raised, anything else as UNAVAILABLE: retry)."""
        for future, send in self._held.pop(chat_id, ()):
            if future.done():
                continue
            try:
                inner = submit(send)
            except DomainError as exc:
                future.set_exception(exc)
                continue
            except Exception as exc:  # the writer closed meanwhile (drain)
                future.set_exception(DomainError(Code.UNAVAILABLE, str(exc), RETRY_AFTER_MS))
                continue
            inner.add_done_callback(partial(settle, future))

    def fail(self, chat_id: str, exc: BaseException) -> None:
        """Fail every send of the chat with `exc`."""
        for future, _ in self._held.pop(chat_id, ()):
            if not future.done():
                future.set_exception(exc)
