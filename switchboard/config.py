"""Configuration: defaults embedded here, a TOML file, SWITCHBOARD_* environment variables and
command-line flags, applied in that order. Validated once at start with errors that name the key
(and where it came from), so an operator reading `systemctl status` knows what to fix.

`load` checks values only; files are read where they are used (the signing key by
`secret_bytes()`, the TLS pair by gateway/tls.py), both before `serve` starts listening. So the
admin CLI can load the same file without access to the server's secrets.

The file mirrors the sections below; deploy/switchboard.toml lists every key with its default:

    [server]
    port = 8765
    data_dir = "/var/lib/switchboard"
    [auth]
    secret_file = "/run/credentials/switchboard@0.service/auth-secret"
    [tls]
    cert = "/etc/switchboard/tls/fullchain.pem"
    key = "/etc/switchboard/tls/privkey.pem"

An environment variable SWITCHBOARD_<SECTION>_<KEY> (e.g. SWITCHBOARD_SERVER_PORT,
SWITCHBOARD_TLS_MIN_VERSION) overrides a key. Every SWITCHBOARD_* variable is taken as one,
except the names in NOT_CONFIG (test and tool switches); one naming an unknown section or key
is an error, like an unknown key in the file, so a typo never goes unnoticed.

Types are strict: in the file a number is a TOML number and a boolean a TOML boolean (`port =
"8765"` is refused: quoting hides typos such as "87 65"); an integer key takes no fraction, a
float key takes an integer. Environment values are strings and are parsed strictly: integers
as digits, floats as plain decimals, booleans as true/false, yes/no, on/off or 1/0.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard.keepalive import MAX_COUNT, MAX_SECONDS, TcpKeepalive

#: SWITCHBOARD_* environment variables that are not configuration keys: switches of the tests
#: and tools. Any other SWITCHBOARD_* name must name a key (tests/ops/test_config.py checks
#: that every name the repository uses is one or the other).
NOT_CONFIG = frozenset({
    "SWITCHBOARD_FUZZ_SEED",            # tests/fuzz: replay a seed
    "SWITCHBOARD_FUZZ_SECONDS",         # tests/fuzz: how long each atheris target runs
    "SWITCHBOARD_CASSANDRA_CACHE",      # tools/devcassandra: where Cassandra's jars are kept
    "SWITCHBOARD_SCYLLA_HOSTS",         # store contract tests: a ScyllaDB/Cassandra to use
    "SWITCHBOARD_REQUIRE_SERVICES",     # tests: fail instead of skip when a service is missing
})
ENV_PREFIX = "SWITCHBOARD_"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "text")
TLS_VERSIONS = ("1.2", "1.3")
STORE_KINDS = ("sqlite", "memory", "scylla")
MEDIA_BACKENDS = ("local", "s3")
S3_ADDRESSING = ("auto", "path", "virtual")
REPLICATION_STRATEGIES = ("NetworkTopologyStrategy", "SimpleStrategy")
CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM",
                      "LOCAL_ONE")
SERIAL_CONSISTENCY_LEVELS = ("SERIAL", "LOCAL_SERIAL")
MIN_SECRET_BYTES = 32
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256", "EdDSA")


class ConfigError(Exception):
    """A configuration problem; str() names the key."""


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: str = "./switchboard-data"
    node_id: int = 0          # unique per worker sharing a data dir (server ids, admin socket)
    production: bool = False
    reuse_port: bool = False  # several workers on one port (SO_REUSEPORT)
    drain_spread: float = 5.0  # seconds over which drained devices are told to reconnect
    stop_timeout: float = 30.0  # a drain taking longer exits 1 (keep under TimeoutStopSec)


@dataclass(slots=True)
class AuthConfig:
    secret: str = ""        # HS256 key; dev mode keeps a generated one in data_dir/secret.key
    secret_file: str = ""   # or a file holding it (systemd LoadCredential=); wins over secret
    timeout: float = 10.0   # seconds an unauthenticated connection may stay
    max_pending: int = 2000  # unauthenticated connections at once (full: evict the oldest, or 503)
    max_pending_per_address: int = 100  # of them from one source address (then HTTP 429)
    evict_after: float = 1.0  # a full table closes (4002) its oldest one silent this long
    # Tokens signed by your auth service (RS256/ES256/EdDSA): its public keys as a JWKS
    jwks_url: str = ""        # fetched at start, every jwks_refresh s and on an unknown kid
    jwks_file: str = ""       # or a file (re-read the same way)
    jwks_refresh: float = 300.0
    jwks_min_refetch: float = 30.0  # at most one fetch per this many s (unknown kids)
    algorithms: str = "RS256,ES256,EdDSA"  # accepted with JWKS keys (HS256: auth.secret)
    audience: str = ""        # required `aud` when set
    issuer: str = ""          # required `iss` when set


@dataclass(slots=True)
class TlsConfig:
    cert: str = ""          # PEM chain; TLS is on when cert and key are set (reloaded on SIGHUP)
    key: str = ""           # PEM private key
    min_version: str = "1.3"
    handshake_timeout: float = 10.0


@dataclass(slots=True)
class LimitsConfig:
    max_frame_bytes: int = 128 * 1024
    max_body_bytes: int = 64 * 1024
    max_media_ids: int = 16
    max_group_members: int = 1000
    max_devices: int = 10
    max_presence_subscriptions: int = 1000
    delivery_window: int = 256
    outbound_buffer_bytes: int = 4 * 1024 * 1024
    # per user, across all of the user's devices (and gateways: shared every usage_sync_interval)
    sends_per_second: float = 50.0
    send_burst: float = 100.0
    chats_per_minute: float = 60.0        # CreateChat
    chat_burst: float = 60.0
    member_adds_per_minute: float = 1000.0  # users added by AddMembers (one token each)
    member_add_burst: float = 1000.0
    history_per_second: float = 20.0      # History requests
    history_burst: float = 100.0
    connects_per_minute: float = 60.0     # authenticated connections (HTTP 429 / close 1013)
    connect_burst: float = 30.0
    usage_sync_interval: float = 0.5      # s between a node's reports of what users spent
    frames_per_second: float = 400.0
    frame_burst: float = 800.0


@dataclass(slots=True)
class TimersConfig:
    tick: float = 0.25
    # Kernel TCP keepalive on every client connection (switchboard/keepalive.py): a probe after
    # tcp_keepalive_idle s of silence refreshes the NAT mappings on the way (180 s: under the
    # ~4-5 min some carrier NATs and cloud balancers keep an idle TCP flow) and a peer that
    # leaves tcp_keepalive_count probes tcp_keepalive_interval s apart unanswered is dropped:
    # 180 + 3 x 20 = 240 s at most after its last packet. Whole seconds; idle 0 turns it off
    tcp_keepalive_idle: int = 180
    tcp_keepalive_interval: int = 20
    tcp_keepalive_count: int = 3
    # The WebSocket ping is for what a probe cannot see, a live kernel with a wedged app: every
    # third probe's time (540 s), so it shares the device's radio wake-up with that probe; an
    # app silent for idle_timeout is closed (4009). Behind a proxy that ends TCP (nginx, AWS
    # ALB: 60 s idle) set both under its timeout (deploy/README.md "Keepalive and heartbeats")
    heartbeat_interval: float = 540.0
    idle_timeout: float = 600.0
    retransmit_after: float = 10.0
    presence_interval: float = 1.0   # presence updates per subject per subscriber: at most one per
    receipt_flush: float = 0.05      # receipt changes are pushed coalesced after this delay


@dataclass(slots=True)
class WriterConfig:
    max_rows: int = 1024
    commit_floor: float = 0.002  # s between the starts of two commits unless a batch is full
    max_bytes: int = 4 * 1024 * 1024
    max_pending: int = 20000
    ack_delay: float = 0.05  # s a device's ack may wait to share a commit (messages never wait)


@dataclass(slots=True)
class StoreConfig:
    """Where messages, chats and devices are kept (switchboard/core/stores.py opens it).
    The keys after `path` are the ScyllaDB store's (docs/storage.md)."""
    kind: str = "sqlite"    # sqlite: one embedded file; memory: nothing kept after exit;
                            # scylla: a ScyllaDB (or Cassandra) cluster shared by every gateway
    path: str = ""          # sqlite: the database file; "" means <server.data_dir>/switchboard.db
    hosts: str = "127.0.0.1"  # scylla: contact points "host,host,..." (the driver finds the rest)
    port: int = 9042
    keyspace: str = "switchboard"
    replication_strategy: str = "NetworkTopologyStrategy"  # or SimpleStrategy (one datacenter)
    replication_factor: int = 3  # copies in every datacenter, unless replication_dcs says
    replication_dcs: str = ""    # per datacenter, "dc1:3,dc2:3" (NetworkTopologyStrategy)
    consistency: str = "LOCAL_QUORUM"         # reads and writes
    serial_consistency: str = "LOCAL_SERIAL"  # the Paxos phase of conditional writes
    local_dc: str = ""       # the datacenter to talk to; "" takes the first contact point's
    username: str = ""       # PasswordAuthenticator; "" connects without credentials
    password: str = ""
    tls_ca: str = ""         # PEM CA bundle: TLS to the cluster, server certificates verified
    tls_cert: str = ""       # PEM client certificate and key, for client authentication
    tls_key: str = ""
    request_timeout: float = 10.0  # s: a request without an answer fails (outcome unknown)
    max_in_flight: int = 1024      # requests on the wire at once; more wait their turn
    create_schema: bool = True     # create the keyspace and tables at start when missing;
                                   # false: `switchboard admin store migrate` does it


@dataclass(slots=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"  # /metrics, /healthz, /readyz; never the client listener's port
    port: int = 9765         # not 9100 (node_exporter); 0: any free port; one per worker


@dataclass(slots=True)
class ClusterConfig:
    """Cluster mode (docs/cluster.md): off by default, one process owns every chat."""
    enabled: bool = False
    node_name: str = ""         # this node's mesh id; "" means "n<server.node_id>"
    mesh_host: str = "127.0.0.1"  # where the mesh listener binds and what peers are told
    mesh_port: int = 0          # 0: any free port (with a registry; static peers need fixed ports)
    peers: str = ""             # static members "name=host:port,..." (this node included or not)
    redis: str = ""             # Redis Cluster seed nodes "host:port,...": leases and sessions
    redis_prefix: str = "sb"    # key prefix: clusters sharing one Redis Cluster use different ones
    lease_ttl: float = 6.0      # a dead node's devices stay routed to it this long at most
    heartbeat_interval: float = 1.0  # s between mesh heartbeats on every link
    # When a silent peer's link is closed (docs/cluster.md, "Telling slow from dead"): once its
    # phi-accrual failure detector reaches phi_threshold, never within acceptable_pause beyond
    # its usual heartbeat interval, always after link_timeout (the hard ceiling)
    phi_threshold: float = 8.0   # -log10 of the chance the peer is only late: 8 = 1 in 10^8
    acceptable_pause: float = 2.0  # s: a stall this long (GC, a busy loop) costs no link
    link_timeout: float = 10.0  # s: a link silent this long is closed whatever the detector says
    link_grace: float = 1.0     # s a node whose link closed keeps its chats, waiting for it
    forward_timeout: float = 10.0  # a send forwarded to its owner fails UNAVAILABLE after this
    rebalance_interval: float = 10.0  # s between load reports and moving rounds; 0: never move
    rebalance_rate: float = 100.0     # devices per second a node asks to move, at most
    rebalance_tolerance: float = 0.1  # loads within this fraction of the mean are left alone
    # Who may join the mesh (docs/cluster.md, "Securing the links"): a shared secret proved by
    # challenge-response, and/or mutual TLS with certificates of one CA
    mesh_secret: str = ""       # at least 32 bytes, the same on every node
    mesh_secret_file: str = ""  # or a file holding it; wins over mesh_secret
    mesh_tls_cert: str = ""     # this node's certificate (PEM); with key and ca: TLS on links
    mesh_tls_key: str = ""
    mesh_tls_ca: str = ""       # the CA that signed every node's certificate
    # The Redis Cluster's credentials (an ACL user, or requirepass alone) and TLS
    redis_username: str = ""
    redis_password: str = ""
    redis_password_file: str = ""  # or a file holding it; wins over redis_password
    redis_tls: bool = False     # TLS to every Redis node (their tls-port)
    redis_tls_ca: str = ""      # the CA of the Redis nodes' certificates ("": the system's)
    redis_tls_cert: str = ""    # a client certificate, when Redis requires one
    redis_tls_key: str = ""


@dataclass(slots=True)
class PushConfig:
    """Push notifications (docs/push.md): off by default. A provider is on when its keys are
    set; `--production` refuses a provider half set up."""
    enabled: bool = False
    grace: float = 2.0          # s an online device has to ack a message before it is pushed
    interval: float = 10.0      # s: at most one push per device and chat per interval
    max_backoff: float = 300.0  # s between tries of a push whose provider is down
    preview_chars: int = 120    # the longest preview (where the user allows previews)
    max_pending: int = 200_000  # pushes owed, per node; beyond, new ones are dropped (counted)
    max_concurrent: int = 256   # requests in flight per provider
    timeout: float = 10.0       # s for one request to a provider
    attempts: int = 3           # tries inside one send (429, 5xx) before it is put off
    ca_file: str = ""           # PEM CA bundle to verify the providers ("": the system's)
    apns_key_file: str = ""     # the .p8 signing key (token-based authentication)
    apns_key_id: str = ""       # its 10-character key id
    apns_team_id: str = ""      # the Apple developer team id
    apns_topic: str = ""        # the app's bundle id, for tokens registered without one
    apns_url: str = "https://api.push.apple.com"
    apns_sandbox_url: str = "https://api.sandbox.push.apple.com"
    fcm_credentials_file: str = ""  # the service account's JSON key
    fcm_project_id: str = ""    # "" = the service account's project
    fcm_url: str = "https://fcm.googleapis.com"
    fcm_token_url: str = ""     # "" = the service account's token_uri

    def apns_settings(self) -> tuple[str, ...]:
        return (self.apns_key_file, self.apns_key_id, self.apns_team_id)


@dataclass(slots=True)
class MediaConfig:
    """Photos, video and voice notes (docs/protocol.md 8.20): devices move the bytes over HTTP
    with URLs the server signs; the server keeps only the metadata, in the store."""
    backend: str = "local"   # local: a directory served by this process's media port;
                             # s3: S3-compatible object storage (production, many hosts)
    dir: str = ""            # local: where the bytes are kept; "" means <server.data_dir>/media
    host: str = "127.0.0.1"  # local: the media port's address (devices must reach it)
    port: int = 0            # local: 0 = any free port (URLs name it; each worker its own)
    public_url: str = ""     # the base of signed URLs, e.g. https://media.example.com (a proxy
                             # in front of the media port); "" = http://host:port of the listener
    max_bytes: int = 256 * 1024 * 1024
    max_thumbnail_bytes: int = 256 * 1024
    types: str = ("image/*,video/mp4,video/quicktime,video/webm,video/3gpp,audio/*,"
                  "application/pdf")  # accepted content types; "type/*" takes a whole family
    single_put_bytes: int = 16 * 1024 * 1024  # up to this one PUT; beyond, parts of part_bytes
    part_bytes: int = 8 * 1024 * 1024         # S3 wants at least 5 MiB per part but the last
    url_ttl: int = 900       # s: signed URLs work this long
    orphan_ttl: float = 86400.0  # s: media never referenced by a message this long after the
                                 # upload began are deleted (bytes and record)
    sweep_interval: float = 600.0  # s between orphan sweeps; 0: no sweeps on this process
    uploads_per_minute: float = 120.0  # CreateUpload per user (all devices)
    upload_burst: float = 60.0
    # s3 backend
    s3_bucket: str = ""
    s3_prefix: str = "media/"  # object keys are <prefix><media id>
    s3_region: str = "us-east-1"
    s3_endpoint: str = ""      # "" = AWS; else an S3-compatible service (MinIO, Ceph, R2, ...)
    s3_addressing: str = "auto"  # auto, path (endpoint/bucket/key) or virtual (bucket.endpoint)
    s3_access_key: str = ""    # "" = the default credential chain (environment, instance role)
    s3_secret_key: str = ""
    s3_secret_key_file: str = ""  # or a file holding the secret key (systemd LoadCredential=)
    s3_session_token: str = ""
    s3_create_bucket: bool = False  # create the bucket at start when missing (development)


@dataclass(slots=True)
class LogConfig:
    level: str = "INFO"
    format: str = "json"     # json: one object per line (journald, log shippers); text: humans


@dataclass(slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timers: TimersConfig = field(default_factory=TimersConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    push: PushConfig = field(default_factory=PushConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def secret_bytes(self, create: bool = True) -> bytes:
        """The signing key; in dev mode one is generated once and kept in the data dir so that
        `switchboard token` and `switchboard serve` agree without any set-up. Only the server
        creates it (`create`): a token signed with a key the server does not have is refused
        by it, so `token` run in the wrong folder must fail rather than mint one."""
        if self.auth.secret_file:
            return read_secret_file(self.auth.secret_file, "auth.secret_file", MIN_SECRET_BYTES)
        if self.auth.secret:
            return self.auth.secret.encode()
        if self.server.production:
            raise ConfigError("auth.secret: required in production mode "
                              "(or auth.secret_file, or auth.jwks_url / auth.jwks_file)")
        path = Path(self.server.data_dir) / "secret.key"
        if not path.exists() and not create:
            raise ConfigError(
                f"auth.secret: no signing key: auth.secret and auth.secret_file are unset and "
                f"there is no development key at {path.resolve()}; point --data-dir at the "
                f"server's data dir (or --config at its config file), or set "
                f"SWITCHBOARD_AUTH_SECRET_FILE to the file holding the server's key")
        try:
            if not path.exists():
                check_data_dir(self.server.data_dir)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(secrets.token_urlsafe(48))
            return path.read_text().strip().encode()
        except OSError as exc:
            raise ConfigError(f"server.data_dir: cannot keep the development key {path}: "
                              f"{exc.strerror or exc}") from None

    @property
    def tcp_keepalive(self) -> TcpKeepalive | None:
        """The kernel keepalive of client connections; None when timers.tcp_keepalive_idle is 0."""
        timers = self.timers
        if not timers.tcp_keepalive_idle:
            return None
        return TcpKeepalive(timers.tcp_keepalive_idle, timers.tcp_keepalive_interval,
                            timers.tcp_keepalive_count)

    @property
    def database(self) -> Path:
        """The SQLite store's file (store.path, by default in the data dir)."""
        if self.store.path:
            return Path(self.store.path)
        return Path(self.server.data_dir) / "switchboard.db"

    @property
    def media_dir(self) -> Path:
        """The local media backend's directory (media.dir, by default in the data dir)."""
        return Path(self.media.dir) if self.media.dir else Path(self.server.data_dir) / "media"

    @property
    def admin_socket(self) -> Path:
        """The worker's local control socket (admin CLI: sessions, revocations, chat changes);
        one per node_id, so several workers can share a data dir."""
        return Path(self.server.data_dir) / f"admin-{self.server.node_id}.sock"


def load(path: str | None = None, overrides: dict[str, Any] | None = None,
         environ: dict[str, str] | None = None) -> Config:
    """Build a Config from defaults, the TOML file at `path`, the environment and `overrides`
    ({"section.key": value}); raises ConfigError naming the offending key."""
    config = Config()
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, ValueError, RecursionError) as exc:  # bad TOML, UTF-8, huge, deep
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: expected a [{section}] table in {path}")
            for key, value in values.items():
                _set(config, f"{section}.{key}", value, f"in {path}")
    environ = os.environ if environ is None else environ
    for name, value in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and name not in NOT_CONFIG:
            section, _, key = name[len(ENV_PREFIX):].lower().partition("_")
            source = f"from ${name}"
            if not dataclasses.is_dataclass(getattr(config, section, None)):
                raise ConfigError(f"unknown config section {section!r} ({source}; a "
                                  f"SWITCHBOARD_* variable must be SWITCHBOARD_<SECTION>_<KEY>)")
            _set(config, f"{section}.{key}", value, source, from_text=True)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(config, dotted, value, "from the command line")
    _validate(config)
    return config


def _set(config: Config, dotted: str, value: Any, source: str, from_text: bool = False) -> None:
    section_name, _, key = dotted.partition(".")
    section = getattr(config, section_name, None)
    if section is None or not dataclasses.is_dataclass(section):
        raise ConfigError(f"unknown config section {section_name!r} ({source})")
    fields = {f.name for f in dataclasses.fields(section)}
    if key not in fields:
        raise ConfigError(f"unknown config key {dotted!r} ({source})")
    kind = type(getattr(section, key))
    try:
        setattr(section, key, _parse(value, kind) if from_text else _typed(value, kind))
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{dotted}: expected {_KIND_NAMES[kind]}, got {repr(value)[:80]} "
                          f"({source})") from None


_KIND_NAMES = {bool: "a boolean (true or false)", int: "an integer", float: "a number",
               str: "a string"}


def _typed(value: Any, kind: type) -> Any:
    """A value from the file or the command line: already typed, and it must be this type
    (bool is no number; an int is a float, a float no int)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise ValueError(value)
    return value


def _parse(text: str, kind: type) -> Any:
    """A value from the environment: the whole string must spell one value of this type."""
    if kind is str:
        return text
    if kind is bool:
        return _BOOLEANS[text.lower()] if text.lower() in _BOOLEANS else _typed(text, bool)
    pattern = _INTEGER if kind is int else _DECIMAL
    if not pattern.fullmatch(text):
        raise ValueError(text)
    return kind(text)


def _validate(config: Config) -> None:
    in_range = {
        "server.port": 0 <= config.server.port < 65536,
        "server.node_id": 0 <= config.server.node_id < 1024,
        "server.drain_spread": config.server.drain_spread >= 0,
        "server.stop_timeout": config.server.stop_timeout > 0,
        "auth.timeout": config.auth.timeout > 0,
        "auth.max_pending": config.auth.max_pending > 0,
        "auth.max_pending_per_address": config.auth.max_pending_per_address > 0,
        "auth.evict_after": 0 <= config.auth.evict_after <= config.auth.timeout,
        "auth.jwks_refresh": config.auth.jwks_refresh > 0,
        "auth.jwks_min_refetch": config.auth.jwks_min_refetch >= 0,
        "tls.handshake_timeout": config.tls.handshake_timeout > 0,
        "limits.max_frame_bytes": config.limits.max_frame_bytes >= 1024,
        "limits.max_body_bytes": 0 < config.limits.max_body_bytes < config.limits.max_frame_bytes,
        "limits.max_group_members": config.limits.max_group_members >= 2,
        "limits.max_devices": config.limits.max_devices >= 1,
        "limits.max_presence_subscriptions": config.limits.max_presence_subscriptions >= 1,
        "timers.presence_interval": config.timers.presence_interval > 0,
        "timers.receipt_flush": config.timers.receipt_flush > 0,
        "limits.delivery_window": config.limits.delivery_window >= 1,
        "limits.outbound_buffer_bytes": config.limits.outbound_buffer_bytes >= 4 * config.limits.max_frame_bytes,
        "limits.sends_per_second": config.limits.sends_per_second > 0,
        "limits.send_burst": config.limits.send_burst >= 1,
        "limits.chats_per_minute": config.limits.chats_per_minute > 0,
        "limits.chat_burst": config.limits.chat_burst >= 1,
        "limits.member_adds_per_minute": config.limits.member_adds_per_minute > 0,
        "limits.member_add_burst": config.limits.member_add_burst >= 1,
        "limits.history_per_second": config.limits.history_per_second > 0,
        "limits.history_burst": config.limits.history_burst >= 1,
        "limits.connects_per_minute": config.limits.connects_per_minute > 0,
        "limits.connect_burst": config.limits.connect_burst >= 1,
        "limits.usage_sync_interval": config.limits.usage_sync_interval > 0,
        "limits.frames_per_second": config.limits.frames_per_second > 0,
        "timers.tick": 0 < config.timers.tick <= 1.0,
        "timers.heartbeat_interval": config.timers.heartbeat_interval > config.timers.tick,
        "timers.idle_timeout": config.timers.idle_timeout > config.timers.heartbeat_interval,
        "timers.retransmit_after": config.timers.retransmit_after > 0,
        "timers.tcp_keepalive_idle": 0 <= config.timers.tcp_keepalive_idle <= MAX_SECONDS,
        # the kernel probes every max(idle, interval): an interval over idle stretches both
        "timers.tcp_keepalive_interval": 1 <= config.timers.tcp_keepalive_interval <= (
            config.timers.tcp_keepalive_idle or MAX_SECONDS),
        "timers.tcp_keepalive_count": 1 <= config.timers.tcp_keepalive_count <= MAX_COUNT,
        "writer.max_rows": config.writer.max_rows >= 1,
        "writer.commit_floor": 0 <= config.writer.commit_floor <= 1.0,
        "writer.max_pending": config.writer.max_pending >= config.writer.max_rows,
        "writer.ack_delay": 0 <= config.writer.ack_delay <= 5,
        "metrics.port": 0 <= config.metrics.port < 65536,
        "cluster.mesh_port": 0 <= config.cluster.mesh_port < 65536,
        "cluster.lease_ttl": config.cluster.lease_ttl > 0,
        "cluster.heartbeat_interval": config.cluster.heartbeat_interval > 0,
        "cluster.link_timeout": config.cluster.link_timeout > config.cluster.heartbeat_interval,
        "cluster.phi_threshold": config.cluster.phi_threshold > 0,
        "cluster.acceptable_pause": config.cluster.acceptable_pause >= 0,
        "cluster.link_grace": config.cluster.link_grace >= 0,
        "cluster.forward_timeout": config.cluster.forward_timeout > 0,
        "cluster.rebalance_interval": config.cluster.rebalance_interval >= 0,
        "cluster.rebalance_rate": config.cluster.rebalance_rate > 0,
        "cluster.rebalance_tolerance": 0 < config.cluster.rebalance_tolerance < 1,
    }
    for key, ok in in_range.items():
        if not ok:
            section, _, name = key.partition(".")
            value = getattr(getattr(config, section), name)
            raise ConfigError(f"{key}: value {value!r} out of range")
    choices = {"tls.min_version": (config.tls.min_version, TLS_VERSIONS),
               "store.kind": (config.store.kind, STORE_KINDS),
               "store.replication_strategy": (config.store.replication_strategy,
                                              REPLICATION_STRATEGIES),
               "store.consistency": (config.store.consistency.upper(), CONSISTENCY_LEVELS),
               "store.serial_consistency": (config.store.serial_consistency.upper(),
                                            SERIAL_CONSISTENCY_LEVELS),
               "log.level": (config.log.level.upper(), LOG_LEVELS),
               "log.format": (config.log.format, LOG_FORMATS)}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    config.log.level = config.log.level.upper()
    if bool(config.tls.cert) != bool(config.tls.key):
        raise ConfigError("tls.cert and tls.key: set both (TLS on) or neither (plaintext)")
    if config.cluster.enabled:
        _validate_cluster(config)
    if config.store.kind == "scylla":
        _validate_scylla(config)
    if config.push.enabled:
        _validate_push(config)
    _validate_media(config)
    if config.auth.jwks_url and config.auth.jwks_file:
        raise ConfigError("auth.jwks_url and auth.jwks_file: set one of them")
    for algorithm in config.auth.algorithms.split(","):
        if algorithm.strip() not in ASYMMETRIC_ALGORITHMS:
            raise ConfigError(f"auth.algorithms: {algorithm.strip()!r} is not one of "
                              f"{', '.join(ASYMMETRIC_ALGORITHMS)}")
    if config.auth.secret and len(config.auth.secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"auth.secret: a signing key needs at least {MIN_SECRET_BYTES} bytes")


def check_data_dir(data_dir: str) -> Path:
    """Create `data_dir` when missing and make sure this process can keep files in it;
    ConfigError naming server.data_dir and the path otherwise (a file, no permission)."""
    path = Path(data_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"server.data_dir: {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"server.data_dir: cannot create {path}: "
                          f"{exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"server.data_dir: {path} is not writable by this user "
                          f"(uid {os.geteuid()})")
    return path


def parse_addresses(value: str, key: str) -> list[tuple[str, int]]:
    """"host:port,host:port" -> [(host, port)]; ConfigError naming `key` when malformed."""
    result = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{key}: {item!r} is not host:port")
        result.append((host, int(port)))
    return result


def parse_peers(value: str) -> dict[str, str]:
    """"name=host:port,..." -> {name: "host:port"}; ConfigError naming cluster.peers."""
    peers = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, address = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"cluster.peers: {item!r} is not name=host:port")
        parse_addresses(address, "cluster.peers")
        peers[name.strip()] = address.strip()
    return peers


def _validate_cluster(config: Config) -> None:
    cluster = config.cluster
    if not cluster.node_name:
        cluster.node_name = f"n{config.server.node_id}"
    if not cluster.node_name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"cluster.node_name: {cluster.node_name!r} must be letters, digits, -_.")
    peers = parse_peers(cluster.peers)
    parse_addresses(cluster.redis, "cluster.redis")
    if not peers and not cluster.redis:
        raise ConfigError("cluster.enabled: set cluster.redis (leases in Redis Cluster) or "
                          "cluster.peers (a static member list)")
    if not cluster.redis and cluster.mesh_port == 0:
        raise ConfigError("cluster.mesh_port: static peers need a fixed mesh port")
    mesh_tls = (cluster.mesh_tls_cert, cluster.mesh_tls_key, cluster.mesh_tls_ca)
    if any(mesh_tls) and not all(mesh_tls):
        raise ConfigError("cluster.mesh_tls_cert, cluster.mesh_tls_key and cluster.mesh_tls_ca: "
                          "set all three (TLS between nodes) or none")
    if cluster.mesh_secret and len(cluster.mesh_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"cluster.mesh_secret: at least {MIN_SECRET_BYTES} bytes")
    if bool(cluster.redis_tls_cert) != bool(cluster.redis_tls_key):
        raise ConfigError("cluster.redis_tls_cert and cluster.redis_tls_key: set both or neither")
    if (cluster.redis_tls_ca or cluster.redis_tls_cert) and not cluster.redis_tls:
        raise ConfigError("cluster.redis_tls: set it to use cluster.redis_tls_ca/_cert/_key")
    if cluster.redis_username and not (cluster.redis_password or cluster.redis_password_file):
        raise ConfigError("cluster.redis_username: needs cluster.redis_password (or _file)")
    open_mesh = not (cluster.mesh_secret or cluster.mesh_secret_file or all(mesh_tls))
    if config.server.production and open_mesh and not _loopback(cluster.mesh_host):
        raise ConfigError(f"cluster.mesh_secret: required in production when the mesh listens "
                          f"on {cluster.mesh_host}, beyond loopback (or cluster.mesh_tls_cert, "
                          f"_key and _ca): any host that reaches the port could join")


def _loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def parse_datacenters(value: str) -> dict[str, int]:
    """"dc1:3,dc2:3" -> {"dc1": 3, "dc2": 3}; ConfigError naming store.replication_dcs."""
    result = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, factor = item.rpartition(":")
        if not sep or not name.replace("-", "").replace("_", "").isalnum() \
                or not factor.isdigit() or int(factor) < 1:
            raise ConfigError(f"store.replication_dcs: {item!r} is not datacenter:factor")
        result[name] = int(factor)
    return result


def _validate_scylla(config: Config) -> None:
    store = config.store
    if not [host for host in store.hosts.split(",") if host.strip()]:
        raise ConfigError("store.hosts: at least one contact point")
    if not store.keyspace.replace("_", "").isalnum() or len(store.keyspace) > 48:
        raise ConfigError(f"store.keyspace: {store.keyspace!r} must be letters, digits and _ "
                          "(at most 48)")
    checks = {"store.port": 0 < store.port < 65536,
              "store.replication_factor": store.replication_factor >= 1,
              "store.request_timeout": store.request_timeout > 0,
              "store.max_in_flight": store.max_in_flight >= 1}
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"{key}: value {getattr(store, key.partition('.')[2])!r} out of range")
    parse_datacenters(store.replication_dcs)
    if bool(store.tls_cert) != bool(store.tls_key):
        raise ConfigError("store.tls_cert and store.tls_key: set both (client certificate) or "
                          "neither")
    if bool(store.username) != bool(store.password):
        raise ConfigError("store.username and store.password: set both or neither")
    store.consistency = store.consistency.upper()
    store.serial_consistency = store.serial_consistency.upper()


def _validate_push(config: Config) -> None:
    push = config.push
    checks = {"push.grace": push.grace >= 0, "push.interval": push.interval > 0,
              "push.max_backoff": push.max_backoff >= 1, "push.preview_chars": push.preview_chars >= 1,
              "push.max_pending": push.max_pending >= 1, "push.max_concurrent": push.max_concurrent >= 1,
              "push.timeout": push.timeout > 0, "push.attempts": push.attempts >= 1}
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"{key}: value {getattr(push, key.partition('.')[2])!r} out of range")
    for key in ("apns_url", "apns_sandbox_url", "fcm_url", "fcm_token_url"):
        url = getattr(push, key)
        if url and not url.startswith("https://"):
            raise ConfigError(f"push.{key}: {url!r} is not an https:// URL")
    apns = push.apns_settings()
    if not config.server.production:
        return
    if any(apns) and not all(apns):
        raise ConfigError("push.apns_key_file, push.apns_key_id and push.apns_team_id: set all "
                          "three for APNs (or none)")
    if any(apns) and not push.apns_topic:
        raise ConfigError("push.apns_topic: the app's bundle id, for APNs")
    if not all(apns) and not push.fcm_credentials_file:
        raise ConfigError("push.enabled: set up APNs (push.apns_key_file, push.apns_key_id, "
                          "push.apns_team_id, push.apns_topic) or FCM "
                          "(push.fcm_credentials_file), or both")


def _validate_media(config: Config) -> None:
    media = config.media
    checks = {"media.port": 0 <= media.port < 65536,
              "media.max_bytes": media.max_bytes >= 1,
              "media.max_thumbnail_bytes": 1 <= media.max_thumbnail_bytes <= media.max_bytes,
              "media.part_bytes": media.part_bytes >= 5 * 1024 * 1024 or media.backend == "local"
              and media.part_bytes >= 1,
              "media.single_put_bytes": media.single_put_bytes >= 1,
              "media.url_ttl": 1 <= media.url_ttl <= 7 * 86400,  # S3's longest presigned URL
              "media.orphan_ttl": media.orphan_ttl > 0,
              "media.sweep_interval": media.sweep_interval >= 0,
              "media.uploads_per_minute": media.uploads_per_minute > 0,
              "media.upload_burst": media.upload_burst >= 1}
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"{key}: value {getattr(media, key.partition('.')[2])!r} out of "
                              "range")
    for key, value, allowed in (("media.backend", media.backend, MEDIA_BACKENDS),
                                ("media.s3_addressing", media.s3_addressing, S3_ADDRESSING)):
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    types = [t.strip() for t in media.types.split(",") if t.strip()]
    if not types or any(t.count("/") != 1 or t != t.lower() for t in types):
        raise ConfigError(f"media.types: {media.types!r} is not a list of lower-case "
                          "type/subtype (or type/*)")
    if media.public_url and not media.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"media.public_url: {media.public_url!r} is not an http(s) URL")
    if media.backend == "s3":
        if not media.s3_bucket:
            raise ConfigError("media.s3_bucket: required with media.backend = \"s3\"")
        if bool(media.s3_access_key) != bool(media.s3_secret_key or media.s3_secret_key_file):
            raise ConfigError("media.s3_access_key and media.s3_secret_key (or "
                              "s3_secret_key_file): set both or neither")


def read_secret_file(path: str, key: str, minimum: int = 1) -> bytes:
    """The stripped contents of a secret file; ConfigError naming `key` when it cannot be read
    or is shorter than `minimum` bytes."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if len(secret) < minimum:
        raise ConfigError(f"{key}: {path} holds under {minimum} bytes")
    return secret
