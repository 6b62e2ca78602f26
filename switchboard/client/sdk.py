"""The reference asyncio client of protocol v1 (docs/protocol.md), used by tests, bench and tools.

Two layers, on purpose: `ChatOrder` (ordering.py) holds the dedup/ordering state and does no I/O;
this module is the glue around it: a picows listener that decodes ServerFrames, request
correlation by request_id, the outbox of sends not yet acknowledged, acks batched per event-loop
turn, and reconnection with backoff. Everything runs on the loop thread; listener callbacks never
await, so a Deliver frame costs one protobuf parse plus a few dict operations per message.

Delivery semantics seen by the app:
* `send()` returns only when the server has stored the message durably (SendAck). It retries with
  the same client_msg_id across reconnects and after UNAVAILABLE/RATE_LIMITED, so a retry never
  creates a second message; if it times out the outcome is unknown (zero or one copies exist).
* `messages()` yields each message once, per chat in seq order, never this device's own sends.
  Membership events ("X was added", "X left") are entries of the chat's log and come through
  it too (`message.HasField("membership")`).
  With auto_ack (the default) a message is acked once it is queued for the app, so the server
  will not send it again; apps that must not lose messages on a crash between receipt and
  processing use auto_ack=False and call `ack()` after processing.
* The message queue is unbounded: the server's delivery window (256 in flight by default) bounds
  what arrives while the app is not acking, but with auto_ack an app that stops reading lets the
  queue grow. A reference SDK accepts that; an app SDK would ack on consumption instead.
* `events()` yields the other pushes (ReceiptUpdate, Presence, TypingUpdate, Goaway) in arrival
  order. Its queue exists only from the first events() call on, so an app that uses only
  `on_push` does not accumulate them.
* State the server keeps per connection is restored after every reconnect: presence
  subscriptions and an invisible setting are sent again right after Welcome.
* A silent server is noticed fast only when it matters (docs/protocol.md 8.8): while a send or
  request awaits its answer, a server that sends nothing for half of `liveness_timeout` is asked
  for a Pong, and one still silent after `liveness_timeout` is taken for dead (a paused or
  frozen gateway, a dead route): the connection is dropped and the next endpoint tried, where
  the outbox goes again. With nothing awaited the client sends nothing of its own while the
  server's heartbeat comes on time (a WebSocket ping every Welcome.heartbeat_interval_ms of
  silence): it pings only a server late by IDLE_GRACE, and drops a connection whose ping gets no
  answer. Below that, the kernel's TCP keepalive (`tcp_keepalive`, by default the gateway's own
  settings: a probe after 180 s of silence, dropped 240 s after the last packet of a vanished
  server) finds a dead server or path sooner, with no wake-up of the app; its probes fall due at
  about the moment the gateway's do (both count from the last data), so they share the radio's
  wake-up.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from picows import (WSCloseCode, WSError, WSFrame, WSHandshakeError, WSListener, WSMsgType,
                    WSTransport, ws_connect)

from switchboard.keepalive import TcpKeepalive
from switchboard.proto import codes
from switchboard.proto.v1 import client_pb2 as pb

from . import frames, media
from .ordering import ChatOrder

__all__ = ["Client", "ClientStats", "ServerError", "AuthError", "ConnectionLost"]

log = logging.getLogger(__name__)

#: Close codes after which reconnecting cannot help, and those by which the server refuses a
#: connection before Welcome (connect() raises AuthError for them): proto/codes.py says why.
NO_RECONNECT = codes.NO_RECONNECT
REFUSED_CLOSE = codes.REFUSED
#: Send errors that are worth retrying with the same client_msg_id.
RETRYABLE = frozenset({pb.UNAVAILABLE, pb.RATE_LIMITED})
#: What picows reports when no CLOSE frame arrived (RFC 6455 "abnormal closure").
ABNORMAL_CLOSURE = codes.Close.ABNORMAL
#: Deliver frames stay within the max_frame_bytes of Welcome, but answers are not bounded by it (a
#: HistoryPage holds up to 200 messages of up to max_body_bytes each), and the limit must be set
#: before Welcome arrives: so it is generous.
MAX_RECEIVE_FRAME = 32 * 1024 * 1024
#: The idle rule (docs/protocol.md 8.8a): the server pings after Welcome.heartbeat_interval_ms of
#: silence, so a client that has heard nothing for that plus IDLE_GRACE pings the server itself
#: (WebSocket level) and drops the connection if nothing comes back in PING_REPLY_TIMEOUT: a
#: half-open TCP connection is otherwise never noticed. A server on time is never pinged, so an
#: idle connection carries one exchange per interval, not one of each side's. While a send or
#: request waits for its answer, `liveness_timeout` applies.
IDLE_GRACE = 5.0
PING_REPLY_TIMEOUT = 10.0
#: The gateway's default kernel keepalive (timers.tcp_keepalive_*, docs/protocol.md 8.8).
DEFAULT_TCP_KEEPALIVE = TcpKeepalive(idle=180, interval=20, count=3)
#: While an answer is awaited, the server's silence is checked this many times per
#: liveness_timeout; it is asked for a Pong after half of it.
LIVENESS_CHECKS = 4
#: A gap in a chat is usually our own message whose SendAck is still on its way (the server does
#: not echo a device's own sends), so a Sync is sent only if the gap is still open after this.
GAP_SYNC_DELAY = 0.5
#: Backoff doubles per failed attempt up to backoff_max; the exponent is capped to stay finite.
MAX_BACKOFF_EXPONENT = 30
#: Pushes that events() yields (as their body message) and on_push receives.
PUSH_PLATFORMS = {"apns": pb.APNS, "apns-sandbox": pb.APNS_SANDBOX, "fcm": pb.FCM}
MUTE_FOREVER = 2 ** 63 - 1  # MuteChat.muted_until_ms that never expires
EVENT_KINDS = frozenset({"receipt_update", "presence", "typing_update", "goaway"})


class ServerError(Exception):
    """The server answered a request with Error (docs/protocol.md "Errors")."""

    def __init__(self, code: int, detail: str, retry_after_ms: int = 0) -> None:
        try:
            name = pb.ErrorCode.Name(code)
        except ValueError:
            name = str(code)
        super().__init__(f"{name}: {detail}")
        self.code = code
        self.detail = detail
        self.retry_after_ms = retry_after_ms

    @classmethod
    def from_pb(cls, error: pb.Error) -> "ServerError":
        return cls(error.code, error.detail, error.retry_after_ms)


class AuthError(Exception):
    """The server refused to open the session: the token (HTTP 401 at the upgrade, close 4001 or
    4002) or the device (close 4011: this device id was revoked, use a new one; close 4012: the
    user has too many devices, revoke one first). `code` is the HTTP status or close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"session refused ({code}): {reason}")
        self.code = code
        self.reason = reason


class ConnectionLost(Exception):
    """No usable connection: the request could not be made or its answer was lost. For a
    request other than send() the outcome is unknown; send() itself survives reconnects."""


@dataclass(slots=True)
class ClientStats:
    duplicates: int           # delivered messages dropped as already held (wire retransmits)
    reconnects: int           # successful automatic reconnections
    silent_drops: int         # dropped as silent: liveness_timeout, an idle ping unanswered
    retransmitted_sends: int  # Send frames sent again (after reconnect or retry_after_ms)
    gap_syncs: int            # Sync requests sent because a chat had a gap
    dropped: int              # out-of-order messages not buffered (buffer full; resent later)


class _Send:
    """A send() waiting for its SendAck. It stays in the outbox across reconnects; `rid` is 0
    while it is not on the wire (disconnected, or waiting out retry_after_ms)."""
    __slots__ = ("body", "future", "rid", "attempts", "retry", "deadline")

    def __init__(self, body: pb.Send, future: asyncio.Future) -> None:
        self.body = body
        self.future = future
        self.rid = 0
        self.attempts = 0
        self.retry: asyncio.TimerHandle | None = None
        self.deadline: asyncio.TimerHandle | None = None


class _End:
    """Queue sentinel: iteration is over (error None: close() was called)."""
    __slots__ = ("error",)

    def __init__(self, error: Exception | None) -> None:
        self.error = error


class _Iterator:
    """`Client.messages()` and `Client.events()`: an async iterator over a shared queue. Several
    iterators may exist (each item goes to one of them); the end sentinel is put back for the
    others."""
    __slots__ = ("_queue",)

    def __init__(self, queue: asyncio.Queue) -> None:
        self._queue = queue

    def __aiter__(self) -> "_Iterator":
        return self

    async def __anext__(self):
        item = await self._queue.get()
        if type(item) is _End:
            self._queue.put_nowait(item)
            if item.error is None:
                raise StopAsyncIteration
            raise ConnectionLost(str(item.error)) from item.error
        return item


class _Listener(WSListener):
    """Adapts one WebSocket connection to its Client. The client ignores listeners that are no
    longer its current connection, so a late callback of an old socket changes nothing."""

    def __init__(self, client: "Client", auth_token: str | None) -> None:
        super().__init__()
        self.client = client
        self.auth_token = auth_token
        self.transport: WSTransport | None = None
        self.welcomed = False
        self.close_code = ABNORMAL_CLOSURE
        self.close_reason = ""

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.client._on_connected(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.BINARY and frame.fin:
            self.client._on_frame(self, frame.get_payload_as_bytes())
        elif msg_type == WSMsgType.PING:  # the server's heartbeat: answered here, not by picows,
            transport.send_pong(frame.get_payload_as_bytes())  # so that the client hears it
            self.client._heard(self)
        elif msg_type == WSMsgType.PONG:
            self.client._heard(self)
        elif msg_type == WSMsgType.CLOSE:
            code = frame.get_close_code()
            self.close_code = int(code)
            self.close_reason = frame.get_close_reason() or ""
            transport.send_close(code)
            transport.disconnect()
        elif msg_type in (WSMsgType.TEXT, WSMsgType.CONTINUATION, WSMsgType.BINARY):
            # The server sends whole binary messages only; anything else is a broken peer.
            transport.send_close(WSCloseCode.UNSUPPORTED_DATA, b"whole binary frames only")
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.client._on_disconnected(self)


class Client:
    """One device's session with a Switchboard server (docs/protocol.md).

    `url` is one gateway endpoint (`ws://host:port/v1/ws`) or a sequence of them (say, an app's
    regional endpoints, or the nodes of a cluster), all serving the same cluster. `connect()`
    tries each once, in order, until one answers; afterwards every reconnect attempt that fails
    and every connection that is lost moves on to the next endpoint (round robin), so one dead
    gateway cannot keep the device offline. Backoff is unchanged: it counts attempts, whichever
    endpoint they go to. A connection the server sends away (Goaway: a drain, rebalancing) moves
    to another endpoint picked at random, so the devices of one gateway spread evenly over the
    others. `client.url` is the endpoint in use (or tried next); `client.urls` all.
    `token` is a JWT or a callable returning one; a callable is asked again at every (re)connect,
    so an app can refresh expiring tokens. With `token_in_header` the token goes in the upgrade's
    Authorization header, otherwise in an Auth frame (for stacks that cannot set headers).
    `have` is the per-chat watermark an app persisted from a previous run (`Client.have`).
    `send_timeout` bounds send() and every other request; `liveness_timeout` is how long the
    server may stay silent while an answer is awaited (see the module docstring); `tcp_keepalive`
    is the kernel keepalive of the connection's socket (None: the system's default, usually off);
    `on_close(code, reason)` is called
    after every disconnect; `on_push(frame)` is called with the whole ServerFrame of every push
    other than Deliver and SyncComplete (what events() yields, and push kinds this SDK does not
    know), as it arrives.
    """

    def __init__(self, url: str | Sequence[str], token: str | Callable[[], str], *,
                 token_in_header: bool = True,
                 reconnect: bool = True, backoff_min: float = 0.1, backoff_max: float = 5.0,
                 send_timeout: float = 30.0, auto_ack: bool = True,
                 have: Mapping[str, int] | None = None, connect_timeout: float = 10.0,
                 liveness_timeout: float = 4.0,
                 tcp_keepalive: TcpKeepalive | None = DEFAULT_TCP_KEEPALIVE,
                 on_close: Callable[[int, str], None] | None = None,
                 on_push: Callable[[pb.ServerFrame], None] | None = None) -> None:
        urls = (url,) if isinstance(url, str) else tuple(url)
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise ValueError("url: a URL or a non-empty sequence of URLs")
        self._urls = urls
        self._url_index = 0
        self._token = token
        self._token_in_header = token_in_header
        self._reconnect = reconnect
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._send_timeout = send_timeout
        self._connect_timeout = connect_timeout
        self._liveness_timeout = liveness_timeout
        self._tcp_keepalive = tcp_keepalive
        self._last_rx = 0.0                              # loop time of the last frame received
        self._watch: asyncio.TimerHandle | None = None   # armed while an answer is awaited
        self._watch_from = 0.0                           # when the current wait began
        self._probed = False                             # a Ping went out in this silence
        self._idle: asyncio.TimerHandle | None = None    # the idle rule's next look
        self._silent_drops = 0
        self.on_close = on_close
        self.on_push = on_push
        #: Close code and reason of the last disconnect (1006 when the socket just dropped).
        self.last_close_code: int | None = None
        self.last_close_reason = ""
        self._order = ChatOrder(have, auto_ack=auto_ack)
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._events: asyncio.Queue | None = None        # created by the first events() call
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: _Listener | None = None      # the current connection, welcomed or not
        self._welcome: pb.Welcome | None = None
        self._welcome_waiter: asyncio.Future | None = None
        self._connecting: asyncio.Future | None = None  # the initial connect or reconnect loop
        self._requests: dict[int, asyncio.Future] = {}  # request_id -> reply (not sends)
        self._sends: dict[int, _Send] = {}               # request_id -> send on the wire
        self._outbox: dict[_Send, None] = {}             # every unacked send, in send order
        self._rid = 0
        self._acks_scheduled = False
        self._syncing = False
        self._gap_timer: asyncio.TimerHandle | None = None
        self._synced = asyncio.Event()
        self._attempt = 0
        self._goaway_delay: float | None = None          # the server said when to come back
        self._presence: dict[str, None] = {}              # subscribed users, restored on Welcome
        self._invisible = False                          # restored on Welcome when set
        self._closed = False
        self._failure: Exception | None = None           # why the client stopped for good
        self._end: _End | None = None                    # the iterators' end, once stopped
        self._reconnects = 0
        self._resent = 0
        self._gap_syncs = 0

    # ------------------------------------------------------------------ state
    @property
    def url(self) -> str:
        """The endpoint of the current connection, or the one the next attempt goes to."""
        return self._urls[self._url_index]

    @property
    def urls(self) -> tuple[str, ...]:
        """Every endpoint this client was given, in rotation order."""
        return self._urls

    def _next_url(self) -> None:
        """Move on to the next endpoint (a no-op with a single one)."""
        self._url_index = (self._url_index + 1) % len(self._urls)

    def _other_url(self) -> None:
        """Move to another endpoint picked at random: devices a gateway sends away spread over
        the rest evenly, not all onto the one after it in every device's list."""
        if len(self._urls) > 1:
            self._url_index = (self._url_index + random.randrange(1, len(self._urls))) \
                % len(self._urls)

    @property
    def connected(self) -> bool:
        """A connection is open and authenticated (Welcome received)."""
        return self._listener is not None and self._listener.welcomed

    @property
    def welcome(self) -> pb.Welcome | None:
        """The Welcome of the latest connection: identity and the server's live limits."""
        return self._welcome

    @property
    def user_id(self) -> str:
        return self._welcome.user_id if self._welcome is not None else ""

    @property
    def device_id(self) -> str:
        return self._welcome.device_id if self._welcome is not None else ""

    @property
    def have(self) -> dict[str, int]:
        """A copy of the per-chat contiguous watermark; persist it and pass it back as `have=`."""
        return dict(self._order.have)

    @property
    def stats(self) -> ClientStats:
        return ClientStats(duplicates=self._order.duplicates, reconnects=self._reconnects,
                           silent_drops=self._silent_drops,
                           retransmitted_sends=self._resent, gap_syncs=self._gap_syncs,
                           dropped=self._order.dropped)

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> pb.Welcome:
        """Open, authenticate and wait for Welcome. Raises AuthError when the token is refused
        and ConnectionLost when the server cannot be reached; the automatic reconnects apply
        only once a first connection succeeded."""
        if self._closed:
            raise ConnectionLost("client is closed")
        if self._failure is not None:
            raise ConnectionLost(str(self._failure)) from self._failure
        if self.connected:
            return self._welcome
        self._loop = asyncio.get_running_loop()
        if self._connecting is None:
            self._start_connecting(self._open_first())
        return await asyncio.shield(self._connecting)

    async def close(self) -> None:
        """Close for good: acks produced so far go out first; pending sends and requests fail
        with ConnectionLost; `messages()` iterators end."""
        if self._closed:
            return
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        listener = self._listener
        if listener is not None:
            self._flush_acks()
            listener.close_code, listener.close_reason = 1000, "client closed"
            transport = listener.transport
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            try:
                await asyncio.wait_for(transport.wait_disconnected(), self._connect_timeout)
            except asyncio.TimeoutError:
                transport.disconnect(graceful=False)
            except Exception:  # re-raised by picows from an earlier listener failure
                log.debug("connection ended with an error", exc_info=True)
        self._stop(None)

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until the sync started by the latest (re)connect (or a later one) completed,
        i.e. the backlog above the server's cursor has been delivered."""
        if self._welcome is None and self._connecting is None and self._failure is None:
            raise ConnectionLost("not connected")
        await asyncio.wait_for(self._synced.wait(), timeout)
        if self._failure is not None:
            raise ConnectionLost(str(self._failure)) from self._failure

    # ------------------------------------------------------------------ messages
    def messages(self) -> AsyncIterator[pb.Message]:
        """Delivered messages (membership events included), deduplicated, per chat in seq
        order, each once, without this device's own sends. Ends after close(); raises
        ConnectionLost when the client stopped for good (4001, 4010, 4011, 4012,
        reconnect=False)."""
        return _Iterator(self._inbox)

    def events(self) -> AsyncIterator[pb.ReceiptUpdate | pb.Presence | pb.TypingUpdate |
                                      pb.Goaway]:
        """Pushes other than messages, as their body message, in arrival order: ReceiptUpdate
        (ticks, read sync of your other devices), Presence, TypingUpdate and Goaway (the SDK
        reconnects by itself; this only tells the app). Pushes are queued from the first call
        on, so call it before the requests whose pushes matter (e.g. subscribe_presence). Ends
        and fails like messages()."""
        if self._events is None:
            self._events = asyncio.Queue()
            if self._end is not None:
                self._events.put_nowait(self._end)
        return _Iterator(self._events)

    async def ack(self, chat_id: str, seq: int) -> None:
        """With auto_ack=False: the app has processed everything of chat_id up to seq. Batched
        with the other acks of this loop turn."""
        self._order.ack(chat_id, seq)
        if self.connected:  # otherwise it goes out with the next ack after reconnecting
            self._schedule_acks()

    # ------------------------------------------------------------------ requests
    async def send(self, chat_id: str, body: bytes, media_ids: Iterable[str] = (),
                   client_msg_id: str | None = None, *, e2e: bool = False) -> pb.SendAck:
        """Store a message; returns the SendAck (durable). Retries with the same client_msg_id
        across reconnects and after UNAVAILABLE/RATE_LIMITED (waiting retry_after_ms); raises
        ServerError for any other error and asyncio.TimeoutError after send_timeout overall
        (the outcome is then unknown: retry with the same client_msg_id to find out).
        `e2e`: the body is end-to-end encrypted, so no push notification previews it."""
        if self._closed or self._failure is not None or \
                (not self.connected and self._connecting is None):
            raise ConnectionLost("not connected")
        entry = _Send(pb.Send(client_msg_id=client_msg_id or str(uuid.uuid4()), chat_id=chat_id,
                              body=body, media_ids=media_ids, e2e=e2e),
                       self._loop.create_future())
        entry.deadline = self._loop.call_later(self._send_timeout, _time_out, entry.future)
        self._outbox[entry] = None
        self._transmit_send(entry)
        try:
            return await entry.future
        finally:
            self._forget_send(entry)

    async def sync(self) -> pb.SyncComplete:
        """Ask the server to replay everything above this device's cursor; returns when that
        backlog has been sent (the messages themselves arrive through messages())."""
        if not self.connected:
            raise ConnectionLost("not connected")
        self._syncing = True
        self._order.sync_started()
        return await self.request("sync_complete", sync=pb.Sync())

    async def history(self, chat_id: str, before_seq: int = 0, limit: int = 50) -> pb.HistoryPage:
        """Messages below before_seq (0: from the newest), newest first."""
        return await self.request("history_page", history=pb.History(
            chat_id=chat_id, before_seq=before_seq, limit=limit))

    async def create_direct(self, other_user: str) -> pb.ChatInfo:
        return await self.request("chat", create_chat=pb.CreateChat(
            kind=pb.DIRECT, member_user_ids=[other_user]))

    async def create_group(self, title: str, members: Iterable[str]) -> pb.ChatInfo:
        return await self.request("chat", create_chat=pb.CreateChat(
            kind=pb.GROUP, member_user_ids=list(members), title=title))

    async def add_members(self, chat_id: str, users: Iterable[str]) -> pb.ChatInfo:
        return await self.request("chat", add_members=pb.AddMembers(
            chat_id=chat_id, user_ids=list(users)))

    async def remove_members(self, chat_id: str, users: Iterable[str]) -> pb.ChatInfo:
        return await self.request("chat", remove_members=pb.RemoveMembers(
            chat_id=chat_id, user_ids=list(users)))

    async def list_chats(self) -> list[pb.ChatSummary]:
        return list((await self.request("chat_list", list_chats=pb.ListChats())).chats)

    async def mark_read(self, chat_id: str, seq: int) -> pb.ReadAck:
        return await self.request("read_ack", mark_read=pb.MarkRead(chat_id=chat_id, seq=seq))

    async def ping(self) -> pb.Pong:
        return await self.request("pong", ping=pb.Ping(client_time_ms=int(time.time() * 1000)))

    async def get_receipts(self, chat_id: str, seq: int) -> pb.ReceiptStatus:
        """"Read by k of n" for one message; ServerError NOT_FOUND for a seq that does not
        exist."""
        return await self.request("receipt_status", get_receipts=pb.GetReceipts(
            chat_id=chat_id, seq=seq))

    async def subscribe_presence(self, users: Iterable[str]) -> None:
        """Follow the users' presence: one Presence each through events() with the current
        state, then one whenever what you may see changes. The server keeps subscriptions per
        connection; this client subscribes again after every reconnect."""
        users = list(users)
        await self.request("ok", subscribe_presence=pb.SubscribePresence(user_ids=users))
        self._presence.update(dict.fromkeys(users))

    async def unsubscribe_presence(self, users: Iterable[str]) -> None:
        """Stop following the users (here and after reconnects)."""
        users = list(users)
        for user in users:  # forgotten first: after a reconnect they must not come back
            self._presence.pop(user, None)
        await self.request("ok", unsubscribe_presence=pb.UnsubscribePresence(user_ids=users))

    async def typing(self, chat_id: str, typing: bool = True) -> None:
        """Tell the chat's other online devices that this user is (or stopped) typing. Fire and
        forget: there is no reply, and nothing is sent while disconnected (an indicator is
        worthless later). Repeat it every 3-5 s while the user types: the server relays at most
        one start per 3 s and receivers expire an indicator after its expires_in_ms."""
        if self.connected:
            self._transmit(frames.encode(0, typing=pb.Typing(chat_id=chat_id, typing=typing)))

    async def update_settings(self, read_receipts: bool | None = None,
                              last_seen: pb.Visibility | None = None,
                              invisible: bool | None = None) -> pb.Settings:
        """Change what is given (None: unchanged) and return the settings now in force.
        read_receipts and last_seen (EVERYONE, CONTACTS, NOBODY) belong to the user; invisible
        (this device does not make the user online) lasts for the connection on the server, so
        this client sets it again after every reconnect."""
        settings = await self.request("settings", update_settings=pb.UpdateSettings(
            read_receipts=read_receipts, last_seen=last_seen or pb.VISIBILITY_UNSPECIFIED,
            invisible=invisible))
        self._invisible = settings.invisible
        return settings

    async def settings(self) -> pb.Settings:
        return await self.update_settings()

    async def block(self, user_id: str) -> None:
        """Block a user: they can no longer create a direct chat with you or send in it
        (ServerError BLOCKED), nor see your presence, last seen or reads."""
        await self.request("ok", block=pb.Block(user_id=user_id))

    async def unblock(self, user_id: str) -> None:
        await self.request("ok", unblock=pb.Unblock(user_id=user_id))

    async def list_blocked(self) -> list[str]:
        """The users you blocked, sorted."""
        return list((await self.request("blocked_list", list_blocked=pb.ListBlocked())).user_ids)

    async def server_info(self) -> pb.ServerInfo:
        """The server's version, the node that answered, and its limits beyond Welcome's."""
        return await self.request("server_info", get_server_info=pb.GetServerInfo())

    async def list_devices(self) -> pb.DeviceList:
        return await self.request("device_list", list_devices=pb.ListDevices())

    async def revoke_device(self, device_id: str) -> None:
        """Close that device's connection (4011) and refuse its id forever; it may be this very
        device, which then stops like any revoked one. ServerError NOT_FOUND for a device the
        user does not have (or revoked before)."""
        await self.request("ok", revoke_device=pb.RevokeDevice(device_id=device_id))

    async def register_push(self, platform: str, token: str, *, topic: str = "",
                            previews: bool = False) -> None:
        """Register (or replace) this device's push token: `platform` is "apns",
        "apns-sandbox" or "fcm"; `topic` the app's bundle id (APNs); `previews` allows message
        previews on this device. Kept by the server across connections: call it again when the
        OS hands the app a new token."""
        await self.request("ok", register_push=pb.RegisterPush(
            platform=PUSH_PLATFORMS[platform], token=token, topic=topic, previews=previews))

    async def unregister_push(self) -> None:
        """No more pushes to this device (sign-out, notifications turned off)."""
        await self.request("ok", unregister_push=pb.UnregisterPush())

    async def mute_chat(self, chat_id: str, until_ms: int = MUTE_FOREVER) -> dict[str, int]:
        """No pushes for the chat until `until_ms` (ms since epoch; 0 unmutes), on every device
        of the user; returns every mute in force then (chat -> until_ms)."""
        answer = await self.request("mute_list", mute_chat=pb.MuteChat(
            chat_id=chat_id, muted_until_ms=until_ms))
        return {m.chat_id: m.muted_until_ms for m in answer.mutes}

    async def unmute_chat(self, chat_id: str) -> dict[str, int]:
        return await self.mute_chat(chat_id, 0)

    async def list_mutes(self) -> dict[str, int]:
        answer = await self.request("mute_list", list_mutes=pb.ListMutes())
        return {m.chat_id: m.muted_until_ms for m in answer.mutes}

    # ------------------------------------------------------------------ media (client/media.py)
    async def upload(self, source, content_type: str, *, thumbnail_of: str = "",
                     parallel: int = 4) -> pb.MediaInfo:
        """Upload bytes or a file (path) and complete it: its MediaInfo, whose media_id a
        send may name. Uploading the same file again resumes it (or finds it done)."""
        return await media.upload(self, source, content_type, thumbnail_of=thumbnail_of,
                                  parallel=parallel)

    async def download(self, media_id: str, chat_id: str = "", seq: int = 0, *, to=None,
                       thumbnail: bool = False, byte_range: tuple[int, int] | None = None):
        """The bytes of media a message (chat_id, seq) names, or its MediaInfo once written
        to the file `to`; checked against its SHA-256."""
        return await media.download(self, media_id, chat_id, seq, to=to, thumbnail=thumbnail,
                                    byte_range=byte_range)

    async def request(self, reply: str, **body) -> object:
        """Send one request and return the `reply` body of its answer, e.g.
        `await client.request("device_list", list_devices=pb.ListDevices())`: the building block
        of the methods above, and the way to use a frame of a newer schema that has none.
        Not retried: on a lost connection it fails with ConnectionLost, after send_timeout with
        asyncio.TimeoutError (either way the outcome is unknown); an Error answer raises
        ServerError."""
        if not self.connected:
            raise ConnectionLost("not connected")
        rid = self._next_rid()
        future = self._requests[rid] = self._loop.create_future()
        deadline = self._loop.call_later(self._send_timeout, _time_out, future)
        if self._acks_scheduled:
            self._flush_acks()  # acks produced before this request reach the server before it
        self._transmit(frames.encode(rid, **body))
        self._expect_answer()
        try:
            frame = await future
        finally:
            deadline.cancel()
            self._requests.pop(rid, None)
        kind = frame.WhichOneof("body")
        if kind == "error":
            raise ServerError.from_pb(frame.error)
        if kind != reply:
            raise ServerError(pb.ERROR_CODE_UNSPECIFIED, f"expected {reply}, got {kind}")
        return getattr(frame, reply)

    # ------------------------------------------------------------------ connecting
    def _start_connecting(self, coro) -> None:
        task = self._connecting = asyncio.ensure_future(coro)
        task.add_done_callback(self._connecting_done)

    def _connecting_done(self, task: asyncio.Future) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled() and task.exception() is not None:
            log.debug("connect to %s failed: %s", self.url, task.exception())

    async def _open(self) -> pb.Welcome:
        """One connection attempt, up to Welcome."""
        token = self._token() if callable(self._token) else self._token
        headers = {"Authorization": f"Bearer {token}"} if self._token_in_header else None
        auth_token = None if self._token_in_header else token
        waiter = self._welcome_waiter = self._loop.create_future()
        try:
            transport, _ = await ws_connect(
                lambda: _Listener(self, auth_token), self.url, extra_headers=headers,
                use_aiofastnet=False, websocket_handshake_timeout=self._connect_timeout,
                max_frame_size=MAX_RECEIVE_FRAME, enable_auto_pong=False)
        except WSHandshakeError as exc:
            response = exc.response
            if response is not None and response.status == 401:
                raise AuthError(401, _refusal_reason(exc)) from exc
            status = response.status if response is not None else "no response"
            raise ConnectionLost(f"upgrade refused: HTTP {status}") from exc
        except (OSError, WSError) as exc:
            raise ConnectionLost(f"cannot connect to {self.url}: {exc!r}") from exc
        try:
            if self._tcp_keepalive is not None:
                self._tcp_keepalive.apply(transport.underlying_transport.get_extra_info("socket"))
            # asyncio.timeout, not wait_for: wait_for (Python 3.11) can swallow the cancel of a
            # close() that lands as the Welcome arrives, leaving a closed client connected
            async with asyncio.timeout(self._connect_timeout):
                return await waiter
        except TimeoutError:
            transport.disconnect(graceful=False)
            raise ConnectionLost("no Welcome in time") from None
        except BaseException:
            transport.disconnect(graceful=False)
            raise
        finally:
            if self._welcome_waiter is waiter:
                self._welcome_waiter = None

    async def _open_first(self) -> pb.Welcome:
        """The first connection: each endpoint once, in order, from the current one; raises
        what the last one raised. A refused token (AuthError) ends it at once: every endpoint
        of one cluster would refuse it alike."""
        for remaining in range(len(self._urls) - 1, -1, -1):
            try:
                return await self._open()
            except ConnectionLost as exc:
                if not remaining:
                    raise
                log.debug("connect to %s failed: %s", self.url, exc)
                self._next_url()
        raise AssertionError("unreachable")

    async def _reconnect_loop(self) -> pb.Welcome:
        """Reconnect with exponential backoff and full jitter (a random delay in [0, cap]), so a
        restarted server is not hit by every client at once; a Goaway's delay (already jittered
        by the server) replaces the first one. Stops when the token is refused."""
        while True:
            delay, self._goaway_delay = self._goaway_delay, None
            if delay is None:
                cap = min(self._backoff_max,
                          self._backoff_min * 2 ** min(self._attempt, MAX_BACKOFF_EXPONENT))
                delay = random.uniform(0, cap)
            self._attempt += 1
            await asyncio.sleep(delay)
            try:
                welcome = await self._open()
            except AuthError as exc:
                if exc.code != codes.Close.AUTH_TIMEOUT:  # our Auth frame was late: the token may be fine
                    self._stop(exc)
                    raise
                log.debug("reconnect to %s: auth timed out", self.url)
                self._next_url()
                continue
            except ConnectionLost as exc:
                log.debug("reconnect to %s failed: %s", self.url, exc)
                self._next_url()
                continue
            self._reconnects += 1
            return welcome

    def _stop(self, error: Exception | None) -> None:
        """No more connections: fail what waits on one and end the message iterators."""
        self._failure = error or ConnectionLost("client closed")
        lost = str(self._failure)
        for entry in list(self._outbox):
            if not entry.future.done():
                entry.future.set_exception(ConnectionLost(lost))
            self._forget_send(entry)
        for future in self._requests.values():
            if not future.done():
                future.set_exception(ConnectionLost(lost))
        self._requests.clear()
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._synced.set()  # wakes wait_synced(), which then raises
        end = self._end = _End(error)
        self._inbox.put_nowait(end)
        if self._events is not None:
            self._events.put_nowait(end)

    # ------------------------------------------------------------------ listener events
    def _on_connected(self, listener: _Listener) -> None:
        if self._closed:
            listener.transport.disconnect(graceful=False)
            return
        self._listener = listener
        if listener.auth_token is not None:
            self._transmit(frames.encode(0, auth=pb.Auth(token=listener.auth_token)))

    def _on_disconnected(self, listener: _Listener) -> None:
        if listener is not self._listener:
            return
        self._listener = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        code, reason = listener.close_code, listener.close_reason
        self.last_close_code, self.last_close_reason = code, reason
        self._syncing = False
        self._synced.clear()
        lost = f"connection closed ({code} {reason})".strip()
        for future in self._requests.values():
            if not future.done():
                future.set_exception(ConnectionLost(lost))
        self._requests.clear()
        for entry in self._sends.values():
            entry.rid = 0  # stays in the outbox; re-sent after the next Welcome
        self._sends.clear()
        if self.on_close is not None:
            try:
                self.on_close(code, reason)
            except Exception:
                log.exception("on_close callback failed")
        if not listener.welcomed:
            waiter = self._welcome_waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(AuthError(code, reason) if code in REFUSED_CLOSE
                                     else ConnectionLost(lost))
            return
        if self._closed:
            return
        if not self._reconnect or code in NO_RECONNECT:
            self._stop(ConnectionLost(lost))
            return
        if self._goaway_delay is not None:
            self._other_url()  # asked to move (drain, rebalancing): spread over the others
        else:
            self._next_url()  # that gateway may be gone: the next attempt tries another one
        self._start_connecting(self._reconnect_loop())

    def _heard(self, listener: _Listener) -> bool:
        """Any frame of the current connection, pings and pongs included, is a sign of life."""
        if listener is not self._listener:
            return False
        self._last_rx = self._loop.time()
        self._probed = False
        return True

    def _on_frame(self, listener: _Listener, payload: bytes) -> None:
        if not self._heard(listener):
            return
        try:
            frame = frames.decode(payload)
        except DecodeError:
            log.warning("undecodable ServerFrame from %s; dropping the connection", self.url)
            listener.transport.send_close(WSCloseCode.PROTOCOL_ERROR, b"bad ServerFrame")
            listener.transport.disconnect()
            return
        kind = frame.WhichOneof("body")
        if kind == "deliver":
            self._on_deliver(frame.deliver)
        elif kind == "send_ack":
            self._on_send_ack(frame.request_id, frame.send_ack)
        elif kind == "error":
            self._on_error(frame)
        elif kind == "sync_complete":
            self._on_sync_complete(frame)
        elif kind == "welcome":
            self._on_welcome(listener, frame.welcome)
        elif kind in EVENT_KINDS:
            if kind == "goaway":  # the close (1001) follows; the reconnect waits this long
                self._goaway_delay = frame.goaway.reconnect_after_ms / 1000
            if self._events is not None:
                self._events.put_nowait(getattr(frame, kind))
            self._push(frame)
        elif frame.request_id:
            future = self._requests.get(frame.request_id)
            if future is not None and not future.done():
                future.set_result(frame)
        else:
            self._push(frame)

    def _push(self, frame: pb.ServerFrame) -> None:
        if self.on_push is not None:
            try:
                self.on_push(frame)
            except Exception:
                log.exception("on_push callback failed")

    def _on_welcome(self, listener: _Listener, welcome: pb.Welcome) -> None:
        listener.welcomed = True
        self._welcome = welcome
        if self._idle is None:
            self._idle = self._loop.call_later(self._quiet_limit(), self._check_idle)
        order = self._order
        order.user_id = welcome.user_id
        order.device_id = welcome.device_id
        order.new_connection()
        self._goaway_delay = None
        self._syncing = True  # the server starts a sync by itself
        self._synced.clear()
        self._restore_session()
        for entry in self._outbox:
            if entry.rid == 0 and entry.retry is None:
                self._transmit_send(entry)
        waiter = self._welcome_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(welcome)

    def _restore_session(self) -> None:
        """Set again what the server forgot with the old connection. The answers (Ok, Settings,
        or an Error if a limit shrank) find no waiting request and are dropped."""
        if self._invisible:
            self._transmit(frames.encode(self._next_rid(), update_settings=pb.UpdateSettings(
                invisible=True)))
        if self._presence:
            self._transmit(frames.encode(self._next_rid(), subscribe_presence=pb.SubscribePresence(
                user_ids=list(self._presence))))

    def _on_deliver(self, deliver: pb.Deliver) -> None:
        put = self._inbox.put_nowait
        for floor in deliver.floors:  # before the frame's messages (protocol 8.3)
            for ready in self._order.floor(floor.chat_id, floor.seq):
                put(ready)
        feed = self._order.feed
        for message in deliver.messages:
            for ready in feed(message):
                put(ready)
        self._schedule_acks()
        if self._order.needs_sync:
            self._schedule_gap_sync()

    def _on_send_ack(self, rid: int, ack: pb.SendAck) -> None:
        # Counted even when nobody waits any more (send() timed out): the seq is ours either way.
        put = self._inbox.put_nowait
        for ready in self._order.on_send_ack(ack.chat_id, ack.seq):
            put(ready)
        self._schedule_acks()
        entry = self._sends.pop(rid, None)
        if entry is not None:
            entry.rid = 0
            self._outbox.pop(entry, None)
            if not entry.future.done():
                entry.future.set_result(ack)

    def _on_error(self, frame: pb.ServerFrame) -> None:
        rid = frame.request_id
        error = frame.error
        entry = self._sends.pop(rid, None) if rid else None
        if entry is not None:
            entry.rid = 0
            if error.code in RETRYABLE:
                delay = error.retry_after_ms / 1000 or self._backoff_min
                entry.retry = self._loop.call_later(delay, self._transmit_send, entry)
            else:
                self._outbox.pop(entry, None)
                if not entry.future.done():
                    entry.future.set_exception(ServerError.from_pb(error))
            return
        future = self._requests.get(rid) if rid else None
        if future is not None and not future.done():
            future.set_result(frame)
        else:  # an answer to a frame without a reply (ACK_INVALID for an Ack): nothing waits
            log.debug("server error: %s", ServerError.from_pb(error))

    def _on_sync_complete(self, frame: pb.ServerFrame) -> None:
        # Any SyncComplete ends the sync in progress: a newer Sync replaces an older one on the
        # server, and the replaced one never completes.
        self._syncing = False
        self._attempt = 0  # this connection proved healthy: the next reconnect starts fast
        self._synced.set()
        future = self._requests.get(frame.request_id) if frame.request_id else None
        if future is not None and not future.done():
            future.set_result(frame)
        if self._order.needs_sync:
            self._schedule_gap_sync()

    # ------------------------------------------------------------------ output
    def _transmit(self, data: bytes) -> None:
        self._listener.transport.send(WSMsgType.BINARY, data)

    def _next_rid(self) -> int:
        """Next request_id: uint32, wrapping, never 0 (0 means "no reply") nor one in use."""
        rid = self._rid
        while True:
            rid = (rid + 1) & 0xFFFFFFFF
            if rid and rid not in self._requests and rid not in self._sends:
                self._rid = rid
                return rid

    def _transmit_send(self, entry: _Send) -> None:
        entry.retry = None
        if not self.connected or entry.future.done():
            return  # goes out after the next Welcome (or nobody waits any more)
        if entry.attempts:
            self._resent += 1
        entry.attempts += 1
        entry.rid = self._next_rid()
        self._sends[entry.rid] = entry
        self._transmit(frames.encode(entry.rid, send=entry.body))
        self._expect_answer()

    def _forget_send(self, entry: _Send) -> None:
        self._outbox.pop(entry, None)
        if entry.rid:
            self._sends.pop(entry.rid, None)
            entry.rid = 0
        if entry.retry is not None:
            entry.retry.cancel()
            entry.retry = None
        if entry.deadline is not None:
            entry.deadline.cancel()
            entry.deadline = None

    # ------------------------------------------------------------------ liveness
    def _expect_answer(self) -> None:
        """Something went out that the server must answer: watch its silence until nothing is
        awaited any more (then the watch stops, and with it the client's own traffic)."""
        if self._watch is None:
            self._watch_from = self._loop.time()
            self._watch = self._loop.call_later(self._liveness_timeout / LIVENESS_CHECKS,
                                                self._check_liveness)

    def _check_liveness(self) -> None:
        self._watch = None
        listener = self._listener
        if listener is None or not listener.welcomed or not (self._sends or self._requests):
            return
        now = self._loop.time()
        silent = now - max(self._last_rx, self._watch_from)
        if silent >= self._liveness_timeout:
            self._silent_drops += 1
            log.info("%s silent for %.1fs with answers due: trying another endpoint",
                     self.url, silent)
            listener.close_reason = f"server silent for {silent:.1f}s"
            listener.transport.disconnect(graceful=False)
            return
        if silent >= self._liveness_timeout / 2 and not self._probed:
            self._probed = True  # a live server answers at once, whatever else it is doing
            self._transmit(frames.encode(self._next_rid(), ping=pb.Ping(
                client_time_ms=int(time.time() * 1000))))
        self._watch = self._loop.call_later(self._liveness_timeout / LIVENESS_CHECKS,
                                            self._check_liveness)

    def _quiet_limit(self) -> float:
        """How long the server's heartbeat may keep us waiting before we ping it."""
        return self._welcome.heartbeat_interval_ms / 1000 + IDLE_GRACE

    def _check_idle(self) -> None:
        """The idle rule (IDLE_GRACE): looks again at each deadline of the last frame heard."""
        self._idle = None
        listener = self._listener
        if listener is None or not listener.welcomed:
            return
        quiet = self._quiet_limit()
        silent = self._loop.time() - self._last_rx
        if silent >= quiet + PING_REPLY_TIMEOUT:  # our ping went unanswered too
            self._silent_drops += 1
            log.info("%s silent for %.1fs: trying another endpoint", self.url, silent)
            listener.close_reason = f"server silent for {silent:.1f}s"
            listener.transport.disconnect(graceful=False)
            return
        if silent >= quiet:  # the server's heartbeat is late
            listener.transport.send_ping()
            quiet += PING_REPLY_TIMEOUT
        self._idle = self._loop.call_later(quiet - silent, self._check_idle)

    def _schedule_acks(self) -> None:
        """Acks of one loop turn (possibly many Deliver frames) leave as one Ack frame."""
        if not self._acks_scheduled:
            self._acks_scheduled = True
            self._loop.call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._acks_scheduled = False
        acks = self._order.take_acks()
        if acks and self.connected:
            self._transmit(frames.ack(acks))

    def _schedule_gap_sync(self) -> None:
        if self._gap_timer is None and not self._syncing:
            self._gap_timer = self._loop.call_later(GAP_SYNC_DELAY, self._gap_sync)

    def _gap_sync(self) -> None:
        self._gap_timer = None
        if self._order.needs_sync and not self._syncing and self.connected:
            self._syncing = True
            self._order.sync_started()
            self._gap_syncs += 1
            self._transmit(frames.encode(self._next_rid(), sync=pb.Sync()))


def _time_out(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


def _refusal_reason(exc: WSHandshakeError) -> str:
    """The reason the server put in the body of a refused upgrade ("invalid token", "token
    expired"). picows leaves the response's own `body` unset and keeps whatever followed the
    headers in `raw_body`; Content-Length says how much of that is the body."""
    raw = bytes(exc.raw_body or b"")
    length = exc.response.headers.get("Content-Length") if exc.response is not None else None
    if length is not None and length.isdigit():
        raw = raw[:int(length)]
    reason = raw.decode(errors="replace").strip()
    return reason or f"HTTP {int(exc.response.status)} without a reason"
