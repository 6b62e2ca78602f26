"""`switchboard serve` and `switchboard token`: the embedded server and development tokens."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .config import ConfigError, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a gateway with the embedded SQLite store")
    _common(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8765)")
    serve.add_argument("--production", action="store_true", default=None,
                       help="refuse to start without an explicit auth.secret")
    serve.add_argument("--log-level", default="INFO")

    token = sub.add_parser("token", help="mint a device token (JWT) for development")
    _common(token)
    token.add_argument("--user", required=True)
    token.add_argument("--device", required=True)
    token.add_argument("--ttl", type=float, default=30 * 86400, help="seconds (default 30 days)")

    args = parser.parse_args(argv)
    try:
        config = load(args.config, {
            "server.data_dir": args.data_dir,
            "server.host": getattr(args, "host", None),
            "server.port": getattr(args, "port", None),
            "server.production": getattr(args, "production", None),
        })
        if args.command == "token":
            from .core.auth import TokenAuthority
            print(TokenAuthority(config.secret_bytes()).mint(args.user, args.device, args.ttl))
            return 0
        config.secret_bytes()
    except (ConfigError, ValueError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop
    return uvloop.run(_serve(config))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file")
    parser.add_argument("--data-dir", help="where the database and dev signing key live "
                                           "(default ./switchboard-data)")


async def _serve(config) -> int:
    from .gateway.server import Gateway
    gateway = Gateway(config)
    await gateway.start()
    print(f"switchboard listening on ws://{config.server.host}:{gateway.port}/v1/ws", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
