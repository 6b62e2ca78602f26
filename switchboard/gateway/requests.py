"""Request/response frames that need the store: chats, history, read watermark.

Kept apart from the connection state machine: these are plain request -> reply functions with
no delivery state, so the connection only runs them in a task and sends what they return.
"""
from __future__ import annotations

from switchboard.core.chats import ChatService
from switchboard.core.errors import Code, DomainError
from switchboard.core.messaging import MessageService
from switchboard.core.store import Store
from switchboard.proto.v1 import client_pb2 as pb

from . import frames
from .hub import Hub

MAX_HISTORY = 200
DEFAULT_HISTORY = 50


class Requests:
    def __init__(self, store: Store, chats: ChatService, messages: MessageService, hub: Hub) -> None:
        self._store = store
        self._chats = chats
        self._messages = messages
        self._hub = hub

    async def answer(self, user: str, frame: pb.ClientFrame) -> bytes:
        kind = frame.WhichOneof("body")
        return await getattr(self, f"_{kind}")(user, frame.request_id, getattr(frame, kind))

    async def _history(self, user: str, rid: int, req: pb.History) -> bytes:
        limit = req.limit or DEFAULT_HISTORY
        if limit > MAX_HISTORY:
            raise DomainError(Code.INVALID_ARGUMENT, f"limit is at most {MAX_HISTORY}")
        rows = await self._messages.history(user, req.chat_id, req.before_seq, limit + 1)
        return frames.history_page(rid, req.chat_id, rows[:limit], len(rows) > limit)

    async def _create_chat(self, user: str, rid: int, req: pb.CreateChat) -> bytes:
        others = list(req.member_user_ids)
        if req.kind == pb.DIRECT:
            if len(others) != 1:
                raise DomainError(Code.INVALID_ARGUMENT, "a direct chat names exactly one other user")
            chat = await self._chats.create_direct(user, others[0])
        elif req.kind == pb.GROUP:
            chat = await self._chats.create_group(user, others, req.title)
        else:
            raise DomainError(Code.INVALID_ARGUMENT, "kind must be DIRECT or GROUP")
        return await self._chat_info(rid, chat.chat_id)

    async def _add_members(self, user: str, rid: int, req: pb.AddMembers) -> bytes:
        await self._chats.add_members(user, req.chat_id, list(req.user_ids))
        return await self._chat_info(rid, req.chat_id)

    async def _remove_members(self, user: str, rid: int, req: pb.RemoveMembers) -> bytes:
        before = set(await self._chats.members(req.chat_id))
        after = await self._chats.remove_members(user, req.chat_id, list(req.user_ids))
        self._hub.drop_chat(req.chat_id, [u for u in before if u not in after])
        if user not in after:
            chat = await self._chats.get_chat(req.chat_id)
            return frames.chat_info(rid, chat, after, await self._store.head_seq(req.chat_id))
        return await self._chat_info(rid, req.chat_id)

    async def _list_chats(self, user: str, rid: int, req: pb.ListChats) -> bytes:
        return frames.chat_list(rid, await self._chats.list_chats(user))

    async def _mark_read(self, user: str, rid: int, req: pb.MarkRead) -> bytes:
        read_seq = await self._messages.mark_read(user, req.chat_id, req.seq)
        return pb.ServerFrame(request_id=rid, read_ack=pb.ReadAck(
            chat_id=req.chat_id, read_seq=read_seq)).SerializeToString()

    async def _chat_info(self, rid: int, chat_id: str) -> bytes:
        chat = await self._chats.get_chat(chat_id)
        if chat is None:
            raise DomainError(Code.NOT_MEMBER, f"no chat {chat_id}")
        members = await self._chats.members(chat_id)
        return frames.chat_info(rid, chat, members, await self._store.head_seq(chat_id))

