"""The Registry contract (switchboard/router/registry.py), run against every implementation.

Each test gets a fresh backing: a MemoryRegistry on a fake clock, or a key prefix of its own on
the session's real Redis Cluster (3 masters on loopback, started once). `backing.open()` gives
another registry on the same state, the way a second gateway process sees it; `backing.elapse`
lets lease time pass (the fake clock moves; on Redis real time goes by, so leases there are
short). The Redis-only tests at the end check the key layout and survive a master's failover.
"""
from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from switchboard.router.registry import NodeInfo, Registry, RegistryUnavailable, SessionEntry
from switchboard.router.registry_memory import MemoryRegistry
from switchboard.router.registry_redis import Keys, RedisClusterRegistry
from switchboard.tools.devcluster import free_port
from tests.support.waiting import wait_for

LONG = 60.0   # a lease that does not lapse during a test
SHORT = 0.4   # a lease a test lets lapse (real seconds on Redis)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryBacking:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.registry = MemoryRegistry(self.clock)

    async def open(self) -> Registry:
        return self.registry

    async def elapse(self, seconds: float) -> None:
        self.clock.now += seconds

    async def close(self) -> None:
        await self.registry.close()


class RedisBacking:
    def __init__(self, addresses: list[str], deadline: float = 5.0) -> None:
        self.addresses = addresses
        self.deadline = deadline
        self.prefix = f"t{uuid.uuid4().hex[:12]}"
        self.opened: list[RedisClusterRegistry] = []

    async def open(self) -> Registry:
        registry = RedisClusterRegistry(self.addresses, prefix=self.prefix,
                                        deadline=self.deadline)
        self.opened.append(registry)
        return registry

    async def elapse(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def close(self) -> None:
        for registry in self.opened:
            await registry.close()


@pytest.fixture(params=["memory", "redis"])
async def backing(request):
    if request.param == "memory":
        opened = MemoryBacking()
    else:
        opened = RedisBacking(request.getfixturevalue("redis_cluster").addresses)
    yield opened
    await opened.close()


@pytest.fixture
async def registry(backing) -> Registry:
    return await backing.open()


def users_per_master(count: int) -> list[list[str]]:
    """`count` user names for each third of the slot space, the ranges `redis-cli --cluster
    create` gives 3 masters: users whose session keys live on different masters."""
    bounds = [(0, 5460), (5461, 10922), (10923, 16383)]
    found: list[list[str]] = [[] for _ in bounds]
    for i in itertools.count():
        user = f"user-{i}"
        slot = key_slot(Keys("x").sessions(user).encode())
        third = next(n for n, (low, high) in enumerate(bounds) if low <= slot <= high)
        if len(found[third]) < count:
            found[third].append(user)
        if all(len(users) == count for users in found):
            return found


# ---------------------------------------------------------------------------- membership
async def test_registering_gives_each_life_a_higher_epoch(registry):
    first = await registry.register_node("n1", "10.0.0.1:7000", LONG)
    assert first >= 1
    other = await registry.register_node("n2", "10.0.0.2:7000", LONG)
    assert await registry.nodes() == {"n1": NodeInfo("10.0.0.1:7000", first),
                                      "n2": NodeInfo("10.0.0.2:7000", other)}
    again = await registry.register_node("n1", "10.0.0.9:7000", LONG)
    assert again > first
    assert (await registry.nodes())["n1"] == NodeInfo("10.0.0.9:7000", again)


async def test_refresh_extends_only_the_current_life(backing, registry):
    epoch = await registry.register_node("n1", "a:1", SHORT)
    for _ in range(3):
        await backing.elapse(SHORT * 0.6)
        assert await registry.refresh_node("n1", epoch, SHORT) is True
    assert "n1" in await registry.nodes()  # lived 1.8 leases, refreshed in time

    newer = await registry.register_node("n1", "a:2", SHORT)
    assert await registry.refresh_node("n1", epoch, LONG) is False  # a stale life is refused
    await backing.elapse(SHORT * 1.5)  # ... and did not extend the successor's lease
    assert await registry.nodes() == {}
    assert await registry.refresh_node("n1", newer, SHORT) is False  # lapsed: register anew


async def test_nodes_lists_only_live_leases(backing, registry):
    await registry.register_node("short", "a:1", SHORT)
    long_epoch = await registry.register_node("long", "a:2", LONG)
    await backing.elapse(SHORT * 1.5)
    assert await registry.nodes() == {"long": NodeInfo("a:2", long_epoch)}


# ---------------------------------------------------------------------------- sessions
async def test_sessions_show_what_was_put(backing, registry):
    epoch = await registry.register_node("n1", "a:1", LONG)
    assert await registry.put_session("alice", "phone", "n1", epoch) is None
    assert await registry.put_session("alice", "laptop", "n1", epoch) is None
    other = await backing.open()  # another gateway process sees the same
    assert await other.sessions("alice") == {"phone": SessionEntry("n1", epoch),
                                             "laptop": SessionEntry("n1", epoch)}
    assert await other.sessions("nobody") == {}


async def test_put_is_idempotent_and_returns_the_entry_it_replaced(registry):
    e1 = await registry.register_node("n1", "a:1", LONG)
    e2 = await registry.register_node("n2", "a:2", LONG)
    await registry.put_session("alice", "phone", "n1", e1)
    assert await registry.put_session("alice", "phone", "n1", e1) == SessionEntry("n1", e1)
    moved_from = await registry.put_session("alice", "phone", "n2", e2)
    assert moved_from == SessionEntry("n1", e1)
    assert await registry.sessions("alice") == {"phone": SessionEntry("n2", e2)}


async def test_drop_by_a_node_that_no_longer_owns_the_entry_does_nothing(registry):
    e1 = await registry.register_node("n1", "a:1", LONG)
    e2 = await registry.register_node("n2", "a:2", LONG)
    await registry.put_session("alice", "phone", "n1", e1)
    await registry.put_session("alice", "phone", "n2", e2)  # the device moved to n2
    assert await registry.drop_session("alice", "phone", "n1") is False  # n1's late disconnect
    assert await registry.sessions("alice") == {"phone": SessionEntry("n2", e2)}
    assert await registry.drop_session("alice", "phone", "n2") is True
    assert await registry.sessions("alice") == {}
    assert await registry.drop_session("alice", "phone", "n2") is False  # idempotent
    assert await registry.drop_session("nobody", "phone", "n2") is False


async def test_lease_expiry_hides_sessions_without_touching_them(backing, registry):
    dying = await registry.register_node("dying", "a:1", SHORT)
    alive = await registry.register_node("alive", "a:2", LONG)
    await registry.put_session("alice", "phone", "dying", dying)
    await registry.put_session("alice", "laptop", "alive", alive)
    await registry.put_session("bob", "phone", "dying", dying)
    assert len(await registry.sessions("alice")) == 2

    await backing.elapse(SHORT * 1.5)
    assert await registry.sessions("alice") == {"laptop": SessionEntry("alive", alive)}
    assert await registry.sessions_many(["alice", "bob"]) == {
        "alice": {"laptop": SessionEntry("alive", alive)}, "bob": {}}
    # The entry is still stored (hidden by the lease check, not removed or expired): the next
    # write to that device hands it back.
    assert await registry.put_session("bob", "phone", "alive", alive) == \
        SessionEntry("dying", dying)


async def test_a_new_life_hides_the_previous_lifes_sessions(registry):
    old = await registry.register_node("n1", "a:1", LONG)
    await registry.put_session("alice", "phone", "n1", old)
    await registry.put_session("alice", "laptop", "n1", old)
    new = await registry.register_node("n1", "a:1", LONG)  # restarted
    assert new > old
    assert await registry.sessions("alice") == {}
    await registry.put_session("alice", "phone", "n1", new)  # the device reconnected
    assert await registry.sessions("alice") == {"phone": SessionEntry("n1", new)}


async def test_entries_of_unknown_nodes_are_invisible(registry):
    await registry.register_node("n1", "a:1", LONG)
    await registry.put_session("alice", "phone", "never-registered", 1)
    assert await registry.sessions("alice") == {}


async def test_sessions_many_across_slots(registry):
    e1 = await registry.register_node("n1", "a:1", LONG)
    e2 = await registry.register_node("n2", "a:2", LONG)
    groups = users_per_master(3)
    everyone = [user for group in groups for user in group]
    expected = {}
    for i, user in enumerate(everyone):
        node, epoch = ("n1", e1) if i % 2 else ("n2", e2)
        await registry.put_session(user, "phone", node, epoch)
        await registry.put_session(user, "stale", node, epoch - 1)
        expected[user] = {"phone": SessionEntry(node, epoch)}
    expected["offline"] = {}
    asked = everyone + ["offline", everyone[0]]  # a repeated user is answered once
    assert await registry.sessions_many(asked) == expected
    assert await registry.sessions_many([]) == {}


# ---------------------------------------------------------------------------- presence facts
async def test_last_seen_keeps_the_latest(registry):
    assert await registry.last_seen("alice") is None
    await registry.set_last_seen("alice", 1_700_000_000_000)
    await registry.set_last_seen("alice", 1_699_999_999_000)  # a node with a slower clock
    assert await registry.last_seen("alice") == 1_700_000_000_000
    await registry.set_last_seen("alice", 1_700_000_000_500)
    assert await registry.last_seen("alice") == 1_700_000_000_500
    assert await registry.last_seen("bob") is None


async def test_usage_totals_add_up_across_nodes_and_lapse(backing):
    """Rate-limit consumption shared by two nodes: each call adds and returns running totals
    (0 reads), across users on different masters, and a total unused for its ttl starts over."""
    first, second = await backing.open(), await backing.open()
    users = [group[0] for group in users_per_master(1)]
    usage = {("send", user): 3 for user in users}
    assert await first.add_usage(usage, 30) == usage
    totals = await second.add_usage({("send", users[0]): 2, ("chat", users[0]): 1,
                                     ("send", users[1]): 0}, 30)
    assert totals == {("send", users[0]): 5, ("chat", users[0]): 1, ("send", users[1]): 3}
    assert await first.add_usage({}, 30) == {}
    await first.add_usage({("history", "carol"): 4}, 0.2)
    await backing.elapse(0.5)
    assert await second.add_usage({("history", "carol"): 1}, 30) == {("history", "carol"): 1}


# ---------------------------------------------------------------------------- Redis Cluster only
async def test_redis_key_layout_hash_tags_and_ttls(redis_cluster):
    """The layout docs/cluster.md promises: one slot per user, one slot for the node table,
    TTLs only on leases and last_seen."""
    backing = RedisBacking(redis_cluster.addresses)
    registry = await backing.open()
    keys = Keys(backing.prefix)
    raw = RedisCluster(startup_nodes=[ClusterNode(*a.rsplit(":", 1))
                                      for a in redis_cluster.addresses], decode_responses=True)
    try:
        epoch = await registry.register_node("n1", "a:1", 30)
        await registry.put_session("alice", "phone", "n1", epoch)
        await registry.set_last_seen("alice", 123)

        assert key_slot(keys.sessions("alice").encode()) == \
            key_slot(keys.last_seen("alice").encode())
        assert len({key_slot(k.encode()) for k in
                    (keys.members, keys.lease("n1"), keys.epoch("n1"), keys.lease("n2"))}) == 1

        assert await raw.hgetall(keys.sessions("alice")) == {"phone": f"n1|{epoch}"}
        assert await raw.get(keys.lease("n1")) == f"a:1|{epoch}"
        assert await raw.get(keys.epoch("n1")) == str(epoch)
        assert await raw.smembers(keys.members) == {"n1"}
        assert await raw.pttl(keys.sessions("alice")) == -1
        assert await raw.pttl(keys.epoch("n1")) == -1
        assert 29_000 < await raw.pttl(keys.lease("n1")) <= 30_000
        assert 6 * 86400_000 < await raw.pttl(keys.last_seen("alice")) <= 7 * 86400_000

        await registry.drop_session("alice", "phone", "n1")
        assert await raw.exists(keys.sessions("alice")) == 0  # an empty hash leaves no key
    finally:
        await raw.aclose()
        await backing.close()


async def test_redis_registration_prunes_dead_members(redis_cluster):
    backing = RedisBacking(redis_cluster.addresses)
    registry = await backing.open()
    raw = RedisCluster(startup_nodes=[ClusterNode(*a.rsplit(":", 1))
                                      for a in redis_cluster.addresses], decode_responses=True)
    try:
        await registry.register_node("gone", "a:1", SHORT)
        await registry.register_node("here", "a:2", LONG)
        await asyncio.sleep(SHORT * 1.5)
        await registry.register_node("new", "a:3", LONG)
        assert await raw.smembers(Keys(backing.prefix).members) == {"here", "new"}
    finally:
        await raw.aclose()
        await backing.close()


async def test_redis_unreachable_raises_unavailable_within_the_deadline():
    registry = RedisClusterRegistry([f"127.0.0.1:{free_port()}"], deadline=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(RegistryUnavailable):
            await registry.nodes()
    finally:
        await registry.close()
    assert time.monotonic() - started < 2.0
    assert registry.timeouts == 1


async def test_redis_failover_keeps_answering_and_reregistration_restores(
        redis_cluster_with_replicas):
    """F4: kill -9 the master holding the node table (the hardest case: leases and epoch
    counters fail over too). Calls made during the failover wait inside the registry and then
    succeed; `refresh_node` tells the node to register anew; its re-put sessions are visible."""
    cluster = redis_cluster_with_replicas
    backing = RedisBacking(cluster.addresses, deadline=15.0)
    registry = await backing.open()
    keys = Keys(backing.prefix)
    try:
        epoch = await registry.register_node("n1", "a:1", LONG)
        assert await registry.refresh_node("n1", epoch, LONG) is True
        groups = users_per_master(2)  # in slot order, as cluster.shards() is
        users = [user for group in groups for user in group]
        for user in users:
            await registry.put_session(user, "phone", "n1", epoch)

        table_slot = key_slot(keys.members.encode())
        victim = next(i for i, shard in enumerate(cluster.shards()) if shard.serves(table_slot))
        cluster.kill_master(victim)

        started = time.monotonic()
        on_victim = groups[victim][0]
        await registry.put_session(on_victim, "tablet", "n1", epoch)  # waits out the failover
        await registry.sessions_many(users)  # what it returns depends on what the failover kept
        assert time.monotonic() - started < backing.deadline

        await wait_for(lambda: _refused(registry, epoch), timeout=10,
                       message="refresh_node to ask for a new registration after the failover")
        new_epoch = await registry.register_node("n1", "a:1", LONG)
        assert new_epoch > epoch
        for user in users:
            await registry.put_session(user, "phone", "n1", new_epoch)
        assert await registry.sessions_many(users) == {
            user: {"phone": SessionEntry("n1", new_epoch)} for user in users}
        assert await registry.refresh_node("n1", new_epoch, LONG) is True
    finally:
        await backing.close()


async def _refused(registry: Registry, epoch: int) -> bool:
    return not await registry.refresh_node("n1", epoch, LONG)
