"""The local backend's own HTTP port (switchboard/media/http.py): signed URLs that expire or
were changed, bodies of the wrong length, ranges it cannot satisfy, and a 100 MB file moved
through a `switchboard serve` process whose memory stays flat (the bytes go by sendfile and are
streamed to disk, never held)."""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from switchboard.client import Client
from switchboard.client import http
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.clients import connect
from switchboard.config import ConfigError
from tests.support.server import InProcessServer, ServerProcess, fast_config
from tests.support.waiting import wait_for

from .test_media_flow import slot


async def failure(awaitable) -> http.TransferError:
    with pytest.raises(http.TransferError) as info:
        await awaitable
    return info.value


async def get(url: str, headers: dict | None = None) -> bytes:
    got = bytearray()
    await http.get(url, headers or {}, got.extend, 30)
    return bytes(got)


async def test_expired_urls_are_refused(make_server):
    server = await make_server(media__url_ttl=1)
    alice = await connect(server, "alice")
    info = await alice.upload(b"x" * 1000, "image/jpeg")
    urls = await alice.request("media_urls", get_media=pb.GetMedia(media_id=info.media_id))
    upload = await slot(alice, b"y" * 1000)
    assert await get(urls.url) == b"x" * 1000

    async def expired() -> bool:
        try:
            await get(urls.url)
        except http.TransferError as exc:
            return exc.status == 403 and "expired" in exc.detail
        return False
    await wait_for(expired, timeout=10, message="the download URL expired")
    [part] = upload.parts
    error = await failure(http.put(part.url, dict(part.headers), b"y" * 1000, 0, 1000, 30))
    assert (error.status, error.detail) == (403, "URL expired")
    # a fresh URL for the same media works again
    assert await alice.download(info.media_id) == b"x" * 1000


async def test_changed_urls_and_wrong_lengths_are_refused(server):
    alice = await connect(server, "alice")
    info = await alice.upload(b"x" * 1000, "image/jpeg")
    url = (await alice.request("media_urls", get_media=pb.GetMedia(media_id=info.media_id))).url
    other = await alice.upload(b"z" * 1000, "image/jpeg")
    forged = url.replace(info.media_id, other.media_id)
    assert (await failure(get(forged))).status == 403
    stretched = re.sub(r"e=\d+", "e=99999999999", url)
    assert (await failure(get(stretched))).detail == "bad signature"
    upload = await slot(alice, b"y" * 1000)
    [part] = upload.parts
    error = await failure(http.put(part.url, dict(part.headers), b"y" * 2000, 0, 2000, 30))
    assert (error.status, "1000 bytes" in error.detail) == (400, True)
    bigger = part.url.replace("size=1000", "size=2000")
    assert (await failure(http.put(bigger, {}, b"y" * 2000, 0, 2000, 30))).status == 403
    # nothing half-written is left behind to be completed
    files = server.gateway.services.media.objects.files
    assert files.parts(upload.media_id) == {}


async def test_ranges_it_cannot_satisfy_and_methods_it_does_not_serve(server):
    alice = await connect(server, "alice")
    info = await alice.upload(b"0123456789", "image/jpeg")
    url = (await alice.request("media_urls", get_media=pb.GetMedia(media_id=info.media_id))).url
    error = await failure(get(url, {"Range": "bytes=10-"}))
    assert error.status == 416
    assert await get(url, {"Range": "bytes=2-4"}) == b"234"
    assert await get(url, {"Range": "bytes=0-1,4-5"}) == b"0123456789"  # several: the whole
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"DELETE {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (await reader.readline()).startswith(b"HTTP/1.1 405")
    writer.close()


async def test_a_kept_connection_serves_several_requests(server):
    alice = await connect(server, "alice")
    info = await alice.upload(b"abc" * 100, "image/jpeg")
    url = urlsplit((await alice.request("media_urls", get_media=pb.GetMedia(
        media_id=info.media_id))).url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    for _ in range(3):
        writer.write(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: image/jpeg" in head
        assert await reader.readexactly(300) == b"abc" * 100
    writer.close()


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


@pytest.mark.slow
async def test_a_100_mb_file_moves_without_the_server_growing(tmp_path):
    """Up in 8 MiB parts and down whole, through a real server process: its peak resident
    memory (VmHWM) grows by a few MB at most, whatever the file's size."""
    big = tmp_path / "big.mp4"
    with open(big, "wb") as out:
        for _ in range(100):
            out.write(os.urandom(1_000_000))
    server = ServerProcess(tmp_path / "data")
    await server.start()
    try:
        alice = Client(server.url, server.token("alice"))
        bob = Client(server.url, server.token("bob"))
        await alice.connect()
        await bob.connect()
        chat = (await alice.create_direct("bob")).chat_id
        warm = await alice.upload(os.urandom(3_000_000), "video/mp4")  # first use of every path
        await alice.download(warm.media_id)
        pid = server.proc.pid
        before = vm_kib(pid, "VmRSS")
        info = await alice.upload(big, "video/mp4")
        ack = await alice.send(chat, b"", media_ids=[info.media_id])
        got = tmp_path / "got.mp4"
        await bob.download(info.media_id, chat, ack.seq, to=got)
        peak = vm_kib(pid, "VmHWM")
        assert hashlib.sha256(got.read_bytes()).digest() == info.sha256
        await alice.close()
        await bob.close()
    finally:
        server.stop()
    grew_mb = (peak - before) / 1024
    print(f"server RSS before {before / 1024:.1f} MB, peak {peak / 1024:.1f} MB")
    assert grew_mb < 8, f"the server grew by {grew_mb:.1f} MB moving 100 MB"


async def test_a_media_port_in_use_names_media_port(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    server = InProcessServer(fast_config(tmp_path, media__port=port))
    try:
        with pytest.raises(ConfigError, match=f"media.port: cannot listen on 127.0.0.1:{port}"):
            await server.start()
    finally:
        await server.stop()
        blocker.close()
