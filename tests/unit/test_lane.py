"""The store's threads (core/lane.py): results and exceptions come back to the loop, calls run
in order on one thread, a caller that went away is harmless, and stop lets queued calls finish."""
from __future__ import annotations

import asyncio
import threading

import pytest

from switchboard.core.lane import Lane


async def test_results_and_exceptions_come_back_and_one_thread_runs_calls_in_order():
    lane = Lane("test")
    seen: list[int] = []
    threads: set[str] = set()

    def call(i: int) -> int:
        seen.append(i)
        threads.add(threading.current_thread().name)
        if i == 3:
            raise ValueError("three")
        return i * 10

    results = await asyncio.gather(*(lane.run(call, i) for i in range(200)),
                                   return_exceptions=True)
    await lane.stop()
    assert seen == list(range(200))
    assert threads == {"test_0"} and threading.current_thread().name not in threads
    assert [r for i, r in enumerate(results) if i != 3] == [i * 10 for i in range(200) if i != 3]
    assert isinstance(results[3], ValueError)


async def test_the_initializer_runs_on_each_thread_before_its_first_call_and_again_if_it_failed():
    attempts: list[str] = []

    def initializer() -> None:
        attempts.append(threading.current_thread().name)
        if len(attempts) == 1:
            raise OSError("not yet")

    lane = Lane("init", initializer=initializer)
    assert attempts == []  # nothing runs before a call
    with pytest.raises(OSError):
        await lane.run(lambda: 1)
    assert await lane.run(lambda: 2) == 2
    assert await lane.run(lambda: 3) == 3
    await lane.stop()
    assert attempts == ["init_0", "init_0"]


async def test_a_cancelled_caller_is_harmless_and_stop_lets_queued_calls_finish():
    lane = Lane("stop", threads=2)
    gate = threading.Event()
    ran: list[int] = []

    def slow(i: int) -> int:
        gate.wait(5)
        ran.append(i)
        return i

    abandoned = lane.run(slow, 0)
    kept = [lane.run(slow, i) for i in range(1, 6)]
    abandoned.cancel()
    gate.set()
    await lane.stop()
    assert sorted(ran) == list(range(6))  # the cancelled call still ran
    assert [f.result() for f in kept] == [1, 2, 3, 4, 5]
    with pytest.raises(RuntimeError):
        lane.run(slow, 9)
