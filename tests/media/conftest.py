"""Gateways with media on each backend: the local directory behind the server's own media port,
and S3 (the moto server of tests/support/s3.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(params=["local", "s3"])
def backend(request) -> dict:
    """[media] overrides of one backend (section__key), for make_server."""
    if request.param == "s3":
        return request.getfixturevalue("s3_media")
    return {"media__backend": "local"}


@pytest.fixture
async def media_server(make_server, backend):
    return await make_server(**backend)
