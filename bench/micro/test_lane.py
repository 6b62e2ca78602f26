"""The store's hand-off to its threads (core/lane.py) against run_in_executor: a commit or a
read crosses to a thread and back once per call, so the round trip is paid per commit."""
from __future__ import annotations

import asyncio
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


def test_lane_round_trips(benchmark):
    """2,000 calls one after the other through a Lane, under uvloop."""
    benchmark(lambda: uvloop.run(_lane_round_trips()))


def test_executor_round_trips(benchmark):
    """The same through a one-thread ThreadPoolExecutor (what the store used before)."""
    benchmark(lambda: uvloop.run(_executor_round_trips()))
