"""The SDK's HTTP for media: one PUT or GET per connection over asyncio streams (TLS for
https URLs), with bodies streamed from and to files in pieces, never held whole. Only what
signed media URLs need: Content-Length bodies, chunked answers, no redirects, no cookies."""
from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

PIECE = 256 * 1024
HEAD_LIMIT = 64 * 1024


class TransferError(Exception):
    """An HTTP transfer of media failed: the status (0: no answer) and what the server said."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]


async def put(url: str, headers: dict[str, str], body: bytes | memoryview | str,
              offset: int, size: int, timeout: float) -> Response:
    """PUT `size` bytes of `body` (bytes, or a file path) from `offset`; TransferError unless
    the answer is 2xx."""
    async def send(writer: asyncio.StreamWriter) -> None:
        if isinstance(body, str):
            with open(body, "rb", buffering=0) as file:
                file.seek(offset)
                left = size
                while left:
                    piece = await asyncio.to_thread(file.read, min(PIECE, left))
                    if not piece:
                        raise TransferError(0, f"{body} is shorter than expected")
                    writer.write(piece)
                    left -= len(piece)
                    await writer.drain()
        else:
            view = memoryview(body)[offset:offset + size]
            for start in range(0, size, PIECE):
                writer.write(view[start:start + PIECE])
                await writer.drain()

    return await _exchange("PUT", url, {**headers, "Content-Length": str(size)}, send, None,
                           timeout)


async def get(url: str, headers: dict[str, str], sink: Callable[[bytes], None],
              timeout: float) -> Response:
    """GET `url`, handing each piece of the body to `sink`; TransferError unless 2xx."""
    return await _exchange("GET", url, headers, None, sink, timeout)


async def _exchange(method: str, url: str, headers: dict[str, str], send, sink,
                    timeout: float) -> Response:
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                parts.hostname, port, ssl=ssl.create_default_context() if secure else None,
                limit=HEAD_LIMIT)
            try:
                host = parts.netloc.rpartition("@")[2]
                head = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close",
                        *(f"{k}: {v}" for k, v in headers.items()), "", ""]
                writer.write("\r\n".join(head).encode("latin-1"))
                if send is not None:
                    await send(writer)
                await writer.drain()
                return await _read_response(reader, sink)
            finally:
                writer.close()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise TransferError(0, f"{method} failed: {exc}") from None
    except TimeoutError:
        raise TransferError(0, f"{method} took longer than {timeout} s") from None


async def _read_response(reader: asyncio.StreamReader, sink) -> Response:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    ok = 200 <= status < 300
    error = bytearray()
    keep = sink if ok and sink is not None else (lambda piece: error.extend(piece[:4096 - len(error)]))
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            length = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if length == 0:
                await reader.readuntil(b"\r\n")
                break
            await _read_exactly(reader, length, keep)
            await reader.readexactly(2)
    elif "content-length" in headers:
        await _read_exactly(reader, int(headers["content-length"]), keep)
    if not ok:
        raise TransferError(status, error.decode("utf-8", "replace").strip())
    return Response(status, headers)


async def _read_exactly(reader: asyncio.StreamReader, length: int, sink) -> None:
    while length:
        piece = await reader.read(min(PIECE, length))
        if not piece:
            raise asyncio.IncompleteReadError(b"", length)
        sink(piece)
        length -= len(piece)


def file_digest(path: str | os.PathLike) -> tuple[int, bytes]:
    """(size, SHA-256) of a file, read in pieces (run it in a thread)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as file:
        while piece := file.read(1 << 20):
            digest.update(piece)
            size += len(piece)
    return size, digest.digest()
