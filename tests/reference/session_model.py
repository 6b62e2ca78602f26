"""Reference twin of switchboard.core._native.session.Session, for tests only.

The same session in plain Python, reading and writing frames with the protobuf library
(tests/reference/wire_model.py, gateway/wire.py through its port) instead of the native codec: the unit
tests of the session run on both, and the property tests feed both the same frames and compare
every byte and port call. core/session.py says what a session does.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Sequence

from switchboard.core.backlog import visible_above
from switchboard.core.model import Backlog, Period, StoredMessage, next_visible, range_end
from switchboard.core.ratelimit import TokenBucket
from switchboard.core.session import CLOSED_PORT, State
from switchboard.proto.codes import Close
from switchboard.proto.v1 import client_pb2 as pb

from . import wire_model

PAGE = 128               # messages per store read of a pump
MAX_EARLY_FRAMES = 16    # frames held while the device is being admitted
CLOSE_GRACE = 2.0        # s a closed connection waits for the peer's CLOSE


class Opcode(enum.IntEnum):
    """WebSocket opcodes the session is handed (RFC 6455 5.2)."""
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


# Stream.ranges when a membership event named the user: read the ranges again before sending
# (compared by identity)
STALE: tuple[Period, ...] = (Period(0, 0),)


class Stream:
    """Delivery state of one chat on one connection. `ranges`: None while everything above
    `acked` is visible to the user (the common case), else the user's membership periods that
    reach above it, or STALE."""
    __slots__ = ("acked", "sent", "head", "ranges")

    def __init__(self, acked: int, head: int, ranges: tuple[Period, ...] | None = None) -> None:
        self.acked = acked
        self.sent = acked
        self.head = head
        self.ranges = ranges


class SyncRun:
    """An ongoing sync: which chats must reach which seq before SyncComplete goes out."""
    __slots__ = ("request_id", "targets", "messages", "loading", "pending")

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.targets: dict[str, int] = {}
        self.messages = 0
        self.loading = True
        # chats with no stream yet that got live messages while the backlog loaded: first seq
        self.pending: dict[str, tuple[int, int]] = {}


PING_FRAME = wire_model.ws_frame(Opcode.PING, b"")


class Session:
    """Session(port, config, stats, timers, acks=, user="", device=""), as the native one."""

    def __init__(self, port, config, stats, timers, *, acks, user: str = "",
                 device: str = "") -> None:
        self.port = port
        self.config = config
        self.stats = stats
        self.acks = acks
        self.timers = timers
        self.state = State.AWAIT_AUTH
        self.user = user
        self.device = device
        self.streams: dict[str, Stream] = {}
        self.inflight = 0
        self.last_rx = 0.0
        self.last_progress = 0.0
        self.pinged = False
        self.timer_due = math.inf
        self.closing_at = 0.0
        self.stalled_since = 0.0  # answers wait for the outbound buffer since (0: they do not)
        self.sync: SyncRun | None = None
        self.frame_bucket: TokenBucket | None = None
        self.retransmits = 0
        self.early: list[tuple] | None = None  # frames that came while ADMITTING, decoded
        self.fragments: list[bytes] | None = None  # a fragmented message being reassembled
        self.fragment_bytes = 0
        self.own_sends: dict[str, int] | None = None  # chat -> highest seq SendAck'ed here
        # cluster: chats offered with no stream yet, waiting for the device's stored cursor
        self.resolving: dict[str, tuple[int, int]] | None = None
        self._resolving_batch: dict[str, tuple[int, int]] = {}
        self.pumping = False
        self._pumped: set[str] = set()  # chats read in this round of the pump
        self._out = bytearray()

    # ------------------------------------------------------------------ lifecycle in
    def connected(self, now: float) -> None:
        """The upgrade is done. With a user (token in the header) the device is admitted next
        (the port calls `open`); without, an Auth frame must come within auth_timeout."""
        self.last_rx = now
        self.frame_bucket = TokenBucket(self.config.frames_per_second, self.config.frame_burst, now)
        if self.user:
            self.state = State.ADMITTING
            self.early = []
        else:
            self._arm(now + self.config.auth_timeout)

    def authenticated(self, user: str, device: str) -> None:
        """The Auth frame's token was good: admission next."""
        self.user = user
        self.device = device
        self.state = State.ADMITTING
        self.early = []

    def open(self, welcome: bytes) -> None:
        """Admitted: Welcome goes out, heartbeats start, the automatic sync starts, and the
        frames held meanwhile are handled in order."""
        if self.state != State.ADMITTING:
            return
        self.state = State.OPEN
        # the automatic sync exists before the Welcome is written, so the port may hold the
        # Welcome until the snapshot is read (the gateway: one write with what it brings);
        # a new session has no streams, so there is nothing to rewind or floor
        self.sync = SyncRun(0)
        self.send_frame(welcome)
        self._arm(self.last_rx + self.config.heartbeat_interval)
        self.port.load_backlog(self.sync)
        early, self.early = self.early, None
        for kind, rid, fields, problem in early or ():
            if self.state != State.OPEN:
                break
            self._dispatch(kind, rid, fields, problem, self.timers.now())

    def close(self, code: int, reason: str) -> None:
        """Send a CLOSE; the peer's CLOSE ends the connection, and a peer that does not answer
        (or does not read) is cut off after CLOSE_GRACE."""
        if self.state >= State.CLOSING:
            return
        prev = self.state
        self.state = State.CLOSING
        self.stalled_since = 0.0
        self.closing_at = self.timers.now() + CLOSE_GRACE
        self.timer_due = math.inf
        self._arm(self.closing_at)
        self.port.closing(prev, code, reason)

    def disconnected(self) -> State:
        """The socket is gone; returns the state it was in. The port becomes CLOSED_PORT (the
        connection holds its session: no reference cycle)."""
        prev = self.state
        self.state = State.CLOSED
        self.stalled_since = 0.0
        self._out.clear()
        self.port = CLOSED_PORT
        return prev

    def take_output(self) -> bytes:
        """The frames buffered since the last call, in order."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def pending_output(self) -> int:
        return len(self._out)

    # ------------------------------------------------------------------ frames in
    def receive(self, opcode: int, fin: bool, payload: bytes, now: float) -> None:
        """One WebSocket frame from the device (a PING is answered here, not by picows)."""
        if self.state >= State.CLOSING:
            if opcode == Opcode.CLOSE:  # the peer completed our close handshake
                self.port.disconnect(True)
            return
        self.last_rx = now
        self.pinged = False
        if opcode == Opcode.BINARY or opcode == Opcode.CONTINUATION:
            if self.frame_bucket.take(now):  # every WebSocket frame counts, fragments too
                self.close(Close.FLOOD, "too many frames")
            elif opcode == Opcode.BINARY and fin and self.fragments is None:
                self._on_message(payload, now)
            else:
                self._on_fragment(opcode, fin, payload, now)
        elif opcode == Opcode.PING:
            if self.frame_bucket.take(now):
                self.close(Close.FLOOD, "too many frames")
            else:
                self.write_framed(wire_model.ws_frame(Opcode.PONG, payload))
        elif opcode == Opcode.CLOSE:
            self.port.echo_close(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0)
        elif opcode == Opcode.TEXT:
            self.close(Close.UNSUPPORTED_DATA, "binary frames only")

    def _on_fragment(self, opcode: int, fin: bool, payload: bytes, now: float) -> None:
        """RFC 6455 fragmentation: a message may come as a first frame without FIN and
        continuation frames up to one with FIN (control frames may come in between, and picows
        hands them over separately). Its size counts across fragments."""
        if (opcode == Opcode.BINARY) != (self.fragments is None):
            self.close(Close.PROTOCOL_ERROR, "continuation frame outside a fragmented message"
                       if self.fragments is None else "new message inside a fragmented one")
            return
        if self.fragments is None:
            self.fragments = []
        self.fragments.append(payload)
        self.fragment_bytes += len(payload)
        if self.fragment_bytes > self.config.max_frame_bytes:
            self.close(Close.MESSAGE_TOO_BIG, "message over max_frame_bytes")
        elif fin:
            message = b"".join(self.fragments)
            self.fragments = None
            self.fragment_bytes = 0
            self._on_message(message, now)

    def _on_message(self, payload: bytes, now: float) -> None:
        stats = self.stats
        stats.frames_in += 1
        stats.bytes_in += len(payload)
        decoded = self.port.decode(payload)
        if decoded is None:
            self.close(Close.MALFORMED, "not a ClientFrame")
            return
        if self.state == State.ADMITTING:
            if len(self.early) >= MAX_EARLY_FRAMES:
                self.close(Close.FLOOD, "too many frames before Welcome")
            else:
                self.early.append(decoded)
            return
        self._dispatch(*decoded, now)

    def _dispatch(self, kind: str | None, rid: int, fields, problem: str | None,
                  now: float) -> None:
        if problem is not None:
            if self.state == State.AWAIT_AUTH:
                self.close(Close.UNAUTHENTICATED,
                           "invalid token" if kind == "auth" else "auth required")
            else:
                self.write_framed(wire_model.error(rid, pb.INVALID_ARGUMENT, problem))
        elif self.state == State.AWAIT_AUTH:
            if kind == "auth":
                self.port.authenticate(fields)
            else:
                self.close(Close.UNAUTHENTICATED, "auth required")
        elif kind == "send":
            client_msg_id, chat_id, body, media_ids, e2e = fields
            self.port.submit(rid, chat_id, client_msg_id, body, media_ids, e2e, now)
        elif kind == "ack":
            self._on_ack(rid, fields, now)
        elif kind == "sync":
            self._start_sync(rid)
        elif kind == "auth":
            self.write_framed(wire_model.error(rid, pb.ALREADY_AUTHENTICATED, "already authenticated"))
        else:
            self.port.request(kind, fields)

    # ------------------------------------------------------------------ sends
    def send_acked(self, rid: int, message: StoredMessage, duplicate: bool) -> None:
        """The send `rid` is durable: its SendAck, and the device now holds that seq."""
        if self.state >= State.CLOSING:
            return
        self.stats.sends += 1
        own = self.own_sends if self.own_sends is not None else {}
        if message.seq > own.get(message.chat_id, 0):
            own[message.chat_id] = message.seq
        self.own_sends = own
        self.write_framed(wire_model.send_ack(rid, message.client_msg_id, message.chat_id,
                                              message.seq, message.server_id,
                                              message.created_at_ms, duplicate))

    def send_failed(self, rid: int, code: int, detail: str, retry_after_ms: int, chat_id: str,
                    client_msg_id: str) -> None:
        if self.state >= State.CLOSING:
            return
        self.write_framed(wire_model.error(rid, code, detail, retry_after_ms, chat_id,
                                           client_msg_id))

    # ------------------------------------------------------------------ acks
    def _on_ack(self, rid: int, items: list[tuple[str, int]], now: float) -> None:
        self.stats.acks += 1
        invalid = None
        progressed = False
        for chat_id, seq in items:
            stream = self.streams.get(chat_id)
            if stream is None or seq > stream.head:
                own = self.own_sends.get(chat_id, 0) if self.own_sends else 0
                if seq > own:
                    invalid = (chat_id, seq)
                    continue
                # the device counts its own SendAcks as held (protocol 8.3) and acks them
                if stream is None:
                    self.acks.add(self.user, self.device, chat_id, seq)
                    continue
                stream.head = seq
            if seq > stream.acked:
                if seq > stream.sent:  # acks what was sent before a retransmit rewind
                    self.inflight -= stream.sent - stream.acked
                    stream.sent = seq
                else:
                    self.inflight -= seq - stream.acked
                stream.acked = seq
                self.acks.add(self.user, self.device, chat_id, seq)
                progressed = True
                if _ended(stream):
                    del self.streams[chat_id]
        if progressed:
            self.last_progress = now
            self._maybe_pump()
        if invalid is not None:
            self.write_framed(wire_model.error(
                rid, pb.ACK_INVALID,
                f"seq {invalid[1]} was neither delivered nor acknowledged on this connection",
                chat_id=invalid[0]))

    # ------------------------------------------------------------------ delivery
    def offer(self, chat_id: str, messages: Sequence[StoredMessage],
              chunks: Sequence[wire_model.Chunk]) -> None:
        """Fresh messages of one chat (seq order), with their shared encoded Deliver frames."""
        if self.state != State.OPEN:
            return
        stream = self.streams.get(chat_id)
        first = messages[0].seq
        last = messages[-1].seq
        if stream is None:
            sync = self.sync
            if sync is not None and sync.loading:
                known = sync.pending.get(chat_id)
                sync.pending[chat_id] = (min(first, known[0]) if known else first, last)
                return
            if not self.config.sees_every_commit:
                self._resolve(chat_id, first, last)
                return
            # one node sees every commit, so the first offer continues what the device has
            stream = self.streams[chat_id] = Stream(first - 1, last)
        if last <= stream.sent:
            return
        if last > stream.head:
            stream.head = last
        if any(m.event is not None and self.user in m.event.users for m in messages):
            stream.ranges = STALE  # the user's range of the chat changes here: read it again
        if (first > stream.sent + 1 or self.inflight + len(messages) > self.config.delivery_window
                or stream.ranges is not None):
            self._maybe_pump()
            return
        # a membership event that does not name this user goes out in the shared frames too
        if first <= stream.sent or any(
                m.sender_device == self.device and m.sender_user == self.user for m in messages):
            if not self._deliver(stream, [m for m in messages if m.seq > stream.sent]):
                self._maybe_pump()
        else:
            for chunk in chunks:
                self._advance(stream, chunk.last_seq)
                self.write_framed(chunk.frame)
                self.stats.deliveries += chunk.count
        self._check_sync()

    def _deliver(self, stream: Stream, messages: list[StoredMessage]) -> bool:
        """Send `messages` (contiguous after stream.sent), leaving out this device's own.
        Stops between frames when the output is backed up; False when it did. Stops after a
        membership event naming this user that its known ranges do not foresee: what follows
        may not be visible to it."""
        for i, m in enumerate(messages):
            if (m.event is not None and self.user in m.event.users
                    and not _foreseen(stream.ranges, m.seq)):
                messages = messages[:i + 1]
                stream.ranges = STALE
                break
        others = [m for m in messages
                  if not (m.sender_device == self.device and m.sender_user == self.user)]
        last = messages[-1]
        if not others and stream.acked == stream.sent:
            # only this device's own sends, nothing else outstanding: its SendAcks were its copy
            stream.sent = stream.acked = last.seq
            self.port.cursor(last.chat_id, last.seq)
            return True
        for i, chunk in enumerate(wire_model.deliver_frames(others, self.config.max_frame_bytes)):
            if i and self.write_blocked():
                return False
            self._advance(stream, chunk.last_seq)
            self.write_framed(chunk.frame)
            self.stats.deliveries += chunk.count
        if last.seq > stream.sent:
            self._advance(stream, last.seq)
        return True

    def _advance(self, stream: Stream, sent: int) -> None:
        if self.inflight == 0:
            self.last_progress = self.timers.now()
            self._arm(self.last_progress + self.config.retransmit_after)
        self.inflight += sent - stream.sent
        if self.sync is not None:
            self.sync.messages += sent - stream.sent
        stream.sent = sent

    def recheck_chat(self, chat_id: str) -> None:
        """The user was removed from the chat: read its range again before sending more."""
        stream = self.streams.get(chat_id)
        if stream is not None:
            stream.ranges = STALE

    # ------------------------------------------------------------------ pump
    def _maybe_pump(self) -> None:
        if (not self.pumping and self.state == State.OPEN
                and self.inflight < self.config.delivery_window
                and any(s.sent < s.head for s in self.streams.values())):
            self.pumping = True
            self.port.pump()

    def next_read(self) -> tuple[str, int, int] | None:
        """The next range the pump should read (chat, after seq, at most n; n == 0: the
        user's membership periods of the chat instead, for `periods`), or None: nothing is
        behind, the window is full or the output is backed up. Chats take turns."""
        if self.state != State.OPEN or self.write_blocked():
            return None
        room = self.config.delivery_window - self.inflight
        if room <= 0:
            return None
        for again in (False, True):
            if again:
                self._pumped.clear()
            for chat_id, stream in list(self.streams.items()):
                if stream.sent < stream.head and chat_id not in self._pumped:
                    self._pumped.add(chat_id)
                    if stream.ranges is STALE:
                        return chat_id, stream.sent, 0
                    limit = min(room, PAGE)
                    if stream.ranges is not None:
                        limit = self._within_ranges(chat_id, stream, limit)
                        if limit <= 0:
                            continue
                    return chat_id, stream.sent, limit
        return None

    def _within_ranges(self, chat_id: str, stream: Stream, limit: int) -> int:
        """How many seqs after `sent` may go out now: up to the end of the range `sent` is in.
        At the end of a range, cross the gap to the next once everything is acked (and tell the
        device the new floor); after the last range, the stream is done."""
        ranges = stream.ranges
        following = next_visible(ranges, stream.sent)
        if following is None:  # past the last range: nothing more, ever (unless re-added)
            stream.head = stream.sent
            if _ended(stream):
                del self.streams[chat_id]
            return 0
        if following > stream.sent + 1:
            if stream.acked < stream.sent:
                return 0  # the acks bring the pump back
            stream.acked = stream.sent = following - 1
            self._send_floors([(chat_id, stream.acked)])
            stream.ranges = visible_above(ranges, stream.acked)  # None: plain again
            if stream.ranges is None:
                return limit
        end = range_end(ranges, following)
        return limit if end is None else min(limit, end - stream.sent)

    def periods(self, chat_id: str, periods: Sequence[Period]) -> None:
        """The store's answer to a next_read of the user's periods of `chat_id`."""
        stream = self.streams.get(chat_id)
        if self.state == State.OPEN and stream is not None and stream.ranges is STALE:
            stream.ranges = visible_above(periods, stream.acked)

    def _send_floors(self, floors: list[tuple[str, int]]) -> None:
        """Tell the device where delivery of these chats continues (protocol 8.3)."""
        if floors:
            self.write_framed(wire_model.floors_frame(floors))

    def rows(self, chat_id: str, after: int, rows: list[StoredMessage]) -> None:
        """The store's answer to next_read's (chat_id, after, ...)."""
        self.stats.sync_pages += 1
        stream = self.streams.get(chat_id)
        if self.state != State.OPEN or stream is None or stream.sent != after:
            return  # the stream moved (or went) while the store read: read again
        if not rows or rows[0].seq != after + 1:
            # the store has nothing past `sent`: `head` came from a stale hint
            stream.head = stream.sent
            return
        self._deliver(stream, rows)

    def pump_stopped(self) -> None:
        self.pumping = False
        self._pumped.clear()
        self._check_sync()

    def write_blocked(self) -> bool:
        """More than a frame waits for the socket: hold back what can wait."""
        return len(self._out) + self.port.buffered() > self.config.max_frame_bytes

    def resumed(self) -> None:
        """The transport's buffer drained (resume_writing)."""
        self.port.resumed()
        self._maybe_pump()

    # ------------------------------------------------------------------ sync
    def _start_sync(self, request_id: int) -> None:
        """A Sync replays each chat from `acked`. The device asks for one when it sees a gap; if
        its watermark is below where this connection resumes (the gap is one it may never fill)
        the floors tell it to move up (protocol 8.3)."""
        for stream in self.streams.values():
            self.inflight -= stream.sent - stream.acked
            stream.sent = stream.acked
        self._send_floors([(chat_id, stream.acked) for chat_id, stream in self.streams.items()
                           if stream.acked])
        self.sync = SyncRun(request_id)
        self.port.load_backlog(self.sync)

    def backlog_loaded(self, sync: object, backlog: list[Backlog]) -> None:
        """The sync snapshot `sync` asked for (an older sync's is ignored)."""
        if self.sync is not sync or self.state != State.OPEN:
            return
        self._adopt(backlog)
        for row in backlog:
            sync.targets[row.chat_id] = row.head
        for chat_id, (first, last) in sync.pending.items():
            stream = self.streams.get(chat_id)
            if stream is not None:
                if last > stream.head:
                    stream.head = last
            elif self.config.sees_every_commit:
                self.streams[chat_id] = Stream(first - 1, last)
            else:  # the snapshot may predate commits whose pushes were missed: read the cursor
                self._resolve(chat_id, first, last)
        sync.pending.clear()
        sync.loading = False
        self._maybe_pump()
        self._check_sync()

    def _adopt(self, backlog: list[Backlog]) -> None:
        """Streams from the store's view: a chat behind its head starts at the device's cursor,
        or where the user's range starts again (the device is told: a floor); a stream that
        exists already only learns the new head and the ranges."""
        floors = []
        for row in backlog:
            stream = self.streams.get(row.chat_id)
            if stream is None:
                self.streams[row.chat_id] = Stream(row.cursor, row.head, row.periods)
                if row.jumped:
                    floors.append((row.chat_id, row.cursor))
                continue
            if row.head > stream.head:
                stream.head = row.head
            if row.periods is not None and stream.ranges is None:
                stream.ranges = row.periods
        self._send_floors(floors)

    def _check_sync(self) -> None:
        sync = self.sync
        if sync is None or sync.loading or self.state != State.OPEN:
            return
        streams = self.streams
        if all(chat not in streams or streams[chat].sent >= target
               for chat, target in sync.targets.items()):
            self.sync = None
            self.write_framed(wire_model.sync_complete(sync.request_id, len(sync.targets),
                                                       sync.messages))

    # ------------------------------------------------------------------ cluster: cursors
    def _resolve(self, chat_id: str, first: int, last: int) -> None:
        """A cluster node can miss a push (a registry lookup that did not see this session, a
        link that was down), so a chat's first offer may not continue what the device has:
        start the stream at the device's stored cursor instead and fill from the store."""
        resolving = self.resolving
        if resolving is None:
            resolving = self.resolving = {}
            self.port.load_cursors()
        known = resolving.get(chat_id)
        resolving[chat_id] = (min(first, known[0]), max(last, known[1])) if known else (first, last)

    def catch_up(self) -> bool:
        """Compare every chat with the store (cluster: pushes to this node may have been
        lost). True: read the cursors now (`cursor_read_begin` ...)."""
        if self.state != State.OPEN or self.resolving is not None:
            return False
        self.resolving = {}
        return True

    def cursor_read_begin(self) -> bool:
        """Before each cursor read: True to read. Offers that arrive during a read wait for
        the next one: their commits may be newer than what the read saw."""
        if self.resolving is None or self.state != State.OPEN:
            return False
        self._resolving_batch, self.resolving = self.resolving, {}
        return True

    def cursors_loaded(self, backlog: list[Backlog]) -> bool:
        """The cursors read; True: offers came meanwhile, read again."""
        if self.state != State.OPEN:
            return False
        self._adopt(backlog)
        for chat_id, (_, last) in self._resolving_batch.items():
            if chat_id not in self.streams:
                # not in the backlog: the device's cursor is at or past the head already
                self.streams[chat_id] = Stream(last, last)
        self._resolving_batch = {}
        return bool(self.resolving)

    def cursor_reads_end(self) -> None:
        self.resolving = None
        self._maybe_pump()

    # ------------------------------------------------------------------ timers
    def _arm(self, due: float) -> None:
        if due < self.timer_due:
            self.timer_due = due
            self.timers.schedule(self, due)

    def stall(self, now: float) -> None:
        """Answers wait for the outbound buffer to drain: a reader that does not make room
        within retransmit_after is a slow consumer."""
        if not self.stalled_since:
            self.stalled_since = now
            self._arm(now + self.config.retransmit_after)

    def unstall(self) -> None:
        self.stalled_since = 0.0

    def on_timer(self, now: float) -> None:
        if self.state == State.CLOSED or now < self.timer_due:
            return  # a stale entry: a nearer deadline is already armed
        self.timer_due = math.inf
        config = self.config
        if self.state == State.CLOSING:
            if now >= self.closing_at:
                self.port.disconnect(False)
            else:
                self._arm(self.closing_at)
            return
        if self.state == State.AWAIT_AUTH:
            self.close(Close.AUTH_TIMEOUT, "no auth in time")
            return
        if self.stalled_since and now - self.stalled_since >= config.retransmit_after:
            if self.write_blocked():
                self.slow_consumer()
                return
            # the socket took the buffer without the transport pausing (no resume_writing came):
            # the reader made room after all
            self.stalled_since = 0.0
            self.port.resumed()
        idle = now - self.last_rx
        if idle >= config.idle_timeout:
            self.close(Close.IDLE_TIMEOUT, "idle")
            return
        if idle >= config.heartbeat_interval and not self.pinged:
            self.pinged = True
            self.write_framed(PING_FRAME)
            # the next look one interval on: by then the answer is in, and the next ping
            # goes out an interval after it
            due = min(now + config.heartbeat_interval, self.last_rx + config.idle_timeout)
        elif self.pinged:
            due = self.last_rx + config.idle_timeout
        else:
            due = self.last_rx + config.heartbeat_interval
        if self.inflight > 0:
            if now - self.last_progress >= config.retransmit_after:
                self._retransmit(now)
            due = min(due, self.last_progress + config.retransmit_after)
        if self.stalled_since:
            due = min(due, self.stalled_since + config.retransmit_after)
        self._arm(due)

    def _retransmit(self, now: float) -> None:
        for stream in self.streams.values():
            if stream.sent > stream.acked:
                self.retransmits += stream.sent - stream.acked
                self.stats.retransmits += stream.sent - stream.acked
                stream.sent = stream.acked
        self.inflight = 0
        self.last_progress = now
        self._maybe_pump()

    # ------------------------------------------------------------------ output
    def send_frame(self, data: bytes) -> None:
        """An encoded ServerFrame to the device."""
        if self.state < State.CLOSING:
            self.write_framed(wire_model.ws_frame(Opcode.BINARY, data))

    def write_framed(self, frame: bytes) -> None:
        """A complete WebSocket frame to the output, in order."""
        if self.state >= State.CLOSING:
            return
        if not self._out:
            self.port.wants_flush()
        self._out += frame
        self.stats.frames_out += 1
        self.stats.bytes_out += len(frame)
        if len(self._out) > self.config.outbound_buffer_bytes:
            self.slow_consumer()

    def check_outbound(self) -> None:
        """After a write: a device whose unread output passed the cap is a slow consumer."""
        if self.port.buffered() + len(self._out) > self.config.outbound_buffer_bytes:
            self.slow_consumer()

    def slow_consumer(self) -> None:
        if self.state < State.CLOSING:
            self.stats.slow_consumers += 1
            self.close(Close.SLOW_CONSUMER, "slow consumer: reconnect and sync")


def _foreseen(ranges: tuple[Period, ...] | None, seq: int) -> bool:
    """Whether the known ranges start or end at `seq` (a membership event of the user there)."""
    return (ranges is not None and ranges is not STALE
            and any(p.left_seq == seq or p.joined_seq == seq - 1 for p in ranges))


def _ended(stream: Stream) -> bool:
    """The user's last range of the chat ended and the device acked all of it: the stream has
    nothing left to do (a re-add offers the chat anew)."""
    ranges = stream.ranges
    return (ranges is not None and ranges is not STALE and stream.acked == stream.sent
            and next_visible(ranges, stream.acked) is None)


def offer_each(by_user: dict, users: list[str], start: int, end: int, chat_id: str,
               messages: list[StoredMessage], chunks: list) -> None:
    """The fan-out's loop: one commit offered to the session of every connected device of
    users[start:end] (by_user: user -> its connection, whose `session` it is, or {device: its
    connection} for a user with several devices here)."""
    for user in users[max(start, 0):end]:
        devices = by_user.get(user)
        if devices is None:
            continue
        for conn in tuple(devices.values()) if isinstance(devices, dict) else (devices,):
            conn.session.offer(chat_id, messages, chunks)
