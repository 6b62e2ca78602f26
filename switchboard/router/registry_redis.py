"""The Registry on Redis Cluster, through the project's own client (redis_client.py: one
pipelined connection per Redis node; docs/cluster.md says why not redis-py's).

Key layout (docs/cluster.md, "Registry: key layout, hash tags, TTLs"), `sb` being the prefix:

    sb:{u:<user>}:sessions        HASH device -> "node|epoch"; no TTL (liveness is per node)
    sb:{u:<user>}:last_seen       STRING epoch ms; PX last_seen_ttl (the store keeps it for good)
    sb:{u:<user>}:usage:<kind>    STRING counter of what the user spent (rate limits); PX usage ttl
    sb:{nodes}:lease:<node>       STRING "address|epoch"; PX lease ttl, extended by refresh_node
    sb:{nodes}:epoch:<node>       STRING counter, INCR per registration; no TTL
    sb:{nodes}:members            SET of node ids registered and not yet found dead

The `{u:<user>}` hash tag keeps a user's keys in one slot, so every session write is one
atomic script on one master and the HGETALLs of `sessions_many` travel together. The `{nodes}` tag keeps
the whole node table in one slot, so registration (INCR + lease + membership) is atomic and the
live-node view is one script call.

Every multi-step write is a Lua script (atomic on its master, safe to retry). Calls that fail
with connection, cluster-down or try-again errors are retried (the client follows MOVED/ASK and
reloads the slot map) until `deadline` seconds have passed; then RegistryUnavailable, counted
in `timeouts` (switchboard_cluster_registry_timeouts).
Failover detection: the lease scripts also return the cluster's `cluster_current_epoch`, which
every failover raises (the masters vote in the election, so the master answering learns it at
once); `refresh_node` answers False when it rose since this node's previous call, because the
promoted replica may lack writes the old master acknowledged. The baseline is kept per registry
object, so a node refreshes through the object it registered with (another one answers False).
"""
from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping, Sequence

from switchboard.core.metrics import Metric, counter

from .redis_client import ClusterClient, ReplyError, Script, Unavailable
from .registry import NodeInfo, Registry, RegistryUnavailable, SessionEntry, visible_sessions

COMMAND_TIMEOUT = 1.0
"""Per command: every command here is O(devices of a user) or O(nodes), so a second without an
answer means a dead or partitioned node, and the client should move on."""

_CLUSTER_EPOCH = "tonumber(string.match(redis.call('CLUSTER', 'INFO'), " \
                 "'cluster_current_epoch:(%d+)'))"

# KEYS: lease, epoch counter, members. ARGV: node id, address, ttl ms, lease key prefix.
# Prunes members whose lease is gone, so the set stays the size of the live cluster.
_REGISTER = Script(f"""
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. epoch, 'PX', ARGV[3])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if id ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. id) == 0 then
    redis.call('SREM', KEYS[3], id)
  end
end
redis.call('SADD', KEYS[3], ARGV[1])
return {{epoch, {_CLUSTER_EPOCH}}}
""")

# KEYS: lease. ARGV: epoch, ttl ms. Only the life that holds the lease may extend it.
_REFRESH = Script(f"""
local lease = redis.call('GET', KEYS[1])
local held = lease and string.match(lease, '|(%d+)$') == ARGV[1]
if held then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {{held and 1 or 0, {_CLUSTER_EPOCH}}}
""")

# KEYS: members. ARGV: lease key prefix. Returns id, lease, id, lease, ... of live nodes.
_LIVE = Script("""#!lua flags=no-writes
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local lease = redis.call('GET', ARGV[1] .. id)
  if lease then out[#out + 1] = id; out[#out + 1] = lease end
end
return out
""")

# KEYS: sessions. ARGV: device, "node|epoch". Returns the replaced entry or nil.
_PUT = Script("""
local previous = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return previous
""")

# KEYS: sessions. ARGV: device, node id. Deletes only an entry that names that node.
_DROP = Script("""
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and string.match(entry, '^(.*)|%d+$') == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
""")

# KEYS: last_seen. ARGV: ms, ttl ms. Keeps the larger value.
_LAST_SEEN = Script("""
local current = tonumber(redis.call('GET', KEYS[1]))
if current == nil or tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 0
""")

# KEYS: usage counter. ARGV: amount, ttl ms. Returns the new total.
_ADD_USAGE = Script("""
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return total
""")


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
    """`addresses` are host:port startup nodes (any subset of the cluster will do); `auth` is
    (username, password) of a Redis ACL user, (password,) for `requirepass`, or () for none;
    `tls` a client SSLContext (docs/cluster.md, "Securing the links")."""

    def __init__(self, addresses: Sequence[str], *, prefix: str = "sb", deadline: float = 10.0,
                 last_seen_ttl: float = 7 * 86400, auth: Sequence[str] = (),
                 tls: ssl.SSLContext | None = None) -> None:
        self.keys = Keys(prefix)
        self._deadline = deadline
        self._last_seen_ttl_ms = _ms(last_seen_ttl)
        self._client = ClusterClient(addresses, auth=auth, ssl=tls,
                                     command_timeout=COMMAND_TIMEOUT,
                                     connect_timeout=COMMAND_TIMEOUT)
        self._cluster_epochs: dict[str, int] = {}
        """node id -> the highest cluster epoch seen by its register/refresh calls."""
        self.timeouts = 0

    def _due(self) -> float:
        return asyncio.get_running_loop().time() + self._deadline

    async def _answer(self, what: str, call) -> object:
        """A call's reply; RegistryUnavailable (counted) when it has none by the deadline or
        Redis refused it."""
        try:
            return await call
        except Unavailable as exc:
            self.timeouts += 1
            raise RegistryUnavailable(
                f"{what}: no answer from Redis Cluster within {self._deadline}s ({exc})") from None
        except ReplyError as exc:
            raise RegistryUnavailable(f"{what}: Redis Cluster refused it: {exc}") from None

    async def _script(self, what: str, script: Script, keys: Sequence[str],
                      args: Sequence[object], deadline: float | None = None) -> object:
        return await self._answer(what, self._client.script(
            script, keys, args, deadline=deadline or self._due()))

    # ------------------------------------------------------------------ node membership
    async def register_node(self, node_id: str, address: str, ttl: float) -> int:
        keys = self.keys
        epoch, cluster_epoch = await self._script(
            "register_node", _REGISTER, [keys.lease(node_id), keys.epoch(node_id), keys.members],
            [node_id, address, _ms(ttl), keys.lease_prefix])
        self._cluster_epochs[node_id] = max(cluster_epoch, self._cluster_epochs.get(node_id, 0))
        return int(epoch)

    async def refresh_node(self, node_id: str, epoch: int, ttl: float) -> bool:
        held, cluster_epoch = await self._script(
            "refresh_node", _REFRESH, [self.keys.lease(node_id)], [epoch, _ms(ttl)])
        seen = self._cluster_epochs.get(node_id)
        self._cluster_epochs[node_id] = max(cluster_epoch, seen or 0)
        return bool(held) and seen is not None and cluster_epoch <= seen

    async def nodes(self) -> dict[str, NodeInfo]:
        return await self._live("nodes", self._due())

    async def _live(self, what: str, deadline: float) -> dict[str, NodeInfo]:
        flat = await self._script(what, _LIVE, [self.keys.members], [self.keys.lease_prefix],
                                  deadline)
        live = {}
        for node_id, lease in zip(flat[::2], flat[1::2]):
            address, _, epoch = lease.rpartition("|")
            live[node_id] = NodeInfo(address, int(epoch))
        return live

    # ------------------------------------------------------------------ sessions
    async def put_session(self, user: str, device: str, node_id: str,
                          node_epoch: int) -> SessionEntry | None:
        previous = await self._script("put_session", _PUT, [self.keys.sessions(user)],
                                      [device, f"{node_id}|{node_epoch}"])
        return _entry(previous) if previous else None

    async def drop_session(self, user: str, device: str, node_id: str) -> bool:
        return bool(await self._script("drop_session", _DROP, [self.keys.sessions(user)],
                                       [device, node_id]))

    async def sessions(self, user: str) -> dict[str, SessionEntry]:
        return (await self.sessions_many([user]))[user]

    async def sessions_many(self, users: Iterable[str]) -> dict[str, dict[str, SessionEntry]]:
        wanted = list(dict.fromkeys(users))
        if not wanted:
            return {}
        # every HGETALL and the node table in flight at once: one round trip deep
        deadline = self._due()
        live, hashes = await asyncio.gather(self._live("sessions", deadline),
                                            self._hashes(wanted, deadline))
        return {user: visible_sessions(raw, live) for user, raw in zip(wanted, hashes)}

    async def _hashes(self, users: list[str], deadline: float) -> list[dict[str, SessionEntry]]:
        client, keys = self._client, self.keys
        raw = await self._answer("sessions", asyncio.gather(*(
            client.call(keys.sessions(user), "HGETALL", keys.sessions(user), deadline=deadline)
            for user in users)))
        return [{device: _entry(value) for device, value in _pairs(flat)} for flat in raw]

    # ------------------------------------------------------------------ presence facts
    async def set_last_seen(self, user: str, ms: int) -> None:
        await self._script("set_last_seen", _LAST_SEEN, [self.keys.last_seen(user)],
                           [ms, self._last_seen_ttl_ms])

    async def last_seen(self, user: str) -> int | None:
        key = self.keys.last_seen(user)
        value = await self._answer("last_seen", self._client.call(key, "GET", key,
                                                                  deadline=self._due()))
        return int(value) if value is not None else None

    async def add_usage(self, usage: Mapping[tuple[str, str], int],
                        ttl: float) -> dict[tuple[str, str], int]:
        if not usage:
            return {}
        deadline = self._due()
        totals = await self._answer("add_usage", asyncio.gather(*(
            self._script("add_usage", _ADD_USAGE, [self.keys.usage(kind, user)],
                         [count, _ms(ttl)], deadline)
            for (kind, user), count in usage.items())))
        return {key: int(total) for key, total in zip(usage, totals)}

    def metrics(self) -> list[Metric]:
        return [
            counter("cluster_registry_timeouts",
                    "registry calls that got no answer from Redis within their deadline",
                    self.timeouts),
            counter("cluster_registry_retries",
                    "Redis commands tried again (failover, lost connection, redirection)",
                    self._client.retries),
            counter("cluster_registry_map_reloads", "Redis Cluster slot maps read",
                    self._client.map_reloads),
        ]

    async def close(self) -> None:
        await self._client.close()


def _entry(value: str) -> SessionEntry:
    node_id, _, epoch = value.rpartition("|")
    return SessionEntry(node_id, int(epoch))


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _pairs(flat: list) -> zip:
    """HGETALL's flat [field, value, field, value...] reply as pairs."""
    return zip(flat[::2], flat[1::2])
