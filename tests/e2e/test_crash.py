"""kill -9 of the server right after a SendAck: the message is durable, reaches the offline
recipient after restart, and a retried send creates no duplicate (I1, I4; F1)."""
from __future__ import annotations

from switchboard.proto.v1 import client_pb2 as pb
from tests.support.raw import RawClient
from tests.support.server import ServerProcess


async def connect(server: ServerProcess, user: str, device: str = "phone") -> RawClient:
    client = await RawClient.connect(server.url, server.token(user, device))
    await client.recv("welcome")
    return client


async def test_kill9_after_sendack_loses_nothing_and_retry_is_idempotent(tmp_path):
    server = await ServerProcess(tmp_path).start()
    try:
        alice = await connect(server, "alice")
        rid = alice.send(create_chat=pb.CreateChat(kind=pb.DIRECT, member_user_ids=["bob"]))
        chat = (await alice.reply(rid)).chat.chat_id
        acks = []
        for i in range(20):
            rid = alice.send(send=pb.Send(client_msg_id=f"m{i}", chat_id=chat, body=f"#{i}".encode()))
            acks.append((await alice.reply(rid)).send_ack)
        server.kill()  # SIGKILL straight after the last SendAck
        await alice.closed()

        server = await ServerProcess(tmp_path, port=server.port).start()
        bob = await connect(server, "bob")
        got = []
        while True:
            frame = await bob.recv()
            kind = frame.WhichOneof("body")
            if kind == "deliver":
                got += frame.deliver.messages
                bob.send(ack=pb.Ack(acks=[pb.ChatSeq(chat_id=chat, seq=got[-1].seq)]))
            elif kind == "sync_complete":
                break
        assert [(m.seq, m.body) for m in got] == [(a.seq, f"#{i}".encode()) for i, a in enumerate(acks)]
        assert [m.server_id for m in got] == [a.server_id for a in acks]

        # the client never saw the last ack (say): it retries with the same id after restart
        alice = await connect(server, "alice")
        rid = alice.send(send=pb.Send(client_msg_id="m19", chat_id=chat, body=b"#19"))
        retry = (await alice.reply(rid)).send_ack
        assert (retry.seq, retry.server_id, retry.duplicate) == (acks[-1].seq, acks[-1].server_id, True)
        rid = alice.send(history=pb.History(chat_id=chat, limit=100))
        assert len((await alice.reply(rid)).history_page.messages) == 20
    finally:
        server.stop()
