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
