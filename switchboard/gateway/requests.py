"""Request/response frames: chats, history, receipts, settings, devices, blocks, push tokens
and mutes, media (the URLs: the bytes never come through here), server info.

Kept apart from the connection state machine: these are request -> reply functions with no
delivery state, so the connection only runs them in a task and sends what they return (None:
nothing to send). A method `_<field>` here answers the ClientFrame body field of that name and
is all the gateway needs for a new request frame: ANSWERED, below, routes it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from switchboard.buildinfo import build_info
from switchboard.core.chats import EVENT_USERS, is_direct
from switchboard.core.errors import Code, DomainError
from switchboard.core.ids import now_ms
from switchboard.core.model import (MediaRecord, MediaState, MemberAction, MembershipEvent,
                                    PushPlatform, PushToken, StoredMessage, Visibility)
from switchboard.proto.codes import Close
from switchboard.proto.v1 import client_pb2 as pb
from switchboard.router.base import Invalidation

from . import frames, wire

if TYPE_CHECKING:
    from .connection import Connection
    from .server import Gateway

DEFAULT_HISTORY = 50  # the range of History.limit is in wire.py
HISTORY_PAGE_BYTES = 1024 * 1024  # bodies per page: fewer messages when they are large
HISTORY_READ = 16  # rows per store read while a page fills: memory stays near one page
PUSH_PLATFORMS = {pb.APNS: PushPlatform.APNS, pb.APNS_SANDBOX: PushPlatform.APNS_SANDBOX,
                  pb.FCM: PushPlatform.FCM}


class Requests:
    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self._store = gw.services.store
        self._chats = gw.services.chats
        self._messages = gw.services.messages

    async def answer(self, conn: Connection, frame: pb.ClientFrame) -> bytes | None:
        kind = frame.WhichOneof("body")
        return await getattr(self, f"_{kind}")(conn, frame.request_id, getattr(frame, kind))

    def _spend(self, kind: str, user: str, cost: int = 1) -> None:
        """The user's limit for `kind` (all devices, all gateways): RATE_LIMITED beyond."""
        wait = self._gw.limits.take(kind, user, self._gw.timers.now(), cost)
        if wait:
            raise DomainError(Code.RATE_LIMITED, f"too many {kind} requests",
                              math.ceil(wait * 1000))

    # ------------------------------------------------------------------ messages
    async def _history(self, conn: Connection, rid: int, req: pb.History) -> bytes:
        """Every range the user was a member for, newest first, the gaps between them left out."""
        self._spend("history", conn.user)
        limit = req.limit or DEFAULT_HISTORY
        periods = await self._chats.visible_periods(req.chat_id, conn.user)
        page: list[StoredMessage] = []
        size = 0
        before = req.before_seq
        while True:
            rows = await self._messages.read_history(req.chat_id, periods, before,
                                                     min(HISTORY_READ, limit + 1 - len(page)))
            for row in rows:
                if len(page) == limit or page and size + len(row.body) > HISTORY_PAGE_BYTES:
                    return frames.history_page(rid, req.chat_id, page, True)
                page.append(row)
                size += len(row.body)
            if len(rows) < HISTORY_READ:  # the store has no older visible message
                return frames.history_page(rid, req.chat_id, page, False)
            before = rows[-1].seq

    async def _mark_read(self, conn: Connection, rid: int, req: pb.MarkRead) -> bytes:
        read_seq, public = await self._messages.mark_read(conn.user, req.chat_id, req.seq)
        self._gw.services.receipts.read(req.chat_id, conn.user, read_seq, public)
        self._gw.services.push.read(conn.user, conn.device, req.chat_id, read_seq)
        return pb.ServerFrame(request_id=rid, read_ack=pb.ReadAck(
            chat_id=req.chat_id, read_seq=read_seq)).SerializeToString()

    async def _get_receipts(self, conn: Connection, rid: int, req: pb.GetReceipts) -> bytes:
        """n counts the current members who were members when the message was sent (a member
        added later can never hold it); k those of them whose reads the asker may see."""
        await self._chats.require_member(req.chat_id, conn.user)
        rows = await self._store.read_messages(req.chat_id, req.seq - 1, 1) if req.seq else []
        if not rows or rows[0].seq != req.seq:
            raise DomainError(Code.NOT_FOUND, f"no message {req.seq} in {req.chat_id}")
        sender = rows[0].sender_user
        receipts_service = self._gw.services.receipts
        receipts = await self._store.receipts(req.chat_id)  # reads are durable before ReadAck
        periods = await self._store.member_periods(req.chat_id)
        others = [user for user in await self._chats.members(req.chat_id) if user != sender
                  and any(period.covers(req.seq) for period in periods.get(user, ()))]
        delivered = 0
        readers = []
        for user in others:
            receipt = receipts.get(user)
            if receipt is None:
                continue
            delivered += receipt.delivered_seq >= req.seq
            if (receipt.public_read_seq >= req.seq
                    and not await receipts_service.reads_hidden(conn.user, user)):
                readers.append(user)
        return pb.ServerFrame(request_id=rid, receipt_status=pb.ReceiptStatus(
            chat_id=req.chat_id, seq=req.seq, member_count=len(others), delivered_count=delivered,
            read_count=len(readers), read_by=sorted(readers))).SerializeToString()

    async def _typing(self, conn: Connection, rid: int, req: pb.Typing) -> None:
        """Slow path of a typing frame: the chat's members or the user's blockers were not
        cached. In a direct chat whose other user blocked this one it is dropped unanswered."""
        await self._chats.require_member(req.chat_id, conn.user)
        members = await self._chats.members(req.chat_id)
        blockers = await self._gw.services.blocks.blockers(conn.user)
        if not (is_direct(req.chat_id) and any(user in blockers for user in members)):
            conn.relay_typing(req, members)

    # ------------------------------------------------------------------ chats
    async def _create_chat(self, conn: Connection, rid: int, req: pb.CreateChat) -> bytes:
        self._spend("chat", conn.user)
        others = list(req.member_user_ids)
        if req.kind == pb.DIRECT:
            if len(others) != 1:
                raise DomainError(Code.INVALID_ARGUMENT, "a direct chat names exactly one other user")
            chat = await self._chats.create_direct(conn.user, others[0])
        elif req.kind == pb.GROUP:
            chat = await self._chats.create_group(conn.user, others, req.title)
        else:
            raise DomainError(Code.INVALID_ARGUMENT, "kind must be DIRECT or GROUP")
        # another node may have cached the chat as memberless (a send before it existed)
        self._gw.router.invalidate(Invalidation.CHAT_MEMBERS, chat.chat_id)
        return await self._chat_info(rid, chat.chat_id)

    async def _add_members(self, conn: Connection, rid: int, req: pb.AddMembers) -> bytes:
        self._spend("member_add", conn.user, max(1, len(req.user_ids)))
        for event in await self._chats.plan_add(conn.user, req.chat_id, list(req.user_ids)):
            await self._commit_event(req.chat_id, event)
        return await self._chat_info(rid, req.chat_id)

    async def _remove_members(self, conn: Connection, rid: int, req: pb.RemoveMembers) -> bytes:
        events = await self._chats.plan_remove(conn.user, req.chat_id, list(req.user_ids))
        for event in events:
            await self._commit_event(req.chat_id, event)
        if any(conn.user in event.users for event in events):  # left: no longer sees the chat
            chat = await self._chats.get_chat(req.chat_id)
            return frames.chat_info(rid, chat, await self._chats.members(req.chat_id),
                                    await self._store.head_seq(req.chat_id))
        return await self._chat_info(rid, req.chat_id)

    async def _commit_event(self, chat_id: str, event: MembershipEvent) -> None:
        """Through the chat's owner, as the chat's next entry; then every node reloads the
        member map (the owner changed its own at the commit)."""
        try:
            await self._gw.router.submit_event(chat_id, event)
        finally:  # an unknown outcome too: the map is read again
            removed = list(event.users) if event.action is MemberAction.REMOVED else []
            self._gw.router.invalidate(Invalidation.CHAT_MEMBERS, chat_id, removed)

    async def _list_chats(self, conn: Connection, rid: int, req: pb.ListChats) -> bytes:
        return frames.chat_list(rid, await self._chats.list_chats(conn.user))

    async def _chat_info(self, rid: int, chat_id: str) -> bytes:
        chat = await self._chats.get_chat(chat_id)
        if chat is None:
            raise DomainError(Code.NOT_MEMBER, f"no chat {chat_id}")
        members = await self._chats.members(chat_id)
        return frames.chat_info(rid, chat, members, await self._store.head_seq(chat_id))

    # ------------------------------------------------------------------ presence, settings
    async def _subscribe_presence(self, conn: Connection, rid: int,
                                  req: pb.SubscribePresence) -> None:
        """Ok first, then one Presence per new subject."""
        try:
            fresh = self._gw.presence.check(conn, list(req.user_ids))
        except ValueError as exc:
            raise DomainError(Code.INVALID_ARGUMENT, str(exc)) from None
        conn.send_frame(pb.ServerFrame(request_id=rid, ok=pb.Ok()).SerializeToString())
        await self._gw.presence.subscribe(conn, fresh)

    async def _update_settings(self, conn: Connection, rid: int, req: pb.UpdateSettings) -> bytes:
        settings_service = self._gw.services.settings
        changes = {}
        if req.HasField("read_receipts"):
            changes["read_receipts"] = req.read_receipts
        if req.last_seen:  # its range is checked in wire.py
            changes["last_seen"] = Visibility(req.last_seen)
        settings = (await settings_service.update(conn.user, **changes) if changes
                    else await settings_service.get(conn.user))
        if req.HasField("invisible") and req.invisible != conn.invisible:
            conn.invisible = req.invisible
            self._gw.presence.registry.set_visible(conn.user, conn.device, not req.invisible)
        if changes:
            self._gw.router.invalidate(Invalidation.USER_SETTINGS, conn.user)
        if "last_seen" in changes:
            await self._gw.presence.refresh_privacy(conn.user)
        return pb.ServerFrame(request_id=rid, settings=pb.Settings(
            read_receipts=settings.read_receipts, last_seen=int(settings.last_seen),
            invisible=conn.invisible)).SerializeToString()

    # ------------------------------------------------------------------ blocking
    async def _block(self, conn: Connection, rid: int, req: pb.Block) -> bytes:
        self._spend("chat", conn.user)
        await self._gw.services.blocks.block(conn.user, req.user_id)
        self._gw.router.invalidate(Invalidation.USER_BLOCKS, req.user_id)
        return pb.ServerFrame(request_id=rid, ok=pb.Ok()).SerializeToString()

    async def _unblock(self, conn: Connection, rid: int, req: pb.Unblock) -> bytes:
        self._spend("chat", conn.user)
        await self._gw.services.blocks.unblock(conn.user, req.user_id)
        self._gw.router.invalidate(Invalidation.USER_BLOCKS, req.user_id)
        return pb.ServerFrame(request_id=rid, ok=pb.Ok()).SerializeToString()

    async def _list_blocked(self, conn: Connection, rid: int, req: pb.ListBlocked) -> bytes:
        return pb.ServerFrame(request_id=rid, blocked_list=pb.BlockedList(
            user_ids=await self._gw.services.blocks.blocked(conn.user))).SerializeToString()

    # ------------------------------------------------------------------ server
    async def _get_server_info(self, conn: Connection, rid: int, req: pb.GetServerInfo) -> bytes:
        config = self._gw.config
        limits = config.limits
        media = self._gw.services.media.limits
        return pb.ServerFrame(request_id=rid, server_info=pb.ServerInfo(
            version=build_info()["version"], node=config.cluster.node_name,
            max_group_members=limits.max_group_members, max_devices=limits.max_devices,
            max_media_ids=limits.max_media_ids,
            max_presence_subscriptions=limits.max_presence_subscriptions,
            max_history_limit=wire.MAX_HISTORY, max_event_users=EVENT_USERS,
            sends_per_second=limits.sends_per_second, send_burst=limits.send_burst,
            chats_per_minute=limits.chats_per_minute,
            history_per_second=limits.history_per_second,
            media_max_bytes=media.max_bytes, media_max_thumbnail_bytes=media.max_thumbnail_bytes,
            media_types=media.types,
            push_enabled=self._gw.services.push.enabled)).SerializeToString()

    # ------------------------------------------------------------------ devices
    async def _list_devices(self, conn: Connection, rid: int, req: pb.ListDevices) -> bytes:
        devices = self._gw.services.devices
        online = await self._gw.router.online_devices(conn.user)
        rows = await devices.list(conn.user)
        return pb.ServerFrame(request_id=rid, device_list=pb.DeviceList(
            max_devices=devices.max_devices,
            devices=[pb.Device(device_id=r.device_id, online=r.device_id in online,
                               last_seen_ms=r.last_seen_ms, first_seen_ms=r.first_seen_ms)
                     for r in rows])).SerializeToString()

    async def _revoke_device(self, conn: Connection, rid: int, req: pb.RevokeDevice) -> None:
        """Replies before closing, so a device revoking itself still sees its Ok."""
        if not await self._gw.services.devices.revoke(conn.user, req.device_id):
            raise DomainError(Code.NOT_FOUND, f"no device {req.device_id[:128]}")
        reply = pb.ServerFrame(request_id=rid, ok=pb.Ok()).SerializeToString()
        conn.send_frame(reply)
        self._gw.router.kick(conn.user, req.device_id, Close.DEVICE_REVOKED, "device revoked")
        return None

    # ------------------------------------------------------------------ push notifications
    # Tokens and mutes are cached with the user's settings on every node (the push service
    # of each chat's owner reads them): a change invalidates USER_SETTINGS everywhere.
    async def _register_push(self, conn: Connection, rid: int, req: pb.RegisterPush) -> bytes:
        if req.platform not in PUSH_PLATFORMS:
            raise DomainError(Code.INVALID_ARGUMENT, "RegisterPush.platform: required")
        await self._gw.services.push.register(conn.user, conn.device, PushToken(
            PUSH_PLATFORMS[req.platform], req.token, req.topic, req.previews, now_ms()))
        self._gw.router.invalidate(Invalidation.USER_SETTINGS, conn.user)
        return pb.ServerFrame(request_id=rid, ok=pb.Ok()).SerializeToString()

    async def _unregister_push(self, conn: Connection, rid: int, req: pb.UnregisterPush) -> bytes:
        """Ok whether or not the device had a token (a retry finds it gone)."""
        await self._gw.services.push.unregister(conn.user, conn.device)
        self._gw.router.invalidate(Invalidation.USER_SETTINGS, conn.user)
        return pb.ServerFrame(request_id=rid, ok=pb.Ok()).SerializeToString()

    async def _mute_chat(self, conn: Connection, rid: int, req: pb.MuteChat) -> bytes:
        await self._chats.require_member(req.chat_id, conn.user)
        await self._gw.services.push.mute(conn.user, req.chat_id, req.muted_until_ms)
        self._gw.router.invalidate(Invalidation.USER_SETTINGS, conn.user)
        return await self._list_mutes(conn, rid, pb.ListMutes())

    async def _list_mutes(self, conn: Connection, rid: int, req: pb.ListMutes) -> bytes:
        mutes = await self._gw.services.push.mutes(conn.user)
        return pb.ServerFrame(request_id=rid, mute_list=pb.MuteList(mutes=[
            pb.ChatMute(chat_id=chat_id, muted_until_ms=until)
            for chat_id, until in sorted(mutes.items())])).SerializeToString()

    # ------------------------------------------------------------------ media
    async def _create_upload(self, conn: Connection, rid: int, req: pb.CreateUpload) -> bytes:
        self._spend("upload", conn.user)
        plan = await self._gw.services.media.create_upload(
            conn.user, req.size, req.content_type, req.sha256, req.thumbnail_of)
        record = plan.record
        return pb.ServerFrame(request_id=rid, upload_slot=pb.UploadSlot(
            media_id=record.media_id, complete=record.state is MediaState.COMPLETE,
            part_size=record.part_size, part_count=record.part_count,
            expires_at_ms=plan.expires_at_ms,
            parts=[pb.UploadPart(number=number, offset=offset, size=size, url=request.url,
                                 headers=request.headers)
                   for number, offset, size, request in plan.parts])).SerializeToString()

    async def _complete_upload(self, conn: Connection, rid: int, req: pb.CompleteUpload) -> bytes:
        record = await self._gw.services.media.complete_upload(conn.user, req.media_id)
        return pb.ServerFrame(request_id=rid,
                              media_info=_media_info(record)).SerializeToString()

    async def _get_media(self, conn: Connection, rid: int, req: pb.GetMedia) -> bytes:
        found = await self._gw.services.media.download(conn.user, req.media_id, req.chat_id,
                                                       req.seq)
        urls = pb.MediaUrls(media=_media_info(found.record), url=found.url,
                            expires_at_ms=found.expires_at_ms)
        if found.thumbnail is not None:
            urls.thumbnail.CopyFrom(_media_info(found.thumbnail))
            urls.thumbnail_url = found.thumbnail_url
        return pb.ServerFrame(request_id=rid, media_urls=urls).SerializeToString()


def _media_info(record: MediaRecord) -> pb.MediaInfo:
    return pb.MediaInfo(media_id=record.media_id, size=record.size,
                        content_type=record.content_type, sha256=record.sha256,
                        thumbnail_id=record.thumbnail_id, thumbnail_of=record.thumbnail_of,
                        owner_user_id=record.owner)


ANSWERED = frozenset(field.name for field in pb.ClientFrame.DESCRIPTOR.oneofs_by_name["body"].fields
                     if hasattr(Requests, f"_{field.name}"))
"""The ClientFrame kinds Requests answers: the connection runs each of them in a request task."""
