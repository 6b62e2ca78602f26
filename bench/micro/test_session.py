"""The session's frame path for one message, natively (core/_native/session.pyx, what the
gateway runs) and through its pure-Python twin (tests/reference/session_model.py): the
sender's Send read and handed to the port, its SendAck written, the Deliver offered to the
receiver's session and written, the receiver's Ack read and its cursor handed to the port, and
both sessions' output taken. No socket and no store: what the session itself costs."""
from __future__ import annotations

import pytest

from switchboard.core._native import wire
from switchboard.core.model import StoredMessage
from switchboard.core.session import Session as NativeSession, SessionConfig, SessionStats
from switchboard.gateway.wire import session_frame
from switchboard.proto.v1 import client_pb2 as pb
from tests.reference import wire_model
from tests.reference.session_model import Session as ModelSession
from tests.support.sessions import BINARY, Clock, ack, backlog, send

CHAT = "d:alice:bob"
CONFIG = SessionConfig(frames_per_second=1e9, frame_burst=1e9, max_frame_bytes=128 * 1024,
                       delivery_window=1 << 30, outbound_buffer_bytes=1 << 30,
                       auth_timeout=10.0, heartbeat_interval=30.0, idle_timeout=90.0,
                       retransmit_after=10.0)
WELCOME = pb.ServerFrame(welcome=pb.Welcome(user_id="x")).SerializeToString()
IMPLS = {"native": (NativeSession, wire.deliver_frames),
         "model": (ModelSession, wire_model.deliver_frames)}


class LeanPort:
    """A port that only keeps what the path hands it last (no recording to pay for)."""

    def __init__(self) -> None:
        self.sync = None
        self.last = None

    def decode(self, payload):  # the twin's reader; the native session reads these itself
        return session_frame(payload)

    def submit(self, rid, chat_id, client_msg_id, body, media_ids, e2e, now):
        self.last = rid

    def cursor(self, chat_id, seq, delivered):
        self.last = seq

    def load_backlog(self, sync):
        self.sync = sync

    def connected(self):
        pass

    def wants_flush(self):
        pass

    def buffered(self):
        return 0

    def pump(self):
        raise AssertionError("live messages in order never need a store read")

    def load_cursors(self):
        pass


def _open(session_class, user: str, device: str):
    port = LeanPort()
    session = session_class(port, CONFIG, SessionStats(), Clock(), user=user, device=device)
    session.connected(100.0)
    session.open(WELCOME)
    session.backlog_loaded(port.sync, [backlog(CHAT, 0, 0)])
    session.take_output()
    return session, port


ROUNDS = 20_000


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_one_message_through_two_sessions(benchmark, impl):
    """Per message: the frames the devices send and the stored row are made beforehand; the
    Deliver's encoding (once per chat per commit in the hub) is counted."""
    session_class, deliver_frames = IMPLS[impl]
    alice, _ = _open(session_class, "alice", "phone")
    bob, bob_port = _open(session_class, "bob", "phone")
    inputs = []
    for seq in range(1, ROUNDS + 1):
        cmid = f"0f8fad5b-d9cb-469f-a165-{seq:012d}"
        inputs.append((seq, send(seq, CHAT, cmid, b"x" * 64),
                       StoredMessage(CHAT, seq, (1 << 40) + seq, "alice", "phone", cmid,
                                     b"x" * 64, (), 1_760_000_000_000), ack((CHAT, seq))))
    pending = iter(inputs)
    max_frame_bytes = CONFIG.max_frame_bytes

    def one_message():
        seq, send_frame, row, ack_frame = next(pending)
        alice.receive(BINARY, True, send_frame, 100.0)
        alice.send_acked(seq, row, False)
        bob.offer(CHAT, [row], deliver_frames([row], max_frame_bytes))
        bob.receive(BINARY, True, ack_frame, 100.0)
        return alice.take_output(), bob.take_output()

    acked, delivered = benchmark.pedantic(one_message, rounds=ROUNDS, iterations=1)
    assert acked and delivered and bob_port.last == ROUNDS
