"""A small asyncio Redis Cluster client: what the registry needs, and nothing it does not
(docs/cluster.md, "Client").

Why not redis-py's `RedisCluster` (which the registry used before): under load its pool per
node refuses the 101st concurrent command at once (MaxConnectionsError, `max_connections` =
100); the retry loop around it then competed with new callers for freed connections, and with
Redis healthy some calls starved for their whole deadline. A caller that stopped waiting
(a deadline) tore its connection down, so the next commands paid a reconnect. And a session
lookup cost about 0.7 ms of CPU in the gateway (a Task per command for wait_for, routing
policies, pool bookkeeping), which on a busy host is latency for every message.

How this one works:

* One connection per Redis node, commands pipelined on it: any number in flight, replies
  matched in order (RESP answers in order on a connection), everything queued during one
  event-loop turn leaves in one write. A caller that stops waiting leaves its reply to be read
  and dropped: the connection stays in step, and waiting callers keep their place (FIFO).
* Routing by slot (CRC16 of the key, or of its {hash tag}, mod 16384) on a slot map read with
  CLUSTER SLOTS. MOVED points the slot at the named node and reloads the map; ASK sends ASKING
  and the command to the named node. A lost connection, a command unanswered for
  `command_timeout` (a dead or partitioned node), CLUSTERDOWN, TRYAGAIN, MASTERDOWN, LOADING
  and READONLY reload the map (at most one reload at a time) and retry with backoff (50 ms
  doubling to 500 ms) until the caller's deadline: during a failover the calls wait, and go to
  the promoted replica as soon as any node's CLUSTER SLOTS names it.
* ACL credentials (AUTH username password, or a password alone) on every new connection, TLS
  when given an SSLContext. A refused AUTH fails the calls at once (CredentialsRefused): waiting
  will not fix a wrong password.

`ReplyProtocol` is the part without I/O decisions: bytes in, replies out in order.
"""
from __future__ import annotations

import asyncio
import binascii
import hashlib
import logging
import random
import ssl as ssl_module
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis

from switchboard.core.tasks import TaskGroup

log = logging.getLogger(__name__)

SLOTS = 16384
BACKOFF_MIN = 0.05
BACKOFF_MAX = 0.5
REFRESH_MIN_INTERVAL = 0.1  # s between two reloads of the slot map
RETRYABLE_REPLIES = frozenset({"CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING", "READONLY"})
REFUSED_REPLIES = ("NOAUTH", "WRONGPASS", "NOPERM")  # credentials or rights: waiting won't help


class Unavailable(Exception):
    """No answer yet (connection lost or refused, a reply overdue, the cluster reconfiguring):
    worth another try."""


class ReplyError(Exception):
    """Redis answered with an error that a retry will not change (a script error, WRONGTYPE)."""


class CredentialsRefused(ReplyError):
    """AUTH was refused (the username or password is wrong, the user is disabled), or the user
    may not run what the client needs (NOPERM)."""


def key_slot(key: str | bytes) -> int:
    """Redis Cluster's slot of a key: CRC16 (XMODEM) of the key, or of the part between its
    first "{" and the next "}" when that part is not empty, mod 16384."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return binascii.crc_hqx(data, 0) % SLOTS


class Script:
    """A Lua script called by its SHA1 (EVALSHA), sent in full (EVAL) when the node answers
    NOSCRIPT (a promoted replica, a restarted node)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


class ReplyProtocol:
    """Splits a connection's bytes into replies, in order. No I/O: tests feed it bytes cut
    anywhere. Error replies come out as hiredis.ReplyError values, not raised."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")

    def feed(self, data: bytes) -> list[Any]:
        """The replies completed by `data`. Raises hiredis.ProtocolError on bytes that are not
        RESP."""
        self._reader.feed(data)
        replies = []
        while (reply := self._reader.gets()) is not False:
            replies.append(reply)
        return replies


class _Link(asyncio.Protocol):
    """One connection to one node. Commands queued before the connection is up leave when it
    is; AUTH, when configured, goes first. Fails every command it holds with Unavailable when
    the connection is lost, cannot be made, or leaves a reply overdue."""

    def __init__(self, client: ClusterClient, address: str) -> None:
        self.address = address
        self.closed = False
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._replies = ReplyProtocol()
        self._pending: deque[tuple[asyncio.Future, float]] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._watch: asyncio.TimerHandle | None = None
        self._watch_due = 0.0
        self._connecting = client._tasks.spawn(self._connect())
        if client._auth:
            self.send(("AUTH", *client._auth)).add_done_callback(self._authenticated)

    def send(self, args: Sequence[Any]) -> asyncio.Future:
        future = self._loop.create_future()
        if self.closed:
            future.set_exception(Unavailable(f"connection to {self.address} closed"))
            return future
        self._pending.append((future, self._loop.time()))
        self._out.append(hiredis.pack_command(tuple(args)))
        if self._transport is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._watch is None:
            self._arm()
        return future

    def close(self, why: str, error: Exception | None = None) -> None:
        """Fail every command held with `error` (default: Unavailable naming `why`)."""
        if self.closed:
            return
        self.closed = True
        if self._connecting is not asyncio.current_task():
            self._connecting.cancel()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        self._client._link_closed(self)
        pending, self._pending = self._pending, deque()
        self._out.clear()
        error = error or Unavailable(f"{self.address}: {why}")
        for future, _ in pending:
            if not future.done():
                future.set_exception(error)

    # ------------------------------------------------------------------ I/O
    async def _connect(self) -> None:
        host, _, port = self.address.rpartition(":")
        client = self._client
        try:
            async with asyncio.timeout(client._connect_timeout):
                await self._loop.create_connection(
                    lambda: self, host, int(port), ssl=client._ssl,
                    server_hostname=host if client._ssl is not None else None)
        except asyncio.CancelledError:
            self.close("closed while connecting")
            raise
        except (OSError, ssl_module.SSLError, TimeoutError) as exc:
            self.close(f"cannot connect: {exc!r}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.closed:
            transport.abort()
            return
        self._transport = transport  # type: ignore[assignment]
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._replies.feed(data)
        except hiredis.ProtocolError as exc:
            self.close(f"not a Redis reply: {exc}")
            return
        pending = self._pending
        for reply in replies:
            if not pending:
                self.close("a reply nobody asked for")
                return
            future, _ = pending.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.close(f"connection lost: {exc!r}" if exc else "connection closed by Redis")

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None:
            out, self._out = self._out, []
            self._transport.writelines(out)

    def _authenticated(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        if isinstance(future.result(), hiredis.ReplyError):
            self.close("AUTH refused", CredentialsRefused(
                f"Redis at {self.address} refused the credentials: {future.result()}"))

    # ------------------------------------------------------------------ overdue replies
    def _arm(self) -> None:
        every = self._client._command_timeout / 2
        self._watch_due = self._loop.time() + every
        self._watch = self._loop.call_later(every, self._check)

    def _check(self) -> None:
        """Drop the connection when its oldest command waited past command_timeout. A check
        that runs a whole period late means this process was not running (a pause, a starved
        CPU): the replies may be unread in the socket, so that check judges nothing."""
        self._watch = None
        if not self._pending or self.closed:
            return
        now = self._loop.time()
        timeout = self._client._command_timeout
        on_time = now - self._watch_due < timeout / 2
        if on_time and now - self._pending[0][1] > timeout:
            self.close(f"no reply within {timeout}s")
            return
        self._arm()


class ClusterClient:
    """Commands to a Redis Cluster by key. `addresses` are host:port seed nodes (any subset of
    the cluster); `auth` is (username, password), (password,) or () for none; `ssl` turns TLS
    on. Every call takes a deadline (event-loop time) and raises Unavailable when it passed,
    ReplyError for an error reply, CredentialsRefused when AUTH was refused (at once: each
    call tries a new connection, so credentials fixed in Redis are picked up)."""

    def __init__(self, addresses: Sequence[str], *, auth: Sequence[str] = (),
                 ssl: ssl_module.SSLContext | None = None, command_timeout: float = 1.0,
                 connect_timeout: float = 1.0) -> None:
        if not addresses:
            raise ValueError("no Redis Cluster address")
        self._seeds = list(addresses)
        self._auth = tuple(auth)
        self._ssl = ssl
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._links: dict[str, _Link] = {}
        self._slots: list[str | None] = [None] * SLOTS
        self._refresh: asyncio.Task | None = None
        self._refreshed_at = float("-inf")
        self._refused: CredentialsRefused | None = None  # why the last map load got nothing
        self._tasks = TaskGroup()  # connects and slot-map reloads
        self._closed = False
        self.retries = 0
        self.map_reloads = 0

    # ------------------------------------------------------------------ API
    async def call(self, key: str, *args: Any, deadline: float) -> Any:
        """One command on the master serving `key`'s slot, retried until `deadline`."""
        return await self._call(key_slot(key), args, deadline)

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Any], *,
                     deadline: float) -> Any:
        """A Lua script whose keys share one slot (a hash tag)."""
        slot = key_slot(keys[0])
        try:
            return await self._call(slot, ("EVALSHA", script.sha, len(keys), *keys, *args),
                                    deadline)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._call(slot, ("EVAL", script.text, len(keys), *keys, *args), deadline)

    async def close(self) -> None:
        self._closed = True
        for link in list(self._links.values()):
            link.close("client closed")
        await self._tasks.cancel()

    # ------------------------------------------------------------------ routing and retries
    async def _call(self, slot: int, args: tuple, deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        pause = BACKOFF_MIN
        asking: str | None = None
        why = "no attempt made"
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    if self._closed:
                        raise Unavailable("client closed")
                    if asking is None and self._slots[slot] is None:
                        await asyncio.shield(self._reload_soon(loop))
                        if self._slots[slot] is None and self._refused is not None:
                            raise self._refused
                    address = asking or self._slots[slot]
                    try:
                        if address is None:
                            raise Unavailable(f"no node serves slot {slot}")
                        link = self._link(address)
                        if asking:
                            link.send(("ASKING",)).add_done_callback(_ignore)
                            asking = None
                        reply = await link.send(args)
                    except Unavailable as exc:
                        why = str(exc)
                    else:
                        if not isinstance(reply, hiredis.ReplyError):
                            return reply
                        kind, _, rest = str(reply).partition(" ")
                        if kind == "MOVED":
                            self._slots[slot] = rest.split()[1]
                            self._reload_soon(loop)
                            continue
                        if kind == "ASK":
                            asking = rest.split()[1]
                            continue
                        if kind not in RETRYABLE_REPLIES:
                            raise ReplyError(str(reply))
                        why = f"{address}: {reply}"
                    self.retries += 1
                    self._reload_soon(loop)
                    await asyncio.sleep(pause * random.uniform(0.5, 1.0))
                    pause = min(pause * 2, BACKOFF_MAX)
        except TimeoutError:
            raise Unavailable(f"no answer before the deadline (last: {why})") from None

    def _link(self, address: str) -> _Link:
        link = self._links.get(address)
        if link is None or link.closed:
            link = self._links[address] = _Link(self, address)
        return link

    def _link_closed(self, link: _Link) -> None:
        if self._links.get(link.address) is link:
            del self._links[link.address]

    def _reload_soon(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task:
        """Start reloading the slot map unless a reload runs or ran within
        REFRESH_MIN_INTERVAL."""
        if self._refresh is None or self._refresh.done():
            wait = max(0.0, self._refreshed_at + REFRESH_MIN_INTERVAL - loop.time())
            self._refresh = self._tasks.spawn(self._load_map(wait))
        return self._refresh

    async def _load_map(self, wait: float) -> None:
        if wait:
            await asyncio.sleep(wait)
        loop = asyncio.get_running_loop()
        known = list(dict.fromkeys(a for a in self._slots if a is not None))
        candidates = known + [a for a in self._seeds if a not in known]
        random.shuffle(candidates)
        for address in candidates:
            try:
                async with asyncio.timeout(self._command_timeout):
                    reply = await self._link(address).send(("CLUSTER", "SLOTS"))
            except CredentialsRefused as exc:
                self._refused = exc
                continue
            except (Unavailable, TimeoutError):
                continue
            if isinstance(reply, hiredis.ReplyError):
                if str(reply).startswith(REFUSED_REPLIES):
                    self._refused = CredentialsRefused(f"Redis at {address} refused the slot "
                                                       f"map: {reply}")
                continue
            if not reply:
                continue
            slots: list[str | None] = [None] * SLOTS
            asked_host = address.rpartition(":")[0]
            for start, end, master, *_ in reply:
                host = master[0] if master[0] not in ("", "?") else asked_host
                slots[start:end + 1] = [f"{host}:{master[1]}"] * (end - start + 1)
            self._slots = slots
            self._refused = None
            self.map_reloads += 1
            break
        self._refreshed_at = loop.time()


def _ignore(future: asyncio.Future) -> None:
    """The reply nobody needs (ASKING's): retrieve it so asyncio does not warn."""
    if not future.cancelled():
        future.exception()
