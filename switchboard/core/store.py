"""The Store interface: everything Switchboard keeps durably.

Implementations: `store_sqlite.SQLiteStore` (embedded, one file) and, when a cluster is
configured, a ScyllaDB store. `tests/contract/test_store_contract.py` runs against every
implementation; a new store is done when it passes that suite.

Guarantees every implementation gives (the rest of the system relies on them):

* `commit` is atomic and durable: when it returns, every row of the batch survives a
  kill -9 of the process (and, for SQLite, power loss: WAL with synchronous=FULL). When it
  raises, nothing of the batch is visible. A timeout may leave the outcome unknown; because
  messages are deduplicated by (chat_id, sender_user, client_msg_id) inside `commit`, the
  caller retries the same rows and never creates a second copy.
* Sequencing: within `commit`, messages are taken in list order; each new one gets
  seq = current head of its chat + 1 and the head moves to it. So per-chat seq is gap-free
  and strictly increasing, and one (chat_id, seq) holds one message forever. Only the
  chat's owner calls `commit` for a chat (single writer per chat); the store still refuses
  to overwrite an existing (chat_id, seq).
* Cursors and delivered/read watermarks never move backwards: the store keeps the max. A new
  message moves its sender's delivered and read watermarks in that chat up to its seq (you have
  read what you wrote).
* Reads see every committed batch (read-your-writes within one process).

All methods are coroutines and never block the event loop.
"""
from __future__ import annotations

import abc
from typing import Iterable

from .model import (Backlog, Batch, Chat, ChatKind, ChatSummaryRow, CommitResult, DeviceRow,
                    DeviceStatus, Membership, Receipt, Role, StoredMessage, UserSettings,
                    Visibility)


class StoreError(Exception):
    """The store failed; the operation may or may not have been applied."""


class Store(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None:
        """Create the schema if needed and get ready to serve."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; pending calls finish first."""

    # ------------------------------------------------------------- write path
    @abc.abstractmethod
    async def commit(self, batch: Batch) -> list[CommitResult]:
        """Write one batch atomically; results are in the order of batch.messages."""

    # ------------------------------------------------------------- messages
    @abc.abstractmethod
    async def read_messages(self, chat_id: str, after_seq: int, limit: int) -> list[StoredMessage]:
        """Messages with seq > after_seq, ascending, at most `limit`."""

    @abc.abstractmethod
    async def read_history(self, chat_id: str, before_seq: int, floor_seq: int,
                           limit: int) -> list[StoredMessage]:
        """Messages with floor_seq < seq < before_seq, descending, at most `limit`."""

    @abc.abstractmethod
    async def head_seq(self, chat_id: str) -> int:
        """The highest committed seq of the chat (0 when empty or unknown)."""

    # ------------------------------------------------------------- chats
    @abc.abstractmethod
    async def create_chat(self, chat: Chat, members: dict[str, Role]) -> Chat:
        """Create a chat with its members (joined_seq 0). Idempotent by chat_id: when the chat
        exists already it is returned unchanged and `members` is ignored."""

    @abc.abstractmethod
    async def get_chat(self, chat_id: str) -> Chat | None: ...

    @abc.abstractmethod
    async def members(self, chat_id: str) -> dict[str, Membership]:
        """Current members of the chat (empty for an unknown chat)."""

    @abc.abstractmethod
    async def add_members(self, chat_id: str, users: dict[str, Role]) -> dict[str, Membership]:
        """Add users (already-members are left as they are); their joined_seq is the chat's
        head at the time of joining. Returns the new member map."""

    @abc.abstractmethod
    async def remove_members(self, chat_id: str, users: Iterable[str]) -> dict[str, Membership]:
        """Remove users; returns the new member map."""

    @abc.abstractmethod
    async def list_chats(self, user_id: str) -> list[ChatSummaryRow]:
        """The user's chats with head seq, the user's read watermark and member count."""

    # ------------------------------------------------------------- cursors
    @abc.abstractmethod
    async def backlog(self, user_id: str, device_id: str) -> list[Backlog]:
        """Chats of the user whose head is above the device's cursor. A device with no cursor
        for a chat starts at the member's joined_seq."""

    @abc.abstractmethod
    async def read_seq(self, chat_id: str, user_id: str) -> int:
        """The user's read watermark in the chat (0 when never set)."""

    # ------------------------------------------------------------- receipts
    @abc.abstractmethod
    async def receipts(self, chat_id: str) -> dict[str, Receipt]:
        """Watermarks of every user who has any in the chat (members without a row: absent)."""

    @abc.abstractmethod
    async def senders_between(self, chat_id: str, after_seq: int, upto_seq: int) -> set[str]:
        """Distinct senders of the messages with after_seq < seq <= upto_seq."""

    # ------------------------------------------------------------- users and devices
    @abc.abstractmethod
    async def get_settings(self, user_id: str) -> UserSettings:
        """The user's settings (defaults when never set)."""

    @abc.abstractmethod
    async def update_settings(self, user_id: str, read_receipts: bool | None,
                              last_seen: Visibility | None) -> UserSettings:
        """Change the given settings (None = leave as is); returns the result."""

    @abc.abstractmethod
    async def register_device(self, user_id: str, device_id: str, now_ms: int,
                              max_devices: int) -> DeviceStatus:
        """Admit a device at connect, atomically: a known device is OK; a revoked one is REVOKED
        (forever: a revoked device id never comes back); a new one is added unless the user
        already has max_devices devices (TOO_MANY)."""

    @abc.abstractmethod
    async def list_devices(self, user_id: str) -> list[DeviceRow]:
        """The user's devices that are not revoked, oldest first."""

    @abc.abstractmethod
    async def revoke_device(self, user_id: str, device_id: str) -> bool:
        """Revoke a device (its cursors are dropped); False if it is unknown or already revoked."""

    @abc.abstractmethod
    async def touch_device(self, user_id: str, device_id: str, now_ms: int) -> None:
        """Record that the device was last seen at now_ms (called when it disconnects)."""

    @abc.abstractmethod
    async def last_seen(self, user_id: str) -> int:
        """The latest last_seen_ms of the user's devices (0 when never seen)."""


__all__ = ["Store", "StoreError", "ChatKind", "Role", "Visibility", "DeviceStatus"]
