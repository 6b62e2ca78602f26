"""Background tasks (core/tasks.py): a failing task's exception is retrieved as it ends, logged
once per kind of task with its traceback and counted for every failure, so asyncio never reports
"Task exception was never retrieved"."""
from __future__ import annotations

import asyncio
import gc
import logging

from switchboard.core.tasks import FAILURES, TaskGroup


async def locked_write(n: int) -> None:
    raise RuntimeError(f"database is locked ({n})")


async def test_failures_are_logged_once_per_kind_and_counted(caplog):
    loop = asyncio.get_running_loop()
    unretrieved: list[dict] = []
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    before = FAILURES.counts[locked_write.__qualname__]
    group = TaskGroup()
    with caplog.at_level(logging.DEBUG, logger="switchboard.core.tasks"):
        for n in range(5):
            group.spawn(locked_write(n))
        await group.wait()
        gc.collect()
        await asyncio.sleep(0)
    assert FAILURES.counts[locked_write.__qualname__] == before + 5
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if before == 0:  # the first failure of this kind in the process is the logged one
        assert len(errors) == 1 and errors[0].exc_info is not None
        assert "locked_write" in errors[0].getMessage()
    else:
        assert not errors
    assert not unretrieved, unretrieved
    [metric] = [m for m in FAILURES.metrics() if dict(m.labels)["task"] == "locked_write"]
    assert metric.value == before + 5 and metric.name == "background_task_failures"


async def test_a_cancelled_task_is_no_failure():
    group = TaskGroup()
    group.spawn(asyncio.sleep(10))
    before = sum(FAILURES.counts.values())
    await group.cancel()
    assert sum(FAILURES.counts.values()) == before
