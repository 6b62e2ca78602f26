"""How a send's outcome reaches whoever waits for it: a completion, not a future per message.

The writer settles a committed batch by calling each message's completion in the order the
messages were submitted, in the same turn of the loop and before the batch's fan-out: no
future, no done callback and no scheduled callback per message, and the SendAcks the
completions queue precede the deliveries. A completion is called exactly once, and never from
within the call it was handed to (so its caller may record the send after that call returns).
Callers that await an outcome (a membership change, tests) pass `into(future)`.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from .model import CommitResult, SendRequest

Done = Callable[[CommitResult | None, BaseException | None], None]
"""done(result, error): the send's outcome, exactly one of the two not None. `error` is a
DomainError or StoreError (UNAVAILABLE: outcome unknown, retry with the same client_msg_id)."""

Submit = Callable[[SendRequest, Done], None]
"""submit(send, done): hand a send on; raises DomainError for what is refused at once (then
`done` is never called)."""


def into(future: asyncio.Future[CommitResult]) -> Done:
    """A completion that gives `future` the outcome, unless it has one (it was cancelled)."""
    def done(result: CommitResult | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    return done


def awaited(submit: Submit, send: SendRequest) -> asyncio.Future[CommitResult]:
    """`submit(send, ...)` with its outcome as a future (raises what submit raises)."""
    future = asyncio.get_running_loop().create_future()
    submit(send, into(future))
    return future
