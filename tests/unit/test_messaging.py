"""MessageService on the in-memory store behind FaultyStore's commit gate: a chat's sends are
answered in the order they came, whichever of them waited in the chat's gate (what its check
needed was loading) and whichever found everything cached; the gate holds commits in flight
so that the answers of gated and direct sends fall into the same turn of the event loop."""
from __future__ import annotations

import asyncio

from switchboard.core.blocks import Blocks
from switchboard.core.chats import ChatService
from switchboard.core.futures import into
from switchboard.core.ids import ServerIds
from switchboard.core.messaging import MessageService
from switchboard.core.model import SendRequest
from switchboard.core.settings import Settings
from switchboard.core.store_memory import MemoryStore
from tests.support.faulty_store import FaultyStore
from tests.support.waiting import wait_for


async def test_answers_keep_the_order_of_the_sends_across_gated_and_direct_ones():
    store = FaultyStore(MemoryStore())
    await store.open()
    chats = ChatService(store)
    messages = MessageService(store, chats, ServerIds(1), settings=Settings(store),
                              blocks=Blocks(store), fanout=lambda *commit: None,
                              max_body_bytes=1024, max_media_ids=4)
    chat = (await chats.create_group("alice", ["bob"], "g")).chat_id
    answered: list[int] = []

    def submit(n: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()

        def done(result, error) -> None:
            answered.append(n)
            into(future)(result, error)
        messages.submit_send(SendRequest("alice", "phone", chat, f"m{n}", b"x", []), done)
        return future

    store.hold()
    gated = submit(0)  # nothing cached yet: it waits in the chat's gate while that loads
    await wait_for(lambda: store.held == 1, message="the first commit in flight")
    direct = [submit(1)]  # everything cached now
    store.release()
    store.hold()
    await wait_for(lambda: gated.done() and store.held == 1,
                   message="the first answered, the second commit in flight")
    direct.append(submit(2))  # lands in the commit after the second, answered in the same turn
    store.release()
    await asyncio.gather(gated, *direct)
    assert answered == [0, 1, 2]
    await messages.close()
    await store.close()
