"""A large group's acks (core/acks.py) and receipt rollup (core/rollup.py): every member of a
group of 10,000 acks every message, and each receipt flush needs the rollup over all of them.

The native sessions put a message's 10,000 acks into the AckBatch and the batch is taken and
handed to the writer (one loop turn's hand-off), against the pure-Python twins doing the same;
the writer either holds no acks yet (the turn after a commit took them) or still holds the last
message's (they wait for ack_delay or a commit in flight). A flush's rollup kept as 500 members'
watermarks rise, against the rollup recomputed over all 10,000; the flush's walk over 500 acks
natively and in the twin."""
from __future__ import annotations

import asyncio

import pytest

from switchboard.core.acks import AckBatch
from switchboard.core.model import Membership, Receipt, Role
from switchboard.core import rollup as native_rollup
from switchboard.core.rollup import Rollup
from switchboard.core.session import Session, SessionConfig, SessionStats
from switchboard.core.store_memory import MemoryStore
from switchboard.core.writer import CoalescingWriter
from switchboard.core._native import wire
from switchboard.proto.v1 import client_pb2 as pb
from tests.reference import acks_model, rollup_model, wire_model
from tests.reference.session_model import Session as ModelSession
from tests.support.sessions import Clock, Port, ack, message

MEMBERS = 10_000
FLUSHED = 500  # members whose ack one receipt flush carries (10,000 over ~20 flushes)
CONFIG = SessionConfig(frames_per_second=1e9, frame_burst=1e9, max_frame_bytes=65536,
                       delivery_window=64, outbound_buffer_bytes=1 << 30, auth_timeout=10.0,
                       heartbeat_interval=30.0, idle_timeout=90.0, retransmit_after=10.0)
WELCOME = pb.ServerFrame(welcome=pb.Welcome(user_id="u")).SerializeToString()
IMPLS = {"native": (Session, AckBatch, wire.deliver_frames),
         "python": (ModelSession, acks_model.AckBatch, wire_model.deliver_frames)}


class Group:
    """MEMBERS open sessions, each offered the group's next message before it is acked; their
    acks go to a writer that holds the last message's acks (`holding`) or a fresh one."""

    def __init__(self, impl: str, holding: bool) -> None:
        session_class, batch_class, self.deliver = IMPLS[impl]
        self.loop = asyncio.new_event_loop()
        self.holding = holding
        self.writer = self.new_writer()
        self.clock = Clock()
        self.acks = batch_class(lambda: None)
        self.sessions = []
        for i in range(MEMBERS):
            port = Port()
            session = session_class(port, CONFIG, SessionStats(), self.clock, acks=self.acks,
                                    user=f"u{i}", device="phone")
            session.connected(self.clock.t)
            session.open(WELCOME)
            [(sync,)] = port.take("load_backlog")
            session.backlog_loaded(sync, [])
            self.sessions.append(session)
        self.seq = 0
        if holding:
            self.ack_all(*self.offer_next()[0])

    @staticmethod
    def new_writer() -> CoalescingWriter:
        return CoalescingWriter(MemoryStore(), ack_delay=3600)  # acks kept, never committed

    def offer_next(self) -> tuple[tuple[bytes], dict]:
        self.seq += 1
        rows = [message("g", self.seq)]
        chunks = self.deliver(rows, CONFIG.max_frame_bytes)
        for session in self.sessions:
            session.offer("g", rows, chunks)
            session.take_output()
            session.port.calls.clear()
        if not self.holding:
            self.writer = self.new_writer()
        return (ack(("g", self.seq)),), {}

    def ack_all(self, payload: bytes) -> None:
        self.loop.run_until_complete(self._acks_of_a_turn(payload))

    async def _acks_of_a_turn(self, payload: bytes) -> None:
        now = self.clock.t
        for session in self.sessions:
            session.receive(0x2, True, payload, now)
        cursors, by_chat = self.acks.take()
        self.writer.ack_deliveries(cursors, by_chat)
        assert len(by_chat["g"]) == MEMBERS


@pytest.mark.parametrize("writer", ["fresh", "holding"])
@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_a_message_acked_by_10k_members(benchmark, impl, writer):
    """10,000 Ack frames, one per member's session, the batch taken and handed to the writer."""
    group = Group(impl, holding=writer == "holding")
    benchmark.pedantic(group.ack_all, setup=group.offer_next, rounds=10)
    group.loop.close()


def _chat() -> tuple[dict, dict, dict]:
    members = {f"u{i}": Membership(Role.MEMBER, 0) for i in range(MEMBERS)}
    receipts = {user: Receipt(0, 0) for user in members}
    shown = dict.fromkeys(members, True)
    return members, receipts, shown


def test_flush_rollup_kept(benchmark):
    """500 members' delivered watermarks rise by one, then the rollup is read."""
    members, receipts, shown = _chat()
    kept = Rollup(members, receipts, shown)
    users = list(members)
    start = [0]

    def flush():
        for user in users[start[0]:start[0] + FLUSHED]:
            receipt = receipts[user]
            receipt.delivered_seq += 1
            kept.raised(user, receipt)
        start[0] = (start[0] + FLUSHED) % MEMBERS
        return kept.totals

    benchmark(flush)


def test_flush_rollup_recomputed(benchmark):
    """The same flush with the rollup recomputed over all 10,000 members (the twin)."""
    members, receipts, shown = _chat()
    users = list(members)
    start = [0]

    def flush():
        for user in users[start[0]:start[0] + FLUSHED]:
            receipts[user].delivered_seq += 1
        start[0] = (start[0] + FLUSHED) % MEMBERS
        return rollup_model.rollup(members, receipts, shown)

    benchmark(flush)


@pytest.mark.parametrize("impl", ["native", "python"])
def test_flush_walk_of_500_acks(benchmark, impl):
    """A flush's walk over 500 members' acks (core/rollup.py): the cached watermarks and the
    kept rollup raised, the snapshots, and the sender's view of them."""
    walk = native_rollup if impl == "native" else rollup_model
    members, receipts, shown = _chat()
    kept = walk.Rollup(members, receipts, shown)
    users = list(members)
    start = [0]

    def flush():
        delivered = {user: receipts[user].delivered_seq + 1
                     for user in users[start[0]:start[0] + FLUSHED]}
        start[0] = (start[0] + FLUSHED) % MEMBERS
        changed: dict[str, Receipt] = {}
        moved: set[str] = set()
        walk.raise_delivered(receipts, delivered, kept, False, 1000, changed, moved)
        hidden = set(walk.readers("sender", changed, moved, set()))
        return walk.visible_to("sender", changed, moved, set(), hidden)

    assert len(benchmark(flush)) == FLUSHED


@pytest.mark.parametrize("impl", ["native", "python"])
def test_receipt_update_of_500_members(benchmark, impl):
    """A flush's ReceiptUpdate to the sender: 500 members' receipts (a group of 10,000 has
    twenty of these per message)."""
    encode = wire.receipt_update if impl == "native" else wire_model.receipt_update
    receipts = {f"u{i}": Receipt(7, 0) for i in range(FLUSHED)}
    assert len(benchmark(encode, "g:abcdefghijkl", receipts, 5, 0)) > FLUSHED * 6
