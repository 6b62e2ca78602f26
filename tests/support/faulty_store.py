"""A Store wrapper that injects commit faults in front of a real store (RELIABILITY.md F8).

Knobs, all for `commit` (every other method delegates untouched):
* `hold()` / `release()`: commits wait at a gate, so a test can keep a flush in flight for as
  long as it needs; `held` counts the commits waiting there.
* `fail_next_commits(n, exc)`: the next n commits raise without touching the store.
* `apply_then_raise(n)`: the next n commits are applied, then raise StoreError - a timeout
  whose write in fact landed (outcome unknown to the caller).
`batches` records every batch passed to commit, in call order, whatever its outcome.
"""
from __future__ import annotations

import asyncio
from typing import Iterable

from switchboard.core.model import (Backlog, Batch, Chat, ChatSummaryRow, CommitResult,
                                    Membership, Role, StoredMessage)
from switchboard.core.store import Store, StoreError


class FaultyStore(Store):
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.batches: list[Batch] = []
        self.held = 0
        self._gate: asyncio.Event | None = None
        self._failures: list[BaseException] = []
        self._apply_then_raise = 0

    # ------------------------------------------------------------------ knobs
    def hold(self) -> None:
        if self._gate is None:
            self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def fail_next_commits(self, n: int, exc: BaseException | None = None) -> None:
        self._failures.extend(exc or StoreError("injected commit failure") for _ in range(n))

    def apply_then_raise(self, n: int = 1) -> None:
        self._apply_then_raise += n

    # ------------------------------------------------------------------ faulty path
    async def commit(self, batch: Batch) -> list[CommitResult]:
        self.batches.append(batch)
        gate = self._gate
        if gate is not None:
            self.held += 1
            try:
                await gate.wait()
            finally:
                self.held -= 1
        if self._failures:
            raise self._failures.pop(0)
        results = await self.inner.commit(batch)
        if self._apply_then_raise:
            self._apply_then_raise -= 1
            raise StoreError("injected timeout after the commit was applied")
        return results

    # ------------------------------------------------------------------ delegation
    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def read_messages(self, chat_id: str, after_seq: int, limit: int) -> list[StoredMessage]:
        return await self.inner.read_messages(chat_id, after_seq, limit)

    async def read_history(self, chat_id: str, before_seq: int, floor_seq: int,
                           limit: int) -> list[StoredMessage]:
        return await self.inner.read_history(chat_id, before_seq, floor_seq, limit)

    async def head_seq(self, chat_id: str) -> int:
        return await self.inner.head_seq(chat_id)

    async def create_chat(self, chat: Chat, members: dict[str, Role]) -> Chat:
        return await self.inner.create_chat(chat, members)

    async def get_chat(self, chat_id: str) -> Chat | None:
        return await self.inner.get_chat(chat_id)

    async def members(self, chat_id: str) -> dict[str, Membership]:
        return await self.inner.members(chat_id)

    async def add_members(self, chat_id: str, users: dict[str, Role]) -> dict[str, Membership]:
        return await self.inner.add_members(chat_id, users)

    async def remove_members(self, chat_id: str, users: Iterable[str]) -> dict[str, Membership]:
        return await self.inner.remove_members(chat_id, users)

    async def list_chats(self, user_id: str) -> list[ChatSummaryRow]:
        return await self.inner.list_chats(user_id)

    async def backlog(self, user_id: str, device_id: str) -> list[Backlog]:
        return await self.inner.backlog(user_id, device_id)

    async def read_seq(self, chat_id: str, user_id: str) -> int:
        return await self.inner.read_seq(chat_id, user_id)
