"""The gateway process: wires store, services, router and the picows listener together, plus
what operators reach it by: TLS on the listener (tls.py), the ops port with metrics and health
(status.py, metrics.py) and the local control socket (control.py).

The listener factory runs at the HTTP upgrade: a bad token in the Authorization header is
refused there with 401 (no WebSocket, nothing allocated); without the header the connection
waits for an Auth frame under the auth deadline, and at most `auth.max_pending` such
connections exist at once (503 beyond).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from dataclasses import dataclass

from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server

from switchboard.config import Config, ConfigError, parse_addresses, parse_peers
from switchboard.core.auth import TokenAuthority, TokenError
from switchboard.core.chats import ChatService
from switchboard.core.ids import ServerIds, now_ms
from switchboard.core.devices import Devices
from switchboard.core.messaging import MessageService
from switchboard.core.model import Receipt
from switchboard.core.receipts import ReceiptService
from switchboard.core.settings import Settings
from switchboard.core.store import Store, StoreError
from switchboard.core.store_sqlite import SQLiteStore
from switchboard.core.timers import TimerService
from switchboard.proto.v1 import client_pb2 as pb
from switchboard.router.base import Router
from switchboard.router.local import LocalRouter

from .connection import Close, Connection
from .control import ControlServer
from .hub import Hub
from .metrics import GatewayMetrics
from .node import GatewayNode
from .presence import PresenceFanout
from .requests import Requests
from .status import StatusServer
from .tls import ServerTls

log = logging.getLogger(__name__)

CLOSE_WAIT = 3.0   # s: a connection's close grace (2 s, connection.py) plus timer ticks
CLOSE_POLL = 0.02


@dataclass(slots=True)
class Stats:
    """Counters bumped on the hot path; metrics.py exports them at scrape time."""
    connects: int = 0
    disconnects: int = 0
    closing: int = 0  # connections that sent their CLOSE and wait for the peer
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    sends: int = 0
    acks: int = 0
    sync_pages: int = 0
    deliveries: int = 0
    retransmits: int = 0
    slow_consumers: int = 0
    refused_upgrades: int = 0


@dataclass(slots=True)
class Services:
    store: Store
    chats: ChatService
    messages: MessageService
    settings: Settings
    receipts: ReceiptService
    devices: Devices


class Gateway:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.tokens = TokenAuthority(config.secret_bytes())
        store = store or SQLiteStore(f"{config.server.data_dir}/switchboard.db")
        chats = ChatService(store, max_group_members=config.limits.max_group_members)
        messages = MessageService(
            store, chats, ServerIds(config.server.node_id),
            max_body_bytes=config.limits.max_body_bytes, max_media_ids=config.limits.max_media_ids,
            writer_options={"max_rows": config.writer.max_rows, "max_bytes": config.writer.max_bytes,
                            "max_pending": config.writer.max_pending})
        settings = Settings(store)
        receipts = ReceiptService(store, chats, settings, messages.writer,
                                  flush_interval=config.timers.receipt_flush)
        messages.on_sent = receipts.sent
        devices = Devices(store, max_devices=config.limits.max_devices)
        self.services = Services(store, chats, messages, settings, receipts, devices)
        self.hub = Hub(config.limits.max_frame_bytes)
        receipts.set_push(self._push_receipt)
        self.presence = PresenceFanout(store, chats, settings,
                                       interval=config.timers.presence_interval,
                                       max_subscriptions=config.limits.max_presence_subscriptions)
        self.clustered = config.cluster.enabled
        self.router: Router = (_mesh_router(config, messages, GatewayNode(self)) if self.clustered
                               else LocalRouter(messages, GatewayNode(self)))
        receipts.route = self.router.note_receipt
        self.presence.registry.on_local_change = self.router.presence_changed
        if self.clustered:
            self.presence.shared_last_seen = self.router.last_seen
        self.requests = Requests(self)
        self.timers = TimerService(config.timers.tick)
        self.stats = Stats()
        self.metrics = GatewayMetrics(self)
        messages.writer.on_flush = self.metrics.observe_flush
        self.tls = ServerTls(config.tls) if config.tls.cert else None
        self.status = StatusServer(self)
        self.control = ControlServer(self, config.admin_socket)
        self.window = config.limits.delivery_window
        self.pending_auth = 0
        self.draining = False
        self.store_open = False
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self._welcome = pb.Welcome(
            heartbeat_interval_ms=int(config.timers.heartbeat_interval * 1000),
            idle_timeout_ms=int(config.timers.idle_timeout * 1000),
            max_frame_bytes=config.limits.max_frame_bytes,
            max_body_bytes=config.limits.max_body_bytes,
            delivery_window=config.limits.delivery_window)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the store, then the ops port (so /healthz answers while the rest comes up), the
        control socket and last the client listener. What the operator can fix (a database
        that cannot be opened, a port in use) raises ConfigError naming the setting or path;
        `stop()` then releases what was opened."""
        loop = asyncio.get_running_loop()
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
        cluster = self.config.cluster
        with _names_the_port("cluster.mesh_port", cluster.mesh_host, cluster.mesh_port):
            await self.router.start()
        self.timers.start(loop)
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
            self._server = await ws_create_server(
                self._listener_for, server_cfg.host, server_cfg.port,
                websocket_handshake_timeout=self.config.auth.timeout,
                max_frame_size=self.config.limits.max_frame_bytes,
                read_buffer_init_size=1024,
                enable_auto_pong=True,
                use_aiofastnet=False,
                reuse_port=server_cfg.reuse_port or None,
                backlog=socket.SOMAXCONN,  # asyncio's 100 overflows under a reconnect storm
                logger_name="switchboard.ws",
                **tls)
        log.info("listening on %s://%s:%d/v1/ws", self.scheme, server_cfg.host, self.port)

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
        if self.clustered:
            checks["cluster_registered"] = self.router.registered
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
        await self.services.messages.close()
        await self.services.receipts.close()  # pushes what is pending while the store is open
        await self.router.stop()
        spread_ms = int(self.config.server.drain_spread * 1000)
        for conn in self.hub.all():
            conn.send_frame(pb.ServerFrame(goaway=pb.Goaway(
                reconnect_after_ms=random.randint(0, spread_ms),
                reason="server draining")).SerializeToString())
            conn.close(Close.GOING_AWAY, "server draining")
        await self._closed_handshakes()
        self.presence.close()
        await self.router.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.store_open = False
        await self.services.store.close()
        self.timers.stop()
        await self.control.stop()
        await self.status.stop()
        self.metrics.loop_lag.stop()
        if served:
            self.services.receipts.report_unpushed()
            log.info("drained: writer flushed, store closed")

    # ------------------------------------------------------------------ connections
    async def _closed_handshakes(self) -> None:
        """Wait until the devices answered our CLOSE (or their grace ran out on the timer wheel):
        exiting earlier would reset sockets whose Goaway and CLOSE are still unread."""
        deadline = asyncio.get_running_loop().time() + CLOSE_WAIT
        while self.stats.closing > 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(CLOSE_POLL)

    def _listener_for(self, request: WSUpgradeRequest):
        if self.draining:
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(503, b"draining, reconnect elsewhere"), None)
        header = request.headers.get("Authorization")
        if header is None:
            if self.pending_auth >= self.config.auth.max_pending:
                self.stats.refused_upgrades += 1
                return WSUpgradeResponseWithListener(
                    WSUpgradeResponse.create_error_response(503, b"busy, retry later"), None)
            return Connection(self, None)
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise TokenError("invalid token")
            principal = self.tokens.verify(token.strip())
        except TokenError as exc:
            self.stats.refused_upgrades += 1
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(401, str(exc).encode()), None)
        return Connection(self, principal)

    def welcome(self, user: str, device: str) -> bytes:
        welcome = pb.Welcome()
        welcome.CopyFrom(self._welcome)
        welcome.user_id = user
        welcome.device_id = device
        welcome.server_time_ms = now_ms()
        return pb.ServerFrame(welcome=welcome).SerializeToString()

    def _push_receipt(self, user: str, chat_id: str, members: dict[str, Receipt],
                      delivered_all: int, read_all: int) -> None:
        self.router.push((user,), pb.ServerFrame(receipt_update=pb.ReceiptUpdate(
            chat_id=chat_id, delivered_all_seq=delivered_all, read_all_seq=read_all,
            members=[pb.MemberReceipt(user_id=u, delivered_seq=r.delivered_seq, read_seq=r.read_seq)
                     for u, r in sorted(members.items())])).SerializeToString())

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


@contextlib.contextmanager
def _names_the_port(key: str, host: str, port: int):
    """A listener that cannot bind becomes a ConfigError naming the setting that owns it."""
    try:
        yield
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"{key}: cannot listen on {host}:{port}: {reason}") from None


def _mesh_router(config: Config, messages: MessageService, node: GatewayNode):
    """The cluster router for `[cluster]`: a Redis Cluster registry when cluster.redis is set,
    else the static member list."""
    from switchboard.router.cluster import MeshRouter
    cluster = config.cluster
    registry = None
    if cluster.redis:
        from switchboard.router.registry_redis import RedisClusterRegistry
        registry = RedisClusterRegistry(
            [f"{host}:{port}" for host, port in parse_addresses(cluster.redis, "cluster.redis")],
            prefix=cluster.redis_prefix)
    return MeshRouter(messages, node, node_id=cluster.node_name, mesh_host=cluster.mesh_host,
                      mesh_port=cluster.mesh_port, registry=registry,
                      static_peers=parse_peers(cluster.peers), lease_ttl=cluster.lease_ttl,
                      heartbeat_interval=cluster.heartbeat_interval,
                      link_timeout=cluster.link_timeout, forward_timeout=cluster.forward_timeout)
