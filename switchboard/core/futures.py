"""Future plumbing the send paths share."""
from __future__ import annotations

import asyncio


def settle(outer: asyncio.Future, inner: asyncio.Future) -> None:
    """Give `outer` the outcome of `inner` (a done callback of `inner`), unless it has one."""
    if outer.done():
        return
    if inner.cancelled():
        outer.cancel()
    elif inner.exception() is not None:
        outer.set_exception(inner.exception())
    else:
        outer.set_result(inner.result())
