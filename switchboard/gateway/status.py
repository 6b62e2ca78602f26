"""The ops port: GET /metrics (Prometheus text), /healthz and /readyz, on its own address.

A minimal HTTP/1.0-style server on the gateway's own event loop rather than prometheus_client's
threaded one: a health answer that comes from the loop proves the loop is responsive (a
thread would answer for a dead loop), and the collector reads the loop's counters on the loop's
own thread. Each request gets one answer and the connection is closed; bad or slow requests
are dropped after a few seconds. It is not the client port and carries no client data.

* /healthz: 200 while the loop runs with less than UNHEALTHY_LAG of lag, else 503.
* /readyz: 200 while the store is open, the listener accepts and the gateway is not draining;
  503 otherwise (load balancers stop sending new devices as soon as a drain starts).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from .server import Gateway

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 8192
UNHEALTHY_LAG = 1.0


class StatusServer:
    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port,
                                                  limit=MAX_REQUEST_BYTES)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""]
            status, content_type, body = self._route(method, path.partition("?")[0])
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (
                             status, _REASONS[status].encode(), content_type.encode(), len(body),
                             body if method != "HEAD" else b""))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._gw.metrics.registry)
        if path == "/healthz":
            lag = self._gw.metrics.loop_lag.last
            return _json(200 if lag < UNHEALTHY_LAG else 503, loop_lag_seconds=lag)
        if path == "/readyz":
            checks = self._gw.readiness()
            return _json(200 if all(checks.values()) else 503, **checks)
        return 404, "text/plain", b"not found: try /metrics, /healthz, /readyz\n"


def _json(status: int, **fields) -> tuple[int, str, bytes]:
    return status, "application/json", orjson.dumps(fields) + b"\n"


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
