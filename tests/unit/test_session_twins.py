"""The native session and its pure-Python twin, fed the same random histories, write the same
bytes, make the same port calls and put the same acks at every step: frames of every kind (plain, fragmented,
malformed, out of range, text, close, ping), offers, membership events that remove and re-add the
user, SendAcks and send errors, pump reads of messages and periods, syncs, timer ticks with
retransmits and pings, a backed-up transport, closes, and all of that again after the socket
is gone (CLOSED: nothing goes out, no port call)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from switchboard.core._native import wire
from switchboard.core.acks import AckBatch as NativeAckBatch
from switchboard.core.backlog import backlog_row
from switchboard.core.model import MemberAction, MembershipEvent, Period, StoredMessage
from switchboard.core.session import Session as NativeSession, SessionConfig, SessionStats
from switchboard.proto.v1 import client_pb2 as pb
from tests.reference import wire_model
from tests.reference.acks_model import AckBatch as ModelAckBatch
from tests.reference.session_model import Session as ModelSession
from tests.support.sessions import Clock, Port, message

CONFIG = SessionConfig(frames_per_second=50.0, frame_burst=30.0, max_frame_bytes=2048,
                       delivery_window=6, outbound_buffer_bytes=40_000, auth_timeout=10.0,
                       heartbeat_interval=30.0, idle_timeout=90.0, retransmit_after=10.0)
CHATS = ["c1", "c2", "c3"]
WELCOME = pb.ServerFrame(welcome=pb.Welcome(user_id="bob")).SerializeToString()


class Twin:
    """One implementation's session with its own port and clock."""

    def __init__(self, session_class, deliver, ack_batch, header_auth: bool) -> None:
        self.port = Port()
        self.clock = Clock()
        self.stats = SessionStats()
        self.deliver = deliver
        self.acks = ack_batch(lambda: self.port.calls.append(("acks_ready",)))
        self.session = session_class(self.port, CONFIG, self.stats, self.clock, acks=self.acks,
                                     user="bob" if header_auth else "",
                                     device="laptop" if header_auth else "")
        self.session.connected(self.clock.t)

    def observe(self) -> tuple:
        """What left the session since the last look: bytes, port calls and acks (a sync's
        token is each implementation's own object: only that there was one is compared)."""
        calls = [c if c[0] != "load_backlog" else ("load_backlog",) for c in self.port.calls]
        self.port.calls = [c for c in self.port.calls if c[0] == "load_backlog"]
        return (self.session.take_output(), calls, self.acks.take(), self.session.state,
                self.session.inflight)


def client_frame(draw) -> bytes:
    chat = draw(st.sampled_from(CHATS))
    rid = draw(st.integers(0, 5))
    kind = draw(st.sampled_from(["send", "ack", "sync", "auth", "history", "ping", "empty",
                                 "garbage", "bad_seq"]))
    if kind == "send":
        return pb.ClientFrame(request_id=rid, send=pb.Send(
            chat_id=chat, client_msg_id=f"m{draw(st.integers(0, 9))}",
            body=draw(st.binary(max_size=8)))).SerializeToString()
    if kind == "ack":
        return pb.ClientFrame(request_id=rid, ack=pb.Ack(acks=[
            pb.ChatSeq(chat_id=c, seq=draw(st.integers(0, 12)))
            for c in draw(st.lists(st.sampled_from(CHATS), max_size=3))])).SerializeToString()
    if kind == "sync":
        return pb.ClientFrame(request_id=rid, sync=pb.Sync()).SerializeToString()
    if kind == "auth":
        return pb.ClientFrame(request_id=rid, auth=pb.Auth(token="tok")).SerializeToString()
    if kind == "history":
        return pb.ClientFrame(request_id=rid, history=pb.History(chat_id=chat)).SerializeToString()
    if kind == "ping":
        return pb.ClientFrame(request_id=rid, ping=pb.Ping(client_time_ms=7)).SerializeToString()
    if kind == "bad_seq":
        return pb.ClientFrame(request_id=rid, ack=pb.Ack(
            acks=[pb.ChatSeq(chat_id=chat, seq=2 ** 63)])).SerializeToString()
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=10))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), header_auth=st.booleans())
def test_native_and_model_sessions_behave_alike(data, header_auth):
    draw = data.draw
    native = Twin(NativeSession, wire.deliver_frames, NativeAckBatch, header_auth)
    model = Twin(ModelSession, wire_model.deliver_frames, ModelAckBatch, header_auth)
    twins = (native, model)
    store: dict[str, list] = {chat: [] for chat in CHATS}
    periods: dict[str, list[Period]] = {chat: [Period(0, None)] for chat in CHATS}  # bob's
    for _ in range(draw(st.integers(1, 40))):
        step = draw(st.sampled_from(["frame", "frame", "frame", "offer", "offer", "acked",
                                     "failed", "tick", "pump", "backlog", "buffered",
                                     "fragments", "opcode", "admit", "close", "flush", "event",
                                     "recheck", "disconnect"]))
        if step == "frame":
            payload = client_frame(draw)
            for t in twins:
                t.session.receive(0x2, True, payload, t.clock.t)
        elif step == "fragments":
            payload = client_frame(draw)
            cut = draw(st.integers(0, len(payload)))
            for opcode, fin, part in ((0x2, False, payload[:cut]), (0x0, True, payload[cut:])):
                for t in twins:
                    t.session.receive(opcode, fin, part, t.clock.t)
        elif step == "opcode":
            opcode = draw(st.sampled_from([0x0, 0x1, 0x8, 0x9, 0xA]))
            payload = draw(st.binary(max_size=4))
            for t in twins:
                t.session.receive(opcode, True, payload, t.clock.t)
        elif step == "offer":
            chat = draw(st.sampled_from(CHATS))
            count = draw(st.integers(1, 3))
            own = draw(st.booleans())
            head = len(store[chat])
            rows = [message(chat, head + i + 1, "bob" if own else "alice",
                            "laptop" if own else "phone", b"x" * draw(st.integers(0, 900)))
                    for i in range(count)]
            store[chat] += rows
            for t in twins:
                t.session.offer(chat, rows, t.deliver(rows, CONFIG.max_frame_bytes))
        elif step == "event":
            chat = draw(st.sampled_from(CHATS))
            seq = len(store[chat]) + 1
            member = periods[chat][-1].left_seq is None
            action = MemberAction.REMOVED if member else MemberAction.ADDED
            if member:
                periods[chat][-1] = Period(periods[chat][-1].joined_seq, seq)
            else:
                periods[chat].append(Period(seq - 1, None))
            rows = [StoredMessage(chat, seq, 1000 + seq, "alice", "", f"e{seq}", b"", (),
                                  5000 + seq, MembershipEvent(action, "alice", ("bob",)))]
            store[chat] += rows
            for t in twins:
                t.session.offer(chat, rows, t.deliver(rows, CONFIG.max_frame_bytes))
        elif step == "recheck":
            chat = draw(st.sampled_from(CHATS))
            for t in twins:
                t.session.recheck_chat(chat)
        elif step == "acked":
            chat = draw(st.sampled_from(CHATS))
            row = message(chat, draw(st.integers(1, 12)), "bob", "laptop")
            rid, duplicate = draw(st.integers(0, 5)), draw(st.booleans())
            for t in twins:
                t.session.send_acked(rid, row, duplicate)
        elif step == "failed":
            for t in twins:
                t.session.send_failed(4, pb.UNAVAILABLE, "store unavailable", 1000, "c1", "m1")
        elif step == "tick":
            seconds = draw(st.sampled_from([0.5, 2.5, 9.0, 10.5, 31.0, 91.0]))
            for t in twins:
                t.clock.advance(seconds)
        elif step == "pump":
            for t in twins:
                if t.port.take("pump"):
                    while (want := t.session.next_read()) is not None:
                        chat, after, limit = want
                        if not limit:
                            t.session.periods(chat, periods[chat])
                            continue
                        t.session.rows(chat, after, [m for m in store[chat] if m.seq > after][:limit])
                    t.session.pump_stopped()
        elif step == "backlog":
            rows = [(chat, draw(st.integers(0, 3))) for chat in draw(st.lists(st.sampled_from(CHATS),
                                                                              unique=True))]
            for t in twins:
                for (sync,) in t.port.take("load_backlog"):
                    backlog = [backlog_row(c, periods[c], min(cur, len(store[c])), len(store[c]))
                               for c, cur in rows]
                    t.session.backlog_loaded(sync, [row for row in backlog if row is not None])
        elif step == "buffered":
            size = draw(st.sampled_from([0, 0, 3000, 45_000]))
            for t in twins:
                t.port.buffered_bytes = size
                t.session.check_outbound()
        elif step == "admit":
            for t in twins:
                if t.session.state == 0 and t.port.take("authenticate"):
                    t.session.authenticated("bob", "laptop")
                if t.session.state == 1:
                    t.session.open(WELCOME)
        elif step == "close":
            code = draw(st.sampled_from([4010, 1001]))
            for t in twins:
                t.session.close(code, "bye")
        elif step == "flush":
            size = draw(st.sampled_from([0, 1000]))
            for t in twins:
                t.port.buffered_bytes = size
                t.session.resumed()
        elif step == "disconnect":
            assert len({int(t.session.disconnected()) for t in twins}) == 1
        seen = native.observe()
        assert seen == model.observe(), step
        if native.session.state == 4:  # CLOSED: whatever comes late is a no-op
            output, calls, acks = seen[:3]
            assert (output, calls, any(acks)) == (b"", [c for c in calls if c == ("load_backlog",)],
                                                  False), step
        assert native.stats.retransmits == model.stats.retransmits
        assert native.stats.deliveries == model.stats.deliveries
