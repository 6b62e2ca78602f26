"""Multi-device: fan-out to the sender's other devices, per-device cursors, device list,
revocation and the device limit."""
from __future__ import annotations

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.clients import acked_and_stored
from tests.support.raw import RawClient
from tests.support.rawflow import authed, direct, receive_and_ack, request, send
from tests.support.waiting import wait_for


async def test_three_devices_one_offline(server):
    phone = await authed(server, "alice", "phone")
    laptop = await authed(server, "alice", "laptop")
    tablet = await authed(server, "alice", "tablet")
    tablet.close()
    bob = await authed(server, "bob")
    chat = await direct(phone, "bob")
    ack = await send(phone, chat, b"from my phone")
    for device in (laptop, bob):
        [got] = await receive_and_ack(device, 1)
        assert (got.seq, got.body, got.sender_device_id) == (ack.seq, b"from my phone", "phone")
    tablet = await RawClient.connect(server.url, server.token("alice", "tablet"))
    await tablet.recv("welcome")
    [synced] = await receive_and_ack(tablet, 1)
    assert synced.seq == ack.seq
    devices = (await request(laptop, list_devices=pb.ListDevices())).device_list
    assert {d.device_id: d.online for d in devices.devices} == {"phone": True, "laptop": True,
                                                                 "tablet": True}
    assert devices.max_devices == 10


async def test_revoked_device_is_cut_off_and_stays_out(server):
    phone = await authed(server, "alice", "phone")
    stolen = await authed(server, "alice", "stolen")
    reply = await request(phone, revoke_device=pb.RevokeDevice(device_id="stolen"))
    assert reply.WhichOneof("body") == "ok"
    assert (await stolen.closed())[0] == 4011
    again = await RawClient.connect(server.url, server.token("alice", "stolen"))
    assert (await again.closed())[0] == 4011
    listed = (await request(phone, list_devices=pb.ListDevices())).device_list.devices
    assert [d.device_id for d in listed] == ["phone"]
    reply = await request(phone, revoke_device=pb.RevokeDevice(device_id="never-seen"))
    assert reply.error.code == pb.NOT_FOUND


async def test_eleventh_device_is_refused(server):
    for i in range(10):
        (await authed(server, "alice", f"d{i}")).close()
    eleventh = await RawClient.connect(server.url, server.token("alice", "d10"))
    code, reason = await eleventh.closed()
    assert code == 4012 and "too many devices" in reason
    back = await authed(server, "alice", "d3")  # a known device still gets in
    assert back.transport is not None


async def test_each_device_has_its_own_cursor(server):
    alice = await authed(server, "alice")
    phone = await authed(server, "bob", "phone")
    laptop = await authed(server, "bob", "laptop")
    chat = await direct(alice, "bob")
    for _ in range(4):
        await send(alice, chat)
    await receive_and_ack(phone, 4)
    [phone_conn] = [c for c in server.gateway.hub.devices_of("bob") if c.device == "phone"]
    await wait_for(lambda: phone_conn.session.streams[chat].acked == 4)  # the ack arrived
    await acked_and_stored(server, "bob", "phone")
    laptop.close()  # never acked anything
    phone.close()
    laptop = await RawClient.connect(server.url, server.token("bob", "laptop"))
    await laptop.recv("welcome")
    assert [m.seq for m in await receive_and_ack(laptop, 4)] == [1, 2, 3, 4]
    phone = await RawClient.connect(server.url, server.token("bob", "phone"))
    await phone.recv("welcome")
    done = (await phone.recv("sync_complete")).sync_complete
    assert done.messages == 0


async def test_a_second_device_joins_the_first_in_the_hub_and_leaves_it_alone_again(server):
    """The hub keeps a user's one device as its connection (no dict per user) and a dict once a
    second connects; messages reach every device in each shape."""
    hub = server.gateway.hub
    alice = await authed(server, "alice")
    phone = await authed(server, "bob", "phone")
    chat = await direct(alice, "bob")
    await send(alice, chat, b"one device")
    [got] = await receive_and_ack(phone, 1)
    assert got.body == b"one device"
    [phone_conn] = hub.devices_of("bob")
    assert hub._by_user["bob"] is phone_conn
    laptop = await authed(server, "bob", "laptop")
    await receive_and_ack(laptop, 1)  # its sync
    assert set(hub._by_user["bob"]) == {"phone", "laptop"}
    await send(alice, chat, b"two devices")
    for device in (phone, laptop):
        [got] = await receive_and_ack(device, 1)
        assert got.body == b"two devices"
    phone.close()
    await wait_for(lambda: len(hub.devices_of("bob")) == 1, message="the phone left the hub")
    [laptop_conn] = hub.devices_of("bob")
    assert hub._by_user["bob"] is laptop_conn and laptop_conn.device == "laptop"
    await send(alice, chat, b"one again")
    [got] = await receive_and_ack(laptop, 1)
    assert got.body == b"one again"
    laptop.close()
    await wait_for(lambda: "bob" not in hub._by_user, message="bob left the hub")
