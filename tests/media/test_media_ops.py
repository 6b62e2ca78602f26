"""Media for the operator: the [media] settings refused with the key named, the S3 backend's
start checks and presigned URLs, and the numbers at /metrics."""
from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from switchboard.config import ConfigError, load
from switchboard.proto.v1 import client_pb2 as pb
from tests.ops.test_metrics import scrape, value
from tests.support.clients import connect
from tests.support.s3 import s3_client
from tests.support.server import InProcessServer, fast_config

from .test_media_flow import refused, slot


@pytest.mark.parametrize("values, message", [
    ({"media.backend": "ftp"}, "media.backend: 'ftp' is not one of local, s3"),
    ({"media.backend": "s3"}, "media.s3_bucket: required"),
    ({"media.backend": "s3", "media.s3_bucket": "b", "media.part_bytes": 1 << 20},
     "media.part_bytes: value 1048576 out of range"),
    ({"media.types": "image/*, Video/MP4"}, "media.types"),
    ({"media.public_url": "media.example.com"}, "media.public_url"),
    ({"media.url_ttl": 8 * 86400}, "media.url_ttl"),
    ({"media.max_thumbnail_bytes": 0}, "media.max_thumbnail_bytes"),
    ({"media.backend": "s3", "media.s3_bucket": "b", "media.s3_access_key": "k"},
     "media.s3_access_key and media.s3_secret_key"),
])
def test_media_settings_are_checked_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(None, values, environ={})


def test_media_settings_from_the_environment():
    config = load(None, {}, environ={"SWITCHBOARD_MEDIA_BACKEND": "s3",
                                     "SWITCHBOARD_MEDIA_S3_BUCKET": "photos",
                                     "SWITCHBOARD_MEDIA_URL_TTL": "60"})
    assert (config.media.backend, config.media.s3_bucket, config.media.url_ttl) == \
        ("s3", "photos", 60)


async def test_a_missing_bucket_stops_the_start_naming_it(tmp_path, s3_media):
    server = InProcessServer(fast_config(tmp_path, **dict(s3_media,
                                                          media__s3_create_bucket=False)))
    try:
        with pytest.raises(ConfigError, match="media.s3_bucket: bucket 'media-"):
            await server.start()
    finally:
        await server.stop()


async def test_presigned_urls_expire_and_a_single_put_signs_its_checksum(make_server, s3_media,
                                                                          s3_endpoint):
    server = await make_server(media__url_ttl=120, media__s3_prefix="photos/", **s3_media)
    alice = await connect(server, "alice")
    data = b"p" * 1000
    upload = await slot(alice, data)
    [part] = upload.parts
    query = parse_qs(urlsplit(part.url).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert "x-amz-checksum-sha256" in query["X-Amz-SignedHeaders"][0].split(";")
    assert part.headers["x-amz-checksum-sha256"] == \
        base64.b64encode(hashlib.sha256(data).digest()).decode()
    info = await alice.upload(data, "image/jpeg")
    # the object is where the prefix says, with its type
    head = s3_client(s3_endpoint).head_object(Bucket=s3_media["media__s3_bucket"],
                                              Key=f"photos/{info.media_id}")
    assert (head["ContentLength"], head["ContentType"]) == (1000, "image/jpeg")
    urls = await alice.request("media_urls", get_media=pb.GetMedia(media_id=info.media_id))
    assert parse_qs(urlsplit(urls.url).query)["X-Amz-Expires"] == ["120"]


async def test_media_numbers_at_metrics(server):
    port = server.gateway.status.port
    alice = await connect(server, "alice")
    chat = (await alice.create_direct("bob")).chat_id
    info = await alice.upload(b"m" * 5000, "image/jpeg")
    await alice.send(chat, b"", media_ids=[info.media_id])
    await alice.download(info.media_id)
    await refused(pb.MEDIA_TYPE_REFUSED, alice.upload(b"x", "application/x-sh"))
    await refused(pb.MEDIA_INCOMPLETE, alice.send(chat, b"", media_ids=[
        (await slot(alice, b"never")).media_id]))
    samples = await scrape(port)
    assert value(samples, "switchboard_media_uploads_completed_total") == 1
    assert value(samples, "switchboard_media_uploaded_bytes_total") == 5000
    assert value(samples, "switchboard_media_download_urls_total") == 1
    assert value(samples, "switchboard_media_references_total") == 1
    assert value(samples, "switchboard_media_refusals_total", reason="type") == 1
    assert value(samples, "switchboard_media_refusals_total", reason="incomplete") == 1
    assert value(samples, "switchboard_media_refusals_total", reason="not_member") == 0
    assert value(samples, "switchboard_media_http_bytes_total", direction="in") == 5000
    assert value(samples, "switchboard_media_http_bytes_total", direction="out") >= 5000
