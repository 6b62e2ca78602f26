"""The composition root: the one place that builds a gateway process's object graph from its
configuration and hands every part what it needs through its constructor (`serve`, the workers,
the bench and the tests all start a gateway through `build_gateway`).

The graph has one cycle, by nature: the router calls into this node (`GatewayNode`), whose
services call the router back (receipt notes and pushes, presence changes, the fan-out of
commits). It is closed here, by the few functions below that reach the router when they are
called, never by setting attributes on objects after they were built.
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Collection, Mapping

from switchboard.config import (MIN_SECRET_BYTES, Config, ConfigError, parse_addresses,
                                parse_peers, read_secret_file)
from switchboard.core.auth import SigningKeys, TokenAuthority
from switchboard.core.blocks import Blocks
from switchboard.core.chats import ChatService
from switchboard.core.devices import Devices
from switchboard.core.ids import ServerIds
from switchboard.core.media import MediaLimits, MediaService
from switchboard.core.messaging import MessageService
from switchboard.core.model import Membership, Receipt, StoredMessage
from switchboard.core.objects import ObjectStore
from switchboard.core.ratelimit import UserLimits
from switchboard.core.receipts import ReceiptService
from switchboard.core.remote_users import RemoteUsers
from switchboard.core.settings import Settings
from switchboard.core.store import Store
from switchboard.core.stores import make_store
from switchboard.core.tasks import FAILURES as TASK_FAILURES, TaskGroup
from switchboard.core.timers import TimerService
from switchboard.gateway import frames
from switchboard.gateway.hub import Hub
from switchboard.gateway.jwks import JwksRefresher
from switchboard.gateway.metrics import GatewayMetrics
from switchboard.gateway.node import GatewayNode
from switchboard.gateway.presence import PresenceFanout
from switchboard.gateway.server import Gateway, Services
from switchboard.push.providers import make_providers
from switchboard.push.service import PushService
from switchboard.router.base import Router
from switchboard.router.local import LocalRouter


def build_gateway(config: Config, store: Store | None = None) -> Gateway:
    """A gateway for `config`, not yet started (Gateway.start opens the store)."""
    store = store or make_store(config)
    limits = config.limits
    router: Router  # assigned below; the functions here reach it only when called

    def push_receipt(user: str, chat_id: str, members: dict[str, Receipt], delivered_all: int,
                     read_all: int) -> None:
        router.push((user,), frames.receipt_update(chat_id, members, delivered_all, read_all))

    def note_receipt(chat_id: str, user: str, delivered: int, read: int,
                     public_read: int) -> None:
        router.note_receipt(chat_id, user, delivered, read, public_read)

    def note_delivered(chat_id: str, delivered: dict[str, int]) -> None:
        router.note_delivered(chat_id, delivered)

    def presence_changed(user: str, online: bool, last_seen_ms: int) -> None:
        router.presence_changed(user, online, last_seen_ms)

    async def shared_last_seen(user: str) -> int | None:
        return await router.last_seen(user)

    def fanout(chat_id: str, members: Mapping[str, Membership],
               messages: list[StoredMessage]) -> None:
        router_fanout(chat_id, members, messages)

    def committed(chat_id: str, messages: list[StoredMessage], e2e: Collection[int]) -> None:
        push.committed(chat_id, messages, e2e)

    async def online(users: Collection[str]) -> dict[str, set[str]] | None:
        if config.cluster.enabled and not config.cluster.redis:
            return None  # static peers record no sessions: where a device is, nobody knows
        users = list(users)
        found = await asyncio.gather(*(router.online_devices(user) for user in users))
        return dict(zip(users, found))

    def owns(chat_id: str) -> bool:
        return router_owns(chat_id)

    tasks = TaskGroup()
    metrics = GatewayMetrics()
    blocks = Blocks(store)
    settings = Settings(store)
    chats = ChatService(store, blocks=blocks, max_group_members=limits.max_group_members)
    devices = Devices(store, max_devices=limits.max_devices)
    receipts: ReceiptService
    media = MediaService(store, chats, _objects(config), _media_limits(config),
                         sweep_interval=config.media.sweep_interval)
    metrics.sources.append(media.metrics)

    def sent(chat_id: str, sender: str, seq: int) -> None:
        receipts.sent(chat_id, sender, seq)

    messages = MessageService(
        store, chats, ServerIds(config.server.node_id), settings=settings, blocks=blocks,
        fanout=fanout, sent=sent, committed=committed,
        max_body_bytes=limits.max_body_bytes, max_media_ids=limits.max_media_ids,
        writer_options={"max_rows": config.writer.max_rows, "max_bytes": config.writer.max_bytes,
                        "max_pending": config.writer.max_pending,
                        "commit_floor": config.writer.commit_floor,
                        "ack_delay": config.writer.ack_delay},
        on_flush=metrics.observe_flush, claim_media=media.claim)
    receipts = ReceiptService(store, chats, settings, blocks, messages.writer, push=push_receipt,
                              route=note_receipt, route_delivered=note_delivered,
                              flush_interval=config.timers.receipt_flush)
    hub = Hub(limits.max_frame_bytes)
    remote = RemoteUsers()  # other nodes' users: one entry each for routing and presence
    presence = PresenceFanout(store, chats, settings, blocks,
                              interval=config.timers.presence_interval,
                              max_subscriptions=limits.max_presence_subscriptions,
                              on_local_change=presence_changed, shared_last_seen=shared_last_seen,
                              remote=remote)
    push_config = config.push
    push = PushService(store, chats, make_providers(push_config), online=online, owns=owns,
                       grace=push_config.grace, interval=push_config.interval,
                       max_backoff=push_config.max_backoff,
                       preview_chars=push_config.preview_chars,
                       max_pending=push_config.max_pending)
    metrics.sources.append(push.metrics)
    metrics.sources.append(TASK_FAILURES.metrics)
    node = GatewayNode(hub, presence, chats, settings, devices, receipts, blocks, push, tasks)
    if config.cluster.enabled:
        mesh_router = _mesh_router(config, messages, node, remote)
        router, router_fanout = mesh_router, mesh_router.committed

        def router_owns(chat_id: str) -> bool:
            return mesh_router.owner(chat_id) == mesh_router.node_id
    else:
        router = LocalRouter(messages, node)
        router_fanout = node.deliver

        def router_owns(chat_id: str) -> bool:
            return True
    tokens, jwks = _tokens(config)
    return Gateway(config, tokens=tokens, jwks=jwks,
                   services=Services(store, chats, messages, settings, receipts, devices, blocks,
                                     push, media),
                   router=router, hub=hub, presence=presence,
                   timers=TimerService(config.timers.tick), limits=_user_limits(config),
                   metrics=metrics, tasks=tasks)


def _mesh_router(config: Config, messages: MessageService, node: GatewayNode,
                 remote: RemoteUsers):
    """The cluster router for `[cluster]`: a Redis Cluster registry when cluster.redis is set,
    else the static member list; the mesh's secret and TLS, Redis's credentials and TLS. Files
    are read here, before anything listens: a missing one is a ConfigError naming its key."""
    from switchboard.router.cluster import MeshRouter
    cluster = config.cluster
    if cluster.redis:
        from switchboard.router.registry_redis import RedisClusterRegistry
        registry = RedisClusterRegistry(
            [f"{host}:{port}" for host, port in parse_addresses(cluster.redis, "cluster.redis")],
            prefix=cluster.redis_prefix, auth=_redis_auth(config), tls=_redis_tls(config))
    else:
        from switchboard.router.registry_static import StaticRegistry
        registry = StaticRegistry(parse_peers(cluster.peers))
    return MeshRouter(messages, node, node_id=cluster.node_name, mesh_host=cluster.mesh_host,
                      mesh_port=cluster.mesh_port, registry=registry, lease_ttl=cluster.lease_ttl,
                      heartbeat_interval=cluster.heartbeat_interval,
                      link_timeout=cluster.link_timeout, forward_timeout=cluster.forward_timeout,
                      phi_threshold=cluster.phi_threshold,
                      acceptable_pause=cluster.acceptable_pause, link_grace=cluster.link_grace,
                      rebalance_interval=cluster.rebalance_interval,
                      rebalance_rate=cluster.rebalance_rate,
                      rebalance_tolerance=cluster.rebalance_tolerance,
                      mesh_secret=_mesh_secret(config), mesh_tls=_mesh_tls(config),
                      remote=remote)


def _mesh_secret(config: Config) -> bytes:
    cluster = config.cluster
    if cluster.mesh_secret_file:
        return read_secret_file(cluster.mesh_secret_file, "cluster.mesh_secret_file",
                                MIN_SECRET_BYTES)
    return cluster.mesh_secret.encode()


def _mesh_tls(config: Config):
    cluster = config.cluster
    if not cluster.mesh_tls_cert:
        return None
    from switchboard.router.mesh_auth import MeshTls
    try:
        return MeshTls.from_files(cluster.mesh_tls_cert, cluster.mesh_tls_key,
                                  cluster.mesh_tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cluster.mesh_tls_cert/_key/_ca: cannot use {cluster.mesh_tls_cert}, "
                          f"{cluster.mesh_tls_key} with CA {cluster.mesh_tls_ca}: {exc}") from None


def _redis_auth(config: Config) -> tuple[str, ...]:
    cluster = config.cluster
    password = (read_secret_file(cluster.redis_password_file, "cluster.redis_password_file")
                .decode() if cluster.redis_password_file else cluster.redis_password)
    if not password:
        return ()
    return (cluster.redis_username, password) if cluster.redis_username else (password,)


def _redis_tls(config: Config) -> ssl.SSLContext | None:
    cluster = config.cluster
    if not cluster.redis_tls:
        return None
    try:
        context = ssl.create_default_context(cafile=cluster.redis_tls_ca or None)
        if cluster.redis_tls_cert:
            context.load_cert_chain(cluster.redis_tls_cert, cluster.redis_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cluster.redis_tls_ca/_cert/_key: cannot use them: {exc}") from None
    return context


def _objects(config: Config) -> ObjectStore:
    """Where media bytes go: `[media] backend`."""
    media = config.media
    if media.backend == "s3":
        from switchboard.media.s3 import S3Objects, S3Settings
        return S3Objects(S3Settings.from_config(media))
    from switchboard.media.local import LocalObjects
    return LocalObjects(config.media_dir, host=media.host, port=media.port,
                        public_url=media.public_url, reuse_port=config.server.reuse_port)


def _media_limits(config: Config) -> MediaLimits:
    media = config.media
    return MediaLimits(
        max_bytes=media.max_bytes, max_thumbnail_bytes=media.max_thumbnail_bytes,
        types=tuple(t.strip() for t in media.types.split(",") if t.strip()),
        single_put_bytes=media.single_put_bytes, part_bytes=media.part_bytes,
        url_ttl=media.url_ttl, orphan_ttl=media.orphan_ttl)


def _tokens(config: Config) -> tuple[TokenAuthority, JwksRefresher | None]:
    """HS256 with the server's secret (development; in production only when one is set) and,
    with auth.jwks_url or auth.jwks_file, the auth service's keys."""
    auth = config.auth
    jwks = auth.jwks_url or auth.jwks_file
    own_secret = auth.secret or auth.secret_file or not (jwks and config.server.production)
    keys = SigningKeys() if jwks else None
    tokens = TokenAuthority(
        config.secret_bytes() if own_secret else None, keys=keys,
        algorithms=tuple(a.strip() for a in auth.algorithms.split(",")),
        audience=auth.audience, issuer=auth.issuer)
    refresher = None if keys is None else JwksRefresher(
        keys, url=auth.jwks_url, path=auth.jwks_file, interval=auth.jwks_refresh,
        min_interval=auth.jwks_min_refetch)
    return tokens, refresher


def _user_limits(config: Config) -> UserLimits:
    limits = config.limits
    return UserLimits({
        "send": (limits.sends_per_second, limits.send_burst),
        "chat": (limits.chats_per_minute / 60, limits.chat_burst),
        "member_add": (limits.member_adds_per_minute / 60, limits.member_add_burst),
        "history": (limits.history_per_second, limits.history_burst),
        "connect": (limits.connects_per_minute / 60, limits.connect_burst),
        "upload": (config.media.uploads_per_minute / 60, config.media.upload_burst),
    })
