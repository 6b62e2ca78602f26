"""The local backend's media port: PUT of upload parts and GET/HEAD of objects, with signed URLs.

A port of its own, not the ops port and not the client port: devices fetch media from the
internet while the ops port (metrics, health) stays private, and bulk transfers must not delay
/healthz, which answers from the gateway's loop to prove that loop responsive. It runs in a
thread with its own event loop (the standard selector loop, whose `sendfile` is the kernel's
zero-copy os.sendfile), so bytes never sit on the gateway's loop: a GET is sent by the kernel
from the file, an upload is read in pieces of at most RECEIVE_BUFFER and written to disk as it
comes, and a request needs nothing from the store (the URL's signature says what is allowed).

HTTP/1.1 with keep-alive; one request at a time per connection. Answers: 200, 206 (Range),
400 (bad request, wrong Content-Length), 403 (bad signature or expired URL, said in the body),
404, 405, 411 (no Content-Length), 416 (unsatisfiable range), 503 (too many connections).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl

from .files import MediaFiles, write_all
from .signing import BadSignature, UrlSigner

log = logging.getLogger(__name__)

READ_LIMIT = 64 * 1024    # a request head at most; the body buffered ahead of the disk at most twice
HEAD_TIMEOUT = 10.0       # s for a request's head (and between requests on a kept connection)
BODY_TIMEOUT = 30.0       # s without a byte of an upload's body
RECEIVE_BUFFER = 256 * 1024
MAX_CONNECTIONS = 1024
UPLOAD_PREFIX = "/v1/media/upload/"
DOWNLOAD_PREFIX = "/v1/media/"

_REASONS = {200: "OK", 206: "Partial Content", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
            416: "Range Not Satisfiable", 503: "Service Unavailable"}


def _quiet_selector_choice(record: logging.LogRecord) -> bool:
    """Drops asyncio's DEBUG line naming the selector a new loop took."""
    return record.msg != "Using selector: %s"


@dataclass(slots=True)
class HttpStats:
    """Bumped by the media thread, read by /metrics: plain integers."""
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    refused: int = 0       # 4xx and 5xx answers


class _Refused(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class MediaHttpServer:
    def __init__(self, files: MediaFiles, signer: UrlSigner, host: str, port: int,
                 reuse_port: bool = False) -> None:
        self._files = files
        self._signer = signer
        self._address = (host, port)
        self._reuse_port = reuse_port
        self.stats = HttpStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._connections = 0

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def start(self) -> None:
        """Bind here (an address in use raises OSError in the caller), serve in the thread."""
        sock = socket.socket(socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(self._address)
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        # asyncio logs which selector the loop took, at DEBUG: a line of noise in every start
        # (and before the one line naming the setting, when the start then fails)
        logging.getLogger("asyncio").addFilter(_quiet_selector_choice)
        self._loop = asyncio.SelectorEventLoop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="media-http",
                                        daemon=True)
        self._thread.start()
        ready.wait()

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(
            self._handle, sock=self._sock, limit=READ_LIMIT))
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            transfers = asyncio.all_tasks(loop)
            for task in transfers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*transfers, return_exceptions=True))
            loop.close()

    def stop(self) -> None:
        """Stop serving (transfers in progress are cut) and join the thread."""
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    # ------------------------------------------------------------------ one connection
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            if self._connections > MAX_CONNECTIONS:
                await self._answer(writer, 503, b"too many connections\n", {}, keep=False)
                return
            while await self._request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError):
            pass
        except Exception:
            log.exception("media request failed")
        finally:
            self._connections -= 1
            writer.close()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; whether the connection may carry another."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False  # closed between requests
        self.stats.requests += 1
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = (lines[0].split(" ") + ["", "", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        path, _, query = target.partition("?")
        try:
            if path.startswith(UPLOAD_PREFIX):
                if method != "PUT":
                    raise _Refused(405, "PUT only", {"Allow": "PUT"})
                return await self._upload(reader, writer, path, query, headers) and keep
            if path.startswith(DOWNLOAD_PREFIX):
                if method not in ("GET", "HEAD"):
                    raise _Refused(405, "GET or HEAD only", {"Allow": "GET, HEAD"})
                await self._download(writer, method, path, query, headers)
                return keep
            raise _Refused(404, "not found")
        except _Refused as refused:
            self.stats.refused += 1
            # an upload refused before its body was read leaves the body unread: close
            keep = keep and not path.startswith(UPLOAD_PREFIX)
            await self._answer(writer, refused.status, refused.reason.encode() + b"\n",
                               refused.headers, keep)
            return keep

    def _verify(self, method: str, path: str, query: str) -> dict[str, str]:
        try:
            return self._signer.verify(method, path, dict(parse_qsl(query)))
        except BadSignature as exc:
            raise _Refused(403, str(exc)) from None

    async def _answer(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                      headers: dict[str, str], keep: bool, head_only: bool = False) -> None:
        writer.write(_head(status, {"Content-Type": "text/plain", "Content-Length": str(len(body)),
                                    **headers}, keep))
        if not head_only:
            writer.write(body)
        self.stats.bytes_out += len(body)
        await writer.drain()

    # ------------------------------------------------------------------ upload
    async def _upload(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      path: str, query: str, headers: dict[str, str]) -> bool:
        params = self._verify("PUT", path, query)
        key, _, number = path[len(UPLOAD_PREFIX):].partition("/")
        if not self._files.valid_key(key) or not number.isdigit():
            raise _Refused(404, "not found")
        if "chunked" in headers.get("transfer-encoding", "").lower() \
                or "content-length" not in headers:
            raise _Refused(411, "Content-Length required (no chunked uploads)")
        expected = int(params.get("size", "-1"))
        if headers["content-length"] != str(expected):
            raise _Refused(400, f"this part is {expected} bytes: Content-Length must say so")
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        fd, spare = self._files.new_part(key, int(number))
        try:
            left = expected
            while left:
                chunk = await asyncio.wait_for(reader.read(min(left, RECEIVE_BUFFER)),
                                               BODY_TIMEOUT)
                if not chunk:
                    raise ConnectionResetError("body cut short")
                write_all(fd, chunk)
                left -= len(chunk)
                self.stats.bytes_in += len(chunk)
            os.close(fd)
            fd = -1
            self._files.keep_part(spare, key, int(number))
        finally:
            if fd >= 0:
                os.close(fd)
                self._files.drop_part(spare)
        await self._answer(writer, 200, b"", {}, True)
        return True

    # ------------------------------------------------------------------ download
    async def _download(self, writer: asyncio.StreamWriter, method: str, path: str, query: str,
                        headers: dict[str, str]) -> None:
        params = self._verify("GET", path, query)
        key = path[len(DOWNLOAD_PREFIX):]
        if not self._files.valid_key(key):
            raise _Refused(404, "not found")
        try:
            file = open(self._files.object_path(key), "rb", buffering=0)
        except FileNotFoundError:
            raise _Refused(404, "not found") from None
        with file:
            size = os.fstat(file.fileno()).st_size
            start, end = _range(headers.get("range", ""), size)
            status = 200 if (start, end) == (0, size) else 206
            reply = {"Content-Type": params.get("type", "application/octet-stream"),
                     "Content-Length": str(end - start), "Accept-Ranges": "bytes",
                     "Cache-Control": "private, max-age=31536000, immutable"}
            if status == 206:
                reply["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            writer.write(_head(status, reply, True))
            if method == "GET" and end > start:
                await writer.drain()
                sent = await asyncio.get_running_loop().sendfile(
                    writer.transport, file, start, end - start)
                self.stats.bytes_out += sent
            await writer.drain()


def _range(header: str, size: int) -> tuple[int, int]:
    """[start, end) of a `Range: bytes=...` header (one range); the whole file without one or
    for several; 416 when it cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return 0, size
    first, sep, last = spec.strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()) or \
            (first and not first.isdigit()) or (last and not last.isdigit()):
        return 0, size
    if not first:  # the last N bytes
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        raise _Refused(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
    return start, end


def _head(status: int, headers: dict[str, str], keep: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}",
             *(f"{name}: {value}" for name, value in headers.items()),
             f"Connection: {'keep-alive' if keep else 'close'}", "", ""]
    return "\r\n".join(lines).encode("latin-1")
