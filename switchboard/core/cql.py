"""CQL from asyncio: a scylla-driver Session the ScyllaDB store drives without ever blocking the
event loop.

    session = await connect(CqlSettings(hosts=("10.0.0.1", "10.0.0.2"), keyspace="switchboard"))
    await session.execute("INSERT INTO messages (chat_id, bucket, seq, body) VALUES (?, ?, ?, ?)",
                          (chat_id, bucket, seq, body), idempotent=True)
    result = await session.batch([("UPDATE heads SET head = ? WHERE chat_id = ? IF head = ?", ...),
                                  ("INSERT INTO messages ...", ...)])
    if not result.applied: ...              # a conditional batch lost: result.rows[0] is the row now
    async for rows in session.pages("SELECT ... WHERE chat_id = ?", (chat_id,), page_size=500): ...
    await session.close()

How the bridge works. The driver does its I/O on a reactor thread of its own, and completes a
request's ResponseFuture there (schema changes and some errors: on its executor threads).
Sending is CPU work as well: `Session.execute_async` plans the route, encodes the request and
queues it for the reactor, some 150 us of Python per call. So `execute` does only the cheap part
on the loop (the statement prepared once, then bound), hands the request to the session's sender
thread through a SimpleQueue and awaits an asyncio future. The sender calls `execute_async` and
attaches callbacks that append the outcome to a thread-safe deque; the first completion after
the loop drained the deque schedules one drain with `loop.call_soon_threadsafe`, and every
completion arriving before that drain runs rides along. So the loop is woken once per burst, not
once per row, and asyncio futures are only ever resolved on the loop thread. The three threads
share the GIL, which the interpreter hands over every few milliseconds: a burst of a thousand
requests costs the loop milliseconds at a time, not the whole burst at once. What the driver
only offers synchronously (connect, prepare, shutdown) runs on a worker thread. A semaphore caps
the requests in flight per session (`max_in_flight`): the driver never runs out of stream ids
(it would fail the request) and memory stays bounded; a cancelled caller keeps its slot until
the driver has the answer.

Reactor and bridge, measured against a real Cassandra 5.0.6 node (full JIT) on this 2-core
machine while other work ran on it (load 5 to 9): bench/cql_reactors.py, result in
bench/results/20261127-065342-cql-reactors. One uvloop program, 10,000 single-row prepared
INSERTs, then as many SELECTs by key, 256 in flight; best of 3 alternating rounds; "client" is
the whole program's CPU (loop, sender and reactor threads) per op:

    reactor   send on  phase   ops/s  client us/op  loop lag p99 / max ms
    libev     sender   insert   1529           167               21 / 319
    libev     sender   select   1689           211               39 / 313
    libev     loop     insert   1215           241              582 / 632
    libev     loop     select   1644           227              317 / 492
    asyncore  sender   insert   2095           237                9 / 212
    asyncore  sender   select   2434           215               11 / 251
    asyncio   sender   insert   2217           315               65 / 231
    asyncio   sender   select   1468           372               88 / 423
    asyncio   loop     select    680           499             1086 / 1086

("sender": `execute_async` on the session's sender thread, as here; "loop": on the loop thread.)

* The sender thread decides it: with `execute_async` on the loop, a burst of completions resumes
  hundreds of tasks that each pay the driver's sending in the same loop iteration, and the loop
  lags 0.3 to 1 s at p99 (every reactor, every run); on the sender thread, 10 to 90 ms, with as
  many or more ops/s. The loop's own share falls from ~190 to ~35 us per op.
* libev (the default): the driver's choice when its C extension is there (the wheel has it).
  asyncore did as well within this machine's noise (figures swing by half between runs), but it
  is the stdlib module Python 3.12 removed. The asyncio reactor costs 1.5 to 2 times the client
  CPU per op: its loop on another thread hands every read and write across threads again.
* One wake-up per burst rather than per completion is within the noise end to end (the driver's
  ~170 to 240 us per op dwarf it); handing completions from a thread alone, it cost 0.65 against
  0.9 us per completion on uvloop and 1.0 against 5.5 us on asyncio's own loop, so it stays.
* What the figures say to the store: the driver costs a core for ~5,000 requests a second, so
  requests must carry many rows (one batch per chat per flush), not one each.

Protocol version 4 is pinned: ScyllaDB speaks 4 at most, so the dev and test nodes (Cassandra 5
would negotiate 5, which the driver also handles) run the protocol production runs, and no
connection starts with a failed v5 handshake. Statements given as strings are prepared once per
session and cached, so every request is a prepared one, and token-aware routing (the driver's
TokenAwarePolicy over DCAwareRoundRobinPolicy) sends it straight to a replica of its partition.

Errors come back as three kinds of StoreError, by what the caller may assume:

* `CqlUnavailable`: the request was refused before anything was applied (too few replicas
  alive, coordinator overloaded or bootstrapping, no host reachable): retry later.
* `CqlOutcomeUnknown`: no answer in time, or the coordinator failed midway (write or read
  timeout, a connection lost with the request on it, server error): a write may or may not be
  applied; retry it only if it is idempotent, or read back first (a conditional batch).
* `CqlRejected`: the statement itself is wrong (syntax, schema, types, permissions): retrying
  changes nothing.

The driver retries on its own only what cannot apply twice: a read or write refused as
unavailable, overloaded or bootstrapping (next host), a batch-log write timeout, and
connection errors of statements marked idempotent (`idempotent=True`); anything else reaches
the caller as one of the kinds above.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import queue
import re
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from .store import StoreError

REACTORS = ("libev", "asyncore", "asyncio")


@dataclass(frozen=True, slots=True)
class CqlSettings:
    hosts: tuple[str, ...] = ("127.0.0.1",)  # contact points; the driver discovers the others
    port: int = 9042
    keyspace: str | None = None  # must exist; None: statements name keyspace.table
    username: str = ""           # PasswordAuthenticator; "" connects without credentials
    password: str = ""
    local_dc: str = ""           # "" takes the first contact point's datacenter
    consistency: str = "LOCAL_QUORUM"
    serial_consistency: str = "LOCAL_SERIAL"  # the Paxos phase of conditional statements
    request_timeout: float = 10.0  # client side; above the server's own write/read timeouts
    connect_timeout: float = 5.0
    max_in_flight: int = 1024    # requests on the wire per session
    protocol_version: int = 4
    reactor: str = "libev"
    ssl_context: Any = None      # an ssl.SSLContext: TLS to every node (None: plaintext)


class CqlError(StoreError):
    """A CQL request failed; `__cause__` is the driver's exception."""


class CqlUnavailable(CqlError):
    """Refused before anything was applied; retry later."""


class CqlOutcomeUnknown(CqlError):
    """No definite answer: a write may or may not have been applied."""


class CqlRejected(CqlError):
    """The statement itself is wrong; retrying changes nothing."""


@dataclass(frozen=True, slots=True)
class Result:
    """One page of rows (named tuples) and what is needed to ask for the next."""
    rows: list[Any]
    columns: tuple[str, ...]
    paging_state: bytes | None  # None: this was the last page

    @property
    def applied(self) -> bool:
        """A conditional statement or batch: whether it was applied (when not, `rows` hold
        the current values of the rows whose condition failed)."""
        if not self.columns or self.columns[0] != "[applied]":
            raise ValueError("not the result of a conditional statement")
        return bool(self.rows[0][0])


class CqlSession:
    """A connected driver Session, driven from one asyncio loop (see the module docstring).
    Create with `connect`; every method is a coroutine of that loop."""

    def __init__(self, cluster: Any, session: Any, settings: CqlSettings,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._cluster = cluster
        self._session = session
        self._settings = settings
        self._loop = loop
        self._prepared: dict[str, asyncio.Future] = {}
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._done: collections.deque = collections.deque()
        self._drain_scheduled = False
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_requests, name="cql-sender",
                                        daemon=True)
        self._sender.start()

    @property
    def settings(self) -> CqlSettings:
        return self._settings

    async def prepare(self, cql: str) -> Any:
        """The PreparedStatement for `cql`, prepared once per session (concurrent callers
        share the one preparation; a failed one is tried again next time)."""
        preparing = self._prepared.get(cql)
        if preparing is None:
            preparing = self._prepared[cql] = self._loop.create_task(self._prepare(cql))
        return await asyncio.shield(preparing)

    async def _prepare(self, cql: str) -> Any:
        try:
            return await asyncio.to_thread(self._session.prepare, cql)
        except BaseException as exc:
            del self._prepared[cql]
            raise _translated(exc)

    async def execute(self, statement: Any, params: Sequence[Any] | dict | None = None, *,
                      prepare: bool = True, idempotent: bool = False,
                      consistency: str | None = None, serial_consistency: str | None = None,
                      timeout: float | None = None, page_size: int | None = None,
                      paging_state: bytes | None = None) -> Result:
        """Run one statement and return its first page. `statement` is CQL text (prepared and
        cached, with `?` markers; `prepare=False` sends it as it is, with `%s` markers, e.g. a
        schema statement) or a driver Statement. `idempotent` lets the driver retry it on
        another host after a connection error."""
        if isinstance(statement, str):
            if prepare:
                statement, params = (await self.prepare(statement)).bind(params or ()), None
            else:
                from cassandra.query import SimpleStatement
                statement = SimpleStatement(statement)
        request = statement
        if idempotent:
            request.is_idempotent = True
        if consistency is not None:
            request.consistency_level = _consistency(consistency)
        if serial_consistency is not None:
            request.serial_consistency_level = _consistency(serial_consistency)
        if page_size is not None:
            request.fetch_size = page_size
        return await self._send(request, params, timeout, paging_state)

    async def batch(self, statements: Sequence[tuple[str, Sequence[Any] | dict]], *,
                    logged: bool = True, **options: Any) -> Result:
        """Run prepared statements as one batch (CQL text and parameters each); `options` as
        for `execute`. A batch with conditions must stay in one partition; its Paxos round
        runs once for the whole batch, and `Result.applied` tells whether it went through."""
        from cassandra.query import BatchStatement, BatchType

        batch = BatchStatement(BatchType.LOGGED if logged else BatchType.UNLOGGED)
        for cql, params in statements:
            batch.add(await self.prepare(cql), params)
        return await self.execute(batch, **options)

    async def pages(self, statement: Any, params: Sequence[Any] | dict | None = None, *,
                    page_size: int = 1000, **options: Any) -> AsyncIterator[list[Any]]:
        """The rows of a query, one page at a time; each page is one request."""
        paging_state = None
        while True:
            result = await self.execute(statement, params, page_size=page_size,
                                        paging_state=paging_state, **options)
            if result.rows:
                yield result.rows
            if result.paging_state is None:
                return
            paging_state = result.paging_state

    async def close(self) -> None:
        """Wait for the requests in flight, then shut the driver down (its threads too)."""
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()
        self._outbox.put(None)
        await asyncio.to_thread(self._sender.join)
        await asyncio.to_thread(self._cluster.shutdown)

    # ------------------------------------------------------------ the bridge
    async def _send(self, request: Any, params: Any, timeout: float | None,
                    paging_state: bytes | None) -> Result:
        await self._slots.acquire()
        if self._closed:
            self._slots.release()
            raise CqlUnavailable("the CQL session is closed")
        waiter = self._loop.create_future()
        self._in_flight += 1
        self._idle.clear()
        self._outbox.put((request, params, paging_state,
                          self._settings.request_timeout if timeout is None else timeout, waiter))
        return await waiter

    def _send_requests(self) -> None:
        """The sender thread: the driver's share of sending (routing, encoding, queueing for
        the reactor) happens here, off the loop, until close() posts None."""
        execute = self._session.execute_async
        while (request := self._outbox.get()) is not None:
            statement, params, paging_state, timeout, waiter = request
            try:
                response = execute(statement, params, paging_state=paging_state, timeout=timeout)
            except Exception as exc:  # the driver refused to send it
                self._completed(exc, waiter, None)
                continue
            response.add_callbacks(self._completed, self._completed,
                                   callback_args=(waiter, response), errback_args=(waiter, None))

    def _completed(self, outcome: Any, waiter: asyncio.Future, response: Any) -> None:
        """On whichever driver thread completed the request: hand it to the loop, waking the
        loop only when no drain is pending."""
        self._done.append((waiter, response, outcome))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """On the loop: resolve every completion handed over so far. The flag is cleared
        before the deque is read, so a completion appended meanwhile schedules its own drain."""
        self._drain_scheduled = False
        done = self._done
        while done:
            waiter, response, outcome = done.popleft()
            self._slots.release()
            self._in_flight -= 1
            if waiter.cancelled():
                continue
            if response is None:
                waiter.set_exception(_translated(outcome))
            else:
                page = response.result()  # at once: the driver set it before calling back
                waiter.set_result(Result(page.current_rows, tuple(page.column_names or ()),
                                         page.paging_state))
        if not self._in_flight:
            self._idle.set()


async def connect(settings: CqlSettings) -> CqlSession:
    """A session on the cluster `settings` name, ready to serve; raises CqlUnavailable when no
    contact point can be reached (and leaves no driver thread behind)."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import (DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy,
                                    TokenAwarePolicy)

    if settings.reactor not in REACTORS:
        raise ValueError(f"reactor: one of {', '.join(REACTORS)}, not {settings.reactor!r}")
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(settings.local_dc)),
        retry_policy=_retry_policy(),
        consistency_level=_consistency(settings.consistency),
        serial_consistency_level=_consistency(settings.serial_consistency),
        request_timeout=settings.request_timeout, row_factory=named_rows)
    cluster = Cluster(
        list(settings.hosts), port=settings.port, protocol_version=settings.protocol_version,
        connection_class=_connection_class(settings.reactor),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=(PlainTextAuthProvider(settings.username, settings.password)
                       if settings.username else None),
        connect_timeout=settings.connect_timeout, ssl_context=settings.ssl_context,
        control_connection_timeout=settings.connect_timeout,
        # a cluster that was down entirely is found again within seconds, not minutes
        reconnection_policy=ExponentialReconnectionPolicy(0.5, 10.0))
    try:
        session = await asyncio.to_thread(cluster.connect, settings.keyspace)
    except BaseException as exc:
        await asyncio.to_thread(cluster.shutdown)
        raise _translated(exc)
    return CqlSession(cluster, session, settings, asyncio.get_running_loop())


# ---------------------------------------------------------------------------- rows
@functools.lru_cache(maxsize=1024)
def _row_type(columns: tuple[str, ...]) -> type:
    names = [re.sub(r"\W", "_", name).strip("_") or "column" for name in columns]
    return collections.namedtuple("Row", names, rename=True)


def named_rows(columns: list[str], rows: list[tuple]) -> list[Any]:
    """The driver's row factory, as named tuples whose class is made once per column list
    (the driver's own named_tuple_factory builds a new class for every result)."""
    make = _row_type(tuple(columns))._make
    return [make(row) for row in rows]


# ---------------------------------------------------------------------------- errors
def _translated(exc: BaseException) -> BaseException:
    """A driver exception as its kind of CqlError; anything else (a bug: wrong parameter types,
    say) as it is."""
    from cassandra import DriverException
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException
    from cassandra.protocol import ErrorMessage

    driver = (DriverException, NoHostAvailable, ConnectionException, ErrorMessage)
    return translate(exc) if isinstance(exc, driver) else exc


def translate(exc: BaseException) -> CqlError:
    """The StoreError kind of a driver exception (see the module docstring), chained to it."""
    kind = _kind(exc)
    error = kind(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _kind(exc: BaseException) -> type[CqlError]:
    import cassandra
    from cassandra import protocol
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    if isinstance(exc, NoHostAvailable):
        # Every host of the plan failed. A connection error there means the request was never
        # written (one lost in flight reaches the caller alone: see _retry_policy).
        kinds = {_kind(error) for error in (exc.errors or {}).values()
                 if isinstance(error, BaseException)
                 and not isinstance(error, (ConnectionException, OSError))}
        for kind in (CqlOutcomeUnknown, CqlRejected):
            if kind in kinds:
                return kind
        return CqlUnavailable
    if isinstance(exc, (cassandra.Unavailable, cassandra.RateLimitReached,
                        protocol.UnavailableErrorMessage, protocol.OverloadedErrorMessage,
                        protocol.IsBootstrappingErrorMessage, protocol.RateLimitReachedException,
                        protocol.TruncateError)):
        return CqlUnavailable
    if isinstance(exc, (cassandra.RequestValidationException, cassandra.AuthenticationFailed,
                        cassandra.FunctionFailure, cassandra.UnsupportedOperation,
                        protocol.RequestValidationException, protocol.BadCredentials,
                        protocol.FunctionFailureMessage)):
        return CqlRejected
    return CqlOutcomeUnknown


def _consistency(name: str) -> int:
    from cassandra import ConsistencyLevel

    try:
        return ConsistencyLevel.name_to_value[name.upper()]
    except KeyError:
        raise ValueError(f"unknown consistency level {name!r}") from None


def _connection_class(reactor: str) -> type:
    if reactor == "libev":
        from cassandra.io.libevreactor import LibevConnection
        return LibevConnection
    if reactor == "asyncore":
        from cassandra.io.asyncorereactor import AsyncoreConnection
        return AsyncoreConnection
    from cassandra.io.asyncioreactor import AsyncioConnection
    return AsyncioConnection


@functools.cache
def _retry_policy() -> Any:
    """The driver's default RetryPolicy, except that a connection error or server error retries
    on the next host only when nothing could have been applied (overloaded, bootstrapping) or
    the statement is idempotent; the default retries every statement, so a conditional write
    could run twice and report its own success as applied=False."""
    from cassandra import protocol
    from cassandra.policies import RetryPolicy

    class IdempotentRetryPolicy(RetryPolicy):
        def on_request_error(self, query, consistency, error, retry_num):
            if query is not None and (query.is_idempotent or isinstance(
                    error, (protocol.OverloadedErrorMessage,
                            protocol.IsBootstrappingErrorMessage))):
                return self.RETRY_NEXT_HOST, None
            return self.RETHROW, None

    return IdempotentRetryPolicy()
