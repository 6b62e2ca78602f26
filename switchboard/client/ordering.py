"""Per-chat ordering and dedup on the device: the client half of "each message once, in order".

The server sends every chat in seq order on a connection, but it may send a seq again
(retransmit after 10 s without ack progress, replay from the durable cursor after a reconnect or
a Sync). So the device keeps, per chat, `have`: the highest seq up to which it holds every
message. This class is that state and nothing else (no I/O, no futures), so the client dedup
algorithm of docs/protocol.md (section 8.3) can be tested without sockets and reused by any
transport.

Rules:
* Deliver seq <= have: duplicate, dropped (but acked again: the server evidently missed the ack).
* seq == have + 1, or the first message of a chat this client has seen: accepted, have = seq,
  then buffered seqs have + 1, have + 2, ... are drained.
* seq > have + 1: held in a bounded reorder buffer; `needs_sync` says a Sync would help (a gap
  appeared since the last sync and is still open). A resend of a seq already held is not new
  evidence, so a gap that a sync cannot fill does not cause a stream of syncs.
* Messages sent by this very device (user and device match) advance `have` but are not returned:
  the app already has them from its send.
* A membership event that adds this user starts its visible range of the chat again: `have`
  jumps to its seq (whatever was held below is pruned), as after a removal and a re-add the
  messages between were never visible to it and never come.
* A floor from the server (Deliver.floors) says nothing at or below it will come on this
  connection: `have` is raised to it when below (a gap no Sync can fill: the user was not a
  member there, or the device acked it before losing it).
* SendAck(chat, seq) counts our own seq as received once it is contiguous with `have`: at once
  when have == seq - 1, otherwise as a marker in the reorder buffer that the drain steps over.
  A chat's `have` never starts from a SendAck alone (except at seq 1): older messages of the
  chat may still be on their way, and starting above them would drop them as duplicates.
  Markers are not counted against the buffer bound: the server does not send a connection its
  own sends, so a dropped marker might never be filled, while a dropped message comes again (it
  is not acked). There is at most one marker per own send.

Acks are cumulative ("I hold everything up to seq", i.e. `have`) and only name chats the current
connection has delivered (or acknowledged a send in): the server refuses acks for other chats
(ACK_INVALID). After a reconnect, acking `have` at the first replayed duplicate lets the server
skip the rest of what this device already holds.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["ChatOrder", "DeliveredMessage"]


class DeliveredMessage(Protocol):
    """What ChatOrder reads from a message (pb.Message satisfies it)."""
    chat_id: str
    seq: int
    sender_user_id: str
    sender_device_id: str

    def HasField(self, name: str) -> bool: ...  # noqa: N802 - protobuf's name


_OWN = None          # reorder-buffer marker: "this seq is our own send (SendAck seen)"
_ABSENT = object()
ADDED = 1            # MembershipEvent.Action.ADDED (docs/protocol.md 4.3)


class ChatOrder:
    """Dedup and per-chat ordering state of one device.

    `feed` and `on_send_ack` return the messages to hand to the app, in order. Not thread-safe;
    one instance per client, living across reconnects (the watermark is the device's, not the
    connection's).
    """

    __slots__ = ("have", "user_id", "device_id", "max_buffered", "duplicates", "dropped",
                 "_auto_ack", "_buffer", "_buffered", "_gap_seen", "_lost", "_live",
                 "_app_acked", "_dirty")

    def __init__(self, have: Mapping[str, int] | None = None, *, user_id: str = "",
                 device_id: str = "", max_buffered: int = 4096, auto_ack: bool = True) -> None:
        #: chat_id -> highest contiguous seq held. Apps persist it and pass it back in.
        self.have: dict[str, int] = dict(have or {})
        self.user_id = user_id
        self.device_id = device_id
        #: Out-of-order messages held over all chats; beyond it they are dropped (never acked,
        #: so the server sends them again) instead of growing memory.
        self.max_buffered = max_buffered
        self.duplicates = 0
        self.dropped = 0
        self._auto_ack = auto_ack
        self._buffer: dict[str, dict[int, object]] = {}
        self._buffered = 0                     # messages (not own-send markers) held
        self._gap_seen = False                 # a new gap since the last sync started
        self._lost = False                     # a message was dropped since the last sync started
        self._live: set[str] = set()           # chats the current connection has delivered
        self._app_acked: dict[str, int] = {}   # manual acking: what the app acked
        self._dirty: set[str] = set()          # chats whose ack should go out

    @property
    def buffered(self) -> int:
        """Out-of-order messages held right now."""
        return self._buffered

    @property
    def needs_sync(self) -> bool:
        """A gap appeared since the last sync started and is still open: send Sync."""
        return self._gap_seen and (self._buffered > 0 or self._lost)

    def sync_started(self) -> None:
        """A Sync went out (or the automatic one after Welcome began): it replays everything
        above the server's cursor, so earlier gap evidence is covered by it."""
        self._gap_seen = False
        self._lost = False

    def feed(self, message: DeliveredMessage) -> list:
        """One delivered message -> the messages now ready for the app (possibly none)."""
        chat = message.chat_id
        seq = message.seq
        self._live.add(chat)
        have = self.have.get(chat)
        restart = have is not None and seq > have + 1 and self._adds_me(message)
        if have is None or seq == have + 1 or restart:  # an add of this user: a new range
            self.have[chat] = seq
            self._dirty.add(chat)
            out = [] if self._is_own(message) else [message]
            if chat in self._buffer:
                self._drain(chat, out, prune=have is None or restart)
            return out
        if seq <= have:
            self.duplicates += 1
            self._dirty.add(chat)
            return []
        self._hold(chat, seq, message)
        return []

    def on_send_ack(self, chat_id: str, seq: int) -> list:
        """Our own message got `seq`: count it as held when contiguous. Returns the buffered
        messages that this unblocks."""
        self._live.add(chat_id)
        have = self.have.get(chat_id)
        if have is None and seq == 1:
            have = 0  # the chat's first message is ours: nothing can precede it
        if have is None or seq > have + 1:
            self._hold(chat_id, seq, _OWN)
            return []
        if seq <= have:
            return []
        self.have[chat_id] = seq
        self._dirty.add(chat_id)
        out: list = []
        if chat_id in self._buffer:
            self._drain(chat_id, out, prune=False)
        return out

    def floor(self, chat_id: str, seq: int) -> list:
        """The server sends nothing of chat_id at or below seq on this connection: raise `have`
        to it (when below or unknown). Returns the buffered messages this unblocks."""
        self._live.add(chat_id)
        have = self.have.get(chat_id)
        if have is not None and have >= seq:
            return []
        out: list = []
        self.have[chat_id] = seq
        self._dirty.add(chat_id)
        if chat_id in self._buffer:
            self._drain(chat_id, out, prune=True)
        return out

    def _adds_me(self, message: DeliveredMessage) -> bool:
        return (message.HasField("membership") and message.membership.action == ADDED
                and self.user_id in message.membership.user_ids)

    def ack(self, chat_id: str, seq: int) -> None:
        """The app processed everything of `chat_id` up to `seq`. With auto_ack=False acks never
        go beyond this, so what the app did not confirm is delivered again after a reconnect."""
        if seq > self._app_acked.get(chat_id, 0):
            self._app_acked[chat_id] = seq
        self._dirty.add(chat_id)

    def take_acks(self) -> list[tuple[str, int]]:
        """The cumulative acks to send now, one per chat that changed; clears them."""
        if not self._dirty:
            return []
        acks = []
        have = self.have
        for chat in self._dirty:
            if chat not in self._live:
                continue
            seq = have.get(chat, 0)
            if not self._auto_ack:
                seq = min(seq, self._app_acked.get(chat, 0))
            if seq > 0:
                acks.append((chat, seq))
        self._dirty.clear()
        return acks

    def new_connection(self) -> None:
        """A new connection starts: the server replays from its durable cursor and knows nothing
        of acks that did not reach it, so per-connection ack state starts over."""
        self._live.clear()
        self._dirty.clear()
        self.sync_started()

    # ------------------------------------------------------------------ internals
    def _is_own(self, message: DeliveredMessage) -> bool:
        return message.sender_device_id == self.device_id and message.sender_user_id == self.user_id

    def _hold(self, chat: str, seq: int, item: object) -> None:
        pending = self._buffer.get(chat)
        if pending is not None and seq in pending:
            return  # a resend of something already held: no new gap, no new Sync
        if item is not _OWN and self._buffered >= self.max_buffered:
            # Not acked, so the server sends it again after the next Sync or retransmit.
            self.dropped += 1
            self._gap_seen = self._lost = True
            return
        if pending is None:
            pending = self._buffer[chat] = {}
        pending[seq] = item
        if item is not _OWN:
            self._buffered += 1
            self._gap_seen = True

    def _drain(self, chat: str, out: list, *, prune: bool) -> None:
        pending = self._buffer[chat]
        have = self.have[chat]
        if prune:  # `have` just started or jumped above held entries
            for seq in [seq for seq in pending if seq <= have]:
                if pending.pop(seq) is not _OWN:
                    self._buffered -= 1
        while pending:
            item = pending.pop(have + 1, _ABSENT)
            if item is _ABSENT:
                break
            have += 1
            if item is not _OWN:
                self._buffered -= 1
                if not self._is_own(item):
                    out.append(item)
        self.have[chat] = have
        if not pending:
            del self._buffer[chat]
