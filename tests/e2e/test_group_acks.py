"""A group's acks on their way through the gateway's ack batch (core/acks.py) and the receipt
flush's kept rollup (core/rollup.py), over real sockets with the SDK: the sender is told of
every member's delivered watermark as it moves, each value once and in order, the rollup
reaches the last message only when every member holds it, and what is stored agrees."""
from __future__ import annotations

import asyncio

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.clients import connect, event, no_event, receive

MEMBERS = 24
MESSAGES = 6


async def test_every_members_delivered_watermark_reaches_the_sender_once_per_value(server):
    sender = await connect(server, "sender")
    users = [f"m{i}" for i in range(MEMBERS)]
    members = {user: await connect(server, user) for user in users}
    second = await connect(server, users[0], "laptop")  # a second device of one member
    chat = (await sender.create_group("acks", users)).chat_id
    events = sender.events()
    own_events = {user: client.events() for user, client in members.items()}
    seqs = [(await sender.send(chat, f"m{k}".encode())).seq for k in range(MESSAGES)]
    last = seqs[-1]
    await asyncio.gather(*(receive(client, MESSAGES) for client in (*members.values(), second)))

    told: dict[str, list[int]] = {user: [] for user in users}
    rollups: list[int] = []

    def note(update: pb.ReceiptUpdate) -> bool:
        for m in update.members:
            told.setdefault(m.user_id, []).append(m.delivered_seq)
        rollups.append(update.delivered_all_seq)
        return update.delivered_all_seq >= last

    await event(events, pb.ReceiptUpdate, lambda u: u.chat_id == chat and note(u))
    assert told.keys() == set(users)
    for user, values in told.items():
        assert values == sorted(set(values)), f"{user}: {values}"  # each value once, rising
        assert values[-1] == last, f"{user}: {values}"
    assert rollups == sorted(rollups)
    # the rollup says "delivered to all" only once the slowest member's watermark got there
    assert rollups[-1] == last and min(values[-1] for values in told.values()) == last

    async def stored() -> pb.ReceiptStatus:  # the acks' commit follows within ack_delay
        while (status := await sender.get_receipts(chat, last)).delivered_count < MEMBERS:
            await asyncio.sleep(0.02)
        return status

    status = await asyncio.wait_for(stored(), 15)
    assert (status.member_count, status.delivered_count) == (MEMBERS, MEMBERS)
    for user in users[:3]:  # an ack is not echoed to its own user's devices
        await no_event(own_events[user], pb.ReceiptUpdate, lambda u: u.chat_id == chat)
