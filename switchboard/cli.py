"""`switchboard serve`, `switchboard token` and `switchboard admin`: the server process, development
tokens and the operator's tools.

`serve` is what systemd runs (deploy/systemd/switchboard@.service): it reports READY=1 once the
listener accepts, pings the watchdog from the event loop, drains on SIGTERM/SIGINT (STOPPING=1,
then Gateway.stop within server.stop_timeout: exit 0 when drained, 1 when not) and reloads the
TLS certificate on SIGHUP. Configuration errors exit 2 with a message naming the key.

`serve --workers N` (N > 1) runs N such processes on one host as one cluster, under a small
supervisor (switchboard/workers.py: per-worker settings, readiness, restarts, stop).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from . import collector, logs
from .config import ConfigError, check_data_dir, load
from .tools import admin, sdnotify

log = logging.getLogger("switchboard.serve")

EXIT_CONFIG = 2

SERVE_EPILOG = """\
Every key of the configuration (switchboard/config.py; deploy/switchboard.toml lists them all)
can also come from a TOML file (--config) or a SWITCHBOARD_<SECTION>_<KEY> environment
variable; flags win over both. Secrets have no flags (a command line is visible to every
user of the host); a cluster node takes them from the file or the environment:

  SWITCHBOARD_AUTH_SECRET_FILE           the token signing key (every node the same)
  SWITCHBOARD_CLUSTER_MESH_SECRET_FILE   the mesh's shared secret (every node the same)
  SWITCHBOARD_CLUSTER_MESH_TLS_CERT, _KEY, _CA   mutual TLS between the nodes
  SWITCHBOARD_CLUSTER_REDIS_USERNAME, SWITCHBOARD_CLUSTER_REDIS_PASSWORD_FILE
  SWITCHBOARD_CLUSTER_REDIS_TLS=true, SWITCHBOARD_CLUSTER_REDIS_TLS_CA
  SWITCHBOARD_STORE_KIND                 sqlite (one host only) or scylla (any number)

One node of a three-host cluster (deploy/README.md, "Several hosts"):

  switchboard serve --production --host 0.0.0.0 --port 8765 \\
      --node-name gw-a --node-id 0 --mesh-host 10.0.0.11 --mesh-port 8865 \\
      --redis 10.0.0.21:6379,10.0.0.22:6379,10.0.0.23:6379 \\
      --metrics-host 10.0.0.11 --metrics-port 9765
"""


def parser() -> argparse.ArgumentParser:
    """Every command and option of `switchboard`."""
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a gateway (alone, or one node of a cluster)",
                           epilog=SERVE_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8765)")
    serve.add_argument("--production", action="store_true", default=None,
                       help="refuse to start without an explicit auth.secret (and, in a "
                            "cluster, with a mesh open beyond loopback)")
    serve.add_argument("--log-level", help="log.level: DEBUG, INFO, WARNING, ERROR")
    serve.add_argument("--workers", action=WorkersFlag, default=1, metavar="N|auto",
                       help="gateway processes sharing the client port as one cluster, under a "
                            "supervisor; auto: one per core this process may run on "
                            "(sched_getaffinity) (default 1: this process serves; see "
                            "deploy/README.md)")
    serve.add_argument("--metrics-host", help="metrics.host: /metrics, /healthz, /readyz "
                                              "(default 127.0.0.1)")
    serve.add_argument("--metrics-port", type=int,
                       help="metrics.port (default 9765; 0: any free port)")
    cluster = serve.add_argument_group(
        "cluster (docs/cluster.md; deploy/README.md, \"Several hosts\")",
        "--redis or --peers makes this process a node of a cluster (cluster.enabled)")
    cluster.add_argument("--redis", metavar="HOST:PORT,...",
                         help="cluster.redis: Redis Cluster seed nodes (leases, sessions)")
    cluster.add_argument("--peers", metavar="NAME=HOST:PORT,...",
                         help="cluster.peers: a static member list instead of Redis")
    cluster.add_argument("--node-name", help="cluster.node_name: this node's name, unique in "
                                             "the cluster (default n<node-id>)")
    cluster.add_argument("--node-id", type=int,
                         help="server.node_id: 0-1023, unique among the nodes sharing a store "
                              "(message server ids, admin socket)")
    cluster.add_argument("--mesh-host", help="cluster.mesh_host: where the mesh listens and "
                                             "what peers dial: this host's private address")
    cluster.add_argument("--mesh-port", type=int,
                         help="cluster.mesh_port (0: any free port, with --redis)")

    token = sub.add_parser("token", help="mint a device token (JWT) for development")
    _common(token)
    admin.add_token_arguments(token)

    admin_parser = sub.add_parser("admin", help="operate a node: chats, devices, sessions, "
                                                "tokens, drain (see deploy/README.md)")
    _common(admin_parser)
    admin.add_arguments(admin_parser, lambda leaf: _common(leaf, default=argparse.SUPPRESS))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    clustered = getattr(args, "redis", None) or getattr(args, "peers", None)
    flags = {
        "server.data_dir": args.data_dir,
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "server.production": getattr(args, "production", None),
        "log.level": getattr(args, "log_level", None),
        "metrics.host": getattr(args, "metrics_host", None),
        "cluster.enabled": True if clustered else None,
        "cluster.redis": getattr(args, "redis", None),
        "cluster.peers": getattr(args, "peers", None),
        "cluster.mesh_host": getattr(args, "mesh_host", None),
    }
    # per process: with --workers they are the bases the supervisor counts from (workers.py)
    own = {
        "server.node_id": getattr(args, "node_id", None),
        "cluster.node_name": getattr(args, "node_name", None),
        "cluster.mesh_port": getattr(args, "mesh_port", None),
        "metrics.port": getattr(args, "metrics_port", None),
    }
    supervise = getattr(args, "workers", 1) > 1
    try:
        # The supervisor is no cluster member itself; each worker's [cluster] is checked
        # with the settings the supervisor gives it (workers.plan).
        config = load(args.config, {**flags, **own, "cluster.enabled": False} if supervise
                      else {**flags, **own})
        if args.command == "token":
            return admin.mint(config, args)
        if args.command == "admin":
            return admin.run(config, args)
        check_data_dir(config.server.data_dir)
        config.secret_bytes()  # dev mode: generated here once, before workers race for it
        if supervise:
            from . import workers
            plan = workers.plan(config, args.workers,
                                lambda environ: load(args.config, flags, environ=environ))
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup(config.log, "supervisor" if supervise else node_name(config))
    if getattr(args, "workers_auto", False):
        log.info("--workers auto: %d worker(s), one per core this process may run on",
                 args.workers)
    if supervise:
        return workers.serve(config, plan, _worker_argv(args))
    import uvloop
    return uvloop.run(_serve(config))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's
    limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


class WorkersFlag(argparse.Action):
    """--workers N|auto: a whole number of 1 or more, or one per usable core (then
    `workers_auto` is set, so the choice is told)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        auto = values.strip().lower() == "auto"
        try:
            namespace.workers = usable_cores() if auto else admin.positive_integer(values)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        namespace.workers_auto = auto


def node_name(config) -> str:
    """What this process's log lines call it: its cluster node name, else n<node_id>."""
    return config.cluster.node_name or f"n{config.server.node_id}"


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """`serve` with the supervisor's own flags, minus --workers and the per-worker ones
    (--node-id, --node-name, --mesh-port, --metrics-port: the supervisor gives each worker its
    own, counted from those, workers.py): what each worker runs."""
    argv = ["serve"]
    for flag, value in (("--config", args.config), ("--data-dir", args.data_dir),
                        ("--host", args.host), ("--port", args.port),
                        ("--log-level", args.log_level), ("--metrics-host", args.metrics_host),
                        ("--redis", args.redis), ("--peers", args.peers),
                        ("--mesh-host", args.mesh_host)):
        if value is not None:
            argv += [flag, str(value)]
    if args.production:
        argv.append("--production")
    return argv


def _common(parser: argparse.ArgumentParser, default=None) -> None:
    """--config and --data-dir. Given again after an admin subcommand (default SUPPRESS there),
    the later one wins; not given, the earlier value stays."""
    parser.add_argument("--config", default=default, help="TOML config file")
    parser.add_argument("--data-dir", default=default,
                        help="where the database and dev signing key live "
                             "(default ./switchboard-data)")


async def _serve(config) -> int:
    from .router.registry import RegistryUnavailable
    from .app import build_gateway
    try:
        gateway = build_gateway(config)
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        await gateway.start()
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        await gateway.stop()  # releases what start opened; logs no drain: nothing was served
        return EXIT_CONFIG
    except (OSError, RuntimeError, RegistryUnavailable) as exc:  # may pass (Redis down): exit 1
        print(f"switchboard: cannot start: {exc}", file=sys.stderr)
        await gateway.stop()
        return 1
    # the handlers before the lines that say the server is up: a reload or stop sent as soon
    # as they are read must not meet the default action (SIGHUP's kills the process)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, gateway)
    collector.settle()
    collector.watch(loop)
    url = f"{gateway.scheme}://{config.server.host}:{gateway.port}/v1/ws"
    print(f"switchboard listening on {url}", flush=True)
    if config.metrics.enabled:
        print(f"switchboard metrics on http://{config.metrics.host}:{gateway.status.port}/metrics",
              flush=True)
    sdnotify.notify("READY=1", f"STATUS=serving {url}")
    interval = sdnotify.watchdog_interval()
    watchdog = sdnotify.Watchdog(interval) if interval else None
    if watchdog is not None:
        watchdog.start(loop)

    await stop.wait()
    log.info("stop requested (SIGTERM or SIGINT): draining")
    sdnotify.notify("STOPPING=1", "STATUS=draining")
    code = 0
    try:
        await asyncio.wait_for(gateway.stop(), config.server.stop_timeout)
    except asyncio.TimeoutError:
        log.error("drain did not finish within server.stop_timeout=%ss", config.server.stop_timeout)
        code = 1
    if watchdog is not None:
        watchdog.stop()
    return code


def _reload(gateway) -> None:
    """SIGHUP: new TLS handshakes use the certificate now on disk; a bad one is logged and the
    old one stays (a reload must never take the listener down). Without TLS there is nothing
    to reload, which is normal (`systemctl reload` on a plaintext server)."""
    if gateway.tls is None:
        log.info("SIGHUP: no TLS configured, nothing to reload")
        return
    try:
        gateway.reload_tls()
    except Exception as exc:
        log.error("tls reload failed, keeping the current certificate: %s", exc)


if __name__ == "__main__":
    sys.exit(main())
