"""The outcome of sending one push, and the retry discipline both provider clients share.

A provider client makes a few attempts itself (429 and 5xx, honouring Retry-After, with
jittered exponential backoff) within a short budget, so a blip costs nothing visible. A provider
that stays down past that budget gets `RETRY` back to the PushService, which keeps the push in
its durable queue and tries again later (planner.py): nothing waits in memory for minutes.
"""
from __future__ import annotations

import asyncio
import email.utils
import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx


class Outcome(enum.Enum):
    SENT = "sent"
    TOKEN_DEAD = "token_dead"  # the provider says the token will never work again: remove it
    RETRY = "retry"            # throttled or unavailable: try again later
    FAILED = "failed"          # refused for good (a bad request, the app's settings): drop it


@dataclass(slots=True, frozen=True)
class Result:
    outcome: Outcome
    reason: str                # the provider's reason ("Unregistered", "UNAVAILABLE", ...)
    status: int = 0            # HTTP status (0: no response)
    retry_after: float = 0.0   # s, when the provider said
    push_id: str = ""          # the provider's id of a sent push (apns-id, FCM message name)

    @property
    def retryable(self) -> bool:
        return self.outcome is Outcome.RETRY


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    attempts: int = 3          # per push, inside one send
    base: float = 0.2          # s, doubled per attempt, jittered
    cap: float = 5.0           # s: the longest pause inside one send; a longer Retry-After
                               # ends the send with RETRY (the service reschedules)

    def pause(self, attempt: int, retry_after: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up now."""
        if attempt + 1 >= self.attempts or retry_after > self.cap:
            return None
        backoff = random.uniform(0, min(self.cap, self.base * 2 ** attempt))
        return max(retry_after, backoff)


def retry_after(response: httpx.Response) -> float:
    """Retry-After as seconds (delta-seconds or an HTTP date); 0 when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return 0.0
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


async def with_retries(attempt: Callable[[], Awaitable[Result]], policy: RetryPolicy,
                       on_retry: Callable[[Result], None] | None = None) -> Result:
    """Run `attempt` until it is not RETRY or the policy gives up; transport errors (connect,
    read timeout, a reset stream) count as RETRY."""
    number = 0
    while True:
        try:
            result = await attempt()
        except httpx.TransportError as exc:
            result = Result(Outcome.RETRY, type(exc).__name__)
        if not result.retryable:
            return result
        pause = policy.pause(number, result.retry_after)
        if pause is None:
            return result
        if on_retry is not None:
            on_retry(result)
        await asyncio.sleep(pause)
        number += 1
