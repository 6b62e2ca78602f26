"""switchboard/core/cql.py over the real node: results reach the asyncio loop on its own thread,
the loop keeps running while a thousand statements are in flight, errors arrive as the
StoreError kind the store acts on, pages and cancellation keep their promises."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from switchboard.core.cql import (CqlOutcomeUnknown, CqlRejected, CqlUnavailable, Result,
                                  StoreError, connect)
from tests.support.waiting import wait_for


@pytest.fixture
async def cql(cql_keyspace):
    session = await connect(cql_keyspace.settings())
    await session.execute("CREATE TABLE kv (k int PRIMARY KEY, v text)", prepare=False)
    yield session
    await session.close()


async def test_results_are_set_on_the_loop_thread(cql):
    loop = asyncio.get_running_loop()
    loop.set_debug(True)  # asyncio now raises if a future is resolved from another thread
    loop_thread = threading.get_ident()
    callback_threads: set[int] = set()
    real_completed = cql._completed

    def completed(*args):
        callback_threads.add(threading.get_ident())
        real_completed(*args)
    cql._completed = completed
    try:
        results = await asyncio.wait_for(asyncio.gather(*(
            cql.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (i, str(i))) for i in range(200))),
            timeout=60)
    finally:
        loop.set_debug(False)
    assert all(isinstance(result, Result) and result.rows == [] for result in results)
    assert callback_threads - {loop_thread}  # the driver completed them on its own thread(s)
    [row] = (await cql.execute("SELECT v FROM kv WHERE k = ?", (199,))).rows
    assert row.v == "199"


async def test_the_loop_keeps_turning_while_a_thousand_statements_run(cql):
    """A ticker due every 2 ms runs while a thousand statements are outstanding. A bridge that
    waited for the driver on the loop thread would hold the loop from the first statement to
    the last result: no tick in between. This one holds it only for the spells of sending and
    resolving. (Counted, not timed: a busy machine may stall the loop for a while anyway, and
    the run then takes longer too.)"""
    loop = asyncio.get_running_loop()
    ticks: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            await asyncio.sleep(0.002)
            ticks.append(loop.time())

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = loop.time()
    await asyncio.gather(*(cql.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (i, "x"))
                           for i in range(1000)))
    finished = loop.time()
    running = False
    await tick
    assert len((await cql.execute("SELECT k FROM kv")).rows) == 1000
    during = [t for t in ticks if started < t < finished]
    assert len(during) >= 3, (len(during), finished - started)


async def test_errors_arrive_as_store_errors_of_the_right_kind(cql, cassandra_node):
    with pytest.raises(CqlRejected) as rejected:
        await cql.execute("SELEKT * FROM kv")
    assert isinstance(rejected.value, StoreError)
    assert "SyntaxException" in str(rejected.value) and rejected.value.__cause__ is not None
    with pytest.raises(CqlRejected, match="Undefined column"):
        await cql.execute("SELECT nope FROM kv")
    with pytest.raises(CqlUnavailable, match="Cannot achieve consistency level THREE"):
        await cql.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (1, "x"), consistency="THREE")
    with pytest.raises(TypeError):  # a bug in the caller stays what it is
        await cql.execute("INSERT INTO kv (k, v) VALUES (?, ?)", ("not an int", "x"))
    # No answer in time: the node is frozen (SIGSTOP) for the length of one request.
    cassandra_node.pause(0)
    try:
        with pytest.raises(CqlOutcomeUnknown, match="OperationTimedOut"):
            await cql.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (2, "x"), timeout=0.5)
    finally:
        cassandra_node.resume(0)
    # And the session goes on once the node is back.
    await wait_for(lambda: _answers(cql), timeout=30, message="the node to answer again")


async def _answers(cql) -> bool:
    try:
        await cql.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (3, "x"), timeout=2)
    except StoreError:
        return False
    return True


async def test_pages_deliver_every_row_once_in_order(cql):
    await cql.execute("CREATE TABLE wide (p int, c int, PRIMARY KEY (p, c))", prepare=False)
    await asyncio.gather(*(cql.execute("INSERT INTO wide (p, c) VALUES (?, ?)", (1, c))
                           for c in range(2500)))
    sizes, seen = [], []
    async for rows in cql.pages("SELECT c FROM wide WHERE p = ?", (1,), page_size=1000):
        sizes.append(len(rows))
        seen += [row.c for row in rows]
    assert sizes == [1000, 1000, 500]
    assert seen == list(range(2500))
    first = await cql.execute("SELECT c FROM wide WHERE p = ?", (1,), page_size=1000)
    assert first.paging_state is not None and len(first.rows) == 1000


async def test_statements_are_prepared_once_per_session(cql):
    cql_text = "SELECT v FROM kv WHERE k = ?"
    first, second = await asyncio.gather(cql.prepare(cql_text), cql.prepare(cql_text))
    assert first is second is await cql.prepare(cql_text)
    with pytest.raises(CqlRejected):
        await cql.prepare("SELECT nope FROM kv WHERE k = ?")
    with pytest.raises(CqlRejected):  # a failed preparation is not cached
        await cql.prepare("SELECT nope FROM kv WHERE k = ?")


async def test_a_cancelled_request_keeps_its_slot_until_the_driver_answers(cql_keyspace):
    session = await connect(cql_keyspace.settings(max_in_flight=1))
    try:
        await session.execute("CREATE TABLE IF NOT EXISTS kv (k int PRIMARY KEY, v text)",
                              prepare=False)
        await session.prepare("INSERT INTO kv (k, v) VALUES (?, ?)")
        first = asyncio.create_task(session.execute("INSERT INTO kv (k, v) VALUES (?, ?)",
                                                    (1, "cancelled")))
        while not session._in_flight:  # one step of the task hands it to the sender thread,
            await asyncio.sleep(0)     # and the answer can only reach it in a later step
        first.cancel()
        second = await session.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (2, "second"))
        assert second.rows == [] and first.cancelled()
        rows = (await session.execute("SELECT k FROM kv")).rows
        assert sorted(row.k for row in rows) == [1, 2]  # the cancelled one was still sent
    finally:
        started = time.monotonic()
        await session.close()
    assert time.monotonic() - started < 10
