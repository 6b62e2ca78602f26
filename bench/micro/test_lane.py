"""The store's hand-off to its threads (core/lane.py) against run_in_executor and against a
thread answering through call_soon_threadsafe: a commit or a read crosses to a thread and back
once per call, so the round trip is paid per commit."""
from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import uvloop

from switchboard.core.lane import Lane

CALLS = 2_000


def _nothing() -> int:
    return 1


async def _lane_round_trips() -> None:
    lane = Lane("micro")
    for _ in range(CALLS):
        await lane.run(_nothing)
    await lane.stop()


async def _executor_round_trips() -> None:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as executor:
        for _ in range(CALLS):
            await loop.run_in_executor(executor, _nothing)


async def _threadsafe_round_trips() -> None:
    """One long-lived thread fed by a SimpleQueue, waking the loop with call_soon_threadsafe."""
    loop = asyncio.get_running_loop()
    calls: queue.SimpleQueue = queue.SimpleQueue()

    def work() -> None:
        while (call := calls.get()) is not None:
            future, fn = call
            loop.call_soon_threadsafe(future.set_result, fn())

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    for _ in range(CALLS):
        future = loop.create_future()
        calls.put((future, _nothing))
        await future
    calls.put(None)
    thread.join()


def test_lane_round_trips(benchmark):
    """2,000 calls one after the other through a Lane, under uvloop."""
    benchmark(lambda: uvloop.run(_lane_round_trips()))


def test_executor_round_trips(benchmark):
    """The same through a one-thread ThreadPoolExecutor (what the store used before)."""
    benchmark(lambda: uvloop.run(_executor_round_trips()))


def test_threadsafe_round_trips(benchmark):
    """The same through a thread of its own that answers with call_soon_threadsafe."""
    benchmark(lambda: uvloop.run(_threadsafe_round_trips()))
