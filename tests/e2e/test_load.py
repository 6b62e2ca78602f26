"""50 devices chatting in 10 chats at once: every device receives every message of its chats
exactly once, in seq order, with no gap (I2, I3)."""
from __future__ import annotations

import asyncio
import random

from tests.support.clients import connect, receive

USERS = 25
DEVICES_PER_USER = 2
CHATS = 10
MEMBERS_PER_CHAT = 5
SENDS_PER_DEVICE_PER_CHAT = 4


async def test_fifty_devices_ten_chats_exactly_once_in_order(make_server):
    server = await make_server(limits__sends_per_second=1000.0, limits__send_burst=1000.0)
    rng = random.Random(7)
    users = [f"u{i}" for i in range(USERS)]
    devices = {(u, d): await connect(server, u, f"dev{d}") for u in users for d in range(DEVICES_PER_USER)}
    chats: dict[str, list[str]] = {}
    for c in range(CHATS):
        members = rng.sample(users, MEMBERS_PER_CHAT)
        admin = devices[(members[0], 0)]
        info = await admin.create_group(f"chat{c}", members[1:])
        chats[info.chat_id] = members

    async def chatter(user: str, device: int) -> list:
        client = devices[(user, device)]
        acks = []
        for round_ in range(SENDS_PER_DEVICE_PER_CHAT):
            for chat_id, members in chats.items():
                if user in members:
                    body = f"{user}/{device}/{round_}".encode()
                    acks.append(await client.send(chat_id, body))
        return acks

    results = await asyncio.gather(*(chatter(u, d) for (u, d) in devices))
    all_acks = [a for acks in results for a in acks]
    heads = {chat: max(a.seq for a in all_acks if a.chat_id == chat) for chat in chats}
    for chat, head in heads.items():
        assert sorted(a.seq for a in all_acks if a.chat_id == chat) == list(range(1, head + 1))

    for (user, device), client in devices.items():
        own = {(a.chat_id, a.seq) for a in results[list(devices).index((user, device))]}
        expected = sum(head for chat, head in heads.items() if user in chats[chat]) - len(own)
        got = await receive(client, expected, timeout=30) if expected else []
        per_chat: dict[str, list[int]] = {}
        for message in got:
            assert user in chats[message.chat_id]
            per_chat.setdefault(message.chat_id, []).append(message.seq)
        for chat, seqs in per_chat.items():
            assert seqs == sorted(set(seqs)), f"{user}/{device} saw {chat} out of order or twice"
            mine = {seq for (c, seq) in own if c == chat}
            assert sorted(set(seqs) | mine) == list(range(1, heads[chat] + 1))
    for client in devices.values():
        await client.close()
