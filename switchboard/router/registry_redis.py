"""The Registry on Redis Cluster, through redis-py's asyncio `RedisCluster` (redis>=5).

Key layout (docs/cluster.md, "Registry: key layout, hash tags, TTLs"), `sb` being the prefix:

    sb:{u:<user>}:sessions        HASH device -> "node|epoch"; no TTL (liveness is per node)
    sb:{u:<user>}:last_seen       STRING epoch ms; PX last_seen_ttl (the store keeps it for good)
    sb:{u:<user>}:usage:<kind>    STRING counter of what the user spent (rate limits); PX usage ttl
    sb:{nodes}:lease:<node>       STRING "address|epoch"; PX lease ttl, extended by refresh_node
    sb:{nodes}:epoch:<node>       STRING counter, INCR per registration; no TTL
    sb:{nodes}:members            SET of node ids registered and not yet found dead

The `{u:<user>}` hash tag keeps a user's keys in one slot, so every session write is one
atomic script on one master and `sessions_many` batches per master. The `{nodes}` tag keeps
the whole node table in one slot, so registration (INCR + lease + membership) is atomic and the
live-node view is one script call.

Every multi-step write is a Lua script (atomic on its master, safe to retry). Calls that fail
with connection, cluster-down or try-again errors are retried (redis-py follows MOVED/ASK and
reloads the slot map itself) until `deadline` seconds have passed; then RegistryUnavailable.
Failover detection: the lease scripts also return the cluster's `cluster_current_epoch`, which
every failover raises (the masters vote in the election, so the master answering learns it at
once); `refresh_node` answers False when it rose since this node's previous call, because the
promoted replica may lack writes the old master acknowledged. The baseline is kept per registry
object, so a node refreshes through the object it registered with (another one answers False).
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (ClusterDownError, ClusterError, RedisClusterException,
                              TryAgainError)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .registry import NodeInfo, Registry, RegistryUnavailable, SessionEntry, visible_sessions

T = TypeVar("T")

_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ClusterDownError, ClusterError,
              TryAgainError, RedisClusterException)
"""What a failover or a restarting node looks like from the client: worth another try.
RedisClusterException also covers "no reachable startup node" while nodes restart; its other
cause, cross-slot commands, cannot happen with this key layout."""

_SOCKET_TIMEOUT = 1.0
"""Per command: every command here is O(devices of a user) or O(nodes), so a second without an
answer means a dead or partitioned node, and the retry loop should move on."""

_CLUSTER_EPOCH = "tonumber(string.match(redis.call('CLUSTER', 'INFO'), " \
                 "'cluster_current_epoch:(%d+)'))"

# KEYS: lease, epoch counter, members. ARGV: node id, address, ttl ms, lease key prefix.
# Prunes members whose lease is gone, so the set stays the size of the live cluster.
_REGISTER = f"""
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. epoch, 'PX', ARGV[3])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if id ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. id) == 0 then
    redis.call('SREM', KEYS[3], id)
  end
end
redis.call('SADD', KEYS[3], ARGV[1])
return {{epoch, {_CLUSTER_EPOCH}}}
"""

# KEYS: lease. ARGV: epoch, ttl ms. Only the life that holds the lease may extend it.
_REFRESH = f"""
local lease = redis.call('GET', KEYS[1])
local held = lease and string.match(lease, '|(%d+)$') == ARGV[1]
if held then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {{held and 1 or 0, {_CLUSTER_EPOCH}}}
"""

# KEYS: members. ARGV: lease key prefix. Returns id, lease, id, lease, ... of live nodes.
_LIVE = """#!lua flags=no-writes
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local lease = redis.call('GET', ARGV[1] .. id)
  if lease then out[#out + 1] = id; out[#out + 1] = lease end
end
return out
"""

# KEYS: sessions. ARGV: device, "node|epoch". Returns the replaced entry or nil.
_PUT = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return previous
"""

# KEYS: sessions. ARGV: device, node id. Deletes only an entry that names that node.
_DROP = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and string.match(entry, '^(.*)|%d+$') == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS: last_seen. ARGV: ms, ttl ms. Keeps the larger value.
_LAST_SEEN = """
local current = tonumber(redis.call('GET', KEYS[1]))
if current == nil or tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 0
"""


class Keys:
    """The key names for one prefix; the layout is in the module docstring."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.members = f"{prefix}:{{nodes}}:members"
        self.lease_prefix = f"{prefix}:{{nodes}}:lease:"

    def sessions(self, user: str) -> str:
        return f"{self.prefix}:{{u:{user}}}:sessions"

    def last_seen(self, user: str) -> str:
        return f"{self.prefix}:{{u:{user}}}:last_seen"

    def usage(self, kind: str, user: str) -> str:
        return f"{self.prefix}:{{u:{user}}}:usage:{kind}"

    def lease(self, node_id: str) -> str:
        return self.lease_prefix + node_id

    def epoch(self, node_id: str) -> str:
        return f"{self.prefix}:{{nodes}}:epoch:{node_id}"


class RedisClusterRegistry(Registry):
    """`addresses` are host:port startup nodes (any subset of the cluster will do)."""

    def __init__(self, addresses: Sequence[str], *, prefix: str = "sb", deadline: float = 10.0,
                 last_seen_ttl: float = 7 * 86400) -> None:
        self.keys = Keys(prefix)
        self._deadline = deadline
        self._last_seen_ttl_ms = _ms(last_seen_ttl)
        self._client = RedisCluster(
            startup_nodes=[ClusterNode(host, int(port))
                           for host, _, port in (a.rpartition(":") for a in addresses)],
            decode_responses=True, require_full_coverage=False,
            socket_timeout=_SOCKET_TIMEOUT, socket_connect_timeout=_SOCKET_TIMEOUT)
        script = self._client.register_script
        self._register, self._refresh, self._live_script = \
            script(_REGISTER), script(_REFRESH), script(_LIVE)
        self._put, self._drop, self._set_last_seen = \
            script(_PUT), script(_DROP), script(_LAST_SEEN)
        self._cluster_epochs: dict[str, int] = {}
        """node id -> the highest cluster epoch seen by its register/refresh calls."""

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` until it succeeds, a non-transient error, or the deadline."""
        pause = 0.05
        try:
            async with asyncio.timeout(self._deadline):
                while True:
                    try:
                        return await call()
                    except _TRANSIENT:
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, 0.5)
                    except (AttributeError, RuntimeError) as exc:
                        if not _torn_connection(exc):
                            raise
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, 0.5)
        except TimeoutError as exc:
            raise RegistryUnavailable(
                f"{what}: no answer from Redis Cluster within {self._deadline}s") from exc

    # ------------------------------------------------------------------ node membership
    async def register_node(self, node_id: str, address: str, ttl: float) -> int:
        keys = self.keys
        epoch, cluster_epoch = await self._retrying("register_node", lambda: self._register(
            keys=[keys.lease(node_id), keys.epoch(node_id), keys.members],
            args=[node_id, address, _ms(ttl), keys.lease_prefix]))
        self._cluster_epochs[node_id] = max(cluster_epoch, self._cluster_epochs.get(node_id, 0))
        return int(epoch)

    async def refresh_node(self, node_id: str, epoch: int, ttl: float) -> bool:
        held, cluster_epoch = await self._retrying("refresh_node", lambda: self._refresh(
            keys=[self.keys.lease(node_id)], args=[epoch, _ms(ttl)]))
        seen = self._cluster_epochs.get(node_id)
        self._cluster_epochs[node_id] = max(cluster_epoch, seen or 0)
        return bool(held) and seen is not None and cluster_epoch <= seen

    async def nodes(self) -> dict[str, NodeInfo]:
        return await self._retrying("nodes", self._live)

    async def _live(self) -> dict[str, NodeInfo]:
        flat = await self._live_script(keys=[self.keys.members], args=[self.keys.lease_prefix])
        live = {}
        for node_id, lease in zip(flat[::2], flat[1::2]):
            address, _, epoch = lease.rpartition("|")
            live[node_id] = NodeInfo(address, int(epoch))
        return live

    # ------------------------------------------------------------------ sessions
    async def put_session(self, user: str, device: str, node_id: str,
                          node_epoch: int) -> SessionEntry | None:
        previous = await self._retrying("put_session", lambda: self._put(
            keys=[self.keys.sessions(user)], args=[device, f"{node_id}|{node_epoch}"]))
        return _entry(previous) if previous else None

    async def drop_session(self, user: str, device: str, node_id: str) -> bool:
        return bool(await self._retrying("drop_session", lambda: self._drop(
            keys=[self.keys.sessions(user)], args=[device, node_id])))

    async def sessions(self, user: str) -> dict[str, SessionEntry]:
        return (await self.sessions_many([user]))[user]

    async def sessions_many(self, users: Iterable[str]) -> dict[str, dict[str, SessionEntry]]:
        wanted = list(dict.fromkeys(users))
        if not wanted:
            return {}

        async def read() -> tuple[list[dict[str, str]], dict[str, NodeInfo]]:
            # redis-py groups a cluster pipeline per master and sends the groups in parallel;
            # the node table is read alongside, so the whole call is one round trip deep.
            pipe = self._client.pipeline(transaction=False)
            for user in wanted:
                pipe.hgetall(self.keys.sessions(user))
            hashes, live = await asyncio.gather(pipe.execute(), self._live(),
                                                return_exceptions=True)
            for result in (hashes, live):
                if isinstance(result, BaseException):
                    raise result
            return hashes, live

        hashes, live = await self._retrying("sessions", read)
        return {user: visible_sessions({device: _entry(value) for device, value in raw.items()},
                                       live)
                for user, raw in zip(wanted, hashes)}

    # ------------------------------------------------------------------ presence facts
    async def set_last_seen(self, user: str, ms: int) -> None:
        await self._retrying("set_last_seen", lambda: self._set_last_seen(
            keys=[self.keys.last_seen(user)], args=[ms, self._last_seen_ttl_ms]))

    async def last_seen(self, user: str) -> int | None:
        value = await self._retrying("last_seen",
                                     lambda: self._client.get(self.keys.last_seen(user)))
        return int(value) if value is not None else None

    async def add_usage(self, usage: Mapping[tuple[str, str], int],
                        ttl: float) -> dict[tuple[str, str], int]:
        keys = list(usage)
        if not keys:
            return {}

        async def add() -> list:
            pipe = self._client.pipeline(transaction=False)
            for kind, user in keys:
                key = self.keys.usage(kind, user)
                pipe.incrby(key, usage[(kind, user)])
                pipe.pexpire(key, _ms(ttl))
            return await pipe.execute()

        results = await self._retrying("add_usage", add)
        return {key: int(total) for key, total in zip(keys, results[::2])}

    async def close(self) -> None:
        await self._client.aclose()


def _entry(value: str) -> SessionEntry:
    node_id, _, epoch = value.rpartition("|")
    return SessionEntry(node_id, int(epoch))


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _torn_connection(exc: BaseException) -> bool:
    """redis-py's asyncio cluster client, when a failover tears a connection down under a
    command in flight, can fail with AttributeError ('NoneType' object has no attribute
    'writelines') or RuntimeError (operation on a closed transport) instead of a
    ConnectionError (the innermost frame may be asyncio's stream writer). Those are retried like
    one; the same errors raised outside redis-py are bugs and propagate."""
    tb = exc.__traceback__
    while tb is not None:
        if f"{os.sep}redis{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False
