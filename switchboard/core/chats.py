"""Chats and membership: the rules (who may do what) and a member cache for the send path.

The send path asks `members()` for every message, so the member map of an active chat is kept
in memory (an LRU of chats). A message to a 1,000-member group costs one dict lookup for the
membership check, whatever the group size.

A change of members is a membership event, an entry of the chat's log committed like any
message (store.py): `plan_add` / `plan_remove` decide what may change and return the events to
commit, and `applied` updates the cached map where the commit landed, in seq order with the
chat's messages.
"""
from __future__ import annotations

import asyncio
import secrets
import uuid

from .blocks import Blocks
from .errors import Code, DomainError
from .ids import now_ms, valid_id
from .lru import LRU
from .model import (Batch, Chat, ChatKind, ChatSummaryRow, MemberAction, MembershipEvent,
                    Membership, NewMessage, Period, Role, StoredMessage)
from .store import Store, StoreError

DIRECT_PREFIX = "d:"  # every direct chat id starts so; groups start with "g:"
EVENT_USERS = 256  # users named per membership event: one stays far below max_frame_bytes


def direct_chat_id(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return f"{DIRECT_PREFIX}{lo}:{hi}"


def is_direct(chat_id: str) -> bool:
    return chat_id.startswith(DIRECT_PREFIX)


def membership_message(chat_id: str, event: MembershipEvent, server_id: int, *,
                       public_read: bool = False) -> NewMessage:
    """The log entry of a membership event: sent by its actor from no device, with a fresh
    client_msg_id (the dedup key), so it never collides with a send of the actor."""
    return NewMessage(chat_id, event.actor, "", f"membership:{uuid.uuid4().hex}", b"", (),
                      server_id, now_ms(), public_read, event)


class ChatService:
    def __init__(self, store: Store, *, blocks: Blocks | None = None,
                 max_group_members: int = 1000, cache_chats: int = 100_000) -> None:
        self._store = store
        self._blocks = blocks or Blocks(store)
        self.max_group_members = max_group_members
        self._cache: LRU[str, dict[str, Membership]] = LRU(cache_chats)
        self._loading: dict[str, asyncio.Future] = {}
        self.changes = 0  # cached member maps changed in place (what is kept from them is stale)

    # ------------------------------------------------------------ membership cache
    async def members(self, chat_id: str) -> dict[str, Membership]:
        cached = self._cache.use(chat_id)
        if cached is not None:
            return cached
        pending = self._loading.get(chat_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._loading[chat_id] = future
        try:
            members = await self._store.members(chat_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here so a lone loader does not log it twice
            raise
        finally:
            del self._loading[chat_id]
        if not future.done():
            future.set_result(members)
        self._remember(chat_id, members)
        return members

    def cached_members(self, chat_id: str) -> dict[str, Membership] | None:
        return self._cache.use(chat_id)

    def forget(self, chat_id: str) -> None:
        """Drop the cached member map: another process (the admin CLI) changed it in the store;
        the next members() call reloads it."""
        self._cache.pop(chat_id, None)

    def forget_all(self) -> None:
        """The cluster changed (a node joined or left): changes broadcast meanwhile may have
        been missed, so every member map is reloaded on next use."""
        self._cache.clear()

    def _remember(self, chat_id: str, members: dict[str, Membership]) -> None:
        self._cache.put(chat_id, members)

    async def require_member(self, chat_id: str, user_id: str) -> Membership:
        membership = (await self.members(chat_id)).get(user_id)
        if membership is None:
            raise DomainError(Code.NOT_MEMBER, f"not a member of {chat_id}")
        return membership

    async def visible_periods(self, chat_id: str, user_id: str) -> list[Period]:
        """The periods of the chat the user may read: its messages, and the media they name
        (NOT_MEMBER unless a member now)."""
        membership = await self.require_member(chat_id, user_id)
        periods = (await self._store.member_periods(chat_id, user_id)).get(user_id)
        return periods or [Period(membership.joined_seq)]

    # ------------------------------------------------------------ admin operations
    def applied(self, chat_id: str, event: MembershipEvent, seq: int) -> None:
        """A membership event was committed at `seq`: change the cached map the same way."""
        members = self._cache.get(chat_id)
        if members is None:
            return
        self.changes += 1
        if event.action is MemberAction.ADDED:
            for user in event.users:
                members.setdefault(user, Membership(Role.MEMBER, seq - 1))
        else:
            for user in event.users:
                members.pop(user, None)

    async def commit_directly(self, chat_id: str, event: MembershipEvent,
                              server_id: int) -> StoredMessage:
        """Commit an event straight to the store, not through a server's writer: the operator's
        path (`switchboard admin` runs whether or not a server does). Raises StoreError when it
        is not known to be stored."""
        outcome = await self._store.commit(Batch([membership_message(chat_id, event, server_id)]))
        result = outcome.results[0]
        if result is None:
            raise outcome.failed.get(chat_id) or StoreError(f"{chat_id} not committed")
        self.applied(chat_id, event, result.message.seq)
        return result.message

    async def create_direct(self, creator: str, other: str) -> Chat:
        _check_users([other])
        if other == creator:
            raise DomainError(Code.INVALID_ARGUMENT, "a direct chat needs another user")
        if other in await self._blocks.blockers(creator):
            raise DomainError(Code.BLOCKED, "refused")
        chat = Chat(direct_chat_id(creator, other), ChatKind.DIRECT, "", now_ms())
        chat = await self._store.create_chat(chat, {creator: Role.MEMBER, other: Role.MEMBER})
        self._cache.pop(chat.chat_id, None)
        return chat

    async def create_group(self, creator: str, others: list[str], title: str) -> Chat:
        _check_users(others, allow_empty=True)
        if len(title) > 256:
            raise DomainError(Code.INVALID_ARGUMENT, "title longer than 256 characters")
        members = {user: Role.MEMBER for user in others if user != creator}
        members[creator] = Role.ADMIN
        if len(members) > self.max_group_members:
            raise DomainError(Code.GROUP_FULL,
                              f"a group holds at most {self.max_group_members} members")
        chat = Chat(f"g:{secrets.token_urlsafe(12)}", ChatKind.GROUP, title, now_ms())
        chat = await self._store.create_chat(chat, members)
        self._cache.pop(chat.chat_id, None)
        return chat

    async def plan_add(self, actor: str | None, chat_id: str,
                       users: list[str]) -> list[MembershipEvent]:
        """The events that add `users` (those not members yet; none when all are). `actor`
        None is the operator (`switchboard admin`): no membership or role needed."""
        _check_users(users)
        members = await self._group_members(actor, chat_id)
        if actor is not None and members[actor].role is not Role.ADMIN:
            raise DomainError(Code.FORBIDDEN, "only admins add members")
        new = tuple(user for user in dict.fromkeys(users) if user not in members)
        if len(members) + len(new) > self.max_group_members:
            raise DomainError(Code.GROUP_FULL,
                              f"a group holds at most {self.max_group_members} members")
        return _events(MemberAction.ADDED, actor, new)

    async def plan_remove(self, actor: str | None, chat_id: str,
                          users: list[str]) -> list[MembershipEvent]:
        """The events that remove `users` (those that are members; none when none is). A
        member may always remove themselves (leave); `actor` None is the operator."""
        _check_users(users)
        members = await self._group_members(actor, chat_id)
        if (actor is not None and members[actor].role is not Role.ADMIN
                and any(user != actor for user in users)):
            raise DomainError(Code.FORBIDDEN, "only admins remove other members")
        gone = tuple(user for user in dict.fromkeys(users) if user in members)
        return _events(MemberAction.REMOVED, actor, gone)

    async def _group_members(self, actor: str | None, chat_id: str) -> dict[str, Membership]:
        """The members of a group the actor may change (direct chats are fixed)."""
        chat = await self._store.get_chat(chat_id)
        members = await self.members(chat_id)
        if actor is not None and (chat is None or actor not in members):
            # the same answer whether or not the chat exists: no probing for chat ids
            raise DomainError(Code.NOT_MEMBER, f"not a member of {chat_id}")
        if chat is None:
            raise DomainError(Code.NOT_MEMBER, f"no chat {chat_id}")
        if chat.kind is not ChatKind.GROUP:
            raise DomainError(Code.FORBIDDEN, f"{chat_id} is a direct chat: its members are fixed")
        return members

    async def get_chat(self, chat_id: str) -> Chat | None:
        return await self._store.get_chat(chat_id)

    async def list_chats(self, user_id: str) -> list[ChatSummaryRow]:
        """The user's chats by chat id, with head, the user's read watermark (never below the
        point it joined at: what came before is not its to read) and member count: one read of
        the user's chats, then the per-chat reads concurrently."""
        store = self._store
        joined = await store.user_chats(user_id)
        chat_ids = list(joined)
        chats, heads, reads, counts = await asyncio.gather(
            store.chats(chat_ids), store.heads(chat_ids), store.read_seqs(user_id, chat_ids),
            store.member_counts(chat_ids))
        return [ChatSummaryRow(chat_id, chat.kind, chat.title, heads.get(chat_id, 0),
                               max(reads.get(chat_id, 0), joined[chat_id]), counts.get(chat_id, 0))
                for chat_id in sorted(chat_ids) if (chat := chats.get(chat_id)) is not None]


def _events(action: MemberAction, actor: str | None,
            users: tuple[str, ...]) -> list[MembershipEvent]:
    """One event per EVENT_USERS users, in the order given."""
    return [MembershipEvent(action, actor or "", users[i:i + EVENT_USERS])
            for i in range(0, len(users), EVENT_USERS)]


def _check_users(users: list[str], allow_empty: bool = False) -> None:
    if not users and not allow_empty:
        raise DomainError(Code.INVALID_ARGUMENT, "no user ids given")
    for user in users:
        if not valid_id(user):
            raise DomainError(Code.INVALID_ARGUMENT, f"bad user id {user[:64]!r}")
