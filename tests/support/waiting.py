"""Polling instead of sleeping: a test waits exactly as long as the condition needs.

Default timeouts here and in raw.py, rawflow.py and clients.py are generous (15 s): they only
cost time when a test fails, and a shared two-core machine under load can stall a process for
seconds. A check that something does *not* happen passes its own short timeout."""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.01,
                   message: str | None = None) -> Any:
    """Poll `predicate` (a plain or async callable) until it returns something truthy, and
    return that. Raises AssertionError naming the condition when `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                                 f"(last value {value!r})")
        await asyncio.sleep(interval)


async def finishes(awaitable: Any, timeout: float, what: str) -> Any:
    """Await `awaitable` for at most `timeout` seconds. When it hangs, fail naming `what` with
    the stack of every other task of the loop: a stuck shutdown then says where it is stuck
    instead of ending in pytest-timeout's thread dump."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait([task], timeout=timeout)
    if done:
        return task.result()
    stacks = []
    for other in asyncio.all_tasks() - {asyncio.current_task()}:
        frames = other.get_stack()
        where = ", ".join(f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} "
                          f"{f.f_code.co_name}" for f in frames)
        stacks.append(f"  {other.get_name()}: {where}")
    task.cancel()
    raise AssertionError(f"{what} did not finish within {timeout}s; tasks:\n" + "\n".join(stacks))
