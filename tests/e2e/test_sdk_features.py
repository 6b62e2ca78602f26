"""The SDK's receipts, presence, typing, settings, devices and drain handling over a real server
(docs/protocol.md 8.11-8.17): what an app built on `switchboard.client.Client` sees."""
from __future__ import annotations

import asyncio

import pytest

from switchboard.buildinfo import build_info
from switchboard.client import AuthError, Client, ConnectionLost, ServerError
from switchboard.proto.v1 import client_pb2 as pb
from switchboard.tools.devcluster import free_port
from tests.support.clients import connect, event, no_event, receive
from tests.support.raw import OPEN_CLIENTS
from tests.support.waiting import wait_for


def tick(update: pb.ReceiptUpdate, seq: int) -> str:
    """The status of one of my messages, as docs/protocol.md 8.11 tells a client to compute it."""
    if update.read_all_seq >= seq:
        return "read"
    if update.delivered_all_seq >= seq:
        return "delivered"
    return "sent"


def unconnected(server, user: str, device: str, **kwargs) -> Client:
    client = Client(server.url, server.token(user, device), **kwargs)
    OPEN_CLIENTS.append(client)
    return client


# ---------------------------------------------------------------------- receipts

async def test_delivered_then_read_ticks_and_read_sync_to_own_devices(server):
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    bob_laptop = await connect(server, "bob", "laptop")
    alice_events, laptop_events = alice.events(), bob_laptop.events()
    chat = (await alice.create_direct("bob")).chat_id
    ack = await alice.send(chat, b"hi bob")

    await receive(bob, 1)  # auto-acked: bob's delivered watermark moves
    delivered = await event(alice_events, pb.ReceiptUpdate,
                            lambda u: u.delivered_all_seq >= ack.seq)
    assert delivered.chat_id == chat and tick(delivered, ack.seq) == "delivered"
    assert [(m.user_id, m.read_seq) for m in delivered.members] == [("bob", 0)]
    [summary] = await bob_laptop.list_chats()
    assert (summary.head_seq, summary.read_seq, summary.unread_count) == (1, 0, 1)

    assert (await bob.mark_read(chat, ack.seq)).read_seq == ack.seq
    read = await event(alice_events, pb.ReceiptUpdate, lambda u: u.read_all_seq >= ack.seq)
    assert tick(read, ack.seq) == "read"
    assert [(m.user_id, m.delivered_seq, m.read_seq) for m in read.members] == [("bob", 1, 1)]
    # bob's other device learns of the read from a ReceiptUpdate listing only bob himself
    own = await event(laptop_events, pb.ReceiptUpdate,
                      lambda u: any(m.read_seq >= ack.seq for m in u.members))
    assert [m.user_id for m in own.members] == ["bob"]
    [summary] = await bob_laptop.list_chats()
    assert summary.unread_count == 0
    [mine] = await alice.list_chats()
    assert mine.unread_count == 0  # own messages never count as unread

    status = await alice.get_receipts(chat, ack.seq)
    assert (status.member_count, status.delivered_count, status.read_count,
            list(status.read_by)) == (1, 1, 1, ["bob"])
    with pytest.raises(ServerError) as info:
        await alice.get_receipts(chat, 99)
    assert info.value.code == pb.NOT_FOUND


# ---------------------------------------------------------------------- presence

async def test_presence_subscription_sees_online_and_offline(make_server):
    server = await make_server(timers__presence_interval=0.2)
    alice = await connect(server, "alice")
    events = alice.events()
    await alice.subscribe_presence(["bob"])
    first = await event(events, pb.Presence, lambda p: p.user_id == "bob")
    assert (first.online, first.last_seen_ms) == (False, 0)  # never seen

    bob = await connect(server, "bob")
    online = await event(events, pb.Presence, lambda p: p.user_id == "bob")
    assert (online.online, online.last_seen_ms) == (True, 0)
    await bob.close()
    offline = await event(events, pb.Presence, lambda p: p.user_id == "bob")
    assert not offline.online and offline.last_seen_ms > 0

    await alice.unsubscribe_presence(["bob"])
    await connect(server, "bob")
    await no_event(events, pb.Presence, timeout=0.6)


async def test_invisible_connection_and_last_seen_privacy(make_server):
    server = await make_server(timers__presence_interval=0.2)
    alice = await connect(server, "alice")
    assert (await alice.update_settings(invisible=True)).invisible
    bob = await connect(server, "bob")
    events = bob.events()
    await bob.subscribe_presence(["alice"])
    hidden = await event(events, pb.Presence)
    assert (hidden.user_id, hidden.online) == ("alice", False)  # connected, but invisible

    await alice.update_settings(invisible=False)
    assert (await event(events, pb.Presence)).online

    await alice.update_settings(last_seen=pb.NOBODY)  # re-evaluated for existing subscribers
    nobody = await event(events, pb.Presence)
    assert (nobody.online, nobody.last_seen_ms) == (False, 0)
    await alice.close()  # hidden viewers get no updates
    await no_event(events, pb.Presence, timeout=0.6)


# ---------------------------------------------------------------------- typing

async def test_typing_is_relayed_throttled_and_stopped(server):
    pushed: list[pb.ServerFrame] = []
    phone = await connect(server, "alice", "phone")
    tablet = await connect(server, "alice", "tablet")
    bob = await connect(server, "bob", on_push=pushed.append)
    chat = (await phone.create_direct("bob")).chat_id
    phone_events, tablet_events, bob_events = phone.events(), tablet.events(), bob.events()

    await phone.typing(chat)
    start = await event(bob_events, pb.TypingUpdate)
    assert (start.chat_id, start.user_id, start.device_id, start.typing,
            start.expires_in_ms) == (chat, "alice", "phone", True, 6000)
    assert (await event(tablet_events, pb.TypingUpdate)).typing  # the sender's other devices too

    await phone.typing(chat)  # within 3 s of the last relayed start: not relayed
    await phone.typing(chat, typing=False)
    stop = await event(bob_events, pb.TypingUpdate)
    assert (stop.typing, stop.expires_in_ms) == (False, 0)
    await no_event(phone_events, pb.TypingUpdate, timeout=0.3)  # never back to the sender
    assert [f.typing_update.typing for f in pushed if f.HasField("typing_update")] == [True, False]


# ---------------------------------------------------------------------- settings

async def test_settings_round_trip(server):
    phone = await connect(server, "alice", "phone")
    laptop = await connect(server, "alice", "laptop")
    defaults = await phone.settings()
    assert (defaults.read_receipts, defaults.last_seen, defaults.invisible) == (
        True, pb.EVERYONE, False)
    changed = await phone.update_settings(read_receipts=False, last_seen=pb.CONTACTS,
                                          invisible=True)
    assert (changed.read_receipts, changed.last_seen, changed.invisible) == (
        False, pb.CONTACTS, True)
    # read_receipts and last_seen belong to the user; invisible to the connection
    other = await laptop.settings()
    assert (other.read_receipts, other.last_seen, other.invisible) == (False, pb.CONTACTS, False)
    partial = await laptop.update_settings(read_receipts=True)
    assert (partial.read_receipts, partial.last_seen) == (True, pb.CONTACTS)
    assert (await phone.settings()).invisible


# ---------------------------------------------------------------------- devices

async def test_list_and_revoke_device_stops_the_revoked_client(server):
    closes: list[int] = []
    phone = await connect(server, "alice", "phone")
    tablet = await connect(server, "alice", "tablet", backoff_max=0.05,
                           on_close=lambda code, reason: closes.append(code))
    listing = await phone.list_devices()
    assert listing.max_devices == 10
    assert {d.device_id: d.online for d in listing.devices} == {"phone": True, "tablet": True}
    assert all(d.first_seen_ms > 0 for d in listing.devices)

    await phone.revoke_device("tablet")
    await wait_for(lambda: tablet.last_close_code == 4011)
    with pytest.raises(ConnectionLost):
        await receive(tablet, 1)
    await asyncio.sleep(0.3)  # would be several reconnect attempts at this backoff
    assert closes == [4011] and not tablet.connected
    assert [d.device_id for d in (await phone.list_devices()).devices] == ["phone"]
    with pytest.raises(ServerError) as info:
        await phone.revoke_device("tablet")
    assert info.value.code == pb.NOT_FOUND

    again = unconnected(server, "alice", "tablet")  # a fresh token does not help
    with pytest.raises(AuthError) as refused:
        await again.connect()
    assert refused.value.code == again.last_close_code == 4011


@pytest.mark.parametrize("in_header", [True, False], ids=["upgrade-401", "auth-frame-4001"])
async def test_a_refused_token_reports_the_servers_reason(server, in_header):
    """A token signed with another key (minted from the wrong data dir) is refused with the
    server's reason, whether the refusal is an HTTP 401 at the upgrade or close 4001."""
    from switchboard.core.auth import TokenAuthority
    forged = TokenAuthority(b"k" * 48).mint("alice", "phone")
    client = Client(server.url, forged, token_in_header=in_header)
    OPEN_CLIENTS.append(client)
    with pytest.raises(AuthError) as refused:
        await client.connect()
    assert refused.value.code == (401 if in_header else 4001)
    assert refused.value.reason == "invalid token"
    assert str(refused.value).endswith(": invalid token")
    expired = Client(server.url, server.token("alice", ttl=-60), token_in_header=in_header)
    OPEN_CLIENTS.append(expired)
    with pytest.raises(AuthError, match="token expired"):
        await expired.connect()


async def test_one_device_too_many_is_refused_until_one_is_revoked(make_server):
    server = await make_server(limits__max_devices=2)
    phone = await connect(server, "alice", "phone")
    await connect(server, "alice", "tablet")
    closes: list[int] = []
    laptop = unconnected(server, "alice", "laptop", backoff_max=0.05,
                         on_close=lambda code, reason: closes.append(code))
    with pytest.raises(AuthError) as refused:
        await laptop.connect()
    assert refused.value.code == laptop.last_close_code == 4012
    await asyncio.sleep(0.3)
    assert closes == [4012] and not laptop.connected  # no reconnect loop

    await phone.revoke_device("tablet")
    await laptop.connect()
    assert laptop.device_id == "laptop"


# ---------------------------------------------------------------------- drain

async def test_drain_says_goaway_closes_1001_and_the_client_comes_back(make_server):
    first = await make_server(server__drain_spread=0.2)
    port = first.gateway.port
    alice = await connect(first, "alice", backoff_max=0.2)
    await connect(first, "bob", backoff_max=0.2)
    events = alice.events()
    await alice.subscribe_presence(["bob"])
    assert (await event(events, pb.Presence)).online

    await first.stop()
    goaway = await event(events, pb.Goaway)
    assert goaway.reconnect_after_ms <= 200
    await wait_for(lambda: alice.last_close_code == 1001)

    await make_server(server__port=port)  # the same data dir, once the first is fully stopped
    await wait_for(lambda: alice.connected, timeout=10)
    # presence subscriptions died with the connection; the SDK subscribed again
    assert (await event(events, pb.Presence)).user_id == "bob"


async def test_drain_loses_no_send_and_still_says_goaway(make_server):
    first = await make_server(server__drain_spread=0.2)
    port = first.gateway.port
    closes: list[int] = []
    alice = await connect(first, "alice", backoff_max=0.2,
                          on_close=lambda code, reason: closes.append(code))
    bob = await connect(first, "bob", backoff_max=0.2)
    chat = (await alice.create_direct("bob")).chat_id
    events = alice.events()

    # sends already on their way when the drain starts, and sends issued during it
    sends = [asyncio.ensure_future(alice.send(chat, b"%d" % i, client_msg_id=f"m{i}"))
             for i in range(10)]
    stopping = asyncio.ensure_future(first.stop())
    await asyncio.sleep(0)
    sends += [asyncio.ensure_future(alice.send(chat, b"%d" % i, client_msg_id=f"m{i}"))
              for i in range(10, 20)]
    await stopping
    await make_server(server__port=port)
    acks = await asyncio.wait_for(asyncio.gather(*sends), 15)
    assert sorted(a.seq for a in acks) == list(range(1, 21))
    assert not any(a.duplicate for a in acks)  # what was stored was acked before the close
    page = await alice.history(chat)
    assert sorted(m.client_msg_id for m in page.messages) == sorted(f"m{i}" for i in range(20))
    assert [m.seq for m in await receive(bob, 20)] == list(range(1, 21))

    # frames in flight must not cost the client the Goaway and the close code
    assert closes[0] == 1001
    await event(events, pb.Goaway, timeout=0.1)


# ---------------------------------------------------------------------- several endpoints

async def test_several_urls_skip_a_dead_endpoint_and_rotate_after_a_lost_connection(make_server):
    dead = f"ws://127.0.0.1:{free_port()}/v1/ws"  # nobody listens there
    later_port = free_port()
    later = f"ws://127.0.0.1:{later_port}/v1/ws"
    first = await make_server(server__drain_spread=0.1)
    alice = Client([dead, first.url, later], first.token("alice"), backoff_max=0.2)
    bob = Client([first.url, later], first.token("bob"), backoff_max=0.2)
    OPEN_CLIENTS.extend([alice, bob])
    await bob.connect()
    assert alice.urls == (dead, first.url, later)
    await alice.connect()  # the first endpoint refuses: the client goes on to the second
    assert alice.connected and alice.url == first.url
    chat = (await alice.create_direct("bob")).chat_id
    assert (await alice.send(chat, b"before")).seq == 1

    await first.stop()
    await wait_for(lambda: not alice.connected)
    # the gateway is gone for good; a new one comes up on the third endpoint only
    second = await make_server(server__port=later_port)
    await wait_for(lambda: alice.connected and bob.connected, timeout=10)
    assert alice.url == later  # and it stays there
    assert (await alice.send(chat, b"after")).seq == 2
    assert [m.body for m in await receive(bob, 2)] == [b"before", b"after"]
    assert bob.url == later
    assert (alice.stats.reconnects, bob.stats.reconnects) == (1, 1)
    assert second.gateway.hub.connections == 2


async def test_a_single_url_is_still_a_plain_string_and_no_urls_is_refused(server):
    client = Client(server.url, server.token("alice"))
    assert (client.url, client.urls) == (server.url, (server.url,))
    with pytest.raises(ValueError):
        Client([], server.token("alice"))


async def test_connect_fails_only_when_every_endpoint_is_dead(server):
    dead = [f"ws://127.0.0.1:{free_port()}/v1/ws" for _ in range(2)]
    client = Client(dead, server.token("alice"), connect_timeout=2)
    with pytest.raises(ConnectionLost):
        await client.connect()
    await client.close()


# ---------------------------------------------------------------------- server info

async def test_server_info_states_the_limits_the_server_enforces(make_server):
    server = await make_server(limits__max_group_members=3, limits__sends_per_second=2.0,
                               limits__send_burst=5.0, cluster__node_name="edge-1",
                               media__max_bytes=1_000_000, media__types="image/*,audio/ogg")
    alice = await connect(server, "alice")
    info = await alice.server_info()
    assert (info.version, info.node) == (build_info()["version"], "edge-1")
    assert (info.max_group_members, info.max_devices, info.max_history_limit,
            info.max_event_users) == (3, 10, 200, 256)
    assert (info.sends_per_second, info.send_burst) == (2.0, 5.0)  # test_user_limits holds them
    assert (info.media_max_bytes, list(info.media_types), info.push_enabled) == (
        1_000_000, ["image/*", "audio/ogg"], False)

    # what it states is what the server holds a client to
    with pytest.raises(ServerError) as too_large:
        await alice.create_group("four", ["bob", "carol", "dave"])
    assert too_large.value.code == pb.GROUP_FULL
    assert len((await alice.create_group("three", ["bob", "carol"])).members) == 3
    for size, content_type, code in ((1_000_001, "image/png", pb.MEDIA_TOO_LARGE),
                                     (1_000, "video/mp4", pb.MEDIA_TYPE_REFUSED)):
        with pytest.raises(ServerError) as refused:
            await alice.request("upload_slot", create_upload=pb.CreateUpload(
                size=size, content_type=content_type, sha256=bytes(32)))
        assert refused.value.code == code
