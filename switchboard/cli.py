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
import signal
import sys

from . import logs
from .config import ConfigError, check_data_dir, load
from .tools import admin, sdnotify

log = logging.getLogger("switchboard.serve")

EXIT_CONFIG = 2


def parser() -> argparse.ArgumentParser:
    """Every command and option of `switchboard`."""
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a gateway with the embedded SQLite store")
    _common(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8765)")
    serve.add_argument("--production", action="store_true", default=None,
                       help="refuse to start without an explicit auth.secret")
    serve.add_argument("--log-level", help="log.level: DEBUG, INFO, WARNING, ERROR")
    serve.add_argument("--workers", type=admin.positive_integer, default=1, metavar="N",
                       help="gateway processes sharing the client port as one cluster, under a "
                            "supervisor (default 1: this process serves; see deploy/README.md)")

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
    flags = {
        "server.data_dir": args.data_dir,
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "server.production": getattr(args, "production", None),
        "log.level": getattr(args, "log_level", None),
    }
    supervise = getattr(args, "workers", 1) > 1
    try:
        # The supervisor is no cluster member itself; each worker's [cluster] is checked
        # with the settings the supervisor gives it (workers.plan).
        config = load(args.config, {**flags, "cluster.enabled": False} if supervise else flags)
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
    if supervise:
        return workers.serve(config, plan, _worker_argv(args))
    import uvloop
    return uvloop.run(_serve(config))


def node_name(config) -> str:
    """What this process's log lines call it: its cluster node name, else n<node_id>."""
    return config.cluster.node_name or f"n{config.server.node_id}"


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """`serve` with the supervisor's own flags, minus --workers: what each worker runs."""
    argv = ["serve"]
    for flag, value in (("--config", args.config), ("--data-dir", args.data_dir),
                        ("--host", args.host), ("--port", args.port),
                        ("--log-level", args.log_level)):
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
