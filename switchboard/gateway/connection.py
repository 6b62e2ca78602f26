"""One device connection: the protocol state machine on top of a picows transport.

Memory per idle connection is what limits a host, so a connection is one slotted object with
no task, no timer handle and no buffers of its own while idle: deadlines live in the shared
timer wheel (checked lazily), per-chat delivery state exists only for chats with traffic, and a
task runs only while a backlog is being pumped from the store.

Delivery (the ack-ack window): per chat the connection knows `acked` (the device's cumulative
ack), `sent` and `head`. Live messages that continue `sent` go out at once as pre-encoded bytes;
anything else (a gap, a full window, a sync backlog) raises `head` and the pump reads the
missing range from the store. At most `delivery_window` messages are in flight; no progress for
`retransmit_after` rewinds `sent` to `acked`. Nothing is buffered per connection beyond the
transport's write buffer, which is capped (close 4008, resync).

Membership ranges: a user removed from a chat and added again sees the chat in stretches
(core/model.py Period). A stream whose user's range is not one open stretch carries `ranges`;
the pump sends only inside them, stops where the last one ends, and crosses a gap only once
everything before it is acked: then it tells the device the new floor (a Deliver with
`floors`) and goes on from there. A membership event naming the user, delivered or offered,
makes the stream read its ranges from the store again before it sends more.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections import deque
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Callable

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from switchboard.core.auth import KeyPending, Principal, TokenError
from switchboard.core.backlog import read_backlog, visible_above
from switchboard.core.chats import is_direct
from switchboard.core.errors import DRAIN_RETRY_AFTER_MS, DomainError
from switchboard.core.ids import now_ms
from switchboard.core.model import (Backlog, CommitResult, DeviceStatus, Membership, Period,
                                    SendRequest, StoredMessage, next_visible, range_end)
from switchboard.core.ratelimit import TokenBucket
from switchboard.core.store import StoreError
from switchboard.proto.codes import Close
from switchboard.proto.v1 import client_pb2 as pb

from . import frames, wire

if TYPE_CHECKING:
    from .server import Gateway

log = logging.getLogger(__name__)

PAGE = 128
MAX_EARLY_FRAMES = 16
PICOWS_COPIED_UP_TO = 8192  # picows copies server messages up to this size into its buffer
HEADER_ROOM = 14  # a WebSocket frame header's largest size
MAX_ANSWERING = 4   # store-backed requests answered at once per connection
MAX_QUEUED = 64     # requests waiting behind them before the socket is no longer read
TYPING_THROTTLE = 3.0
TYPING_EXPIRES_MS = 6000


class State(enum.IntEnum):
    AWAIT_AUTH = 0
    ADMITTING = 1  # token good; the device is being admitted (limit, revocation)
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


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


class Connection(WSListener):
    __slots__ = ("gw", "transport", "state", "user", "device", "streams", "inflight",
                 "last_rx", "last_progress", "pinged", "timer_due", "closing_at", "pump_task",
                 "sync", "frame_bucket", "retransmits", "early", "registered",
                 "presence", "typing", "invisible", "opened_ms", "resolving", "fragments", "address",
                 "fragment_bytes", "own_sends", "answering", "queued", "room", "stalled_since")

    def __init__(self, gw: Gateway, principal: Principal | None, address: str = "") -> None:
        super().__init__()
        self.gw = gw
        self.address = address  # the peer's IP address
        self.transport: WSTransport | None = None
        self.state = State.AWAIT_AUTH
        self.user = principal.user_id if principal else ""
        self.device = principal.device_id if principal else ""
        self.streams: dict[str, Stream] = {}
        self.inflight = 0
        self.last_rx = 0.0
        self.last_progress = 0.0
        self.pinged = False
        self.timer_due = math.inf
        self.closing_at = 0.0
        self.pump_task: asyncio.Task | None = None
        self.sync: SyncRun | None = None
        self.frame_bucket: TokenBucket | None = None
        self.retransmits = 0
        self.early: list[pb.ClientFrame | wire.BadField] | None = None  # frames that came while ADMITTING
        self.registered = False  # in the hub and the presence registry
        self.presence: dict[str, tuple[bool, int] | None] | None = None  # subject -> last sent
        self.typing: dict[str, float] | None = None  # chat -> when "typing" was last relayed
        self.invisible = False
        self.opened_ms = 0  # when authenticated: a kick closes connections opened before it
        # cluster: chats offered with no stream yet, waiting for the device's stored cursor
        self.resolving: dict[str, tuple[int, int]] | None = None
        self.fragments: list[bytes] | None = None  # a fragmented message being reassembled
        self.fragment_bytes = 0
        self.own_sends: dict[str, int] | None = None  # chat -> highest seq SendAck'ed here
        self.answering = 0  # tasks answering requests (at most MAX_ANSWERING)
        self.queued: deque[pb.ClientFrame] | None = None  # requests waiting for one of them
        self.room: asyncio.Future | None = None  # answers wait for the outbound buffer to drain
        self.stalled_since = 0.0

    # ------------------------------------------------------------------ picows callbacks
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.gw.stats.connects += 1
        now = self.gw.timers.now()
        self.last_rx = now
        limits = self.gw.config.limits
        self.frame_bucket = TokenBucket(limits.frames_per_second, limits.frame_burst, now)
        if self.user:
            self._authenticated()
        else:
            self.gw.preauth.add(self, self.address, now)
            self._arm(now + self.gw.config.auth.timeout)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.state == State.AWAIT_AUTH:
            self.gw.preauth.remove(self)
        elif self.state == State.CLOSING:
            self.gw.stats.closing -= 1
        self.gw.stats.disconnects += 1
        self.state = State.CLOSED
        self._leave()
        self._wake_answers()
        if self.pump_task is not None:
            self.pump_task.cancel()
            self.pump_task = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.state >= State.CLOSING:
            if frame.msg_type == WSMsgType.CLOSE:  # the peer completed our close handshake
                transport.disconnect()
            return
        now = self.gw.timers.now()
        self.last_rx = now
        self.pinged = False
        msg_type = frame.msg_type
        if msg_type == WSMsgType.BINARY or msg_type == WSMsgType.CONTINUATION:
            if self.frame_bucket.take(now):  # every WebSocket frame counts, fragments too
                self.close(Close.FLOOD, "too many frames")
            elif msg_type == WSMsgType.BINARY and frame.fin and self.fragments is None:
                self._on_binary(frame.get_payload_as_bytes(), now)
            else:
                self._on_fragment(msg_type, frame, now)
        elif msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif msg_type == WSMsgType.TEXT:
            self.close(Close.UNSUPPORTED_DATA, "binary frames only")

    def _on_fragment(self, msg_type: WSMsgType, frame: WSFrame, now: float) -> None:
        """RFC 6455 fragmentation: a message may come as a first frame without FIN and
        continuation frames up to one with FIN (control frames may come in between, and picows
        hands them over separately). Its size counts across fragments."""
        if (msg_type == WSMsgType.BINARY) != (self.fragments is None):
            self.close(Close.PROTOCOL_ERROR, "continuation frame outside a fragmented message"
                       if self.fragments is None else "new message inside a fragmented one")
            return
        payload = frame.get_payload_as_bytes()
        if self.fragments is None:
            self.fragments = []
        self.fragments.append(payload)
        self.fragment_bytes += len(payload)
        if self.fragment_bytes > self.gw.config.limits.max_frame_bytes:
            self.close(Close.MESSAGE_TOO_BIG, "message over max_frame_bytes")
        elif frame.fin:
            message = b"".join(self.fragments)
            self.fragments = None
            self.fragment_bytes = 0
            self._on_binary(message, now)

    def pause_writing(self) -> None:
        self._check_outbound()

    def resume_writing(self) -> None:
        self._wake_answers()
        self._maybe_pump()

    # ------------------------------------------------------------------ frames in
    def _on_binary(self, payload: bytes, now: float) -> None:
        self.gw.stats.frames_in += 1
        self.gw.stats.bytes_in += len(payload)
        try:
            frame: pb.ClientFrame | wire.BadField = wire.decode(payload)
        except wire.Malformed:
            self.close(Close.MALFORMED, "not a ClientFrame")
            return
        except wire.BadField as exc:
            frame = exc
        if self.state == State.ADMITTING:
            if len(self.early) >= MAX_EARLY_FRAMES:
                self.close(Close.FLOOD, "too many frames before Welcome")
            else:
                self.early.append(frame)
            return
        self._dispatch(frame, now)

    def _dispatch(self, frame: pb.ClientFrame | wire.BadField, now: float) -> None:
        if isinstance(frame, wire.BadField):
            if self.state == State.AWAIT_AUTH:
                self.close(Close.UNAUTHENTICATED,
                           "invalid token" if frame.kind == "auth" else "auth required")
            else:
                self.send_frame(frames.error(frame.request_id, pb.INVALID_ARGUMENT, frame.detail))
            return
        kind = frame.WhichOneof("body")
        if self.state == State.AWAIT_AUTH:
            if kind == "auth":
                self._on_auth_frame(frame.auth.token)
            else:
                self.close(Close.UNAUTHENTICATED, "auth required")
            return
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.send_frame(frames.error(frame.request_id, pb.UNKNOWN_FRAME,
                                         "unknown frame" if kind is None else f"unexpected {kind}"))
            return
        handler(self, frame, now)

    def _on_auth_frame(self, token: str) -> None:
        try:
            principal = self.gw.tokens.verify(token)
        except KeyPending as exc:  # a new kid: the key set is being refreshed
            self.close(Close.TRY_AGAIN_LATER, str(exc))
            return
        except TokenError as exc:
            self.close(Close.UNAUTHENTICATED, str(exc))
            return
        wait = self.gw.limits.take("connect", principal.user_id, self.gw.timers.now())
        if wait:
            self.close(Close.TRY_AGAIN_LATER,
                       f"too many connections: retry in {math.ceil(wait)} s")
            return
        self.gw.preauth.remove(self)
        self.user = principal.user_id
        self.device = principal.device_id
        self._authenticated()

    def _authenticated(self) -> None:
        self.opened_ms = now_ms()
        recording = None
        if self.gw.services.devices.known(self.user, self.device):
            recording = self.gw.router.session_opened(self.user, self.device, self.opened_ms)
            if recording is None:
                self._open()
                return
        self.state = State.ADMITTING
        self.early = []
        self.gw.tasks.spawn(self._admit(recording))

    async def _admit(self, recording: Awaitable[bool] | None) -> None:
        """Device admission (when not known), then the session is recorded where the router
        needs it before the first sync can read the store (router/cluster.py says why)."""
        gw = self.gw
        devices = gw.services.devices
        status = DeviceStatus.OK
        try:
            if recording is None:  # not a known device
                status = await devices.admit(self.user, self.device)
                if status is DeviceStatus.OK and self.state == State.ADMITTING:
                    recording = gw.router.session_opened(self.user, self.device, self.opened_ms)
            if recording is not None and not await recording:
                status = None
        except StoreError:
            status = None
        if self.state != State.ADMITTING:
            if status is DeviceStatus.OK and recording is not None:
                gw.router.session_closed(self.user, self.device)
            return
        if status is DeviceStatus.OK:
            early, self.early = self.early, None
            self._open()
            for frame in early:
                if self.state == State.OPEN:
                    self._dispatch(frame, self.gw.timers.now())
        elif status is DeviceStatus.REVOKED:
            self.close(Close.DEVICE_REVOKED, "device revoked")
        elif status is DeviceStatus.TOO_MANY:
            self.close(Close.TOO_MANY_DEVICES,
                       f"too many devices (max {devices.max_devices}): revoke one first")
        else:
            self.close(Close.INTERNAL_ERROR, "store unavailable, reconnect later")

    def _open(self) -> None:
        gw = self.gw
        self.state = State.OPEN
        replaced = gw.hub.add(self)
        if replaced is not None:
            replaced.close(Close.REPLACED, "replaced by a newer connection")
        self.registered = True
        gw.presence.registry.connected(self.user, self.device)
        self.send_frame(gw.welcome(self.user, self.device))
        self._arm(self.last_rx + gw.config.timers.heartbeat_interval)
        self._start_sync(0)

    def _leave(self) -> None:
        """Unregister once, whichever of close() or the disconnect comes first."""
        if not self.registered:
            return
        self.registered = False
        gw = self.gw
        gw.hub.remove(self)
        gw.presence.registry.disconnected(self.user, self.device)
        gw.presence.drop(self)
        gw.router.session_closed(self.user, self.device)
        gw.tasks.spawn(gw.services.devices.seen(self.user, self.device))

    def _on_send(self, frame: pb.ClientFrame, now: float) -> None:
        send = frame.send
        rid = frame.request_id
        if self.gw.draining:
            self.send_frame(frames.error(rid, pb.UNAVAILABLE, "server draining: reconnect",
                                         retry_after_ms=DRAIN_RETRY_AFTER_MS, chat_id=send.chat_id,
                                         client_msg_id=send.client_msg_id))
            return
        wait = self.gw.limits.take("send", self.user, now)
        if wait:
            self.send_frame(frames.error(rid, pb.RATE_LIMITED, "too many sends",
                                         retry_after_ms=int(wait * 1000) + 1, chat_id=send.chat_id,
                                    client_msg_id=send.client_msg_id))
            return
        try:
            future = self.gw.router.submit_send(SendRequest(
                self.user, self.device, send.chat_id, send.client_msg_id, send.body,
                list(send.media_ids), send.e2e))
        except DomainError as exc:
            self.send_frame(frames.failure(rid, exc, chat_id=send.chat_id,
                                           client_msg_id=send.client_msg_id))
            return
        self.gw.sends_in_flight += 1
        future.add_done_callback(
            lambda f: self._on_send_done(f, rid, send.chat_id, send.client_msg_id))

    def _on_send_done(self, future: asyncio.Future[CommitResult], rid: int, chat_id: str,
                      client_msg_id: str) -> None:
        self.gw.sends_in_flight -= 1
        if future.cancelled() or self.state >= State.CLOSING:
            return
        exc = future.exception()
        if exc is None:
            result = future.result()
            self.gw.stats.sends += 1
            own = self.own_sends if self.own_sends is not None else {}
            if result.message.seq > own.get(chat_id, 0):
                own[chat_id] = result.message.seq
            self.own_sends = own
            self.send_frame(frames.send_ack(rid, result.message, result.duplicate))
        else:
            if not isinstance(exc, (DomainError, StoreError)):
                log.error("send failed", exc_info=exc)
            self.send_frame(frames.failure(rid, exc, chat_id=chat_id, client_msg_id=client_msg_id))

    def _on_ack(self, frame: pb.ClientFrame, now: float) -> None:
        self.gw.stats.acks += 1
        invalid = None
        progressed = False
        for item in frame.ack.acks:
            stream = self.streams.get(item.chat_id)
            if stream is None or item.seq > stream.head:
                own = self.own_sends.get(item.chat_id, 0) if self.own_sends else 0
                if item.seq > own:
                    invalid = item
                    continue
                # the device counts its own SendAcks as held (protocol 8.3) and acks them
                if stream is None:
                    self._ack_cursor(item.chat_id, item.seq)
                    continue
                stream.head = item.seq
            if item.seq > stream.acked:
                if item.seq > stream.sent:  # acks what was sent before a retransmit rewind
                    self.inflight -= stream.sent - stream.acked
                    stream.sent = item.seq
                else:
                    self.inflight -= item.seq - stream.acked
                stream.acked = item.seq
                self._ack_cursor(item.chat_id, item.seq)
                progressed = True
                if _ended(stream):
                    del self.streams[item.chat_id]
        if progressed:
            self.last_progress = now
            self._maybe_pump()
        if invalid is not None:
            self.send_frame(frames.error(frame.request_id, pb.ACK_INVALID,
                                         f"seq {invalid.seq} was neither delivered nor acknowledged on this connection",
                                    chat_id=invalid.chat_id))

    def _ack_cursor(self, chat_id: str, seq: int) -> None:
        self.gw.services.messages.ack(self.user, self.device, chat_id, seq)
        self.gw.services.receipts.delivered(chat_id, self.user, seq)

    def _on_ping(self, frame: pb.ClientFrame, now: float) -> None:
        self.send_frame(pb.ServerFrame(request_id=frame.request_id, pong=pb.Pong(
            client_time_ms=frame.ping.client_time_ms, server_time_ms=now_ms())).SerializeToString())

    def _on_auth_again(self, frame: pb.ClientFrame, now: float) -> None:
        self.send_frame(frames.error(frame.request_id, pb.ALREADY_AUTHENTICATED,
                                     "already authenticated"))

    def _on_sync(self, frame: pb.ClientFrame, now: float) -> None:
        self._start_sync(frame.request_id)

    def _on_typing(self, frame: pb.ClientFrame, now: float) -> None:
        chat_id = frame.typing.chat_id
        members = self.gw.services.chats.cached_members(chat_id)
        blockers = self.gw.services.blocks.cached_blockers(self.user)
        if members is None or self.user not in members or blockers is None:
            self._on_request(frame, now)  # checks against the store, then relays
        elif not (is_direct(chat_id) and any(user in blockers for user in members)):
            self.relay_typing(frame.typing, members)

    def relay_typing(self, typing: pb.Typing, members: Mapping[str, Membership]) -> None:
        """Relay to the chat's other online devices, throttled; never stored."""
        if self.state != State.OPEN:
            return
        now = self.gw.timers.now()
        relayed = self.typing if self.typing is not None else {}
        if typing.typing and now - relayed.get(typing.chat_id, -TYPING_THROTTLE) < TYPING_THROTTLE:
            return
        if not typing.typing and typing.chat_id not in relayed:
            return
        if typing.typing:
            relayed[typing.chat_id] = now
        else:
            del relayed[typing.chat_id]
        self.typing = relayed or None
        self.gw.router.push(members, pb.ServerFrame(typing_update=pb.TypingUpdate(
            chat_id=typing.chat_id, user_id=self.user, device_id=self.device, typing=typing.typing,
            expires_in_ms=TYPING_EXPIRES_MS if typing.typing else 0)).SerializeToString(),
            (self.user, self.device))

    def _on_unsubscribe(self, frame: pb.ClientFrame, now: float) -> None:
        self.gw.presence.unsubscribe(self, list(frame.unsubscribe_presence.user_ids))
        self.send_frame(pb.ServerFrame(request_id=frame.request_id, ok=pb.Ok()).SerializeToString())

    def _on_request(self, frame: pb.ClientFrame, now: float) -> None:
        """Requests answered after a store round trip: at most MAX_ANSWERING short-lived tasks
        per connection take them in order; beyond MAX_QUEUED waiting, the socket is no longer
        read (TCP pushes back on the client) until they are down to half."""
        if self.answering < MAX_ANSWERING:
            self.answering += 1
            self.gw.tasks.spawn(self._answer(frame))
            return
        queued = self.queued if self.queued is not None else deque()
        self.queued = queued
        queued.append(frame)
        reading = self.transport.underlying_transport
        if len(queued) >= MAX_QUEUED and reading.is_reading():
            reading.pause_reading()

    async def _answer(self, frame: pb.ClientFrame) -> None:
        """Answer `frame`, then whatever queued behind it. Each answer waits for room in the
        outbound buffer before it reads the store: a reply the client cannot take is never
        built, so a client that does not read pins no memory beyond the cap."""
        try:
            while True:
                await self._room()
                if self.state != State.OPEN:
                    return
                reply = await self._reply(frame)
                if reply is not None and self.state == State.OPEN:
                    self.send_frame(reply)
                queued = self.queued
                if not queued or self.state != State.OPEN:
                    return
                frame = queued.popleft()
                if len(queued) < MAX_QUEUED // 2:
                    self._read_again()
        finally:
            self.answering -= 1
            if not self.queued:
                self.queued = None

    async def _reply(self, frame: pb.ClientFrame) -> bytes | None:
        rid = frame.request_id
        try:
            return await self.gw.requests.answer(self, frame)
        except Exception as exc:
            if not isinstance(exc, (DomainError, StoreError)):
                log.exception("request %s failed", frame.WhichOneof("body"))
            return frames.failure(rid, exc)

    async def _room(self) -> None:
        """Until the outbound buffer is below the frame size (resume_writing), or the
        connection ends. Waiting longer than retransmit_after is a slow consumer (on_timer)."""
        if not self._write_blocked() or self.state != State.OPEN:
            return
        if self.room is None:
            self.room = asyncio.get_running_loop().create_future()
            self.stalled_since = self.gw.timers.now()
            self._arm(self.stalled_since + self.gw.config.timers.retransmit_after)
        await asyncio.shield(self.room)

    def _wake_answers(self) -> None:
        room, self.room = self.room, None
        if room is not None and not room.done():
            room.set_result(None)

    def _read_again(self) -> None:
        transport = self.transport.underlying_transport
        if not transport.is_reading() and not transport.is_closing():
            transport.resume_reading()

    # ------------------------------------------------------------------ delivery
    def offer(self, chat_id: str, messages: list[StoredMessage],
              chunks: list[frames.Chunk]) -> None:
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
            if not self.gw.router.sees_every_commit:
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
        if (first > stream.sent + 1 or self.inflight + len(messages) > self.gw.window
                or stream.ranges is not None):
            self._maybe_pump()
            return
        if first <= stream.sent or any(
                m.event is not None or m.sender_device == self.device and m.sender_user == self.user
                for m in messages):
            if not self._deliver(stream, [m for m in messages if m.seq > stream.sent]):
                self._maybe_pump()
        else:
            for chunk in chunks:
                self._advance(stream, chunk.last_seq)
                self.send_frame(chunk.data)
                self.gw.stats.deliveries += chunk.count
        self._check_sync()

    def _deliver(self, stream: Stream, messages: list[StoredMessage]) -> bool:
        """Send `messages` (contiguous after stream.sent), leaving out this device's own.
        Stops between frames when the transport is backed up; False when it did. Stops after
        a membership event naming this user that its known ranges do not foresee: what follows
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
            self.gw.services.messages.ack(self.user, self.device, last.chat_id, last.seq)
            return True
        for i, chunk in enumerate(frames.deliver(others, self.gw.config.limits.max_frame_bytes)):
            if i and self._write_blocked():
                return False
            self._advance(stream, chunk.last_seq)
            self.send_frame(chunk.data)
            self.gw.stats.deliveries += chunk.count
        if last.seq > stream.sent:
            self._advance(stream, last.seq)
        return True

    async def catch_up(self) -> None:
        """Compare every chat with the store (cluster: pushes to this node may have been lost)."""
        if self.state != State.OPEN or self.resolving is not None:
            return
        self.resolving = {}
        await self._load_cursors()

    def _resolve(self, chat_id: str, first: int, last: int) -> None:
        """A cluster node can miss a push (a registry lookup that did not see this session, a
        link that was down), so a chat's first offer may not continue what the device has:
        start the stream at the device's stored cursor instead and fill from the store."""
        resolving = self.resolving
        if resolving is None:
            resolving = self.resolving = {}
            self.gw.tasks.spawn(self._load_cursors())
        known = resolving.get(chat_id)
        resolving[chat_id] = (min(first, known[0]), max(last, known[1])) if known else (first, last)

    async def _load_cursors(self) -> None:
        """Offers that arrive during a read wait for the next one: their commits may be newer
        than what the read saw."""
        store = self.gw.services.store
        while self.resolving is not None and self.state == State.OPEN:
            batch, self.resolving = self.resolving, {}
            try:
                backlog = await read_backlog(store, self.user, self.device)
            except StoreError:
                log.warning("cursors of %s/%s unavailable: offers wait for the next sync",
                            self.user, self.device)
                break
            if self.state != State.OPEN:
                break
            self._adopt(backlog)
            for chat_id, (_, last) in batch.items():
                if chat_id not in self.streams:
                    # not in the backlog: the device's cursor is at or past the head already
                    self.streams[chat_id] = Stream(last, last)
            if not self.resolving:
                break
        self.resolving = None
        self._maybe_pump()

    def _advance(self, stream: Stream, sent: int) -> None:
        if self.inflight == 0:
            self.last_progress = self.gw.timers.now()
            self._arm(self.last_progress + self.gw.config.timers.retransmit_after)
        self.inflight += sent - stream.sent
        if self.sync is not None:
            self.sync.messages += sent - stream.sent
        stream.sent = sent

    def recheck_chat(self, chat_id: str) -> None:
        """The user was removed from the chat: read its range again before sending more."""
        stream = self.streams.get(chat_id)
        if stream is not None:
            stream.ranges = STALE

    def _maybe_pump(self) -> None:
        if self.pump_task is None and self.state == State.OPEN and self.inflight < self.gw.window:
            if any(s.sent < s.head for s in self.streams.values()):
                self.pump_task = self.gw.tasks.spawn(self._pump())

    async def _pump(self) -> None:
        """Fill the window from the store, chat by chat, until nothing is behind or it is full."""
        try:
            progressed = True
            while progressed and self.state == State.OPEN:
                progressed = False
                for chat_id, stream in list(self.streams.items()):
                    room = self.gw.window - self.inflight
                    if room <= 0 or self._write_blocked():
                        return
                    if stream.sent >= stream.head:
                        continue
                    progressed = await self._pump_chat(chat_id, stream, room) or progressed
        except StoreError:
            log.warning("pump for %s/%s stopped: store unavailable", self.user, self.device)
        finally:
            self.pump_task = None
            self._check_sync()

    async def _pump_chat(self, chat_id: str, stream: Stream, room: int) -> bool:
        """One read of a chat's next messages; whether it made progress."""
        store = self.gw.services.store
        limit = min(room, PAGE)
        if stream.ranges is not None:
            if stream.ranges is STALE:
                periods = (await store.member_periods(chat_id, self.user)).get(self.user, [])
                if self.state != State.OPEN or self.streams.get(chat_id) is not stream:
                    return False
                stream.ranges = visible_above(periods, stream.acked)
                return True
            limit = self._within_ranges(chat_id, stream, limit)
            if limit <= 0:
                return False
        rows = await store.read_messages(chat_id, stream.sent, limit)
        self.gw.stats.sync_pages += 1
        if self.state != State.OPEN or self.streams.get(chat_id) is not stream:
            return False
        rows = [r for r in rows if r.seq > stream.sent]
        if not rows or rows[0].seq != stream.sent + 1:
            # the store has nothing past `sent`: `head` came from a stale hint
            stream.head = stream.sent
            return False
        return self._deliver(stream, rows)

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

    def _send_floors(self, floors: list[tuple[str, int]]) -> None:
        """Tell the device where delivery of these chats continues (protocol 8.3)."""
        if floors:
            self.send_frame(pb.ServerFrame(deliver=pb.Deliver(floors=[
                pb.ChatSeq(chat_id=chat_id, seq=seq) for chat_id, seq in floors
            ])).SerializeToString())

    def _write_blocked(self) -> bool:
        """More than a frame waits in the outbound buffer: hold back what can wait."""
        return self.transport is None or self._buffered() > self.gw.config.limits.max_frame_bytes

    def _buffered(self) -> int:
        return self.transport.underlying_transport.get_write_buffer_size()

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
        self.gw.tasks.spawn(self._load_backlog(self.sync))

    async def _load_backlog(self, sync: SyncRun) -> None:
        try:
            backlog = await read_backlog(self.gw.services.store, self.user, self.device)
        except StoreError:
            if self.state == State.OPEN:
                self.close(Close.INTERNAL_ERROR, "store unavailable, reconnect later")
            return
        if self.sync is not sync or self.state != State.OPEN:
            return
        self._adopt(backlog)
        for row in backlog:
            sync.targets[row.chat_id] = row.head
        for chat_id, (first, last) in sync.pending.items():
            stream = self.streams.get(chat_id)
            if stream is None:
                self.streams[chat_id] = Stream(first - 1, last)
            elif last > stream.head:
                stream.head = last
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
            self.send_frame(pb.ServerFrame(
                request_id=sync.request_id,
                sync_complete=pb.SyncComplete(chats=len(sync.targets), messages=sync.messages),
            ).SerializeToString())

    # ------------------------------------------------------------------ timers
    def _arm(self, due: float) -> None:
        if due < self.timer_due:
            self.timer_due = due
            self.gw.timers.schedule(self, due)

    def on_timer(self, now: float) -> None:
        if self.state == State.CLOSED:
            return
        if now < self.timer_due:
            return  # a stale entry: a nearer deadline is already armed
        self.timer_due = math.inf
        timers = self.gw.config.timers
        if self.state == State.CLOSING:
            if now >= self.closing_at:
                self.transport.disconnect(graceful=False)
            else:
                self._arm(self.closing_at)
            return
        if self.state == State.AWAIT_AUTH:
            self.close(Close.AUTH_TIMEOUT, "no auth in time")
            return
        if self.room is not None and now - self.stalled_since >= timers.retransmit_after:
            self.gw.stats.slow_consumers += 1
            self.close(Close.SLOW_CONSUMER, "slow consumer: reconnect and sync")
            return
        idle = now - self.last_rx
        if idle >= timers.idle_timeout:
            self.close(Close.IDLE_TIMEOUT, "idle")
            return
        if idle >= timers.heartbeat_interval and not self.pinged:
            self.pinged = True
            self.transport.send_ping()
        due = self.last_rx + (timers.idle_timeout if self.pinged else timers.heartbeat_interval)
        if self.inflight > 0:
            if now - self.last_progress >= timers.retransmit_after:
                self._retransmit(now)
            due = min(due, self.last_progress + timers.retransmit_after)
        if self.room is not None:
            due = min(due, self.stalled_since + timers.retransmit_after)
        self._arm(due)

    def _retransmit(self, now: float) -> None:
        for stream in self.streams.values():
            if stream.sent > stream.acked:
                self.retransmits += stream.sent - stream.acked
                self.gw.stats.retransmits += stream.sent - stream.acked
                stream.sent = stream.acked
        self.inflight = 0
        self.last_progress = now
        self._maybe_pump()

    # ------------------------------------------------------------------ output
    def send_frame(self, data: bytes) -> None:
        if self.state >= State.CLOSING:
            return
        if len(data) > PICOWS_COPIED_UP_TO:
            # picows writes a larger message as [header view, payload] with the header a view of
            # its own reused buffer; uvloop keeps that view while the socket is backed up, and
            # the next send overwrites it (a corrupt stream). This path copies what it cannot
            # send at once, header included.
            self.transport.send_reuse_external_bytearray(
                WSMsgType.BINARY, bytearray(HEADER_ROOM) + data, HEADER_ROOM)
        else:
            self.transport.send(WSMsgType.BINARY, data)
        self.gw.stats.frames_out += 1
        self.gw.stats.bytes_out += len(data)
        self._check_outbound()

    def _check_outbound(self) -> None:
        if self._buffered() > self.gw.config.limits.outbound_buffer_bytes:
            self.gw.stats.slow_consumers += 1
            self.close(Close.SLOW_CONSUMER, "slow consumer: reconnect and sync")

    def evict(self) -> None:
        """Give this silent unauthenticated socket's slot to a newcomer (preauth.py): close
        frame, then the socket at once, without the close grace."""
        self.close(Close.AUTH_TIMEOUT, "no auth in time: server busy")
        self.transport.disconnect()

    def close(self, code: int, reason: str) -> None:
        """Send a CLOSE frame; the peer's CLOSE ends the connection, and a peer that does not
        answer (or does not read) is cut off after a grace period."""
        if self.state >= State.CLOSING:
            return
        if self.state == State.AWAIT_AUTH:
            self.gw.preauth.remove(self)
        log.debug("closing %s/%s: %d %s", self.user or "-", self.device or "-", code, reason)
        self.state = State.CLOSING
        self.gw.stats.closing += 1
        self._leave()
        self._wake_answers()
        self._read_again()  # the peer's CLOSE must still be read
        # Keep reading until the peer answers with its CLOSE: closing the socket while its frames
        # still arrive makes the kernel reset the connection and drop our CLOSE (and a Goaway).
        self.transport.send_close(WSCloseCode(code), reason.encode())
        self.closing_at = self.gw.timers.now() + 2.0
        self.timer_due = math.inf
        self._arm(self.closing_at)


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


_HANDLERS: dict[str | None, Callable[[Connection, pb.ClientFrame, float], None]] = {
    "send": Connection._on_send,
    "ack": Connection._on_ack,
    "sync": Connection._on_sync,
    "ping": Connection._on_ping,
    "auth": Connection._on_auth_again,
    "history": Connection._on_request,
    "create_chat": Connection._on_request,
    "add_members": Connection._on_request,
    "remove_members": Connection._on_request,
    "list_chats": Connection._on_request,
    "mark_read": Connection._on_request,
    "typing": Connection._on_typing,
    "subscribe_presence": Connection._on_request,
    "unsubscribe_presence": Connection._on_unsubscribe,
    "update_settings": Connection._on_request,
    "list_devices": Connection._on_request,
    "revoke_device": Connection._on_request,
    "get_receipts": Connection._on_request,
    "block": Connection._on_request,
    "unblock": Connection._on_request,
    "list_blocked": Connection._on_request,
    "register_push": Connection._on_request,
    "unregister_push": Connection._on_request,
    "mute_chat": Connection._on_request,
    "list_mutes": Connection._on_request,
    "create_upload": Connection._on_request,
    "complete_upload": Connection._on_request,
    "get_media": Connection._on_request,
}
