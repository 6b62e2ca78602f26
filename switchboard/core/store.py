"""The Store: everything Switchboard keeps durably, as narrow ports that a database partitioned
by chat and by user can serve with single-partition reads.

Ports (each an ABC below; a service asks for the narrowest one it needs):

* `MessageLog`: a chat's messages, its head, who sent what.
* `ChatDirectory`: chats, their members and membership periods, a user's chats.
* `Watermarks`: device cursors and the delivered/read/public read watermarks of (chat, user).
* `DeviceDirectory`: device admission, revocation, last seen.
* `SettingsStore`: per-user settings.
* `BlockList`: who blocked whom.
* `PushDirectory`: devices' push tokens, per-user chat mutes, the queue of pushes owed.
* `MediaDirectory`: uploaded media (owner, size, type, hash, state, references); the bytes
  are in object storage (core/objects.py), never in the store.

`Store` bundles them with `open`, `close` and `commit`, the write path of the coalescing writer.
Implementations, one per file: `store_sqlite.SQLiteStore` (embedded, one file),
`store_memory.MemoryStore` (in-process, for tests and throwaway runs) and
`store_scylla.ScyllaStore` (ScyllaDB / Cassandra). `stores.make_store` builds the one that the
`[store]` config section names. `tests/contract/test_store_contract.py` runs against every
implementation; a new store is done when it passes that suite.

Guarantees every implementation gives (the rest of the system relies on them, and nothing more):

* **Commit is atomic and durable per chat, not across chats.** `commit(batch)` returns a
  `CommitOutcome`: for each message its `CommitResult` once that message is durable (it survives
  kill -9 of any process; SQLite: power loss too), or None when it is not known to be stored:
  its chat failed, and `failed[chat_id]` says why. A chat's messages are taken in list order, so
  what a failed chat did store is a prefix of them. A failed chat's outcome is unknown: the
  sender retries with the same client_msg_id and the retry is deduplicated, so it never makes a
  second copy. Chats do not wait for each other: one chat failing does not fail another (a store may fail more than it must: SQLite commits one
  transaction per batch, all or nothing). `commit` raising StoreError means every chat failed
  and no watermark of the batch is known to be saved.
* **Sequencing**: each new message of a chat gets seq = the chat's head + 1 and the head moves to
  it. Per-chat seq is gap-free, strictly increasing and never reused, enforced by the store
  itself (a unique (chat_id, seq), a conditional write on the head), not only by ring ownership:
  two stores committing to one chat at the same moment never give one seq to two messages and
  never skip one.
* **Dedup** by (chat_id, sender_user, client_msg_id), across batches, restarts and store
  instances: a duplicate gets the original row back (`CommitResult.duplicate`) and writes nothing.
* **Membership events** are messages too (`NewMessage.event`), sequenced and deduplicated like
  any other, and committing one applies it in the same per-chat atomic unit, at its seq E:
  ADDED makes each named user who is not a current member a MEMBER with joined_seq = E - 1 and
  a new open period (E - 1, None); REMOVED closes each named current member's open period at
  E (left_seq = E: the event is the last message it sees) and drops it from the members and
  from its user_chats. Names it does not concern (already a member, not a member) are left
  alone. The stored message carries the event (`StoredMessage.event`). Chat creation makes its
  members' first periods (0, None) and stores no event.
* **Watermarks** (device cursors, delivered, read and public read) are idempotent max-upserts:
  they never move backwards, whatever order concurrent updates land in. A device's cursor
  raises its user's delivered watermark in the chat too (the device holds what it acked; so a
  store may keep that raise in the cursor alone, and revoking the device does not lower it).
  `reads` raise read and delivered; `public_reads` raise public read, read and delivered
  (public <= read <= ... is kept by raising together, never by lowering). They may land
  separately from the messages of the same batch: `CommitOutcome.unsaved` holds the ones that
  did not, for the writer to send again.
  A new message raises its sender's delivered and read watermarks in its chat to its seq (you
  have read what you wrote), and its public read watermark too when `NewMessage.public_read`;
  a message whose sender_user is "" (an operator's membership event) raises nothing. That raise
  may also come back in `unsaved`.
* **Reads** see every chat committed before they started (read-your-writes within one process).
  Multi-chat reads (`heads`, `chats`, ...) are a set of single-chat reads, not one snapshot.

All methods are coroutines and never block the event loop.
"""
from __future__ import annotations

import abc
import asyncio
from typing import Collection, NamedTuple, Sequence

from .model import (Batch, Chat, ChatKind, CommitOutcome, DeviceRow, DeviceStatus, MediaRecord,
                    Membership, Period, PushToken, QueuedPush, Receipt, Role, StoredMessage,
                    UserSettings, Visibility)


class StoreError(Exception):
    """The store failed; the operation may or may not have been applied."""


class MessageLog(abc.ABC):
    """A chat's messages in seq order and its head (the highest committed seq)."""

    @abc.abstractmethod
    async def read_messages(self, chat_id: str, after_seq: int, limit: int) -> list[StoredMessage]:
        """Messages with seq > after_seq, ascending, at most `limit`."""

    @abc.abstractmethod
    async def read_history(self, chat_id: str, before_seq: int, floor_seq: int,
                           limit: int) -> list[StoredMessage]:
        """Messages with floor_seq < seq < before_seq, descending, at most `limit`;
        before_seq == 0 means from the newest message down."""

    @abc.abstractmethod
    async def head_seq(self, chat_id: str) -> int:
        """The highest committed seq of the chat (0 when empty or unknown)."""

    @abc.abstractmethod
    async def heads(self, chat_ids: Collection[str]) -> dict[str, int]:
        """head_seq of each chat; chats without messages are absent."""

    @abc.abstractmethod
    async def senders_between(self, chat_id: str, after_seq: int, upto_seq: int) -> set[str]:
        """Distinct senders of the messages with after_seq < seq <= upto_seq."""


class ChatDirectory(abc.ABC):
    """Chats and membership, readable by chat (members) and by user (user_chats)."""

    @abc.abstractmethod
    async def create_chat(self, chat: Chat, members: dict[str, Role]) -> Chat:
        """Create a chat with its members (joined_seq 0, each with a period (0, None)).
        Idempotent by chat_id: when the chat exists already it is returned unchanged and
        `members` is ignored. Later changes of members are membership events (commit)."""

    @abc.abstractmethod
    async def get_chat(self, chat_id: str) -> Chat | None: ...

    @abc.abstractmethod
    async def chats(self, chat_ids: Collection[str]) -> dict[str, Chat]:
        """get_chat of each chat; unknown chats are absent."""

    @abc.abstractmethod
    async def members(self, chat_id: str) -> dict[str, Membership]:
        """Current members of the chat (empty for an unknown chat)."""

    @abc.abstractmethod
    async def member_counts(self, chat_ids: Collection[str]) -> dict[str, int]:
        """How many members each chat has; chats without members are absent."""

    @abc.abstractmethod
    async def user_chats(self, user_id: str) -> dict[str, int]:
        """The chats the user is a member of, each with the member's joined_seq."""

    @abc.abstractmethod
    async def member_periods(self, chat_id: str,
                             user_id: str | None = None) -> dict[str, list[Period]]:
        """Every user who is or was a member of the chat (only `user_id`, when given), with
        their membership periods, oldest first; a current member's last period is open. Users
        never members are absent. (One read of the chat's partition.)"""

    @abc.abstractmethod
    async def user_periods(self, user_id: str) -> dict[str, list[Period]]:
        """Every chat the user is or was a member of, with the user's periods there, oldest
        first. (One read of the user's partition.)"""


class Watermarks(abc.ABC):
    """Device cursors (user, device, chat) and receipts (chat, user); written through commit."""

    @abc.abstractmethod
    async def cursors(self, user_id: str, device_id: str) -> dict[str, int]:
        """The device's acked seq per chat (chats it never acked are absent)."""

    @abc.abstractmethod
    async def receipts(self, chat_id: str) -> dict[str, Receipt]:
        """Watermarks of every user who has any in the chat (members without a row: absent)."""

    @abc.abstractmethod
    async def read_seq(self, chat_id: str, user_id: str) -> int:
        """The user's (private) read watermark in the chat (0 when never set)."""

    @abc.abstractmethod
    async def read_seqs(self, user_id: str, chat_ids: Collection[str]) -> dict[str, int]:
        """read_seq of the user in each chat; chats without a read watermark are absent."""


class DeviceDirectory(abc.ABC):
    """A user's devices: admission up to a limit, revocation for good, last seen."""

    @abc.abstractmethod
    async def register_device(self, user_id: str, device_id: str, now_ms: int,
                              max_devices: int) -> DeviceStatus:
        """Admit a device at connect, atomically: a known device is OK; a revoked one is REVOKED
        (forever: a revoked device id never comes back); a new one is added unless the user
        already has max_devices devices (TOO_MANY). Two stores racing cannot admit one too many.
        A new device starts with first_seen_ms = last_seen_ms = now_ms."""

    @abc.abstractmethod
    async def list_devices(self, user_id: str) -> list[DeviceRow]:
        """The user's devices that are not revoked, oldest first."""

    @abc.abstractmethod
    async def revoke_device(self, user_id: str, device_id: str) -> bool:
        """Revoke a device (its cursors and push token are dropped); False if it is unknown or
        already revoked."""

    @abc.abstractmethod
    async def touch_device(self, user_id: str, device_id: str, now_ms: int) -> None:
        """Record that the device was last seen at now_ms (called when it disconnects); keeps
        the max, since clocks of several processes differ. An unknown device is ignored."""

    async def touch_devices(self, seen: Sequence[tuple[str, str, int]]) -> None:
        """touch_device for many (user, device, now_ms) at once: the batch the gateway writes
        every few seconds instead of one write per disconnect. A store that can do it in one
        transaction overrides this."""
        for user_id, device_id, now_ms in seen:
            await self.touch_device(user_id, device_id, now_ms)

    @abc.abstractmethod
    async def last_seen(self, user_id: str) -> int:
        """The latest last_seen_ms of the user's devices, revoked ones included (0 when never
        seen): revoking a device does not change when its user was last seen."""


class SettingsStore(abc.ABC):
    @abc.abstractmethod
    async def get_settings(self, user_id: str) -> UserSettings:
        """The user's settings (defaults when never set)."""

    @abc.abstractmethod
    async def update_settings(self, user_id: str, read_receipts: bool | None,
                              last_seen: Visibility | None) -> UserSettings:
        """Change the given settings (None = leave as is); returns the result."""


class BlockList(abc.ABC):
    """Who blocked whom, readable by the blocker (blocked) and by the blocked (blockers)."""

    @abc.abstractmethod
    async def block(self, user_id: str, blocked_id: str) -> None:
        """user_id blocks blocked_id (idempotent)."""

    @abc.abstractmethod
    async def unblock(self, user_id: str, blocked_id: str) -> None:
        """Lift the block (idempotent: no block, nothing happens)."""

    @abc.abstractmethod
    async def blocked(self, user_id: str) -> list[str]:
        """The users user_id blocked, sorted."""

    @abc.abstractmethod
    async def blockers(self, user_id: str) -> set[str]:
        """The users who blocked user_id."""


class PushDirectory(abc.ABC):
    """What waking offline devices needs (switchboard/push/): a push token per device, a user's
    muted chats, and the durable queue of pushes owed, so a restart loses none. Reads are by
    user (tokens, mutes); the queue is read whole only when a node starts or takes chats over."""

    @abc.abstractmethod
    async def set_push_token(self, user_id: str, device_id: str, token: PushToken) -> None:
        """Register or replace the device's token (one per device)."""

    @abc.abstractmethod
    async def drop_push_token(self, user_id: str, device_id: str, token: str | None = None) -> bool:
        """Remove the device's token; with `token`, only while the stored one is still that
        token (a provider said it is dead: a registration made since stays). True if removed."""

    @abc.abstractmethod
    async def push_tokens(self, user_id: str) -> dict[str, PushToken]:
        """device -> token for every device of the user that has one."""

    @abc.abstractmethod
    async def set_mute(self, user_id: str, chat_id: str, until_ms: int, now_ms: int) -> None:
        """Mute the chat for the user until `until_ms` (MUTE_FOREVER: for good); an
        `until_ms` not after `now_ms` unmutes it."""

    @abc.abstractmethod
    async def mutes(self, user_id: str, now_ms: int) -> dict[str, int]:
        """chat -> until_ms of the user's mutes that have not expired at `now_ms`."""

    @abc.abstractmethod
    async def put_pushes(self, pushes: list[QueuedPush]) -> None:
        """Queue or update pushes, keyed by (user, device, chat). A put whose last_seq is below
        the stored entry's changes nothing (puts may land out of order)."""

    @abc.abstractmethod
    async def drop_pushes(self, done: list[tuple[str, str, str, int]]) -> None:
        """(user, device, chat, last_seq): remove each entry while its last_seq is at most
        that (a push queued since for newer messages stays)."""

    @abc.abstractmethod
    async def queued_pushes(self) -> list[QueuedPush]:
        """Every queued push (a node starting, or taking chats over, resumes them)."""


class MediaDirectory(abc.ABC):
    """Uploaded media by id, deduplicated per owner by content (MediaRecord.content_key).

    A media becomes referenced (its `refs` gain a chat) before a message naming it goes to the
    writer, so a media that a committed message may name is never deleted: `claim_media` and
    `delete_media` exclude each other per media. A claim whose message then fails leaves a
    reference to a chat without such a message; it only keeps the bytes (a download is checked
    against the message itself, core/media.py)."""

    @abc.abstractmethod
    async def create_media(self, record: MediaRecord) -> MediaRecord:
        """Insert a PENDING record, unless the owner already has one with the same content key:
        then that one is returned as it is (dedup) and `record` is dropped. Two creates racing
        on one key may both insert; each gets a usable record."""

    @abc.abstractmethod
    async def get_media(self, media_id: str) -> MediaRecord | None: ...

    @abc.abstractmethod
    async def complete_media(self, media_id: str) -> MediaRecord | None:
        """PENDING -> COMPLETE (idempotent). A completed thumbnail becomes its media's
        `thumbnail_id` and takes its references. None when the record is gone."""

    @abc.abstractmethod
    async def claim_media(self, owner: str, chat_id: str,
                          media_ids: Collection[str]) -> dict[str, MediaRecord]:
        """For each id that is `owner`'s, COMPLETE and not a thumbnail: add `chat_id` to its
        refs and its thumbnail's, atomically per media with `delete_media`. Returns every known
        record as it is afterwards (unknown ids are absent); the caller tells refusals apart."""

    @abc.abstractmethod
    async def unreferenced_media(self, created_before_ms: int, limit: int) -> list[MediaRecord]:
        """Up to `limit` media without refs created before the cutoff (pending or complete,
        thumbnails too), oldest first: what an orphan sweep looks at."""

    @abc.abstractmethod
    async def delete_media(self, media_id: str) -> bool:
        """Delete the record unless it has refs (False then, and when it is gone); its dedup
        entry goes with it."""


class Store(MessageLog, ChatDirectory, Watermarks, DeviceDirectory, SettingsStore, BlockList,
            PushDirectory, MediaDirectory):
    @abc.abstractmethod
    async def open(self) -> None:
        """Get ready to serve (creating the schema if this store may)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; pending calls finish first."""

    @abc.abstractmethod
    async def commit(self, batch: Batch) -> CommitOutcome:
        """Write one batch: messages atomic per chat, watermarks as max-upserts (see above)."""

    async def sync_reads(self, devices: Sequence[tuple[str, str]]) -> list[SyncReads]:
        """The reads of each (user, device)'s sync snapshot, in order: its user's periods,
        its cursors, the heads of those chats. A reconnect storm asks for many at once (every
        handshake of one loop turn, core/backlog.py backlog_reader); this default makes each
        device's narrow reads concurrently, a store that can answer the whole batch in one
        call overrides it (SQLite: one call on a reader thread)."""
        return list(await asyncio.gather(*(self._sync_reads(u, d) for u, d in devices)))

    async def list_devices_of(self, user_ids: Sequence[str]) -> list[list[DeviceRow]]:
        """`list_devices` of each user, in order: what the admissions of a loop turn's
        handshakes read (core/devices.py). Overridden like `sync_reads`."""
        return list(await asyncio.gather(*(self.list_devices(u) for u in user_ids)))

    async def _sync_reads(self, user_id: str, device_id: str) -> SyncReads:
        periods, cursors = await asyncio.gather(self.user_periods(user_id),
                                                self.cursors(user_id, device_id))
        return SyncReads(periods, cursors, await self.heads(periods))


class SyncReads(NamedTuple):
    """What a device's sync snapshot is made of (core/backlog.py combines them)."""
    periods: dict[str, list[Period]]   # the user's membership periods, by chat
    cursors: dict[str, int]            # the device's acked seq, by chat
    heads: dict[str, int]              # the head of each chat in `periods`


__all__ = ["Store", "StoreError", "SyncReads", "MessageLog", "ChatDirectory", "Watermarks",
           "DeviceDirectory", "SettingsStore", "BlockList", "PushDirectory", "MediaDirectory",
           "ChatKind", "Role", "Visibility", "DeviceStatus"]
