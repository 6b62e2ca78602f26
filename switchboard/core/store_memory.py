"""The in-process store: plain dicts, for unit tests and throwaway runs (`[store] kind = "memory"`).

It keeps the same contract as the durable stores (store.py), minus durability across processes:
data lives in a `MemoryData` that several MemoryStore instances may share, which is how the
contract suite models a restart (a new store on the same data) and a second owner. Every method
runs without awaiting anything, so each call is atomic on the event loop, the way one SQLite
transaction or one conditional write is.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Collection

from .model import (Batch, Chat, CommitOutcome, CommitResult, DeviceRow, DeviceStatus,
                    MediaRecord, MediaState, MemberAction, MembershipEvent, Membership, Period,
                    PushToken, QueuedPush, Receipt, Role, StoredMessage, UserSettings, Visibility)
from .store import Store, StoreError


@dataclass(slots=True)
class _Device:
    first_seen_ms: int
    last_seen_ms: int
    revoked: bool = False


@dataclass(slots=True)
class MemoryData:
    """Everything one memory store holds; share it between instances to share the data."""
    messages: dict[str, list[StoredMessage]] = field(default_factory=dict)  # chat -> by seq
    dedup: dict[tuple[str, str, str], StoredMessage] = field(default_factory=dict)
    chats: dict[str, Chat] = field(default_factory=dict)
    members: dict[str, dict[str, Membership]] = field(default_factory=dict)
    user_chats: dict[str, set[str]] = field(default_factory=dict)
    periods: dict[str, dict[str, list[Period]]] = field(default_factory=dict)  # chat -> user ->
    user_periods: dict[str, set[str]] = field(default_factory=dict)  # user -> chats ever joined
    blocks: dict[str, set[str]] = field(default_factory=dict)  # blocker -> blocked
    receipts: dict[str, dict[str, Receipt]] = field(default_factory=dict)  # chat -> user ->
    cursors: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    settings: dict[str, UserSettings] = field(default_factory=dict)
    devices: dict[str, dict[str, _Device]] = field(default_factory=dict)  # user -> device ->
    push_tokens: dict[str, dict[str, PushToken]] = field(default_factory=dict)  # user -> device ->
    mutes: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> chat -> until_ms
    push_queue: dict[tuple[str, str, str], QueuedPush] = field(default_factory=dict)
    media: dict[str, MediaRecord] = field(default_factory=dict)
    media_by_content: dict[tuple[str, str], str] = field(default_factory=dict)  # (owner, key) ->


class MemoryStore(Store):
    def __init__(self, data: MemoryData | None = None) -> None:
        self.data = data if data is not None else MemoryData()
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _check(self) -> MemoryData:
        if not self._open:
            raise StoreError("the store is not open")
        return self.data

    # ------------------------------------------------------------------ write path
    async def commit(self, batch: Batch) -> CommitOutcome:
        data = self._check()
        results: list[CommitResult | None] = []
        for m in batch.messages:
            key = (m.chat_id, m.sender_user, m.client_msg_id)
            original = data.dedup.get(key)
            if original is not None:
                results.append(CommitResult(original, True))
                continue
            log = data.messages.setdefault(m.chat_id, [])
            stored = StoredMessage(m.chat_id, len(log) + 1, m.server_id, m.sender_user,
                                   m.sender_device, m.client_msg_id, m.body, m.media_ids,
                                   m.created_at_ms, m.event)
            log.append(stored)
            data.dedup[key] = stored
            if m.event is not None:
                self._apply(m.chat_id, m.event, stored.seq)
            if m.sender_user:
                self._raise_receipt(m.chat_id, m.sender_user, stored.seq, stored.seq,
                                    stored.seq if m.public_read else 0)
            results.append(CommitResult(stored, False))
        for (user, device, chat_id), seq in batch.cursors.items():
            cursors = data.cursors.setdefault((user, device), {})
            cursors[chat_id] = max(cursors.get(chat_id, 0), seq)
            self._raise_receipt(chat_id, user, seq, 0, 0)  # the device holds what it acked
        for (chat_id, user), seq in batch.delivered.items():
            self._raise_receipt(chat_id, user, seq, 0, 0)
        for (chat_id, user), seq in batch.reads.items():
            self._raise_receipt(chat_id, user, seq, seq, 0)  # what was read was delivered
        for (chat_id, user), seq in batch.public_reads.items():
            self._raise_receipt(chat_id, user, seq, seq, seq)
        return CommitOutcome(results)

    def _raise_receipt(self, chat_id: str, user: str, delivered: int, read: int,
                       public: int) -> None:
        receipts = self.data.receipts.setdefault(chat_id, {})
        now = receipts.get(user)
        receipts[user] = (Receipt(delivered, read, public) if now is None else
                          Receipt(max(now.delivered_seq, delivered), max(now.read_seq, read),
                                  max(now.public_read_seq, public)))

    def _apply(self, chat_id: str, event: MembershipEvent, seq: int) -> None:
        if event.action is MemberAction.ADDED:
            self._add(chat_id, dict.fromkeys(event.users, Role.MEMBER), seq - 1)
            return
        data = self.data
        members = data.members.get(chat_id, {})
        for user in event.users:
            if members.pop(user, None) is not None:
                data.user_chats[user].discard(chat_id)
                periods = data.periods[chat_id][user]
                periods[-1] = Period(periods[-1].joined_seq, seq)

    # ------------------------------------------------------------------ messages
    async def read_messages(self, chat_id: str, after_seq: int, limit: int) -> list[StoredMessage]:
        log = self._check().messages.get(chat_id, [])
        if limit <= 0:
            return []
        start = max(after_seq, 0)  # seq n sits at index n - 1
        return log[start:start + limit]

    async def read_history(self, chat_id: str, before_seq: int, floor_seq: int,
                           limit: int) -> list[StoredMessage]:
        log = self._check().messages.get(chat_id, [])
        if limit <= 0:
            return []
        end = len(log) if before_seq <= 0 else min(before_seq - 1, len(log))
        start = max(floor_seq, end - limit, 0)
        return log[start:end][::-1]

    async def head_seq(self, chat_id: str) -> int:
        return len(self._check().messages.get(chat_id, ()))

    async def heads(self, chat_ids: Collection[str]) -> dict[str, int]:
        messages = self._check().messages
        return {chat_id: len(messages[chat_id]) for chat_id in chat_ids
                if messages.get(chat_id)}

    async def senders_between(self, chat_id: str, after_seq: int, upto_seq: int) -> set[str]:
        log = self._check().messages.get(chat_id, [])
        return {m.sender_user for m in log[max(after_seq, 0):max(upto_seq, 0)]}

    # ------------------------------------------------------------------ chats
    async def create_chat(self, chat: Chat, members: dict[str, Role]) -> Chat:
        data = self._check()
        stored = data.chats.get(chat.chat_id)
        if stored is None:
            stored = data.chats[chat.chat_id] = replace(chat)
            self._add(chat.chat_id, members, 0)
        return replace(stored)

    async def get_chat(self, chat_id: str) -> Chat | None:
        chat = self._check().chats.get(chat_id)
        return None if chat is None else replace(chat)

    async def chats(self, chat_ids: Collection[str]) -> dict[str, Chat]:
        chats = self._check().chats
        return {chat_id: replace(chats[chat_id]) for chat_id in chat_ids if chat_id in chats}

    async def members(self, chat_id: str) -> dict[str, Membership]:
        return self._member_map(chat_id)

    def _member_map(self, chat_id: str) -> dict[str, Membership]:
        return {user: replace(m) for user, m in self._check().members.get(chat_id, {}).items()}

    async def member_counts(self, chat_ids: Collection[str]) -> dict[str, int]:
        members = self._check().members
        return {chat_id: len(members[chat_id]) for chat_id in chat_ids if members.get(chat_id)}

    def _add(self, chat_id: str, users: dict[str, Role], joined_seq: int) -> None:
        data = self.data
        members = data.members.setdefault(chat_id, {})
        for user, role in users.items():
            if user not in members:
                members[user] = Membership(role, joined_seq)
                data.user_chats.setdefault(user, set()).add(chat_id)
                data.periods.setdefault(chat_id, {}).setdefault(user, []).append(
                    Period(joined_seq))
                data.user_periods.setdefault(user, set()).add(chat_id)

    async def user_chats(self, user_id: str) -> dict[str, int]:
        data = self._check()
        return {chat_id: data.members[chat_id][user_id].joined_seq
                for chat_id in data.user_chats.get(user_id, ())}

    async def member_periods(self, chat_id: str,
                             user_id: str | None = None) -> dict[str, list[Period]]:
        periods = self._check().periods.get(chat_id, {})
        users = periods if user_id is None else [user_id] if user_id in periods else []
        return {user: list(periods[user]) for user in users}

    async def user_periods(self, user_id: str) -> dict[str, list[Period]]:
        data = self._check()
        return {chat_id: list(data.periods[chat_id][user_id])
                for chat_id in data.user_periods.get(user_id, ())}

    # ------------------------------------------------------------------ watermarks
    async def cursors(self, user_id: str, device_id: str) -> dict[str, int]:
        return dict(self._check().cursors.get((user_id, device_id), {}))

    async def receipts(self, chat_id: str) -> dict[str, Receipt]:
        return {user: replace(r) for user, r in self._check().receipts.get(chat_id, {}).items()}

    async def read_seq(self, chat_id: str, user_id: str) -> int:
        receipt = self._check().receipts.get(chat_id, {}).get(user_id)
        return 0 if receipt is None else receipt.read_seq

    async def read_seqs(self, user_id: str, chat_ids: Collection[str]) -> dict[str, int]:
        receipts = self._check().receipts
        return {chat_id: r.read_seq for chat_id in chat_ids
                if (r := receipts.get(chat_id, {}).get(user_id)) is not None}

    # ------------------------------------------------------------------ settings
    async def get_settings(self, user_id: str) -> UserSettings:
        return replace(self._check().settings.get(user_id, UserSettings()))

    async def update_settings(self, user_id: str, read_receipts: bool | None,
                              last_seen: Visibility | None) -> UserSettings:
        settings = self._check().settings
        now = settings.get(user_id, UserSettings())
        settings[user_id] = UserSettings(
            now.read_receipts if read_receipts is None else bool(read_receipts),
            now.last_seen if last_seen is None else Visibility(last_seen))
        return replace(settings[user_id])

    # ------------------------------------------------------------------ blocks
    async def block(self, user_id: str, blocked_id: str) -> None:
        self._check().blocks.setdefault(user_id, set()).add(blocked_id)

    async def unblock(self, user_id: str, blocked_id: str) -> None:
        self._check().blocks.get(user_id, set()).discard(blocked_id)

    async def blocked(self, user_id: str) -> list[str]:
        return sorted(self._check().blocks.get(user_id, ()))

    async def blockers(self, user_id: str) -> set[str]:
        return {blocker for blocker, blocked in self._check().blocks.items() if user_id in blocked}

    # ------------------------------------------------------------------ devices
    async def register_device(self, user_id: str, device_id: str, now_ms: int,
                              max_devices: int) -> DeviceStatus:
        devices = self._check().devices.setdefault(user_id, {})
        known = devices.get(device_id)
        if known is not None:
            return DeviceStatus.REVOKED if known.revoked else DeviceStatus.OK
        if sum(not d.revoked for d in devices.values()) >= max_devices:
            return DeviceStatus.TOO_MANY
        devices[device_id] = _Device(now_ms, now_ms)
        return DeviceStatus.OK

    async def list_devices(self, user_id: str) -> list[DeviceRow]:
        devices = self._check().devices.get(user_id, {})
        rows = [DeviceRow(device_id, d.first_seen_ms, d.last_seen_ms)
                for device_id, d in devices.items() if not d.revoked]
        return sorted(rows, key=lambda d: (d.first_seen_ms, d.device_id))

    async def revoke_device(self, user_id: str, device_id: str) -> bool:
        data = self._check()
        device = data.devices.get(user_id, {}).get(device_id)
        if device is None or device.revoked:
            return False
        device.revoked = True
        data.cursors.pop((user_id, device_id), None)
        data.push_tokens.get(user_id, {}).pop(device_id, None)
        return True

    async def touch_device(self, user_id: str, device_id: str, now_ms: int) -> None:
        device = self._check().devices.get(user_id, {}).get(device_id)
        if device is not None:
            device.last_seen_ms = max(device.last_seen_ms, now_ms)

    async def last_seen(self, user_id: str) -> int:
        devices = self._check().devices.get(user_id, {})
        return max((d.last_seen_ms for d in devices.values()), default=0)

    # ------------------------------------------------------------------ push
    async def set_push_token(self, user_id: str, device_id: str, token: PushToken) -> None:
        self._check().push_tokens.setdefault(user_id, {})[device_id] = replace(token)

    async def drop_push_token(self, user_id: str, device_id: str, token: str | None = None) -> bool:
        tokens = self._check().push_tokens.get(user_id, {})
        stored = tokens.get(device_id)
        if stored is None or token is not None and stored.token != token:
            return False
        del tokens[device_id]
        return True

    async def push_tokens(self, user_id: str) -> dict[str, PushToken]:
        return {device: replace(token) for device, token
                in self._check().push_tokens.get(user_id, {}).items()}

    async def set_mute(self, user_id: str, chat_id: str, until_ms: int, now_ms: int) -> None:
        mutes = self._check().mutes.setdefault(user_id, {})
        if until_ms > now_ms:
            mutes[chat_id] = until_ms
        else:
            mutes.pop(chat_id, None)

    async def mutes(self, user_id: str, now_ms: int) -> dict[str, int]:
        return {chat: until for chat, until in self._check().mutes.get(user_id, {}).items()
                if until > now_ms}

    async def put_pushes(self, pushes: list[QueuedPush]) -> None:
        queue = self._check().push_queue
        for push in pushes:
            key = (push.user_id, push.device_id, push.chat_id)
            stored = queue.get(key)
            if stored is None or stored.last_seq <= push.last_seq:
                queue[key] = replace(push)

    async def drop_pushes(self, done: list[tuple[str, str, str, int]]) -> None:
        queue = self._check().push_queue
        for user_id, device_id, chat_id, last_seq in done:
            stored = queue.get((user_id, device_id, chat_id))
            if stored is not None and stored.last_seq <= last_seq:
                del queue[(user_id, device_id, chat_id)]

    async def queued_pushes(self) -> list[QueuedPush]:
        return [replace(push) for push in self._check().push_queue.values()]

    # ------------------------------------------------------------------ media
    async def create_media(self, record: MediaRecord) -> MediaRecord:
        data = self._check()
        key = (record.owner, record.content_key)
        known = data.media.get(data.media_by_content.get(key, ""))
        if known is not None:
            return replace(known)
        data.media[record.media_id] = replace(record, state=MediaState.PENDING, refs=frozenset())
        data.media_by_content[key] = record.media_id
        return replace(data.media[record.media_id])

    async def get_media(self, media_id: str) -> MediaRecord | None:
        record = self._check().media.get(media_id)
        return None if record is None else replace(record)

    async def complete_media(self, media_id: str) -> MediaRecord | None:
        media = self._check().media
        record = media.get(media_id)
        if record is None:
            return None
        record.state = MediaState.COMPLETE
        parent = media.get(record.thumbnail_of)
        if parent is not None:
            parent.thumbnail_id = media_id
            record.refs |= parent.refs
        return replace(record)

    async def claim_media(self, owner: str, chat_id: str,
                          media_ids: Collection[str]) -> dict[str, MediaRecord]:
        media = self._check().media
        for media_id in media_ids:
            record = media.get(media_id)
            if (record is not None and record.owner == owner and not record.thumbnail_of
                    and record.state is MediaState.COMPLETE):
                for claimed in (record, media.get(record.thumbnail_id)):
                    if claimed is not None:
                        claimed.refs |= {chat_id}
        return {media_id: replace(media[media_id]) for media_id in media_ids if media_id in media}

    async def unreferenced_media(self, created_before_ms: int, limit: int) -> list[MediaRecord]:
        found = sorted((r for r in self._check().media.values()
                        if not r.refs and r.created_at_ms < created_before_ms),
                       key=lambda r: (r.created_at_ms, r.media_id))
        return [replace(r) for r in found[:max(limit, 0)]]

    async def delete_media(self, media_id: str) -> bool:
        data = self._check()
        record = data.media.get(media_id)
        if record is None or record.refs:
            return False
        del data.media[media_id]
        key = (record.owner, record.content_key)
        if data.media_by_content.get(key) == media_id:
            del data.media_by_content[key]
        return True
