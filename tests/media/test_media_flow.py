"""Media end to end on both backends, over real sockets with the SDK: upload, complete, send,
download by a member; refusals (non-member, someone else's media, unfinished uploads, size,
type, bytes that differ); dedup, resumed multipart uploads, thumbnails, ranges, orphan sweeps
(docs/protocol.md 8.18)."""
from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from switchboard.client import ServerError
from switchboard.client import http
from switchboard.client.media import put_parts
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.clients import connect, receive
from tests.support.waiting import wait_for

PHOTO = os.urandom(150_000)


async def chat_of(server, *users: str):
    clients = [await connect(server, user) for user in users]
    if len(users) == 2:
        chat = await clients[0].create_direct(users[1])
    else:
        chat = await clients[0].create_group("media", users[1:])
    return chat.chat_id, clients


async def refused(code: int, awaitable) -> ServerError:
    with pytest.raises(ServerError) as info:
        await awaitable
    assert info.value.code == code, info.value
    return info.value


async def slot(client, data: bytes, content_type: str = "image/jpeg",
               thumbnail_of: str = "") -> pb.UploadSlot:
    return await client.request("upload_slot", create_upload=pb.CreateUpload(
        size=len(data), content_type=content_type, sha256=hashlib.sha256(data).digest(),
        thumbnail_of=thumbnail_of))


async def complete(client, media_id: str) -> pb.MediaInfo:
    return await client.request("media_info", complete_upload=pb.CompleteUpload(media_id=media_id))


async def test_upload_send_and_download_by_a_member(media_server):
    chat, (alice, bob) = await chat_of(media_server, "alice", "bob")
    info = await alice.upload(PHOTO, "image/jpeg")
    assert (info.size, info.content_type, info.owner_user_id) == (len(PHOTO), "image/jpeg", "alice")
    assert info.sha256 == hashlib.sha256(PHOTO).digest()
    ack = await alice.send(chat, b"look at this", media_ids=[info.media_id])
    [message] = await receive(bob, 1)
    assert list(message.media_ids) == [info.media_id] and message.seq == ack.seq
    assert await bob.download(info.media_id, chat, message.seq) == PHOTO
    assert await alice.download(info.media_id) == PHOTO  # the owner needs no message


async def test_a_file_from_disk_goes_up_and_comes_down_as_a_file(media_server, tmp_path):
    chat, (alice, bob) = await chat_of(media_server, "alice", "bob")
    video = tmp_path / "clip.mp4"
    video.write_bytes(os.urandom(3_000_000))
    info = await alice.upload(video, "video/mp4")
    ack = await alice.send(chat, b"", media_ids=[info.media_id])
    got = tmp_path / "got.mp4"
    assert (await bob.download(info.media_id, chat, ack.seq, to=got)).size == 3_000_000
    assert got.read_bytes() == video.read_bytes()


async def test_who_may_download(media_server):
    chat, (alice, bob) = await chat_of(media_server, "alice", "bob")
    carol = await connect(media_server, "carol")
    info = await alice.upload(PHOTO, "image/jpeg")
    ack = await alice.send(chat, b"", media_ids=[info.media_id])
    await alice.send(chat, b"no media")
    # not a member of the chat
    await refused(pb.NOT_MEMBER, carol.download(info.media_id, chat, ack.seq))
    # a message that does not name it, one that does not exist, no message named at all
    await refused(pb.NOT_FOUND, bob.download(info.media_id, chat, ack.seq + 1))
    await refused(pb.NOT_FOUND, bob.download(info.media_id, chat, 99))
    await refused(pb.INVALID_ARGUMENT, bob.download(info.media_id))
    # a member who joined after the message cannot see it, so not its media either
    group = (await alice.create_group("g", ["dave"])).chat_id
    dave = await connect(media_server, "dave")
    in_group = await alice.send(group, b"", media_ids=[info.media_id])
    assert await dave.download(info.media_id, group, in_group.seq) == PHOTO
    await alice.add_members(group, ["carol"])
    await refused(pb.NOT_FOUND, carol.download(info.media_id, group, in_group.seq))
    await refused(pb.NOT_FOUND, bob.download("no-such-media", chat, ack.seq))


async def test_a_send_names_only_its_senders_completed_uploads(media_server):
    chat, (alice, bob) = await chat_of(media_server, "alice", "bob")
    hers = await alice.upload(PHOTO, "image/jpeg")
    error = await refused(pb.MEDIA_NOT_OWNED, bob.send(chat, b"", media_ids=[hers.media_id]))
    assert hers.media_id in error.detail
    unfinished = await slot(alice, b"not uploaded yet")
    await refused(pb.MEDIA_INCOMPLETE, alice.send(chat, b"", media_ids=[unfinished.media_id]))
    await refused(pb.NOT_FOUND, alice.send(chat, b"", media_ids=["made-up"]))
    thumb = await alice.upload(b"tiny", "image/jpeg", thumbnail_of=hers.media_id)
    await refused(pb.INVALID_ARGUMENT, alice.send(chat, b"", media_ids=[thumb.media_id]))
    # none of those was stored; a good one is, and is the chat's first message
    ack = await alice.send(chat, b"", media_ids=[hers.media_id])
    assert ack.seq == 1


async def test_sends_keep_their_order_around_one_that_names_media(media_server):
    chat, (alice, bob) = await chat_of(media_server, "alice", "bob")
    photo = await alice.upload(PHOTO, "image/jpeg")
    acks = await asyncio.gather(alice.send(chat, b"1"),
                                alice.send(chat, b"2", media_ids=[photo.media_id]),
                                alice.send(chat, b"3"), alice.send(chat, b"4"))
    assert [a.seq for a in acks] == [1, 2, 3, 4]
    got = await receive(bob, 4)
    assert [m.body for m in got] == [b"1", b"2", b"3", b"4"]


async def test_limits_on_size_and_type(make_server, backend):
    server = await make_server(media__max_bytes=1_000_000, media__max_thumbnail_bytes=1000,
                               media__types="image/*,video/mp4", **backend)
    alice = await connect(server, "alice")
    big = pb.CreateUpload(size=1_000_001, content_type="image/jpeg", sha256=bytes(32))
    await refused(pb.MEDIA_TOO_LARGE, alice.request("upload_slot", create_upload=big))
    exe = pb.CreateUpload(size=10, content_type="application/x-msdownload", sha256=bytes(32))
    await refused(pb.MEDIA_TYPE_REFUSED, alice.request("upload_slot", create_upload=exe))
    await refused(pb.INVALID_ARGUMENT, alice.request("upload_slot", create_upload=pb.CreateUpload(
        size=10, content_type="image/jpeg", sha256=b"short")))
    await refused(pb.INVALID_ARGUMENT, alice.request("upload_slot", create_upload=pb.CreateUpload(
        size=10, content_type="Image/JPEG; q=1", sha256=bytes(32))))
    photo = await alice.upload(b"p" * 5000, "image/png")
    await refused(pb.MEDIA_TOO_LARGE, alice.upload(b"t" * 1001, "image/jpeg",
                                                   thumbnail_of=photo.media_id))
    await refused(pb.MEDIA_TYPE_REFUSED, alice.upload(b"t" * 10, "video/mp4",
                                                      thumbnail_of=photo.media_id))
    assert (await alice.upload(b"v" * 1_000_000, "video/mp4")).size == 1_000_000


async def test_bytes_that_differ_from_the_declaration_are_refused_and_dropped(media_server):
    alice = await connect(media_server, "alice")
    declared = os.urandom(20_000)
    upload = await slot(alice, declared)
    [part] = upload.parts
    if media_server.config.media.backend == "local":
        body = os.urandom(len(declared))  # the size the URL allows, other bytes
    else:
        body = declared + b"more"  # a presigned PUT takes any size: S3 stores what comes
    await http.put(part.url, dict(part.headers), body, 0, len(body), 30)
    await refused(pb.MEDIA_MISMATCH, complete(alice, upload.media_id))
    await refused(pb.NOT_FOUND, complete(alice, upload.media_id))
    again = await slot(alice, declared)  # a fresh upload, not the dropped one
    assert again.media_id != upload.media_id and len(again.parts) == 1


async def test_the_same_file_twice_is_one_upload(media_server):
    chat, (alice, bob) = await chat_of(media_server, "alice", "bob")
    first = await alice.upload(PHOTO, "image/jpeg")
    again = await slot(alice, PHOTO)
    assert (again.media_id, again.complete, list(again.parts)) == (first.media_id, True, [])
    assert (await alice.upload(PHOTO, "image/jpeg")).media_id == first.media_id
    # per uploader: bob's copy of the same bytes is his own
    assert (await bob.upload(PHOTO, "image/jpeg")).media_id != first.media_id


async def test_completing_before_every_part_is_there_names_the_missing_ones(make_server, backend):
    server = await make_server(media__single_put_bytes=5 << 20, media__part_bytes=5 << 20,
                               **backend)
    alice = await connect(server, "alice")
    data = os.urandom((10 << 20) + 1234)
    upload = await slot(alice, data, "video/mp4")
    assert (upload.part_count, upload.part_size) == (3, 5 << 20)
    assert [(p.number, p.offset, p.size) for p in upload.parts] == [
        (1, 0, 5 << 20), (2, 5 << 20, 5 << 20), (3, 10 << 20, 1234)]
    error = await refused(pb.MEDIA_INCOMPLETE, complete(alice, upload.media_id))
    assert "1-3" in error.detail


async def test_an_interrupted_multipart_upload_resumes_with_the_missing_parts(make_server,
                                                                             backend):
    server = await make_server(media__single_put_bytes=5 << 20, media__part_bytes=5 << 20,
                               **backend)
    chat, (alice, bob) = await chat_of(server, "alice", "bob")
    data = os.urandom((12 << 20) + 99)
    first = await slot(alice, data, "video/mp4")
    assert first.part_count == 3
    # the device uploads part 2 and dies
    await put_parts(pb.UploadSlot(parts=[first.parts[1]]), data)
    # after a restart it asks again for the same file: only parts 1 and 3 are left to upload
    resumed = await slot(alice, data, "video/mp4")
    assert resumed.media_id == first.media_id and not resumed.complete
    assert [p.number for p in resumed.parts] == [1, 3]
    await put_parts(resumed, data)
    info = await complete(alice, resumed.media_id)
    assert info.size == len(data)
    ack = await alice.send(chat, b"", media_ids=[info.media_id])
    assert await bob.download(info.media_id, chat, ack.seq) == data


async def test_a_thumbnail_travels_with_its_media(media_server):
    chat, (alice, bob) = await chat_of(media_server, "alice", "bob")
    photo = await alice.upload(PHOTO, "image/jpeg")
    small = os.urandom(2000)
    thumb = await alice.upload(small, "image/webp", thumbnail_of=photo.media_id)
    assert thumb.thumbnail_of == photo.media_id
    ack = await alice.send(chat, b"", media_ids=[photo.media_id])
    urls = await bob.request("media_urls", get_media=pb.GetMedia(
        media_id=photo.media_id, chat_id=chat, seq=ack.seq))
    assert urls.media.thumbnail_id == thumb.media_id == urls.thumbnail.media_id
    assert urls.thumbnail.content_type == "image/webp" and urls.thumbnail_url
    assert await bob.download(photo.media_id, chat, ack.seq, thumbnail=True) == small
    # thumbnails belong to their owner's media only
    bobs = await bob.upload(b"b" * 100, "image/jpeg")
    await refused(pb.NOT_FOUND, alice.upload(b"t", "image/jpeg", thumbnail_of=bobs.media_id))


async def test_range_requests(media_server):
    chat, (alice, bob) = await chat_of(media_server, "alice", "bob")
    info = await alice.upload(PHOTO, "image/jpeg")
    ack = await alice.send(chat, b"", media_ids=[info.media_id])
    assert await bob.download(info.media_id, chat, ack.seq, byte_range=(100, 200)) == PHOTO[100:200]
    urls = await bob.request("media_urls", get_media=pb.GetMedia(
        media_id=info.media_id, chat_id=chat, seq=ack.seq))
    for header, expected in (("bytes=-10", PHOTO[-10:]), (f"bytes={len(PHOTO) - 5}-", PHOTO[-5:])):
        got = bytearray()
        response = await http.get(urls.url, {"Range": header}, got.extend, 30)
        assert (response.status, bytes(got)) == (206, expected)
        assert response.headers["content-range"].endswith(f"/{len(PHOTO)}")


async def test_orphans_are_swept_and_referenced_media_stay(make_server, backend):
    server = await make_server(media__orphan_ttl=0.5, media__sweep_interval=0.1, **backend)
    chat, (alice, bob) = await chat_of(server, "alice", "bob")
    kept = await alice.upload(PHOTO, "image/jpeg")
    ack = await alice.send(chat, b"", media_ids=[kept.media_id])
    orphan = await alice.upload(os.urandom(5000), "image/jpeg")
    unfinished = await slot(alice, os.urandom(6000))
    orphan_url = (await alice.request("media_urls", get_media=pb.GetMedia(
        media_id=orphan.media_id))).url
    media = server.gateway.services.media
    await wait_for(lambda: media.stats.swept >= 2, message="both orphans swept")
    await refused(pb.NOT_FOUND, alice.download(orphan.media_id))
    await refused(pb.NOT_FOUND, complete(alice, unfinished.media_id))
    with pytest.raises(http.TransferError) as info:
        await http.get(orphan_url, {}, lambda piece: None, 30)
    assert info.value.status in (403, 404)  # S3 says 403 to a missing key without ListBucket
    assert await bob.download(kept.media_id, chat, ack.seq) == PHOTO
