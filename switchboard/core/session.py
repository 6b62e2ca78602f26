"""One device's session, sans-I/O: the protocol state machine and the delivery window of a
connection, with no socket, no task, no future and no gateway behind it. The implementation is
native (core/_native/session.pyx: it is every frame's path); tests/reference/session_model.py
is its pure-Python twin, which the unit tests drive alike.

In: WebSocket frames (`receive`, or picows' callbacks: the native session is a picows
listener), what the adapter found out for it (`authenticated`, `open`, `send_acked` /
`send_failed`, `backlog_loaded`, `rows`, `cursors_loaded`), fresh commits of the fan-out
(`offer`) and timer ticks (`on_timer`). Out: encoded WebSocket frames appended to the session's
output in order (written once per loop turn by `flush`, or taken by `take_output` without a
socket), calls on its port (`SessionPort`): sends to submit, ranges to read, cursors that
moved over the device's own messages, requests it does not answer itself, closes; and the
device's acks, put into the gateway's `AckBatch` (core/acks.py) without a Python call,
which hands them to the writer and the receipts together, every few ms.

Delivery (the ack-ack window): per chat the session knows `acked` (the device's cumulative
ack), `sent` and `head`. Live messages that continue `sent` go out at once as pre-encoded
frames; anything else (a gap, a full window, a sync backlog) raises `head`, and the session
asks its port to pump: the port reads the ranges `next_read` names and hands the rows back. At
most `delivery_window` messages are in flight; no progress for `retransmit_after` rewinds
`sent` to `acked`. A stream exists only for a chat with traffic on this connection.

Frames: the session reads Send and Ack itself (natively, falling back to the port's decoder for
anything but the plain shape) and answers Sync and a second Auth. Every other request goes to
the port decoded (`SessionPort.request`), so a new request needs no change here. It answers a
WebSocket ping itself too (picows's auto-pong is off), so that the ping counts as the device's
activity and resets the heartbeat; its own heartbeat pings and those pongs go straight to an
idle socket.
"""
from __future__ import annotations

import enum
from typing import Any, Protocol

from switchboard.core._native import native

_session = native("session")
Session = _session.Session
SessionConfig = _session.SessionConfig
SessionStats = _session.SessionStats
Stream = _session.Stream
CLOSED_PORT = _session.CLOSED_PORT
"""The port of a session once its socket is gone: does nothing (native ClosedPort says why)."""
offer_each = _session.offer_each
"""offer_each(by_user, users, start, end, chat_id, messages, chunks): the fan-out's loop, one
commit offered to every connected device of users[start:end] (user -> its connection, or
{device: connection} for a user with several devices)."""
_wire = native("wire")
Chunk = _wire.Chunk
deliver_frames = _wire.deliver_frames
"""deliver_frames(rows, max_frame_bytes) -> [Chunk]: the Deliver frames of fresh messages of
one chat, encoded once and offered to every recipient's session as they are."""

__all__ = ["CLOSED_PORT", "Chunk", "Session", "SessionConfig", "SessionStats", "SessionPort",
           "State", "Stream", "deliver_frames", "offer_each"]


class State(enum.IntEnum):
    AWAIT_AUTH = 0
    ADMITTING = 1  # token good; the device is being admitted (limit, revocation)
    OPEN = 2
    CLOSING = 3
    CLOSED = 4


class SessionPort(Protocol):
    """What a session asks of the world around it (gateway/connection.py implements it)."""

    def decode(self, payload: bytes) -> tuple[str | None, int, Any, str | None] | None:
        """A ClientFrame the session did not read itself: (kind, request_id, fields, problem).
        None: not a ClientFrame (close 4000); `problem`: a field no request may carry
        (INVALID_ARGUMENT naming it). `fields` is (client_msg_id, chat_id, body, media_ids,
        e2e) for a Send, [(chat_id, seq), ...] for an Ack, the token for an Auth, and the decoded
        frame for anything else."""

    def connected(self) -> None:
        """The WebSocket is up (native session: picows' on_ws_connected)."""

    def disconnected(self, prev: State) -> None:
        """The socket is gone; `prev` is the state the session was in."""

    def authenticate(self, token: str) -> None:
        """An Auth frame: verify the token, then call `authenticated` or `close`."""

    def submit(self, rid: int, chat_id: str, client_msg_id: str, body: bytes,
               media_ids: list[str], e2e: bool, now: float) -> None:
        """A Send: hand it on; then `send_acked` or `send_failed` with `rid`."""

    def cursor(self, chat_id: str, seq: int) -> None:
        """The device's cursor in the chat moved to seq over its own messages (a device's acks
        go to the gateway's AckBatch instead, with the user's delivered watermark)."""

    def request(self, kind: str | None, frame: Any) -> None:
        """Any other frame of an open session, decoded: answer it (or UNKNOWN_FRAME)."""

    def pump(self) -> None:
        """Read what `next_read` names, hand each result to `rows`, until it says None; then
        call `pump_stopped`."""

    def load_backlog(self, sync: object) -> None:
        """Read the device's sync snapshot and hand it to `backlog_loaded(sync, rows)`."""

    def load_cursors(self) -> None:
        """Read the device's cursors while `cursor_read_begin` says so (cluster mode)."""

    def buffered(self) -> int:
        """Bytes the transport holds that the socket did not take yet (twin only: the native
        session asks its transport)."""

    def wants_flush(self) -> None:
        """The output got its first frame since the last flush: flush within this loop turn."""

    def closing(self, prev: State, code: int, reason: str) -> None:
        """The session closes: unregister, write out what it buffered (`flush`), then the
        CLOSE frame."""

    def echo_close(self, code: int) -> None:
        """The peer closed: write out what is buffered, answer its CLOSE, disconnect."""

    def disconnect(self, graceful: bool) -> None:
        """Cut the connection (the peer answered our CLOSE, or did not in time)."""
