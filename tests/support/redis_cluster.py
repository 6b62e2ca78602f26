"""Real Redis Clusters for tests, started by the harness in a tmp dir and always torn down.

The logic lives in switchboard/tools/devcluster.py (the dev tool starts the same clusters); this
module only adapts it to pytest. Import the fixtures into a conftest.py to use them there.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from switchboard.tools.devcluster import RedisCluster
from tests.support.services import unavailable


@contextmanager
def running_cluster(directory: Path, masters: int = 3, replicas: int = 0) -> Iterator[RedisCluster]:
    """A started cluster for the block; skips the test when redis-server is not installed (or
    fails it where services are required: tests/support/services.py). Any other start failure,
    a missing redis-cli included, is an error."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    cluster = RedisCluster(directory, masters, replicas).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[RedisCluster]:
    """3 masters, no replicas, shared by the whole session: tests keep apart by key prefix."""
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_with_replicas(tmp_path_factory) -> Iterator[RedisCluster]:
    """3 masters with one replica each, new for every test that asks: failover tests kill
    masters, so nothing is shared."""
    with running_cluster(tmp_path_factory.mktemp("redis-ha"), replicas=1) as cluster:
        yield cluster
