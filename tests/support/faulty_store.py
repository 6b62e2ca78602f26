"""A Store wrapper that injects commit faults in front of a real store (docs/guarantees.md F8).

Knobs, all for `commit` (every other method delegates untouched):
* `hold()` / `release()`: commits wait at a gate, so a test can keep a flush in flight for as
  long as it needs; `held` counts the commits waiting there.
* `fail_next_commits(n, exc)`: the next n commits raise without touching the store.
* `apply_then_raise(n)`: the next n commits are applied, then raise StoreError - a timeout
  whose write in fact landed (outcome unknown to the caller).
* `fail_chats(n, *chat_ids)`: the next n commits that write to those chats (a message or a
  watermark) fail those chats alone, the way a partitioned store does: their messages and the
  watermarks keyed on them are not written (results None, `failed[chat]` set, watermarks back in `unsaved`); the
  rest of the batch is committed.
`batches` records every batch passed to commit, in call order, whatever its outcome.
"""
from __future__ import annotations

import asyncio

from switchboard.core.model import Batch, CommitOutcome
from switchboard.core.store import Store, StoreError


class FaultyStore(Store):
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.batches: list[Batch] = []
        self.held = 0
        self._gate: asyncio.Event | None = None
        self._failures: list[BaseException] = []
        self._apply_then_raise = 0
        self._failing_chats: list[frozenset[str]] = []

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

    def fail_chats(self, n: int, *chat_ids: str) -> None:
        self._failing_chats.extend(frozenset(chat_ids) for _ in range(n))

    # ------------------------------------------------------------------ faulty path
    async def commit(self, batch: Batch) -> CommitOutcome:
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
        if self._failing_chats and self._failing_chats[0] & _chats_of(batch):
            return await self._commit_all_but(batch, self._failing_chats.pop(0))
        outcome = await self.inner.commit(batch)
        if self._apply_then_raise:
            self._apply_then_raise -= 1
            raise StoreError("injected timeout after the commit was applied")
        return outcome

    async def _commit_all_but(self, batch: Batch, failing: frozenset[str]) -> CommitOutcome:
        kept, unsaved = Batch(), Batch()
        kept.messages = [m for m in batch.messages if m.chat_id not in failing]
        for name, chat_of in _WATERMARKS:
            for key, seq in getattr(batch, name).items():
                getattr(unsaved if chat_of(key) in failing else kept, name)[key] = seq
        inner = await self.inner.commit(kept)
        committed = iter(inner.results)
        results = [None if m.chat_id in failing else next(committed) for m in batch.messages]
        failed = {**inner.failed, **{m.chat_id: StoreError(f"injected failure of {m.chat_id}")
                                     for m in batch.messages if m.chat_id in failing}}
        for name, _ in _WATERMARKS:
            getattr(unsaved, name).update(getattr(inner.unsaved, name))
        return CommitOutcome(results, failed, unsaved)


_WATERMARKS = (("cursors", lambda key: key[2]), ("reads", lambda key: key[0]),
               ("delivered", lambda key: key[0]), ("public_reads", lambda key: key[0]))


def _chats_of(batch: Batch) -> set[str]:
    """Every chat the batch writes to: its messages' and its watermarks'."""
    chats = {m.chat_id for m in batch.messages}
    for name, chat_of in _WATERMARKS:
        chats.update(chat_of(key) for key in getattr(batch, name))
    return chats


def _delegate(name: str):
    async def method(self: FaultyStore, *args, **kwargs):
        return await getattr(self.inner, name)(*args, **kwargs)
    method.__name__ = name
    return method


# Everything but commit goes straight to the real store; generated so that it follows the
# interface as it grows.
for _name in Store.__abstractmethods__ - {"commit"}:
    setattr(FaultyStore, _name, _delegate(_name))
FaultyStore.__abstractmethods__ = frozenset()
