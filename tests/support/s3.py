"""A real S3 API server for the media tests: moto's standalone server (werkzeug, threaded) on
127.0.0.1, started once per session by `s3_endpoint`. Each test takes a bucket of its own
(`s3_media`: the [media] overrides of a gateway on it). A plugin of tests/conftest.py.

moto speaks the S3 REST API over real HTTP (presigned URLs, multipart, ranges) but checks
neither signatures nor checksums: what a real S3 would refuse for those is tested against the
local backend, whose server is ours."""
from __future__ import annotations

import uuid

import pytest

from tests.support.services import unavailable

ACCESS_KEY = "test-access"
SECRET_KEY = "test-secret"


@pytest.fixture(scope="session")
def s3_endpoint():
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        unavailable("moto (pip install 'moto[server]') is needed for the S3 media tests")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_media(s3_endpoint) -> dict:
    """Config overrides (section__key) for a gateway keeping its media in a fresh bucket."""
    return {"media__backend": "s3", "media__s3_endpoint": s3_endpoint,
            "media__s3_bucket": f"media-{uuid.uuid4().hex[:16]}", "media__s3_addressing": "path",
            "media__s3_access_key": ACCESS_KEY, "media__s3_secret_key": SECRET_KEY,
            "media__s3_create_bucket": True}


def s3_client(endpoint: str):
    """A boto3 client of the test server, to look at buckets from the outside."""
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
