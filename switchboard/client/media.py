"""Media in the SDK: upload a file or bytes, download what a message names (docs/protocol.md
8.20). The WebSocket carries only the requests; the bytes go over HTTP to the URLs the server
signs (client/http.py), read from and written to files in pieces.

Uploading the same file again resumes it: the server answers with only the parts it does not
have (or `complete` when it has the whole file), so a crashed or interrupted upload continues
where it stopped by calling `upload` again.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
from typing import TYPE_CHECKING

from switchboard.proto.v1 import client_pb2 as pb

from . import http
from .http import TransferError

if TYPE_CHECKING:
    from .sdk import Client

__all__ = ["TransferError", "upload", "download"]

TRANSFER_TIMEOUT = 300.0  # s for one part or one download


async def upload(client: Client, source: bytes | str | os.PathLike, content_type: str, *,
                 thumbnail_of: str = "", parallel: int = 4) -> pb.MediaInfo:
    """Upload `source` (bytes, or a file path) and complete it; returns its MediaInfo."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        body: bytes | str = bytes(source)
        size, sha256 = len(body), hashlib.sha256(body).digest()
    else:
        body = os.fspath(source)
        size, sha256 = await asyncio.to_thread(http.file_digest, body)
    slot = await client.request("upload_slot", create_upload=pb.CreateUpload(
        size=size, content_type=content_type, sha256=sha256, thumbnail_of=thumbnail_of))
    if not slot.complete:
        await put_parts(slot, body, parallel)
    return await client.request("media_info",
                                complete_upload=pb.CompleteUpload(media_id=slot.media_id))


async def put_parts(slot: pb.UploadSlot, body: bytes | str, parallel: int = 4) -> None:
    """PUT the slot's parts (at most `parallel` at once); TransferError if one fails."""
    room = asyncio.Semaphore(parallel)

    async def one(part: pb.UploadPart) -> None:
        async with room:
            await http.put(part.url, dict(part.headers), body, part.offset, part.size,
                           TRANSFER_TIMEOUT)

    async with asyncio.TaskGroup() as group:
        for part in slot.parts:
            group.create_task(one(part))


async def download(client: Client, media_id: str, chat_id: str = "", seq: int = 0, *,
                   to: str | os.PathLike | None = None, thumbnail: bool = False,
                   byte_range: tuple[int, int] | None = None) -> bytes | pb.MediaInfo:
    """The media (or its thumbnail) a message of chat_id at seq names (your own uploads need
    neither): its bytes, or with `to` its MediaInfo after writing them to that file. A whole
    download is checked against the SHA-256 the server gives (TransferError when it differs);
    `byte_range` (start, end exclusive) fetches a part."""
    urls = await client.request("media_urls", get_media=pb.GetMedia(
        media_id=media_id, chat_id=chat_id, seq=seq))
    info, url = (urls.thumbnail, urls.thumbnail_url) if thumbnail else (urls.media, urls.url)
    if not url:
        raise TransferError(0, f"media {media_id} has no thumbnail")
    headers = {} if byte_range is None else {"Range": f"bytes={byte_range[0]}-{byte_range[1] - 1}"}
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    out = None if to is None else open(to, "wb")
    try:
        def sink(piece: bytes) -> None:
            digest.update(piece)
            if out is None:
                chunks.append(piece)
            else:
                out.write(piece)

        await http.get(url, headers, sink, TRANSFER_TIMEOUT)
    finally:
        if out is not None:
            out.close()
    if byte_range is None and digest.digest() != info.sha256:
        raise TransferError(0, f"media {media_id}: the downloaded bytes do not match its SHA-256")
    return info if to is not None else b"".join(chunks)
