"""A gateway killed (SIGKILL) with pushes owed: after the restart each goes out, once. The
pushes are kept in the store's queue until their provider accepted them (service.py)."""
from __future__ import annotations

import pytest

from switchboard.core.store_sqlite import SQLiteStore
from tests.support.clients import connect
from tests.support.push_servers import Scripted
from tests.support.server import ServerProcess
from tests.support.waiting import wait_for

PHONE = "d4" * 32


async def queued(data_dir) -> list:
    store = SQLiteStore(data_dir / "switchboard.db")
    await store.open()
    try:
        return await store.queued_pushes()
    finally:
        await store.close()


@pytest.mark.parametrize("pending", ["provider_down", "coalescing"])
async def test_pushes_owed_at_a_kill_go_out_once_after_the_restart(push_servers, tmp_path,
                                                                   pending):
    data_dir = tmp_path / "data"
    env = push_servers.environment(interval=5.0, max_backoff=2.0, grace=3.0)
    server = await ServerProcess(data_dir, env=env).start()
    try:
        bob = await connect(server, "bob", "phone")
        await bob.register_push("apns", PHONE)
        await bob.close()
        alice = await connect(server, "alice", "phone")
        chat = (await alice.create_direct("bob")).chat_id
        if pending == "provider_down":
            push_servers.apns.down = Scripted(503, "ServiceUnavailable")
            await alice.send(chat, b"one")
            await wait_for(lambda: push_servers.apns.attempts >= 3)  # a whole send failed
            owed_seq = 1
        else:
            await alice.send(chat, b"one")
            await wait_for(lambda: push_servers.apns.to(PHONE))  # pushed at once
            await alice.send(chat, b"two")  # waits for the interval to end
            owed_seq = 2

        async def owed() -> bool:
            return [p.last_seq for p in await queued(data_dir)] == [owed_seq]
        await wait_for(owed, message="the push owed is in the durable queue")
        await alice.close()
        server.kill()
        sent_before = len(push_servers.apns.to(PHONE))
        push_servers.apns.down = None
        server = await ServerProcess(data_dir, port=server.port, env=env).start()

        async def queue_empty() -> bool:
            return await queued(data_dir) == []
        await wait_for(lambda: len(push_servers.apns.to(PHONE)) > sent_before, timeout=30)
        await wait_for(queue_empty, message="the push dropped from the queue once sent")
        after = push_servers.apns.to(PHONE)[sent_before:]
        assert [p.payload["sb"]["seq"] for p in after] == [owed_seq]
    finally:
        server.stop()
