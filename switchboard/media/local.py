"""Media on the local filesystem, served by this process's own media port (http.py): the
embedded default, so `make serve` needs nothing else. One host only: every gateway process
that signs URLs for the directory must serve it (workers of one host share it, and with
server.reuse_port they share the port too)."""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from switchboard.config import ConfigError
from switchboard.core.metrics import Metric, counter
from switchboard.core.objects import ObjectStore, SignedRequest
from switchboard.core.store import StoreError

from .files import MediaFiles
from .http import DOWNLOAD_PREFIX, UPLOAD_PREFIX, MediaHttpServer
from .signing import UrlSigner, load_key

log = logging.getLogger(__name__)


class LocalObjects(ObjectStore):
    def __init__(self, root: Path, *, host: str, port: int, public_url: str = "",
                 reuse_port: bool = False) -> None:
        self.files = MediaFiles(root)
        self._host, self._port = host, port
        self._public_url = public_url.rstrip("/")
        self._reuse_port = reuse_port
        self._signer: UrlSigner | None = None
        self.server: MediaHttpServer | None = None

    async def open(self) -> None:
        """The directory and the key, then the port; what the operator must fix is a
        ConfigError naming media.dir or media.port."""
        try:
            await asyncio.to_thread(self.files.create)
            key = await asyncio.to_thread(load_key, self.files.root / "url.key")
        except OSError as exc:
            raise ConfigError(f"media.dir: cannot keep media in {self.files.root}: "
                              f"{exc.strerror or exc}") from None
        self._signer = UrlSigner(key)
        server = MediaHttpServer(self.files, self._signer, self._host, self._port,
                                 self._reuse_port)
        try:
            server.start()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"media.port: cannot listen on {self._host}:{self._port}: "
                              f"{reason}") from None
        self.server = server

    def where(self) -> str:
        return self.base_url

    async def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(server.stop)

    @property
    def base_url(self) -> str:
        """Where devices reach the media port: media.public_url, else this listener."""
        if self._public_url:
            return self._public_url
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.server.port}"

    def _url(self, method: str, path: str, params: dict[str, str], ttl: int) -> str:
        return f"{self.base_url}{path}?{self._signer.query(method, path, params, ttl)}"

    async def begin_upload(self, key: str, content_type: str, multipart: bool) -> str:
        return ""  # parts are files named by their number: nothing to begin

    def part_url(self, key: str, upload_id: str, number: int, size: int, content_type: str,
                 sha256: bytes, ttl: int) -> SignedRequest:
        return SignedRequest(self._url("PUT", f"{UPLOAD_PREFIX}{key}/{number}",
                                       {"size": str(size)}, ttl),
                             {"Content-Type": "application/octet-stream"})

    async def uploaded_parts(self, key: str, upload_id: str) -> dict[int, int]:
        return await _disk(self.files.parts, key)

    async def complete_upload(self, key: str, upload_id: str, size: int, part_size: int,
                              sha256: bytes) -> None:
        await _disk(self.files.assemble, key, size, part_size, sha256)

    def download_url(self, key: str, content_type: str, ttl: int) -> str:
        return self._url("GET", f"{DOWNLOAD_PREFIX}{key}", {"type": content_type}, ttl)

    async def delete(self, key: str, upload_id: str) -> None:
        await _disk(self.files.delete, key)

    def metrics(self) -> list[Metric]:
        stats = self.server.stats if self.server is not None else None
        if stats is None:
            return []
        return [counter("media_http_requests", "requests to the local media port",
                        stats.requests),
                counter("media_http_refused", "media port requests answered 4xx or 5xx",
                        stats.refused),
                counter("media_http_bytes", "bytes through the local media port",
                        stats.bytes_in, direction="in"),
                counter("media_http_bytes", "bytes through the local media port",
                        stats.bytes_out, direction="out")]


async def _disk(fn, *args):
    """A blocking directory call on a worker thread; a disk failure is StoreError (the device
    is told UNAVAILABLE and retries)."""
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as exc:
        raise StoreError(f"media directory: {exc.strerror or exc}") from exc
