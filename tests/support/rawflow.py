"""Helpers for raw-protocol tests: authenticated clients, chats, sends, acked receiving."""
from __future__ import annotations

import asyncio

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.raw import RawClient


async def authed(server, user: str, device: str = "phone", **kwargs) -> RawClient:
    client = await RawClient.connect(server.url, server.token(user, device), **kwargs)
    await client.recv("welcome")
    await client.recv("sync_complete")
    return client


async def request(client: RawClient, **body) -> pb.ServerFrame:
    return await client.reply(client.send(**body))


async def direct(client: RawClient, other: str) -> str:
    return (await request(client, create_chat=pb.CreateChat(
        kind=pb.DIRECT, member_user_ids=[other]))).chat.chat_id


async def group(client: RawClient, others: list[str], title: str = "group") -> str:
    return (await request(client, create_chat=pb.CreateChat(
        kind=pb.GROUP, member_user_ids=others, title=title))).chat.chat_id


async def send(client: RawClient, chat: str, body: bytes = b"x", cmid: str | None = None) -> pb.SendAck:
    client._cmid = getattr(client, "_cmid", 0) + 1
    reply = await request(client, send=pb.Send(
        client_msg_id=cmid or f"c{client._cmid}", chat_id=chat, body=body))
    assert reply.WhichOneof("body") == "send_ack", reply
    return reply.send_ack


async def presence_of(client: RawClient, user: str, timeout: float = 5.0) -> pb.Presence:
    """The next Presence about `user` (others the client is subscribed to are passed over)."""
    async def loop():
        while True:
            update = (await client.recv("presence", timeout=timeout)).presence
            if update.user_id == user:
                return update
    return await asyncio.wait_for(loop(), timeout)


async def receive_and_ack(client: RawClient, count: int, timeout: float = 15.0) -> list[pb.Message]:
    """Take `count` delivered messages, acking each frame cumulatively per chat. A message seen
    before is dropped, as a client does: the server retransmits what is not acked within
    retransmit_after, which on a busy machine can be before this side's ack arrived."""
    got: list[pb.Message] = []
    while len(got) < count:
        frame = await client.recv("deliver", timeout=timeout)
        for message in frame.deliver.messages:
            if (message.chat_id, message.seq) not in client.taken:
                client.taken.add((message.chat_id, message.seq))
                got.append(message)
        last: dict[str, int] = {}
        for message in frame.deliver.messages:
            last[message.chat_id] = message.seq
        client.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=c, seq=s) for c, s in last.items()]))
    return got


def arrived_messages(client: RawClient) -> list[pb.Message]:
    """Messages that have arrived and that receive_and_ack has not returned yet (retransmits of
    taken ones left out), without waiting; the frames stay for later recv calls."""
    while not client.listener.frames.empty():
        client.stash.append(client.listener.frames.get_nowait())
    return [m for frame in client.stash if frame.WhichOneof("body") == "deliver"
            for m in frame.deliver.messages if (m.chat_id, m.seq) not in client.taken]
