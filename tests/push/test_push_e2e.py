"""Push notifications end to end: a gateway whose providers are the local APNs and FCM servers
(tests/support/push_servers.py), devices through the real SDK."""
from __future__ import annotations

import time

import pytest

from switchboard.client import ServerError
from switchboard.client.sdk import MUTE_FOREVER
from switchboard.core.ids import now_ms
from switchboard.proto.v1 import client_pb2 as pb
from tests.support.clients import connect, receive
from tests.support.waiting import wait_for

PHONE = "a1" * 32       # bob's phone (APNs)
TABLET = "b2" * 32      # bob's tablet (APNs)
ANDROID = "fcm:bob-android-" + "z" * 40
ALICE_TABLET = "c3" * 32
INTERVAL = 1.0


@pytest.fixture
async def gateway(push_servers, make_server):
    settings = {key.replace(".", "__"): value for key, value in push_servers.settings().items()}
    return await make_server(**settings, push__interval=INTERVAL, push__grace=3.0,
                             push__max_backoff=2.0)


async def offline(server, user: str, device: str, platform: str, token: str,
                  previews: bool = False):
    """Register the device's token, then leave: the device is offline with a token."""
    client = await connect(server, user, device)
    await client.register_push(platform, token, previews=previews)
    await client.close()
    await wait_for(lambda: device not in {c.device for c in server.gateway.hub.devices_of(user)})


async def direct(server, user: str = "alice", other: str = "bob"):
    alice = await connect(server, user)
    chat = await alice.create_direct(other)
    return alice, chat.chat_id


def pushes(servers, token: str) -> list:
    return servers.apns.to(token)


async def test_an_offline_device_is_woken_content_free(push_servers, gateway):
    await offline(gateway, "bob", "phone", "apns", PHONE)
    alice, chat = await direct(gateway)
    await alice.send(chat, b"dinner at eight?")
    [push] = await wait_for(lambda: pushes(push_servers, PHONE))
    assert push.headers["apns-collapse-id"] == chat
    assert push.payload["aps"]["badge"] == 1
    assert push.payload["aps"]["alert"] == {"title-loc-key": "SB_NEW_MESSAGE_TITLE",
                                            "title-loc-args": ["alice"],
                                            "loc-key": "SB_NEW_MESSAGES", "loc-args": ["1"]}
    assert push.payload["sb"] == {"kind": "message", "chat_id": chat, "sender": "alice",
                                  "count": 1, "seq": 1}
    assert b"dinner" not in str(push.payload).encode()
    service = gateway.gateway.services.push
    store = gateway.gateway.services.store

    async def queue_empty() -> bool:
        return await store.queued_pushes() == []
    await wait_for(queue_empty, message="the push dropped from the durable queue once sent")
    metrics = {m.name: m for m in service.metrics()}
    assert metrics["push_sent"].value == 1 and metrics["push_sent"].labels == (("platform", "apns"),)


async def test_a_burst_of_100_messages_is_a_handful_of_pushes(push_servers, gateway):
    await offline(gateway, "bob", "phone", "apns", PHONE)
    await offline(gateway, "bob", "android", "fcm", ANDROID)
    alice, chat = await direct(gateway)
    started = time.monotonic()
    for i in range(100):
        await alice.send(chat, b"m%d" % i)

    def counted(received, field) -> int:
        return sum(int(field(p)) for p in received)
    await wait_for(lambda: counted(pushes(push_servers, PHONE),
                                   lambda p: p.payload["sb"]["count"]) == 100)
    await wait_for(lambda: counted(push_servers.fcm.to(ANDROID),
                                   lambda p: p.message["data"]["count"]) == 100)
    # the first push at once, then at most one per interval while the burst lasted (slow on
    # a loaded machine), and one for what came after the last
    most = 2 + int((time.monotonic() - started) / INTERVAL)
    phone, android = pushes(push_servers, PHONE), push_servers.fcm.to(ANDROID)
    assert 2 <= len(phone) <= most and 2 <= len(android) <= most
    assert phone[-1].payload["aps"]["badge"] == 100 and phone[-1].payload["sb"]["seq"] == 100
    assert android[-1].message["data"]["badge"] == "100"
    # one push per chat per interval is timed from when each is taken to be sent, not from its
    # arrival (the first one also sets up the connection): tests/push/test_planner.py proves it
    # on a moved clock; arrival gaps on a loaded machine prove nothing either way


async def test_online_devices_are_never_pushed(push_servers, gateway):
    bob = await connect(gateway, "bob", "phone")
    await bob.register_push("apns", PHONE)
    await offline(gateway, "bob", "tablet", "apns", TABLET)
    alice, chat = await direct(gateway)
    for i in range(5):
        await alice.send(chat, b"m%d" % i)
    await receive(bob, 5)  # bob's phone is online and acks (auto_ack)
    await wait_for(lambda: sum(p.payload["sb"]["count"]
                               for p in pushes(push_servers, TABLET)) == 5)
    service = gateway.gateway.services.push
    # the phone's entry waited out the grace, then its cursor showed it had everything
    await wait_for(lambda: service.settled.get("acked", 0) >= 1, timeout=20)
    await wait_for(lambda: len(service.planner) == 0)
    assert pushes(push_servers, PHONE) == []


async def test_the_senders_own_devices_are_not_pushed(push_servers, gateway):
    await offline(gateway, "alice", "tablet", "apns", ALICE_TABLET)
    await offline(gateway, "bob", "phone", "apns", PHONE)
    alice, chat = await direct(gateway)
    await alice.send(chat, b"hi")
    await wait_for(lambda: pushes(push_servers, PHONE))
    await wait_for(lambda: len(gateway.gateway.services.push.planner) == 0)
    assert pushes(push_servers, ALICE_TABLET) == []


async def test_a_muted_chat_is_not_pushed_until_unmuted(push_servers, gateway):
    alice, muted = await direct(gateway)
    other = (await alice.create_group("team", ["bob"])).chat_id
    bob = await connect(gateway, "bob", "tablet")
    assert await bob.mute_chat(muted) == {muted: MUTE_FOREVER}
    soon = now_ms() + 60_000
    assert await bob.mute_chat(other, soon) == {muted: MUTE_FOREVER, other: soon}
    assert await bob.unmute_chat(other) == {muted: MUTE_FOREVER}
    assert await bob.list_mutes() == {muted: MUTE_FOREVER}
    await bob.close()
    await offline(gateway, "bob", "phone", "apns", PHONE)
    await alice.send(muted, b"quiet")
    await alice.send(other, b"loud")
    [push] = await wait_for(lambda: pushes(push_servers, PHONE))
    assert push.payload["sb"]["chat_id"] == other
    assert push.payload["aps"]["badge"] == 2  # the muted chat's message is unread all the same
    bob = await connect(gateway, "bob", "tablet")
    await bob.unmute_chat(muted)
    await bob.close()
    await alice.send(muted, b"now you hear me")
    await wait_for(lambda: [p for p in pushes(push_servers, PHONE)
                            if p.payload["sb"]["chat_id"] == muted])


async def test_membership_events_wake_no_one(push_servers, gateway):
    """Being added to a group (or removed from one) is an entry of the chat's log that counts in
    the badge, but only a message wakes the device."""
    await offline(gateway, "bob", "phone", "apns", PHONE)
    await offline(gateway, "carol", "tablet", "apns", TABLET)
    alice = await connect(gateway, "alice")
    team = (await alice.create_group("team", ["carol"])).chat_id
    await alice.add_members(team, ["bob"])
    await alice.remove_members(team, ["carol"])
    ack = await alice.send(team, b"welcome, bob")
    [push] = await wait_for(lambda: pushes(push_servers, PHONE))
    assert push.payload["sb"] == {"kind": "message", "chat_id": team, "sender": "alice",
                                  "count": 1, "seq": ack.seq}
    await wait_for(lambda: len(gateway.gateway.services.push.planner) == 0)
    assert pushes(push_servers, TABLET) == []


async def test_previews_only_where_allowed_and_never_of_e2e_bodies(push_servers, gateway):
    await offline(gateway, "bob", "phone", "apns", PHONE, previews=True)
    await offline(gateway, "bob", "tablet", "apns", TABLET, previews=False)
    alice, chat = await direct(gateway)
    await alice.send(chat, b"see you at   eight\n")
    await wait_for(lambda: pushes(push_servers, PHONE) and pushes(push_servers, TABLET))
    assert pushes(push_servers, PHONE)[0].payload["aps"]["alert"]["body"] == "see you at eight"
    assert "body" not in pushes(push_servers, TABLET)[0].payload["aps"]["alert"]
    await alice.send(chat, b"the secret plan", e2e=True)
    await wait_for(lambda: len(pushes(push_servers, PHONE)) == 2)
    alert = pushes(push_servers, PHONE)[1].payload["aps"]["alert"]
    assert "body" not in alert and alert["loc-args"] == ["1"]
    assert "secret" not in str(pushes(push_servers, PHONE)[1].payload)


async def test_a_dead_token_is_removed_at_once(push_servers, gateway):
    push_servers.fcm.dead[ANDROID] = "UNREGISTERED"
    push_servers.apns.dead[TABLET] = "Unregistered"
    await offline(gateway, "bob", "android", "fcm", ANDROID)
    await offline(gateway, "bob", "tablet", "apns", TABLET)
    await offline(gateway, "bob", "phone", "apns", PHONE)
    store = gateway.gateway.services.store
    alice, chat = await direct(gateway)
    await alice.send(chat, b"one")
    await wait_for(lambda: pushes(push_servers, PHONE))

    async def only_the_phone_left() -> bool:
        return sorted(await store.push_tokens("bob")) == ["phone"]
    await wait_for(only_the_phone_left, message="dead tokens removed")
    assert gateway.gateway.services.push.tokens_removed == {"UNREGISTERED": 1, "Unregistered": 1}
    attempts = (push_servers.fcm.attempts, push_servers.apns.attempts)
    await alice.send(chat, b"two")
    await wait_for(lambda: len(pushes(push_servers, PHONE)) == 2)
    assert (push_servers.fcm.attempts, push_servers.apns.attempts) == (attempts[0],
                                                                       attempts[1] + 1)


async def test_a_provider_down_for_a_while_gets_the_push_once_it_is_back(push_servers, gateway):
    from tests.support.push_servers import Scripted
    push_servers.apns.down = Scripted(503, "ServiceUnavailable", retry_after="1")
    await offline(gateway, "bob", "phone", "apns", PHONE)
    alice, chat = await direct(gateway)
    await alice.send(chat, b"are you there")
    service = gateway.gateway.services.push
    # every try inside a send (3) failed, and the service put the push off at least once (the
    # failure is counted once the last try's answer is read: after the server counted the try)
    await wait_for(lambda: push_servers.apns.attempts >= 6
                   and service.failed.get("ServiceUnavailable", 0) >= 2, timeout=30)
    assert len(await gateway.gateway.services.store.queued_pushes()) == 1  # still owed, durably
    push_servers.apns.down = None
    [push] = await wait_for(lambda: pushes(push_servers, PHONE), timeout=30)
    assert push.payload["sb"]["seq"] == 1
    await wait_for(lambda: len(service.planner) == 0)
    assert len(pushes(push_servers, PHONE)) == 1


async def test_reading_on_one_device_clears_the_badge_on_the_others(push_servers, gateway):
    await offline(gateway, "bob", "phone", "apns", PHONE)
    await offline(gateway, "bob", "android", "fcm", ANDROID)
    alice, chat = await direct(gateway)
    for i in range(3):
        await alice.send(chat, b"m%d" % i)
    await wait_for(lambda: sum(p.payload["sb"]["count"] for p in pushes(push_servers, PHONE)) == 3)
    tablet = await connect(gateway, "bob", "tablet")
    await receive(tablet, 3)
    await tablet.mark_read(chat, 3)
    sync = await wait_for(lambda: [p for p in pushes(push_servers, PHONE)
                                   if p.payload["sb"]["kind"] == "read"])
    assert sync[0].payload["aps"] == {"badge": 0, "content-available": 1}
    assert sync[0].headers["apns-priority"] == "5"
    android = await wait_for(lambda: [p for p in push_servers.fcm.to(ANDROID)
                                      if p.message["data"]["kind"] == "read"])
    assert android[0].message["data"]["badge"] == "0"


async def test_registration_errors(push_servers, gateway):
    alice, chat = await direct(gateway)
    bad = [
        ({"register_push": pb.RegisterPush(token=PHONE)}, pb.INVALID_ARGUMENT, "platform"),
        ({"register_push": pb.RegisterPush(platform=pb.APNS, token="not-hex")},
         pb.INVALID_ARGUMENT, "token"),
        ({"register_push": pb.RegisterPush(platform=pb.FCM, token="")}, pb.INVALID_ARGUMENT,
         "token"),
        ({"register_push": pb.RegisterPush(platform=pb.APNS, token=PHONE, topic="a b")},
         pb.INVALID_ARGUMENT, "topic"),
        ({"register_push": pb.RegisterPush(platform=7, token=PHONE)}, pb.INVALID_ARGUMENT,
         "platform"),
        ({"mute_chat": pb.MuteChat(chat_id="nope", muted_until_ms=1)}, pb.NOT_MEMBER, "nope"),
        ({"mute_chat": pb.MuteChat(chat_id=chat, muted_until_ms=2 ** 64 - 1)},
         pb.INVALID_ARGUMENT, "muted_until_ms"),
    ]
    for body, code, detail in bad:
        reply = "ok" if "register_push" in body else "mute_list"
        with pytest.raises(ServerError) as caught:
            await alice.request(reply, **body)
        assert caught.value.code == code and detail in caught.value.detail, body
    await alice.unregister_push()  # none registered: still Ok
    await alice.register_push("fcm", ANDROID)
    await alice.unregister_push()
    assert await gateway.gateway.services.store.push_tokens("alice") == {}
