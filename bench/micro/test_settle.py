"""How a committed batch reaches its senders (core/writer.py, core/futures.py): the writer calls
each message's completion directly, against the shape the send path had before, an asyncio
future per message whose done callback (the SendAck) the loop ran a turn later. 1,000 messages
of 100 chats in one commit on the in-memory store, under uvloop: what differs between the two is
the per-message settling, the commit itself is the same."""
from __future__ import annotations

import asyncio
import itertools

import pytest
import uvloop

from switchboard.core.futures import into
from switchboard.core.model import NewMessage
from switchboard.core.store_memory import MemoryStore
from switchboard.core.writer import CoalescingWriter

MESSAGES = 1_000
_ids = itertools.count(1)


def _messages() -> list[NewMessage]:
    return [NewMessage(f"d:u{i % 100}:v{i % 100}", f"u{i % 100}", "phone", f"m{next(_ids)}",
                       b"x" * 64, (), next(_ids), 1_760_000_000_000) for i in range(MESSAGES)]


@pytest.fixture
def writer():
    loop = uvloop.new_event_loop()
    store = MemoryStore()
    loop.run_until_complete(store.open())
    writer = CoalescingWriter(store, max_rows=MESSAGES)
    yield writer, loop
    loop.run_until_complete(writer.close())
    loop.run_until_complete(store.close())
    loop.close()


async def _commit_all(writer: CoalescingWriter, per_message_future: bool) -> int:
    loop = asyncio.get_running_loop()
    answered = 0
    all_answered = loop.create_future()

    def answer(result, error) -> None:
        nonlocal answered
        answered += 1
        if answered == MESSAGES:
            all_answered.set_result(None)

    for message in _messages():
        if per_message_future:
            future = loop.create_future()
            future.add_done_callback(lambda f: answer(f.result(), None))
            writer.submit(message, into(future))
        else:
            writer.submit(message, answer)
    await all_answered
    return answered


@pytest.mark.parametrize("how", ["completion", "future_per_message"])
def test_settle(benchmark, writer, how):
    """1,000 messages answered by the completion the writer calls, or each through a future
    of its own and a done callback (the shape before)."""
    writer, loop = writer
    answered = benchmark(lambda: loop.run_until_complete(
        _commit_all(writer, how == "future_per_message")))
    assert answered == MESSAGES
