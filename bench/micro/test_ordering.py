"""The SDK's per-chat ordering and dedup (switchboard.client.ordering.ChatOrder): every
delivered message goes through feed(), every SendAck through on_send_ack(), every ack frame
through take_acks(). This is the generator's per-message cost too (bench/device.py)."""
from __future__ import annotations

from switchboard.client.ordering import ChatOrder
from switchboard.proto.v1 import client_pb2 as pb

CHATS = 100
RUN = 1000


def _messages(chat: str, seqs) -> list[pb.Message]:
    return [pb.Message(chat_id=chat, seq=s, sender_user_id="bob", sender_device_id="phone",
                       body=b"x" * 64) for s in seqs]


def test_feed_in_order(benchmark):
    """1,000 messages of one chat arriving in order (the steady state), then the ack."""
    messages = _messages("c", range(1, RUN + 1))

    def run():
        order = ChatOrder(user_id="alice", device_id="phone")
        for m in messages:
            order.feed(m)
        return order.take_acks()

    assert benchmark(run) == [("c", RUN)]


def test_feed_duplicates(benchmark):
    """A replay after reconnect: 1,000 messages the device already holds."""
    messages = _messages("c", range(1, RUN + 1))

    def run():
        order = ChatOrder({"c": RUN}, user_id="alice", device_id="phone")
        order.feed(messages[0])  # the chat is live on this connection
        for m in messages:
            order.feed(m)
        return order.duplicates

    assert benchmark(run) == RUN + 1


def test_feed_reordered_then_drained(benchmark):
    """1,000 messages with every pair swapped: half are buffered, then drained."""
    seqs = [s for pair in zip(range(3, RUN + 2, 2), range(2, RUN + 1, 2)) for s in pair]
    messages = _messages("c", [1] + seqs)

    def run():
        order = ChatOrder(user_id="alice", device_id="phone")
        ready = 0
        for m in messages:
            ready += len(order.feed(m))
        return ready

    assert benchmark(run) == len(messages)


def test_send_acks_and_acks_over_chats(benchmark):
    """Own sends acknowledged in 100 chats, 10 each, then one cumulative ack frame's worth."""
    def run():
        order = ChatOrder(user_id="alice", device_id="phone")
        for seq in range(1, 11):
            for c in range(CHATS):
                order.on_send_ack(f"chat{c}", seq)
        return order.take_acks()

    assert len(benchmark(run)) == CHATS
