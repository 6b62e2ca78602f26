"""Blocking: who blocked whom, with the reverse view cached for the checks that need it.

Every check asks "who blocked this user?": may they send in a direct chat, create one, see a
user's presence, see a member's reads. So each user's blockers are cached (an LRU of users; a
user blocked by nobody costs one shared empty set). A block changes the blocked user's entry,
which every node drops through the router's invalidation (USER_BLOCKS, keyed by that user).
"""
from __future__ import annotations

from .errors import Code, DomainError
from .ids import valid_id
from .lru import LRU
from .store import Store

NOBODY: frozenset[str] = frozenset()


class Blocks:
    def __init__(self, store: Store, *, max_blocked: int = 1000,
                 cache_users: int = 100_000) -> None:
        self._store = store
        self.max_blocked = max_blocked
        self._blockers: LRU[str, frozenset[str]] = LRU(cache_users)

    def cached_blockers(self, user_id: str) -> frozenset[str] | None:
        """Who blocked the user, if this process holds it (the send path does not wait)."""
        return self._blockers.use(user_id)

    async def blockers(self, user_id: str) -> frozenset[str]:
        found = self._blockers.use(user_id)
        if found is None:
            found = frozenset(await self._store.blockers(user_id)) or NOBODY
            self._blockers.put(user_id, found)
        return found

    async def block(self, user_id: str, other: str) -> None:
        """user_id blocks other (again: no change). INVALID_ARGUMENT for a bad id, yourself, or
        a list already holding max_blocked users."""
        _check(user_id, other)
        blocked = await self._store.blocked(user_id)
        if other not in blocked and len(blocked) >= self.max_blocked:
            raise DomainError(Code.INVALID_ARGUMENT, f"at most {self.max_blocked} blocked users")
        await self._store.block(user_id, other)
        self.forget(other)

    async def unblock(self, user_id: str, other: str) -> None:
        _check(user_id, other)
        await self._store.unblock(user_id, other)
        self.forget(other)

    async def blocked(self, user_id: str) -> list[str]:
        return await self._store.blocked(user_id)

    def forget(self, user_id: str) -> None:
        """Who blocked the user changed (here or on another node): reload on next use."""
        self._blockers.pop(user_id, None)

    def forget_all(self) -> None:
        self._blockers.clear()


def _check(user_id: str, other: str) -> None:
    if not valid_id(other):
        raise DomainError(Code.INVALID_ARGUMENT, f"bad user id {other[:64]!r}")
    if other == user_id:
        raise DomainError(Code.INVALID_ARGUMENT, "you cannot block yourself")
