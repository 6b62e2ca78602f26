"""The sans-I/O session without a socket: frames and offers in, frames and port calls out.

Covers the delivery window (in-order offers, gaps, a full window, retransmission after no
progress, cumulative acks, resync), authentication, heartbeats and the per-connection limits,
by driving the session through its two sides only (tests/support/sessions.py). Every test runs
on the native session and on its pure-Python twin.
"""
from __future__ import annotations

import pytest

from switchboard.core._native import wire
from switchboard.core.acks import AckBatch as NativeAckBatch
from switchboard.core.model import (Backlog, MemberAction, MembershipEvent, Period,
                                    StoredMessage)
from switchboard.core.session import (CLOSED_PORT, Session as NativeSession, SessionConfig,
                                      SessionPort, SessionStats, State)
from switchboard.core.session import offer_each as session_offer_each
from switchboard.proto.v1 import client_pb2 as pb
from tests.reference import wire_model
from tests.reference.acks_model import AckBatch as ModelAckBatch
from tests.reference.session_model import Session as ModelSession
from tests.reference.session_model import offer_each as model_offer_each
from tests.support.sessions import (BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, Clock, Port,
                                    ack, backlog, client, message, send, server_frames,
                                    split_frames)

CONFIG = dict(frames_per_second=10.0, frame_burst=20.0, max_frame_bytes=4096,
              delivery_window=4, outbound_buffer_bytes=64 * 1024, auth_timeout=10.0,
              heartbeat_interval=30.0, idle_timeout=90.0, retransmit_after=10.0)
MAX_FRAME_BYTES = CONFIG["max_frame_bytes"]
WELCOME = pb.ServerFrame(welcome=pb.Welcome(user_id="bob")).SerializeToString()
# each implementation with the Deliver encoder the fan-out hands it
IMPLS = {"native": (NativeSession, wire.deliver_frames, NativeAckBatch),
         "model": (ModelSession, wire_model.deliver_frames, ModelAckBatch)}


@pytest.fixture(params=sorted(IMPLS), autouse=True)
def impl(request, monkeypatch):
    monkeypatch.setattr(Rig, "impl", IMPLS[request.param])
    return request.param


class Rig:
    """A session, its port and its clock."""
    impl = IMPLS["native"]

    def __init__(self, user: str = "", device: str = "", **config) -> None:
        self.port = Port()
        self.clock = Clock()
        self.stats = SessionStats()
        session_class, self.deliver, ack_batch = self.impl
        self.acks = ack_batch(lambda: None)
        self.session = session_class(self.port, SessionConfig(**{**CONFIG, **config}),
                                     self.stats, self.clock, acks=self.acks, user=user,
                                     device=device)
        self.port.session = self.session
        self.session.connected(self.clock.t)

    def feed(self, payload: bytes, opcode: int = BINARY, fin: bool = True) -> None:
        self.session.receive(opcode, fin, payload, self.clock.t)

    def acked(self) -> dict[str, dict[str, int]]:
        """The acks put into the batch since the last look: chat -> user -> seq."""
        cursors, by_chat = self.acks.take()
        assert cursors == {(user, device, chat): seq for chat, users in by_chat.items()
                           for user, seq in users.items() for device in [self.session.device]}
        return by_chat

    def out(self) -> list[pb.ServerFrame]:
        return server_frames(self.session.take_output())

    def bodies(self) -> list[str]:
        return [f.WhichOneof("body") for f in self.out()]

    def open(self, backlog_rows=()) -> None:
        """Admitted, Welcome out, the automatic sync's backlog loaded."""
        self.session.open(WELCOME)
        [(sync,)] = self.port.take("load_backlog")
        self.session.backlog_loaded(sync, list(backlog_rows))

    def pump(self, store: dict[str, list], periods: dict[str, list[Period]] | None = None) -> int:
        """What the adapter's pump does, from `store` (chat -> messages) and the user's
        `periods` (chat -> periods); reads made."""
        reads = 0
        while (want := self.session.next_read()) is not None:
            chat_id, after, limit = want
            if limit:
                rows = [m for m in store.get(chat_id, []) if m.seq > after][:limit]
                self.session.rows(chat_id, after, rows)
            else:
                self.session.periods(chat_id, (periods or {}).get(chat_id, []))
            reads += 1
        self.session.pump_stopped()
        return reads


def delivered(frames_: list[pb.ServerFrame]) -> list[tuple[str, int]]:
    return [(m.chat_id, m.seq) for f in frames_ if f.WhichOneof("body") == "deliver"
            for m in f.deliver.messages]


def offer(rig: Rig, chat_id: str, *seqs: int, sender: str = "alice", device: str = "phone"):
    rows = [message(chat_id, s, sender, device) for s in seqs]
    rig.session.offer(chat_id, rows, rig.deliver(rows, MAX_FRAME_BYTES))
    return rows


@pytest.fixture
def rig() -> Rig:
    """An open session of bob/laptop with nothing behind."""
    r = Rig("bob", "laptop")
    r.open()
    r.out()
    r.port.calls.clear()
    return r


# ---------------------------------------------------------------------------- authentication
def test_auth_frame_authenticates_and_frames_before_welcome_wait_for_it():
    r = Rig()
    assert r.session.state == State.AWAIT_AUTH
    r.feed(client(1, auth=pb.Auth(token="tok")))
    assert r.port.take("authenticate") == [("tok",)]
    r.session.authenticated("bob", "laptop")
    assert r.session.state == State.ADMITTING
    r.feed(send(7, "c1", "m1"))
    assert r.port.take("submit") == []  # held until Welcome
    r.open()
    assert r.bodies()[0] == "welcome"
    assert r.port.take("submit") == [(7, "c1", "m1", b"hi", [], False)]


def test_any_frame_but_auth_before_auth_closes_4001():
    r = Rig()
    r.feed(send(1, "c1", "m1"))
    assert r.port.take("closing") == [(4001, "auth required")]
    assert r.session.state == State.CLOSING


def test_auth_frame_with_a_bad_field_closes_4001_invalid_token():
    r = Rig()
    bad = client(1, auth=pb.Auth(token="x")).replace(b"x", b"\xff")
    r.feed(bad)
    assert r.port.take("closing") == [(4001, "invalid token")]


def test_no_auth_within_the_deadline_closes_4002():
    r = Rig()
    r.clock.advance(9.9)
    assert r.session.state == State.AWAIT_AUTH
    r.clock.advance(0.2)
    assert r.port.take("closing") == [(4002, "no auth in time")]


def test_seventeenth_frame_before_welcome_closes_4029():
    r = Rig("bob", "laptop")
    for i in range(16):
        r.feed(client(i + 1, ping=pb.Ping()))
    assert r.port.take("closing") == []
    r.feed(client(17, ping=pb.Ping()))
    assert r.port.take("closing") == [(4029, "too many frames before Welcome")]


def test_second_auth_is_an_error_and_the_session_stays(rig):
    rig.feed(client(3, auth=pb.Auth(token="again")))
    [frame] = rig.out()
    assert (frame.request_id, frame.error.code) == (3, pb.ALREADY_AUTHENTICATED)
    assert rig.session.state == State.OPEN


# ---------------------------------------------------------------------------- frames and limits
def test_malformed_bytes_close_4000(rig):
    rig.feed(b"\xff\xff\xff")
    assert rig.port.take("closing") == [(4000, "not a ClientFrame")]


def test_out_of_range_number_is_invalid_argument_and_the_session_stays(rig):
    rig.feed(ack(("c1", 2 ** 63), rid=5))
    [frame] = rig.out()
    assert (frame.request_id, frame.error.code) == (5, pb.INVALID_ARGUMENT)
    assert "ChatSeq.seq" in frame.error.detail
    assert rig.session.state == State.OPEN


def test_requests_go_to_the_port_decoded(rig):
    rig.feed(client(9, history=pb.History(chat_id="c1")))
    [(kind, frame)] = rig.port.take("request")
    assert kind == "history" and frame.request_id == 9 and frame.history.chat_id == "c1"
    rig.feed(pb.ClientFrame(request_id=4).SerializeToString())  # no body: a later version's
    [(kind, frame)] = rig.port.take("request")
    assert kind is None and frame.request_id == 4


def test_text_frame_closes_1003(rig):
    rig.feed(b"hello", opcode=TEXT)
    assert rig.port.take("closing") == [(1003, "binary frames only")]


def test_fragments_are_reassembled_and_counted_against_the_size(rig):
    whole = send(2, "c1", "m1", b"x" * 100)
    rig.feed(whole[:10], fin=False)
    rig.feed(whole[10:50], opcode=CONTINUATION, fin=False)
    rig.feed(whole[50:], opcode=CONTINUATION)
    assert rig.port.take("submit") == [(2, "c1", "m1", b"x" * 100, [], False)]
    rig.feed(b"a" * 3000, fin=False)
    rig.feed(b"a" * 3000, opcode=CONTINUATION, fin=False)
    assert rig.port.take("closing") == [(1009, "message over max_frame_bytes")]


@pytest.mark.parametrize("sequence, reason", [
    ([(CONTINUATION, True)], "continuation frame outside a fragmented message"),
    ([(BINARY, False), (BINARY, True)], "new message inside a fragmented one"),
])
def test_broken_fragment_sequences_close_1002(rig, sequence, reason):
    for opcode, fin in sequence:
        rig.feed(b"\x08\x01", opcode=opcode, fin=fin)
    assert rig.port.take("closing") == [(1002, reason)]


def test_frame_flood_closes_4029_once_the_burst_is_spent(rig):
    for i in range(20):
        rig.feed(client(i + 1, ping=pb.Ping()))
    assert rig.port.take("closing") == []
    rig.clock.t += 0.05  # half a token back: not enough
    rig.feed(client(99, ping=pb.Ping()))
    assert rig.port.take("closing") == [(4029, "too many frames")]


def test_close_handshake_and_its_grace(rig):
    rig.session.close(4010, "replaced")
    assert rig.port.take("closing") == [(4010, "replaced")]
    rig.session.send_frame(b"late")  # nothing goes out after the CLOSE
    assert rig.session.take_output() == b""
    rig.clock.advance(1.0)
    assert rig.port.take("disconnect") == []
    rig.feed(b"\x03\xe8", opcode=CLOSE)  # the peer's CLOSE
    assert rig.port.take("disconnect") == [(True,)]
    rig.clock.advance(1.5)  # and one that never answers is cut off
    assert rig.port.take("disconnect") == [(False,)]


def test_peer_close_is_echoed(rig):
    rig.feed(b"\x0f\xa1bye", opcode=CLOSE)
    assert rig.port.take("echo_close") == [(4001,)]


# ---------------------------------------------------------------------------- heartbeats
def test_silence_is_pinged_then_closed_4009_and_traffic_keeps_it_alive(rig):
    rig.clock.advance(30.0)
    assert split_frames(rig.session.take_output()) == [(PING, b"")]
    rig.clock.advance(59.0)
    assert rig.port.take("closing") == []
    rig.feed(b"", opcode=0xA)  # a PONG
    rig.clock.advance(60.0)
    assert rig.port.take("closing") == []
    rig.clock.advance(90.0)
    assert rig.port.take("closing") == [(4009, "idle")]


def test_a_client_that_answers_is_pinged_every_interval(rig):
    """docs/protocol.md 8.8a: an idle client reconnects when nothing arrived for
    heartbeat_interval plus a few seconds, so the pings of a silent connection come one interval
    after the previous answer, every time (not only the first)."""
    pings = []
    for _ in range(200):  # 200 s in the wheel's steps, the client answering at once
        rig.clock.advance(1.0)
        if split_frames(rig.session.take_output()) == [(PING, b"")]:
            pings.append(rig.clock.t)
            rig.feed(b"", opcode=0xA)
    assert len(pings) >= 6
    assert max(b - a for a, b in zip(pings, pings[1:])) <= 31.0
    assert rig.port.take("closing") == []


def test_a_device_ping_is_answered_with_its_payload_and_counts_as_activity(rig):
    """A device that pings on its own (its WebSocket library's ping interval) is not
    pinged as well: its ping resets the server's heartbeat, so an idle connection carries one
    exchange per interval, whichever side starts it."""
    rig.clock.advance(29.0)
    rig.feed(b"rtt-7", opcode=PING)
    assert split_frames(rig.session.take_output()) == [(PONG, b"rtt-7")]
    rig.clock.advance(29.0)  # 58 s since the last server-side ping could have gone out
    rig.feed(b"", opcode=PING)
    assert split_frames(rig.session.take_output()) == [(PONG, b"")]
    rig.clock.advance(29.0)
    assert rig.session.take_output() == b""  # no ping of the server's: the device's came first
    rig.clock.advance(1.0)
    assert split_frames(rig.session.take_output()) == [(PING, b"")]


def test_a_ping_flood_closes_4029_once_the_burst_is_spent(rig):
    for _ in range(int(CONFIG["frame_burst"])):
        rig.feed(b"", opcode=PING)
    assert rig.port.take("closing") == []
    rig.feed(b"", opcode=PING)
    assert rig.port.take("closing") == [(4029, "too many frames")]


def test_a_pong_goes_behind_the_output_already_buffered(rig):
    rig.session.send_frame(b"first")
    rig.feed(b"p", opcode=PING)
    assert split_frames(rig.session.take_output()) == [(BINARY, b"first"), (PONG, b"p")]


# ---------------------------------------------------------------------------- sends
def test_send_is_submitted_and_answered_with_its_ack(rig):
    rig.feed(send(3, "c1", "m1", b"body"))
    assert rig.port.take("submit") == [(3, "c1", "m1", b"body", [], False)]
    rig.feed(send(4, "c1", "m2", b"sealed", e2e=True))  # push must never preview it
    assert rig.port.take("submit") == [(4, "c1", "m2", b"sealed", [], True)]
    rig.session.send_acked(3, message("c1", 1, "bob", "laptop"), False)
    [frame] = rig.out()
    assert frame.request_id == 3
    assert (frame.send_ack.chat_id, frame.send_ack.seq, frame.send_ack.client_msg_id) == ("c1", 1, "c1")
    rig.session.send_failed(4, pb.RATE_LIMITED, "too many sends", 20, "c1", "m2")
    [frame] = rig.out()
    assert (frame.request_id, frame.error.code, frame.error.retry_after_ms,
            frame.error.client_msg_id) == (4, pb.RATE_LIMITED, 20, "m2")


def test_the_frames_of_a_turn_ask_for_one_write(rig):
    """Output accumulates until it is taken: the port hears of it once per flush."""
    rig.session.send_acked(1, message("c1", 1, "bob", "laptop"), False)
    offer(rig, "c2", 1)
    rig.session.send_failed(2, pb.UNAVAILABLE, "busy", 10, "c1", "m")
    assert rig.port.take("wants_flush") == [()]
    assert [f.WhichOneof("body") for f in rig.out()] == ["send_ack", "deliver", "error"]
    offer(rig, "c2", 2)
    assert rig.port.take("wants_flush") == [()]


# ---------------------------------------------------------------------------- delivery window
def test_in_order_offers_go_out_at_once_as_the_shared_frames(rig):
    offer(rig, "c1", 1)
    offer(rig, "c1", 2, 3)
    assert delivered(rig.out()) == [("c1", 1), ("c1", 2), ("c1", 3)]
    assert rig.session.inflight == 3
    assert rig.port.take("pump") == []


def test_a_gap_is_filled_from_the_store_in_order(rig):
    offer(rig, "c1", 1)
    rig.out()
    offer(rig, "c1", 3)  # 2 was missed
    assert rig.out() == [] and rig.port.take("pump") == [()]
    store = {"c1": [message("c1", s) for s in (1, 2, 3)]}
    rig.pump(store)
    assert delivered(rig.out()) == [("c1", 2), ("c1", 3)]


def test_a_full_window_holds_back_until_acks_make_room(rig):
    offer(rig, "c1", 1, 2, 3, 4)
    assert len(delivered(rig.out())) == 4
    offer(rig, "c1", 5)
    assert rig.out() == [] and rig.port.take("pump") == []  # no room to pump into
    store = {"c1": [message("c1", s) for s in range(1, 7)]}
    assert rig.session.next_read() is None
    offer(rig, "c1", 6)
    rig.feed(ack(("c1", 2)))
    assert rig.acked() == {"c1": {"bob": 2}}
    assert rig.port.take("pump") == [()]
    rig.pump(store)
    assert delivered(rig.out()) == [("c1", 5), ("c1", 6)]
    assert rig.session.inflight == 4


def test_no_progress_for_retransmit_after_sends_again_from_the_ack(rig):
    offer(rig, "c1", 1, 2, 3)
    rig.out()
    rig.feed(ack(("c1", 1)))
    rig.clock.advance(9.9)
    assert rig.port.take("pump") == []
    rig.clock.advance(0.2)
    assert rig.stats.retransmits == 2 and rig.session.retransmits == 2
    assert rig.port.take("pump") == [()]
    rig.pump({"c1": [message("c1", s) for s in (1, 2, 3)]})
    assert delivered(rig.out()) == [("c1", 2), ("c1", 3)]


def test_acks_are_cumulative_and_may_cover_what_a_rewind_resends(rig):
    offer(rig, "c1", 1, 2, 3)
    rig.out()
    rig.clock.advance(10.1)  # rewound to 0
    rig.feed(ack(("c1", 3)))  # the first copies arrived after all
    assert rig.acked() == {"c1": {"bob": 3}}
    assert rig.session.inflight == 0
    rig.port.take("pump")
    assert rig.session.next_read() is None


def test_ack_past_anything_delivered_is_refused_but_own_sends_may_be_acked(rig):
    offer(rig, "c1", 1)
    rig.out()
    rig.feed(ack(("c1", 5), rid=8))
    [frame] = rig.out()
    assert (frame.request_id, frame.error.code, frame.error.chat_id) == (8, pb.ACK_INVALID, "c1")
    rig.session.send_acked(1, message("c2", 4, "bob", "laptop"), False)
    rig.out()
    rig.feed(ack(("c2", 4)))
    assert rig.out() == []
    assert rig.acked() == {"c2": {"bob": 4}}


def test_own_messages_are_not_delivered_back(rig):
    offer(rig, "c1", 1, sender="bob", device="laptop")
    assert rig.out() == []
    assert rig.port.take("cursor") == [("c1", 1)]
    offer(rig, "c1", 2)
    offer(rig, "c1", 3, sender="bob", device="laptop")
    offer(rig, "c1", 4)
    assert delivered(rig.out()) == [("c1", 2), ("c1", 4)]


def test_sync_resends_from_the_acks_and_completes_once_every_chat_reached_its_head(rig):
    offer(rig, "c1", 1, 2)
    rig.out()
    rig.feed(ack(("c1", 1)))
    rig.feed(client(6, sync=pb.Sync()))
    [(sync,)] = rig.port.take("load_backlog")
    assert rig.session.inflight == 0
    rig.session.backlog_loaded(sync, [backlog("c1", 1, 2), backlog("c2", 0, 1)])
    assert rig.port.take("pump") == [()]
    rig.pump({"c1": [message("c1", s) for s in (1, 2)], "c2": [message("c2", 1)]})
    out = rig.out()
    assert sorted(delivered(out)) == [("c1", 2), ("c2", 1)]
    assert out[-1].WhichOneof("body") == "sync_complete"
    assert (out[-1].request_id, out[-1].sync_complete.chats, out[-1].sync_complete.messages) == (6, 2, 2)


def test_offers_while_the_backlog_loads_are_kept_for_after_it():
    r = Rig("bob", "laptop")
    r.session.open(WELCOME)
    [(sync,)] = r.port.take("load_backlog")
    offer(r, "c1", 3)
    r.session.backlog_loaded(sync, [])
    assert r.port.take("pump") == [()]
    r.pump({"c1": [message("c1", 3)]})
    out = r.out()
    assert delivered(out) == [("c1", 3)]
    assert [f.WhichOneof("body") for f in out] == ["welcome", "sync_complete", "deliver"]


def test_in_a_cluster_an_offer_while_the_backlog_loads_does_not_skip_what_the_snapshot_missed():
    """The snapshot said the device had all of c1 (seq 11); seqs 12-13 were committed after it
    by an owner that died before pushing them here; 14 comes from the new owner while the
    snapshot loads. The stream must start at the stored cursor read after that offer, not at
    13 (a device then floored to 13 on its next Sync would never get 12-13)."""
    r = Rig("bob", "laptop", sees_every_commit=False)
    r.session.open(WELCOME)
    [(sync,)] = r.port.take("load_backlog")
    offer(r, "c1", 14)
    r.session.backlog_loaded(sync, [])
    assert "c1" not in r.session.streams and r.port.take("load_cursors") == [()]
    assert r.session.cursor_read_begin()
    assert r.session.cursors_loaded([backlog("c1", 11, 14)]) is False
    r.session.cursor_reads_end()
    assert r.port.take("pump") == [()]
    r.pump({"c1": [message("c1", s) for s in (12, 13, 14)]})
    assert delivered(r.out()) == [("c1", 12), ("c1", 13), ("c1", 14)]
    r.feed(client(9, sync=pb.Sync()))  # a later Sync floors c1 at the stored cursor, no higher
    assert [(f.chat_id, f.seq) for frame in r.out() if frame.WhichOneof("body") == "deliver"
            for f in frame.deliver.floors] == [("c1", 11)]


def test_rows_read_before_the_stream_moved_are_not_used(rig):
    offer(rig, "c1", 1, 2, 3, 4)
    rig.out()
    offer(rig, "c1", 5)  # window full: pump
    rig.feed(ack(("c1", 4)))
    want = rig.session.next_read()
    assert want == ("c1", 4, 4)
    offer(rig, "c1", 5)  # while the store reads, the live copy goes out: the stream moved
    assert delivered(rig.out()) == [("c1", 5)]
    rig.session.rows("c1", 4, [message("c1", 5)])
    assert rig.out() == []


# ---------------------------------------------------------------------------- membership ranges
def event(chat_id: str, seq: int, action: MemberAction, *users: str) -> StoredMessage:
    return StoredMessage(chat_id, seq, 1000 + seq, "alice", "", f"e{seq}", b"", (), 5000 + seq,
                         MembershipEvent(action, "alice", users))


def floors(frames_: list[pb.ServerFrame]) -> list[tuple[str, int]]:
    return [(f.chat_id, f.seq) for frame in frames_ if frame.WhichOneof("body") == "deliver"
            for f in frame.deliver.floors]


def test_an_event_removing_the_user_ends_the_stream_at_it(rig):
    offer(rig, "c1", 1, 2)
    rig.feed(ack(("c1", 2)))
    rig.out()
    removed = event("c1", 3, MemberAction.REMOVED, "bob")
    rig.session.offer("c1", [removed], rig.deliver([removed], MAX_FRAME_BYTES))
    offer(rig, "c1", 4)  # after the removal: not bob's
    assert rig.out() == [] and rig.port.take("pump") == [()]
    store = {"c1": [message("c1", 1), message("c1", 2), removed, message("c1", 4)]}
    rig.pump(store, {"c1": [Period(0, 3)]})
    out = rig.out()
    assert delivered(out) == [("c1", 3)] and out[0].deliver.messages[0].HasField("membership")
    rig.feed(ack(("c1", 3)))
    assert "c1" not in rig.session.streams  # all of bob's range acked: nothing left to do


def test_an_event_naming_the_user_stops_a_live_run_until_its_periods_are_read(rig):
    rows = [message("c1", 1), event("c1", 2, MemberAction.REMOVED, "bob"), message("c1", 3)]
    rig.session.offer("c1", rows, rig.deliver(rows, MAX_FRAME_BYTES))
    assert rig.out() == [] and rig.port.take("pump") == [()]
    rig.pump({"c1": rows}, {"c1": [Period(0, 2)]})
    assert delivered(rig.out()) == [("c1", 1), ("c1", 2)]


def test_a_readded_user_crosses_the_gap_once_acked_and_is_told_the_floor():
    r = Rig("bob", "laptop")
    r.open([Backlog("c1", 2, 8, (Period(0, 3), Period(6, None)))])
    store = {"c1": [message("c1", s) for s in range(1, 9)]}
    assert r.port.take("pump") == [()]
    r.pump(store)
    out = r.out()
    assert delivered(out) == [("c1", 3)] and floors(out) == []
    r.feed(ack(("c1", 3)))
    assert r.port.take("pump") == [()]
    r.pump(store)
    out = r.out()
    assert floors(out) == [("c1", 6)]
    assert delivered(out) == [("c1", 7), ("c1", 8)]
    assert out[-1].WhichOneof("body") == "sync_complete"


def test_a_backlog_that_jumped_past_a_gap_is_told_as_a_floor():
    r = Rig("bob", "laptop")
    r.open([Backlog("c1", 6, 7, None, jumped=True)])
    assert floors(r.out()) == [("c1", 6)]
    r.pump({"c1": [message("c1", s) for s in range(1, 8)]})
    assert delivered(r.out()) == [("c1", 7)]


def test_a_sync_tells_the_floors_it_resumes_from(rig):
    offer(rig, "c1", 1, 2)
    rig.feed(ack(("c1", 2)))
    rig.out()
    rig.feed(client(9, sync=pb.Sync()))
    assert floors(rig.out()) == [("c1", 2)]


def test_a_recheck_reads_the_periods_before_sending_more(rig):
    offer(rig, "c1", 1)
    rig.out()
    rig.session.recheck_chat("c1")
    offer(rig, "c1", 2)
    assert rig.out() == [] and rig.port.take("pump") == [()]
    rig.pump({"c1": [message("c1", 1), message("c1", 2)]}, {"c1": [Period(0, 1)]})
    assert delivered(rig.out()) == []


def test_a_reader_that_makes_no_room_is_a_slow_consumer(rig):
    rig.port.buffered_bytes = 10_000
    assert rig.session.write_blocked()
    rig.session.stall(rig.clock.t)
    rig.clock.advance(10.1)
    assert rig.port.take("closing") == [(4008, "slow consumer: reconnect and sync")]
    assert rig.stats.slow_consumers == 1


def test_a_stall_whose_buffer_drained_without_a_resume_wakes_the_answers(rig):
    """The socket took the buffer without the transport pausing, so no resume_writing came:
    at the stall's deadline the answers are woken, not closed."""
    rig.port.buffered_bytes = 10_000
    rig.session.stall(rig.clock.t)
    rig.port.buffered_bytes = 0
    rig.clock.advance(10.1)
    assert rig.port.take("closing") == [] and rig.port.take("resumed") == [()]
    assert rig.stats.slow_consumers == 0


def test_output_past_the_cap_is_a_slow_consumer(rig):
    rig.port.buffered_bytes = 63 * 1024
    rig.session.send_frame(b"x" * 2048)
    rig.session.check_outbound()
    assert rig.port.take("closing") == [(4008, "slow consumer: reconnect and sync")]


def test_first_offer_in_a_cluster_waits_for_the_stored_cursor():
    r = Rig("bob", "laptop", sees_every_commit=False)
    r.open()
    r.out()
    offer(r, "c1", 7)
    assert r.out() == [] and r.port.take("load_cursors") == [()]
    assert r.session.cursor_read_begin()
    offer(r, "c2", 3)  # during the read: waits for the next one
    assert r.session.cursors_loaded([backlog("c1", 5, 7)]) is True
    assert r.session.cursor_read_begin()
    assert r.session.cursors_loaded([]) is False
    r.session.cursor_reads_end()
    assert r.port.take("pump") == [()]
    r.pump({"c1": [message("c1", s) for s in (6, 7)]})
    assert delivered(r.out()) == [("c1", 6), ("c1", 7)]
    assert r.session.streams["c2"].sent == 3  # the device had it already


# ---------------------------------------------------------------------------- fan-out loop
def test_offer_each_offers_to_every_device_of_the_named_users_in_range(impl):
    """The hub's loop over a slice of a group: each connected device of users[start:end] gets
    the commit once; users before or after the slice, or with no connection, get nothing."""
    native = impl == "native"
    each = session_offer_each if native else model_offer_each

    class Conn:
        def __init__(self, rig: Rig) -> None:
            self.session = rig.session

    rigs = {}
    for user, device in [("u0", "a"), ("u1", "a"), ("u1", "b"), ("u2", "a"), ("u4", "a")]:
        rig = Rig(user, device)
        rig.open()
        rig.out()
        rigs[user, device] = rig
    by_user: dict[str, Conn | dict[str, Conn]] = {}  # as the hub keeps them
    for (user, device), rig in rigs.items():
        if user == "u1":  # two devices
            by_user.setdefault(user, {})[device] = Conn(rig)
        else:
            by_user[user] = Conn(rig)
    rows = [message("g", 1, "sender", "phone")]
    users = ["u0", "u1", "u3", "u2", "u4"]
    each(by_user, users, 1, 4, "g", rows, Rig.impl[1](rows, MAX_FRAME_BYTES))
    got = {key: delivered(rig.out()) for key, rig in rigs.items()}
    assert got == {("u0", "a"): [], ("u1", "a"): [("g", 1)], ("u1", "b"): [("g", 1)],
                   ("u2", "a"): [("g", 1)], ("u4", "a"): []}
    each(by_user, users, 4, 99, "g", rows, Rig.impl[1](rows, MAX_FRAME_BYTES))  # end clamped
    assert delivered(rigs["u4", "a"].out()) == [("g", 1)]


# ---------------------------------------------------------------------------- after the socket
def test_a_disconnected_session_lets_go_of_its_port_and_what_comes_late_is_a_no_op(rig):
    """The connection holds its session: a session holding the connection would be a
    reference cycle (collector.py). What reaches it after its socket is gone does nothing."""
    offer(rig, "c1", 1, 2)
    rig.out()
    rig.feed(client(sync=pb.Sync()))  # a sync is asked for before the socket goes ...
    [(sync,)] = rig.port.take("load_backlog")
    assert rig.session.disconnected() == State.OPEN
    assert rig.session.port is CLOSED_PORT
    rig.port.calls.clear()
    # ... and everything in flight settles afterwards
    rig.session.backlog_loaded(sync, [backlog("c2", 0, 3)])
    rig.session.send_acked(1, message("c1", 3, "bob", "laptop"), False)
    rig.session.send_failed(2, pb.UNAVAILABLE, "store unavailable", 1000, "c1", "m2")
    offer(rig, "c1", 3, 4)
    assert rig.pump({"c1": [message("c1", s) for s in range(1, 5)]}) == 0
    rig.session.resumed()
    rig.session.check_outbound()
    rig.feed(b"\x03\xe8", opcode=CLOSE)
    rig.clock.advance(200.0)  # heartbeat, idle and retransmit deadlines
    assert (rig.session.take_output(), rig.port.calls, rig.session.state) == (b"", [],
                                                                              State.CLOSED)


def test_the_closed_port_answers_everything_a_session_asks_of_its_port():
    asked = {name for name in vars(SessionPort) if not name.startswith("_")}
    assert asked <= {name for name in dir(CLOSED_PORT) if not name.startswith("_")}
    assert CLOSED_PORT.buffered() == 0 and CLOSED_PORT.decode(b"\x08") is None
