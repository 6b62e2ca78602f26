"""Presence to subscribers only, as privacy allows, coalesced under flapping; typing
indicators to online members only."""
from __future__ import annotations

import asyncio

import pytest

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.rawflow import authed, direct, group, presence_of, request
from tests.support.waiting import wait_for


async def test_subscriber_sees_online_then_last_seen(make_server):
    server = await make_server(timers__presence_interval=0.1)
    watcher = await authed(server, "watcher")
    bob = await authed(server, "bob")
    await request(watcher, subscribe_presence=pb.SubscribePresence(user_ids=["bob", "nobody-yet"]))
    assert (await presence_of(watcher, "bob")).online
    never = await presence_of(watcher, "nobody-yet")
    assert (never.online, never.last_seen_ms) == (False, 0)
    bob.close()
    gone = await presence_of(watcher, "bob")
    assert not gone.online and gone.last_seen_ms > 0
    bystander = await authed(server, "bystander")
    await authed(server, "bob", "tablet")
    assert (await presence_of(watcher, "bob")).online
    with pytest.raises(asyncio.TimeoutError):
        await presence_of(bystander, "bob", timeout=0.4)


async def test_flapping_gives_a_bounded_number_of_updates(make_server):
    server = await make_server(timers__presence_interval=0.2)
    watcher = await authed(server, "watcher")
    bob = await authed(server, "bob")
    await request(watcher, subscribe_presence=pb.SubscribePresence(user_ids=["bob"]))
    await presence_of(watcher, "bob")
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(200):  # 200 flaps: invisible on/off, pipelined
        bob.send(update_settings=pb.UpdateSettings(invisible=(i % 2 == 0)))
    for _ in range(200):
        await bob.recv("settings")
    elapsed = loop.time() - started
    fanout = server.gateway.presence
    updates = 0

    async def all_arrived() -> bool:
        """The last change flushed, and every update sent has reached the watcher."""
        nonlocal updates
        while watcher.pending():
            frame = await watcher.recv()
            updates += frame.WhichOneof("body") == "presence"
        return fanout._flush_handle is None and updates == fanout.updates_sent
    await wait_for(all_arrived, timeout=10)
    assert updates <= elapsed / 0.2 + 3


async def test_last_seen_privacy(make_server):
    server = await make_server(timers__presence_interval=0.1)
    bob = await authed(server, "bob")
    friend = await authed(server, "friend")
    stranger = await authed(server, "stranger")
    await direct(friend, "bob")  # a contact: they share a direct chat
    await request(bob, update_settings=pb.UpdateSettings(last_seen=pb.CONTACTS))
    await request(friend, subscribe_presence=pb.SubscribePresence(user_ids=["bob"]))
    await request(stranger, subscribe_presence=pb.SubscribePresence(user_ids=["bob"]))
    assert (await presence_of(friend, "bob")).online
    hidden = await presence_of(stranger, "bob")
    assert (hidden.online, hidden.last_seen_ms) == (False, 0)
    bob.close()
    assert (await presence_of(friend, "bob")).last_seen_ms > 0
    with pytest.raises(asyncio.TimeoutError):
        await presence_of(stranger, "bob", timeout=0.4)
    bob = await authed(server, "bob")
    await request(bob, update_settings=pb.UpdateSettings(last_seen=pb.NOBODY))
    assert (await presence_of(friend, "bob")).last_seen_ms == 0


async def test_invisible_device_does_not_make_the_user_online(make_server):
    server = await make_server(timers__presence_interval=0.1)
    watcher = await authed(server, "watcher")
    bob = await authed(server, "bob")
    await request(bob, update_settings=pb.UpdateSettings(invisible=True))
    await request(watcher, subscribe_presence=pb.SubscribePresence(user_ids=["bob"]))
    assert not (await presence_of(watcher, "bob")).online
    await request(bob, update_settings=pb.UpdateSettings(invisible=False))
    assert (await presence_of(watcher, "bob")).online


async def test_typing_reaches_online_members_only_and_is_throttled(server):
    alice = await authed(server, "alice")
    alice_laptop = await authed(server, "alice", "laptop")
    bob = await authed(server, "bob")
    outsider = await authed(server, "outsider")
    chat = await group(alice, ["bob", "carol"])  # carol is offline: nothing is kept for her
    alice.send(typing=pb.Typing(chat_id=chat, typing=True))
    for device in (bob, alice_laptop):
        update = (await device.recv("typing_update")).typing_update
        assert (update.chat_id, update.user_id, update.typing) == (chat, "alice", True)
        assert update.expires_in_ms > 0
    alice.send(typing=pb.Typing(chat_id=chat, typing=True))  # within the throttle: dropped
    alice.send(typing=pb.Typing(chat_id=chat, typing=False))
    stop = (await bob.recv("typing_update")).typing_update
    assert stop.typing is False
    for device in (alice, outsider):
        with pytest.raises(asyncio.TimeoutError):
            await device.recv("typing_update", timeout=0.3)
    carol = await authed(server, "carol")
    with pytest.raises(asyncio.TimeoutError):
        await carol.recv("typing_update", timeout=0.3)
    rid = outsider.send(typing=pb.Typing(chat_id=chat, typing=True))
    assert (await outsider.reply(rid)).error.code == pb.NOT_MEMBER


async def test_subscription_limit(make_server):
    server = await make_server(limits__max_presence_subscriptions=3)
    watcher = await authed(server, "watcher")
    reply = await request(watcher, subscribe_presence=pb.SubscribePresence(user_ids=["a", "b", "c", "d"]))
    assert reply.error.code == pb.INVALID_ARGUMENT
