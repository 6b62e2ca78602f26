"""The gateway process: the picows listener, the drain, and what operators reach it by: TLS on the listener (tls.py), the ops port with metrics and health
(status.py, metrics.py) and the local control socket (control.py).

The listener factory runs at the HTTP upgrade: a bad token in the Authorization header is
refused there with 401 (no WebSocket, nothing allocated); without the header the connection
waits for an Auth frame under the auth deadline, in one of `auth.max_pending` slots shared
fairly between source addresses (preauth.py: 429 or 503 with Retry-After when refused).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
from dataclasses import dataclass

from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from switchboard.config import Config, ConfigError
from switchboard.core.acks import AckBatch
from switchboard.core.auth import KeyPending, TokenAuthority, TokenError
from switchboard.core.backlog import backlog_reader
from switchboard.core.blocks import Blocks
from switchboard.core.chats import ChatService
from switchboard.core.devices import Devices
from switchboard.core.ids import now_ms
from switchboard.core.media import MediaService
from switchboard.core.messaging import MessageService
from switchboard.core.ratelimit import UserLimits
from switchboard.core.receipts import ReceiptService
from switchboard.core.session import SessionConfig, SessionStats
from switchboard.core.settings import Settings
from switchboard.core.store import Store, StoreError
from switchboard.core.store_sqlite import SQLiteStore
from switchboard.core.tasks import TaskGroup, watch
from switchboard.core.timers import TimerService
from switchboard.proto.codes import Close
from switchboard.proto.v1 import client_pb2 as pb
from switchboard.push.service import PushService
from switchboard.router.base import Router

from . import frames
from .connection import Connection, Flusher
from .control import ControlServer
from .hub import Hub
from .jwks import JwksRefresher
from .listener import listen
from .metrics import GatewayMetrics
from .preauth import PendingAuth, Verdict
from .presence import PresenceFanout
from .requests import Requests
from .status import StatusServer
from .tls import ServerTls

log = logging.getLogger(__name__)

CLOSE_WAIT = 3.0   # s: a connection's close grace (2 s, connection.py) plus timer ticks
CLOSE_POLL = 0.02
PREAUTH_RETRY_AFTER = 1  # s, in the Retry-After of a refused unauthenticated upgrade
# s the devices' acks gather before they go to the writer and the receipts in one hand-off:
# once a large group's fan-out is written, its members' acks trickle in a few per loop turn,
# and a hand-off per turn is ~4 us of Python (a scheduled call, the writer's merge, the
# receipts' note) whatever it carries
ACK_HAND_OFF = 0.005


@dataclass(slots=True)
class Stats:
    """Connection counters; metrics.py exports them at scrape time with the sessions' own
    (SessionStats: frames, bytes, sends, acks, deliveries)."""
    connects: int = 0
    disconnects: int = 0
    closing: int = 0  # connections that sent their CLOSE and wait for the peer
    refused_upgrades: int = 0


@dataclass(slots=True)
class Services:
    store: Store
    chats: ChatService
    messages: MessageService
    settings: Settings
    receipts: ReceiptService
    devices: Devices
    blocks: Blocks
    push: PushService
    media: MediaService


class Gateway:
    """One gateway process's edge. Everything it is given is built by the composition root
    (switchboard/app.py); what it builds itself (request handlers, ops port, control socket)
    reads the gateway."""

    def __init__(self, config: Config, *, tokens: TokenAuthority, jwks: JwksRefresher | None,
                 services: Services, router: Router, hub: Hub, presence: PresenceFanout,
                 timers: TimerService, limits: UserLimits, metrics: GatewayMetrics,
                 tasks: TaskGroup) -> None:
        self.config = config
        self.tokens, self.jwks = tokens, jwks
        self.services = services
        self.router = router
        self.hub = hub
        self.presence = presence
        self.timers = timers
        self.limits = limits
        self.tasks = tasks
        self.requests = Requests(self)
        self.backlogs = backlog_reader(services.store, tasks)
        self._usage_totals: dict[tuple[str, str], int] = {}
        self._usage_task: asyncio.Task | None = None
        self.stats = Stats()
        self.session_stats = SessionStats()
        self.session_config = SessionConfig(
            frames_per_second=config.limits.frames_per_second,
            frame_burst=config.limits.frame_burst,
            max_frame_bytes=config.limits.max_frame_bytes,
            delivery_window=config.limits.delivery_window,
            outbound_buffer_bytes=config.limits.outbound_buffer_bytes,
            auth_timeout=config.auth.timeout,
            heartbeat_interval=config.timers.heartbeat_interval,
            idle_timeout=config.timers.idle_timeout,
            retransmit_after=config.timers.retransmit_after,
            sees_every_commit=router.sees_every_commit)
        self.flusher = Flusher()
        self.acks = AckBatch(self._acks_ready)  # every session's acks (core/acks.py)
        self._ack_hand_off: asyncio.TimerHandle | None = None
        self.metrics = metrics
        metrics.collect(self)
        self.tls = ServerTls(config.tls) if config.tls.cert else None
        self.status = StatusServer(self)
        self.control = ControlServer(self, config.admin_socket)
        self.preauth = PendingAuth(config.auth.max_pending, config.auth.max_pending_per_address,
                                   config.auth.evict_after)
        self.sends_in_flight = 0  # accepted sends not yet answered (a drain answers them all)
        self.draining = False
        self.store_open = False
        self._server: asyncio.Server | None = None
        self._welcome = pb.Welcome(
            heartbeat_interval_ms=int(config.timers.heartbeat_interval * 1000),
            idle_timeout_ms=int(config.timers.idle_timeout * 1000),
            max_frame_bytes=config.limits.max_frame_bytes,
            max_body_bytes=config.limits.max_body_bytes,
            delivery_window=config.limits.delivery_window).SerializeToString()

    def _acks_ready(self) -> None:
        self._ack_hand_off = asyncio.get_running_loop().call_later(ACK_HAND_OFF,
                                                                   self._hand_off_acks)

    def _hand_off_acks(self) -> None:
        """The acks of the last ACK_HAND_OFF: to the writer and the receipts at once (acks are
        watermarks nobody waits for: the writer keeps them up to its ack_delay, the receipts
        push them every receipt_flush)."""
        if self._ack_hand_off is not None:
            self._ack_hand_off.cancel()
            self._ack_hand_off = None
            self.services.receipts.acked(*self.acks.take())

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the store, then the ops port (so /healthz answers while the rest comes up), the
        control socket and last the client listener. What the operator can fix (a database
        that cannot be opened, a port in use) raises ConfigError naming the setting or path;
        `stop()` then releases what was opened."""
        loop = asyncio.get_running_loop()
        if self.jwks is not None:
            await self.jwks.start()
        store = self.services.store
        try:
            await store.open()
        except (OSError, StoreError) as exc:
            reason = exc.__cause__ or exc
            if isinstance(store, SQLiteStore):  # a file in the data dir: the operator's to fix
                raise ConfigError(f"server.data_dir: cannot open the database {store.path}: "
                                  f"{reason}") from None
            raise RuntimeError(f"cannot open the store: {reason}") from None  # may pass: exit 1
        self.store_open = True
        self.services.devices.start()
        await self.services.media.open()  # ConfigError naming media.* when it cannot
        cluster = self.config.cluster
        with _names_the_port("cluster.mesh_port", cluster.mesh_host, cluster.mesh_port):
            await self.router.start()
        await self.services.push.start()
        self.timers.start(loop)
        self._usage_task = watch(asyncio.ensure_future(self._share_usage()))
        self.metrics.loop_lag.start(loop)
        metrics = self.config.metrics
        if metrics.enabled:
            with _names_the_port("metrics.port", metrics.host, metrics.port):
                await self.status.start(metrics.host, metrics.port)
        try:
            await self.control.start()
        except OSError as exc:
            raise ConfigError(f"server.data_dir: cannot create the admin socket "
                              f"{self.control.path}: {exc.strerror or exc}") from None
        server_cfg = self.config.server
        tls = {} if self.tls is None else {
            "ssl": self.tls.context, "ssl_handshake_timeout": self.config.tls.handshake_timeout}
        with _names_the_port("server.port", server_cfg.host, server_cfg.port):
            self._server = await listen(
                self._listener_for, server_cfg.host, server_cfg.port,
                handshake_timeout=self.config.auth.timeout,
                max_frame_size=self.config.limits.max_frame_bytes,
                reuse_port=server_cfg.reuse_port or None,
                backlog=socket.SOMAXCONN,  # asyncio's 100 overflows under a reconnect storm
                logger_name="switchboard.ws",
                keepalive=self.config.tcp_keepalive,
                **tls)
        log.info("listening on %s://%s:%d/v1/ws", self.scheme, server_cfg.host, self.port)
        log.info("media on %s", self.services.media.objects.where())

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    @property
    def scheme(self) -> str:
        return "ws" if self.tls is None else "wss"

    def readiness(self) -> dict[str, bool]:
        """What /readyz checks: may a load balancer send new devices here?"""
        checks = {"store_open": self.store_open,
                  "listening": self._server is not None and self._server.is_serving(),
                  "not_draining": not self.draining}
        checks.update(self.router.readiness())
        return checks

    def reload_tls(self) -> None:
        """Load the certificate and key now on disk for new handshakes (SIGHUP); established
        connections keep theirs. Raises, keeping the old pair, when the new one is unusable."""
        if self.tls is None:
            raise RuntimeError("TLS is off (no tls.cert): nothing to reload")
        self.tls.reload()

    async def stop(self) -> None:
        """Drain: stop accepting, refuse new sends (UNAVAILABLE), let the writer make every
        queued send durable and acked, then tell each device to reconnect elsewhere after a
        jittered delay (Goaway, close 1001) and close the store. /readyz fails from the first
        step; the ops port answers until the end."""
        self.draining = True
        served = self._server is not None  # a gateway whose start failed has nothing to drain
        if served:
            self._server.close()
            log.info("draining %d connections, %d sends pending", self.hub.connections,
                     self.services.messages.writer.pending)
        self._hand_off_acks()  # the acks gathered so far are committed with the drain
        await self.services.messages.close()
        await self.services.receipts.close()  # pushes what is pending while the store is open
        await self.services.push.close()  # queues what is owed while the store is open
        await self.router.stop()
        await self._until(lambda: self.sends_in_flight == 0, self.config.cluster.forward_timeout)
        spread_ms = int(self.config.server.drain_spread * 1000)
        for conn in self.hub.all():
            conn.send_frame(frames.goaway(random.randint(0, spread_ms), "server draining"))
            conn.close(Close.GOING_AWAY, "server draining")
        await self._closed_handshakes()
        self.presence.close()
        if self._usage_task is not None:
            self._usage_task.cancel()
            await asyncio.gather(self._usage_task, return_exceptions=True)
        await self.router.close()
        await self.tasks.cancel()
        await self.services.media.close()
        await self.services.devices.close()  # the last batch of last-seen times
        self.store_open = False
        await self.services.store.close()
        self.timers.stop()
        await self.control.stop()
        await self.status.stop()
        self.metrics.loop_lag.stop()
        if self.jwks is not None:
            await self.jwks.stop()
        if served:
            self.services.receipts.report_unpushed()
            log.info("drained: writer flushed, store closed")

    # ------------------------------------------------------------------ connections
    async def _closed_handshakes(self) -> None:
        """Wait until the devices answered our CLOSE (or their grace ran out on the timer wheel):
        exiting earlier would reset sockets whose Goaway and CLOSE are still unread."""
        await self._until(lambda: self.stats.closing == 0, CLOSE_WAIT)

    @staticmethod
    async def _until(done, limit: float) -> None:
        deadline = asyncio.get_running_loop().time() + limit
        while not done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(CLOSE_POLL)

    @property
    def pending_auth(self) -> int:
        """Upgraded sockets still waiting for their Auth frame."""
        return len(self.preauth)

    def _listener_for(self, request: WSUpgradeRequest, address: str):
        if self.draining:
            return _refuse(503, b"draining, reconnect elsewhere")
        header = request.headers.get("Authorization")
        if header is None:
            verdict = self.preauth.admit(address, self.timers.now())
            if verdict is Verdict.ADDRESS_FULL:
                self.stats.refused_upgrades += 1
                return _refuse(429, b"too many unauthenticated connections from your address",
                               PREAUTH_RETRY_AFTER)
            if verdict is Verdict.BUSY:
                self.stats.refused_upgrades += 1
                return _refuse(503, b"busy, retry later", PREAUTH_RETRY_AFTER)
            if verdict is Verdict.EVICT_OLDEST:
                self.preauth.oldest().evict()
            return Connection(self, None, address).session
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise TokenError("invalid token")
            principal = self.tokens.verify(token.strip())
        except KeyPending as exc:  # a new kid: the key set is being refreshed
            self.stats.refused_upgrades += 1
            return _refuse(503, str(exc).encode(), PREAUTH_RETRY_AFTER)
        except TokenError as exc:
            self.stats.refused_upgrades += 1
            return _refuse(401, str(exc).encode())
        wait = self.limits.take("connect", principal.user_id, self.timers.now())
        if wait:
            self.stats.refused_upgrades += 1
            return _refuse(429, b"too many connections", math.ceil(wait))
        return Connection(self, principal, address).session

    async def _share_usage(self) -> None:
        """Per-user limits across gateways: every usage_sync_interval, one batch with what
        this node let each user spend, and each bucket is charged what the other nodes let the
        same user spend meanwhile (core/ratelimit.py UserLimits; the bound: docs/cluster.md)."""
        while True:
            await asyncio.sleep(self.config.limits.usage_sync_interval)
            now = self.timers.now()
            usage = self.limits.drain_usage()
            for key in self.limits.prune(now):
                self._usage_totals.pop(key, None)
            totals = await self.router.share_usage(usage)
            now = self.timers.now()
            for key, total in totals.items():
                seen = self._usage_totals.get(key)
                self._usage_totals[key] = total
                if seen is not None:
                    self.limits.charge(key, total - seen - usage.get(key, 0), now)

    def welcome(self, user: str, device: str) -> bytes:
        """The encoded ServerFrame with this device's Welcome: the fields every Welcome shares
        are encoded once, the device's own appended (a message's encodings concatenated are
        the message with the fields of both), then framed as ServerFrame.welcome."""
        body = self._welcome + pb.Welcome(user_id=user, device_id=device,
                                          server_time_ms=now_ms()).SerializeToString()
        return _WELCOME_TAG + _varint(len(body)) + body


_WELCOME_TAG = pb.ServerFrame(welcome=pb.Welcome()).SerializeToString()[:-1]
"""The key of ServerFrame.welcome (an empty Welcome encodes as that key and a zero length)."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _refuse(status: int, body: bytes, retry_after: int | None = None):
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_error_response(status, body, headers), None)


@contextlib.contextmanager
def _names_the_port(key: str, host: str, port: int):
    """A listener that cannot bind becomes a ConfigError naming the setting that owns it."""
    try:
        yield
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"{key}: cannot listen on {host}:{port}: {reason}") from None
