"""SDK clients for end-to-end tests, with helpers that collect what a device receives."""
from __future__ import annotations

import asyncio

from switchboard.client import Client
from switchboard.core.backlog import read_backlog
from tests.support.raw import OPEN_CLIENTS
from tests.support.waiting import wait_for


async def connect(server, user: str, device: str = "phone", **kwargs) -> Client:
    client = Client(server.url, server.token(user, device), **kwargs)
    OPEN_CLIENTS.append(client)
    await client.connect()
    await client.wait_synced(timeout=10)
    return client


async def receive(client: Client, count: int, timeout: float = 10.0) -> list:
    """The next `count` messages from the client's iterator."""
    got = []
    iterator = client.messages()

    async def collect() -> None:
        async for message in iterator:
            got.append(message)
            if len(got) == count:
                return
    await asyncio.wait_for(collect(), timeout)
    return got


async def event(events, kind: type, where=lambda e: True, timeout: float = 15.0):
    """The next push of `kind` matching `where` from an events() iterator; others are skipped."""
    async def find():
        async for item in events:
            if isinstance(item, kind) and where(item):
                return item
    return await asyncio.wait_for(find(), timeout)


async def no_event(events, kind: type, where=lambda e: True, timeout: float = 0.5) -> None:
    """No push of `kind` matching `where` within `timeout`."""
    try:
        await event(events, kind, where, timeout)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"an unexpected {kind.__name__} arrived")


async def acked_and_stored(server, user: str, device: str = "phone") -> None:
    """Wait until the device's acks are in the store (the writer persists cursors with its next
    batch): a reconnect or a sync starts after them, instead of sending them again."""
    store = server.gateway.services.store

    async def nothing_above_the_cursor() -> bool:
        return not await read_backlog(store, user, device)
    await wait_for(nothing_above_the_cursor, message=f"{user}/{device}'s cursor stored")
