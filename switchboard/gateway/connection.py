"""One device connection: the gateway around a sans-I/O Session.

The protocol itself (states, frames, the delivery window, timers) is the Session's
(core/session.py), which is also the picows listener: picows hands it every frame, and it
writes its output once per loop turn (`Flusher`). This adapter is its port: it does what the
session asks with the gateway's services (token checks, admission, submitting sends, store
reads, requests, presence, typing) and is what the hub, presence and requests know a device by.

Memory per idle connection is what limits a host, so a connection is two slotted objects with
no task, no timer handle and no buffers of its own while idle: deadlines live in the shared
timer wheel, per-chat delivery state exists only for chats with traffic, and a task runs only
while a backlog is being read from the store or a request is being answered.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from picows import WSCloseCode, WSTransport

from switchboard.core.auth import KeyPending, Principal, TokenError
from switchboard.core.chats import is_direct
from switchboard.core.errors import DRAIN_RETRY_AFTER_MS, DomainError
from switchboard.core.ids import now_ms
from switchboard.core.model import CommitResult, DeviceStatus, Membership, SendRequest
from switchboard.core.session import Session, State
from switchboard.core.store import StoreError
from switchboard.proto.codec import wire_error
from switchboard.proto.codes import Close
from switchboard.proto.v1 import client_pb2 as pb

from . import frames, requests, wire

if TYPE_CHECKING:
    from .server import Gateway

log = logging.getLogger(__name__)

MAX_ANSWERING = 4   # store-backed requests answered at once per connection
MAX_QUEUED = 64     # requests waiting behind them before the socket is no longer read
TYPING_THROTTLE = 3.0
TYPING_EXPIRES_MS = 6000


class Flusher:
    """Sessions with output waiting, written once per loop turn: the frames a connection gets
    in one turn (SendAcks, Delivers, receipts) leave in one write."""
    __slots__ = ("_waiting", "_scheduled")

    def __init__(self) -> None:
        self._waiting: list[Session] = []
        self._scheduled = False

    def add(self, session: Session) -> None:
        self._waiting.append(session)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        for session in waiting:
            session.flush()


class Connection:
    __slots__ = ("gw", "session", "address", "registered", "opened_ms", "presence", "typing",
                 "invisible", "answering", "queued", "room", "pump_task")

    def __init__(self, gw: Gateway, principal: Principal | None, address: str = "") -> None:
        self.gw = gw
        self.address = address  # the peer's IP address
        self.session = Session(self, gw.session_config, gw.session_stats, gw.timers,
                               acks=gw.acks, user=principal.user_id if principal else "",
                               device=principal.device_id if principal else "")
        self.registered = False  # in the hub and the presence registry
        self.opened_ms = 0  # when authenticated: a kick closes connections opened before it
        self.presence: dict[str, tuple[bool, int] | None] | None = None  # subject -> last sent
        self.typing: dict[str, float] | None = None  # chat -> when "typing" was last relayed
        self.invisible = False
        self.answering = 0  # tasks answering requests (at most MAX_ANSWERING)
        self.queued: deque[pb.ClientFrame] | None = None  # requests waiting for one of them
        self.room: asyncio.Future | None = None  # answers wait for the outbound buffer to drain
        self.pump_task: asyncio.Task | None = None

    # ------------------------------------------------------------------ as others see it
    @property
    def user(self) -> str:
        return self.session.user

    @property
    def device(self) -> str:
        return self.session.device

    @property
    def state(self) -> State:
        return State(self.session.state)

    @property
    def transport(self) -> WSTransport | None:
        return self.session.transport

    @property
    def streams(self):
        return self.session.streams

    @property
    def inflight(self) -> int:
        return self.session.inflight

    def send_frame(self, data: bytes) -> None:
        self.session.send_frame(data)

    def recheck_chat(self, chat_id: str) -> None:
        """The user was removed from the chat: read its range again before sending more."""
        self.session.recheck_chat(chat_id)

    def close(self, code: int, reason: str) -> None:
        self.session.close(code, reason)

    def evict(self) -> None:
        """Give this silent unauthenticated socket's slot to a newcomer (preauth.py): close
        frame, then the socket at once, without the close grace."""
        self.session.close(Close.AUTH_TIMEOUT, "no auth in time: server busy")
        self.transport.disconnect()

    async def catch_up(self) -> None:
        """Compare every chat with the store (cluster: pushes to this node may have been lost)."""
        if self.session.catch_up():
            await self._load_cursors()

    # ------------------------------------------------------------------ session port
    def decode(self, payload: bytes):
        return wire.session_frame(payload)

    def connected(self) -> None:
        gw = self.gw
        gw.stats.connects += 1
        if self.session.user:
            self._authenticated()
        else:
            gw.preauth.add(self, self.address, gw.timers.now())

    def disconnected(self, prev: State) -> None:
        if prev == State.AWAIT_AUTH:
            self.gw.preauth.remove(self)
        elif prev == State.CLOSING:
            self.gw.stats.closing -= 1
        self.gw.stats.disconnects += 1
        self._leave()
        self._wake_answers()
        if self.pump_task is not None:
            self.pump_task.cancel()
            self.pump_task = None

    def resumed(self) -> None:
        self._wake_answers()

    def wants_flush(self) -> None:
        sync = self.session.sync
        if sync is not None and sync.loading and not sync.request_id:
            # the Welcome waits for the automatic sync's snapshot (load_backlog): a device
            # with nothing to catch up gets Welcome and SyncComplete in one write
            return
        self.gw.flusher.add(self.session)

    def buffered(self) -> int:
        return self.transport.underlying_transport.get_write_buffer_size()

    def authenticate(self, token: str) -> None:
        try:
            principal = self.gw.tokens.verify(token)
        except KeyPending as exc:  # a new kid: the key set is being refreshed
            self.session.close(Close.TRY_AGAIN_LATER, str(exc))
            return
        except TokenError as exc:
            self.session.close(Close.UNAUTHENTICATED, str(exc))
            return
        wait = self.gw.limits.take("connect", principal.user_id, self.gw.timers.now())
        if wait:
            self.session.close(Close.TRY_AGAIN_LATER,
                               f"too many connections: retry in {math.ceil(wait)} s")
            return
        self.gw.preauth.remove(self)
        self.session.authenticated(principal.user_id, principal.device_id)
        self._authenticated()

    def _authenticated(self) -> None:
        gw = self.gw
        self.opened_ms = now_ms()
        recording = None
        if gw.services.devices.known(self.user, self.device):
            recording = gw.router.session_opened(self.user, self.device, self.opened_ms)
            if recording is None:
                self._open()
                return
        gw.tasks.spawn(self._admit(recording))

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
            self._open()
        elif status is DeviceStatus.REVOKED:
            self.session.close(Close.DEVICE_REVOKED, "device revoked")
        elif status is DeviceStatus.TOO_MANY:
            self.session.close(Close.TOO_MANY_DEVICES,
                               f"too many devices (max {devices.max_devices}): revoke one first")
        else:
            self.session.close(Close.INTERNAL_ERROR, "store unavailable, reconnect later")

    def _open(self) -> None:
        gw = self.gw
        replaced = gw.hub.add(self)
        if replaced is not None:
            replaced.close(Close.REPLACED, "replaced by a newer connection")
        self.registered = True
        gw.presence.registry.connected(self.user, self.device)
        self.session.open(gw.welcome(self.user, self.device))

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
        gw.services.devices.seen(self.user, self.device)

    def closing(self, prev: State, code: int, reason: str) -> None:
        log.debug("closing %s/%s: %d %s", self.user or "-", self.device or "-", code, reason)
        gw = self.gw
        if prev == State.AWAIT_AUTH:
            gw.preauth.remove(self)
        gw.stats.closing += 1
        self._leave()
        self._wake_answers()
        self._read_again()  # the peer's CLOSE must still be read
        # Keep reading until the peer answers with its CLOSE: closing the socket while its frames
        # still arrive makes the kernel reset the connection and drop our CLOSE (and a Goaway).
        self.session.flush()
        self.transport.send_close(WSCloseCode(code), reason.encode())

    def echo_close(self, code: int) -> None:
        self.session.flush()
        self.transport.send_close(WSCloseCode(code))
        self.transport.disconnect()

    def disconnect(self, graceful: bool) -> None:
        self.transport.disconnect(graceful=graceful)

    def submit(self, rid: int, chat_id: str, client_msg_id: str, body: bytes,
               media_ids: list[str], e2e: bool, now: float) -> None:
        gw = self.gw
        session = self.session
        if gw.draining:
            session.send_failed(rid, pb.UNAVAILABLE, "server draining: reconnect",
                                DRAIN_RETRY_AFTER_MS, chat_id, client_msg_id)
            return
        wait = gw.limits.take("send", self.user, now)
        if wait:
            session.send_failed(rid, pb.RATE_LIMITED, "too many sends", int(wait * 1000) + 1,
                                chat_id, client_msg_id)
            return
        try:
            gw.router.submit_send(SendRequest(self.user, self.device, chat_id, client_msg_id,
                                              body, media_ids, e2e),
                                  lambda result, error: self._send_done(result, error, rid,
                                                                        chat_id, client_msg_id))
        except DomainError as exc:
            self._send_failed(rid, exc, chat_id, client_msg_id)
            return
        gw.sends_in_flight += 1

    def _send_done(self, result: CommitResult | None, error: BaseException | None, rid: int,
                   chat_id: str, client_msg_id: str) -> None:
        """The send's completion (core/futures.py), called by the writer as its commit
        settles; a connection gone meanwhile is answered into a closed session (dropped)."""
        self.gw.sends_in_flight -= 1
        if error is None:
            self.session.send_acked(rid, result.message, result.duplicate)
        else:
            if not isinstance(error, (DomainError, StoreError)):
                log.error("send failed", exc_info=error)
            self._send_failed(rid, error, chat_id, client_msg_id)

    def _send_failed(self, rid: int, exc: BaseException, chat_id: str, client_msg_id: str) -> None:
        code, detail, retry_after_ms = wire_error(exc)
        self.session.send_failed(rid, code, detail, retry_after_ms, chat_id, client_msg_id)

    def cursor(self, chat_id: str, seq: int) -> None:
        self.gw.services.messages.ack(self.user, self.device, chat_id, seq)

    def request(self, kind: str, frame: pb.ClientFrame) -> None:
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.session.send_frame(frames.error(
                frame.request_id, pb.UNKNOWN_FRAME,
                "unknown frame" if kind is None else f"unexpected {kind}"))
        else:
            handler(self, frame)

    def pump(self) -> None:
        self.pump_task = self.gw.tasks.spawn(self._pump())

    async def _pump(self) -> None:
        """Read the ranges the session names, in turn, until it names none."""
        session = self.session
        store = self.gw.services.store
        try:
            while (want := session.next_read()) is not None:
                chat_id, after, limit = want
                if limit:
                    session.rows(chat_id, after, await store.read_messages(chat_id, after, limit))
                else:
                    periods = await store.member_periods(chat_id, self.user)
                    session.periods(chat_id, periods.get(self.user, []))
        except StoreError:
            log.warning("pump for %s/%s stopped: store unavailable", self.user, self.device)
        finally:
            self.pump_task = None
            session.pump_stopped()

    def load_backlog(self, sync: object) -> None:
        self.gw.backlogs.read((self.user, self.device)).add_done_callback(
            lambda read: self._backlog_read(read, sync))

    def _backlog_read(self, read: asyncio.Future, sync: object) -> None:
        session = self.session
        if read.cancelled():
            return
        if read.exception() is not None:
            if self.state == State.OPEN:
                session.close(Close.INTERNAL_ERROR, "store unavailable, reconnect later")
            return
        session.backlog_loaded(sync, read.result())
        if session.pending_output:  # held since the Welcome (wants_flush): one write for all
            self.gw.flusher.add(session)

    def load_cursors(self) -> None:
        self.gw.tasks.spawn(self._load_cursors())

    async def _load_cursors(self) -> None:
        session = self.session
        try:
            while session.cursor_read_begin():
                backlog = await self.gw.backlogs.read((self.user, self.device))
                if not session.cursors_loaded(backlog):
                    break
        except StoreError:
            log.warning("cursors of %s/%s unavailable: offers wait for the next sync",
                        self.user, self.device)
        finally:
            session.cursor_reads_end()

    # ------------------------------------------------------------------ requests
    def _on_ping(self, frame: pb.ClientFrame) -> None:
        self.session.send_frame(pb.ServerFrame(request_id=frame.request_id, pong=pb.Pong(
            client_time_ms=frame.ping.client_time_ms, server_time_ms=now_ms())).SerializeToString())

    def _on_typing(self, frame: pb.ClientFrame) -> None:
        chat_id = frame.typing.chat_id
        members = self.gw.services.chats.cached_members(chat_id)
        blockers = self.gw.services.blocks.cached_blockers(self.user)
        if members is None or self.user not in members or blockers is None:
            self._on_request(frame)  # checks against the store, then relays
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

    def _on_unsubscribe(self, frame: pb.ClientFrame) -> None:
        self.gw.presence.unsubscribe(self, list(frame.unsubscribe_presence.user_ids))
        self.session.send_frame(pb.ServerFrame(request_id=frame.request_id,
                                               ok=pb.Ok()).SerializeToString())

    def _on_request(self, frame: pb.ClientFrame) -> None:
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
                    self.session.send_frame(reply)
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
        connection ends. Waiting longer than retransmit_after is a slow consumer (the
        session's timer)."""
        if not self.session.write_blocked() or self.state != State.OPEN:
            return
        if self.room is None:
            self.room = asyncio.get_running_loop().create_future()
            self.session.stall(self.gw.timers.now())
        await asyncio.shield(self.room)

    def _wake_answers(self) -> None:
        self.session.unstall()
        room, self.room = self.room, None
        if room is not None and not room.done():
            room.set_result(None)

    def _read_again(self) -> None:
        transport = self.transport.underlying_transport
        if not transport.is_reading() and not transport.is_closing():
            transport.resume_reading()


_HANDLERS: dict[str, Callable[[Connection, pb.ClientFrame], Any]] = {
    **dict.fromkeys(requests.ANSWERED, Connection._on_request),  # request -> reply, in a task
    "ping": Connection._on_ping,
    "typing": Connection._on_typing,  # relayed at once, checked as a request only on a miss
    "unsubscribe_presence": Connection._on_unsubscribe,
}
"""The frames the session hands to its port, by ClientFrame body: every frame Requests answers
(a new request is a method there, requests.ANSWERED routes it), and the few the connection
handles itself."""
