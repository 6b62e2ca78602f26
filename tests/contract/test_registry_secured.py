"""The registry against a Redis Cluster that wants credentials or TLS (docs/cluster.md,
"Securing the links"): an ACL user with the least rights the registry needs, a wrong password
and no password refused at once with a clear error, and a cluster that speaks only TLS."""
from __future__ import annotations

import shutil
import time
import uuid

import pytest

from switchboard.router.registry import RegistryUnavailable
from switchboard.router.registry_redis import RedisClusterRegistry
from switchboard.tools.devcluster import RedisCluster
from tests.support.pki import CertAuthority
from tests.support.services import unavailable

ADMIN = "admin-password-" + "x" * 20
PASSWORD = "registry-password-" + "y" * 20
#: What the registry needs: its keys, reads and writes, scripts (which read CLUSTER INFO), the
#: slot map; the same line goes in deploy/README.md
ACL = ("registry", "on", f">{PASSWORD}", "~sb:*", "+@read", "+@write", "+@scripting",
       "+cluster|info", "+cluster|slots", "+ping")


def _redis_or_skip() -> None:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")


@pytest.fixture(scope="module")
def acl_cluster(tmp_path_factory):
    _redis_or_skip()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-acl"), 3,
                           extra_args=("--requirepass", ADMIN, "--user", *ACL),
                           cli_args=("-a", ADMIN, "--no-auth-warning")).start()
    yield cluster
    cluster.stop()


async def _works(registry: RedisClusterRegistry) -> None:
    epoch = await registry.register_node("n1", "a:1", 30)
    await registry.put_session("alice", "phone", "n1", epoch)
    assert set(await registry.sessions("alice")) == {"phone"}
    assert await registry.refresh_node("n1", epoch, 30) is True


async def test_an_acl_user_with_the_least_rights_runs_the_registry(acl_cluster):
    registry = RedisClusterRegistry(acl_cluster.addresses, prefix=f"sb:{uuid.uuid4().hex[:8]}",
                                    auth=("registry", PASSWORD))
    try:
        await _works(registry)
    finally:
        await registry.close()


@pytest.mark.parametrize("auth", [("registry", "wrong-" + "z" * 30), ()],
                         ids=["wrong password", "no password"])
async def test_refused_credentials_fail_at_once_and_say_so(acl_cluster, auth):
    registry = RedisClusterRegistry(acl_cluster.addresses, auth=auth, deadline=10.0)
    started = time.monotonic()
    try:
        with pytest.raises(RegistryUnavailable, match="refused|NOAUTH|WRONGPASS") as caught:
            await registry.nodes()
    finally:
        await registry.close()
    assert time.monotonic() - started < 3.0, "a refused password is not worth the deadline"
    assert "WRONGPASS" in str(caught.value) or "NOAUTH" in str(caught.value)


async def test_the_registry_over_tls(tmp_path):
    _redis_or_skip()
    authority = CertAuthority(tmp_path / "pki")
    cert, key = authority.issue("redis")
    cluster = RedisCluster(tmp_path / "redis", 3,
                           tls=(str(cert), str(key), str(authority.ca))).start()
    try:
        import ssl
        context = ssl.create_default_context(cafile=str(authority.ca))
        client_cert, client_key = authority.issue("gateway")
        context.load_cert_chain(str(client_cert), str(client_key))
        registry = RedisClusterRegistry(cluster.addresses, tls=context)
        try:
            await _works(registry)
        finally:
            await registry.close()
        plain = RedisClusterRegistry(cluster.addresses, deadline=1.0)
        try:
            with pytest.raises(RegistryUnavailable):
                await plain.nodes()
        finally:
            await plain.close()
    finally:
        cluster.stop()
