"""Background tasks with an owner: every component that starts tasks keeps them in one
TaskGroup, so its drain can wait for them or cancel them, and none outlives the process's stop
unnoticed.

A background task's exception has nobody to await it: asyncio would report it only when the
task is garbage-collected ("Task exception was never retrieved"), with no context and at no
predictable time. `watch` (which every TaskGroup task gets) retrieves it as the task ends: the
first failure of each kind of task is logged with its traceback, later ones of that kind only
counted (a store that is locked for a minute fails thousands of the same write), and every one
is counted in `switchboard_background_task_failures_total{task=...}`."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from .metrics import Metric, counter

log = logging.getLogger(__name__)


class TaskFailures:
    """Failures of background tasks in this process, by task kind (the coroutine's name)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def record(self, task: asyncio.Task, exc: BaseException) -> None:
        kind = _kind(task)
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            log.error("background task %s failed: %r (further failures of %s are counted in "
                      "switchboard_background_task_failures_total)", kind, exc, kind,
                      exc_info=exc)
        else:
            log.debug("background task %s failed again (%d): %r", kind, self.counts[kind], exc)

    def metrics(self) -> list[Metric]:
        return [counter("background_task_failures", "background tasks that ended with an "
                        "exception, by task (the first of each is logged)", count, task=kind)
                for kind, count in sorted(self.counts.items())]


FAILURES = TaskFailures()


def _kind(task: asyncio.Task) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or task.get_name()


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        FAILURES.record(task, exc)


def watch(task: asyncio.Task) -> asyncio.Task:
    """Retrieve, log and count the task's exception when it ends (see the module docstring)."""
    task.add_done_callback(_retrieve)
    return task


class TaskGroup:
    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = watch(asyncio.ensure_future(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait(self) -> None:
        """Until every task (and every task they started meanwhile) finished."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel every task and wait until they ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
