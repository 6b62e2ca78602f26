"""Reference twin of switchboard.core._native.acks, for tests only: the same dicts kept with
plain Python."""
from __future__ import annotations

from collections.abc import Callable


class AckBatch:
    def __init__(self, on_ready: Callable[[], None]) -> None:
        self.on_ready = on_ready
        self.ready = False
        self.cursors: dict[tuple[str, str, str], int] = {}
        self.by_chat: dict[str, dict[str, int]] = {}

    def add(self, user: str, device: str, chat: str, seq: int) -> None:
        _raise(self.cursors, (user, device, chat), seq)
        _raise(self.by_chat.setdefault(chat, {}), user, seq)
        if not self.ready:
            self.ready = True
            self.on_ready()

    def take(self) -> tuple[dict, dict]:
        batch = (self.cursors, self.by_chat)
        self.cursors, self.by_chat = {}, {}
        self.ready = False
        return batch


def _raise(into: dict, key, seq: int) -> None:
    if seq > into.get(key, -1):
        into[key] = seq


def raise_all(into: dict, source: dict) -> None:
    for key, seq in source.items():
        _raise(into, key, seq)


def raise_by_chat(into: dict, by_chat: dict[str, dict[str, int]]) -> None:
    for chat, users in by_chat.items():
        for user, seq in users.items():
            _raise(into, (chat, user), seq)
