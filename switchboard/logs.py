"""Structured logs: one JSON object per line on stderr (journald and log shippers take it as is).

Each line has `ts` (UTC, ms), `level`, `node` (which process of a host wrote it: the cluster
node name of a worker, `n<node_id>` of a single server, `supervisor` for `serve --workers N`),
`logger`, `msg`, anything passed as `extra=` and `exc` for a traceback. The text format
carries the same node after the level. What the code logs is ids, counts and reasons, never message bodies or
tokens: the server handles bodies only as opaque bytes and no log call is given them
(tests/ops/test_logs.py sends a unique body at DEBUG and looks for it in every line).

picows logs every accepted and closed connection at INFO; at a million sockets that is noise,
so its loggers ("picows.*") only speak below WARNING when the level is DEBUG.
"""
from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import IO

import orjson

from switchboard.config import LogConfig

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "node": self.node,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def setup(config: LogConfig, node: str, stream: IO[str] | None = None) -> None:
    """Route every logger to one stderr handler in the configured format and level; every line
    names `node`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter(node))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {node.replace('%', '%%')} %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.getLevelName(config.level)
    root.setLevel(level)
    logging.getLogger("picows").setLevel(level if level <= logging.DEBUG
                                         else max(level, logging.WARNING))
