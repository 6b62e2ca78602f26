"""Mesh transport (switchboard/router/mesh.py) over real sockets on 127.0.0.1.

Every scenario is a zero-argument coroutine, run by pytest-asyncio on the default loop and again
on uvloop by test_on_uvloop (production runs uvloop; asyncio is the reference). Each scenario
starts its nodes through `nodes()`, which closes them at the end and fails the test if a
connection or a task is left behind."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import struct
import time
from collections import defaultdict

import pytest
import uvloop

from switchboard.proto.v1 import client_pb2, mesh_pb2
from switchboard.router.mesh import FrameReader, Link, LinkLoss, Mesh, MeshProtocolError
from tests.support.waiting import wait_for

FAST = dict(heartbeat_interval=0.05, link_timeout=0.3, backoff_min=0.01, backoff_max=0.1)
MIB = 1024 * 1024


class Recorder:
    """A MeshHandler that keeps everything it is told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []
        self.frames: dict[str, list[mesh_pb2.MeshFrame]] = defaultdict(list)
        self.refused: list[str] = []

    def link_up(self, link: Link) -> None:
        self.events.append(("up", link.node_id, link.peer_epoch))

    def link_down(self, link: Link) -> None:
        self.events.append(("down", link.node_id, link.peer_epoch))

    def frame(self, link: Link, frame: mesh_pb2.MeshFrame) -> None:
        self.frames[link.node_id].append(frame)

    def peer_refused(self, node_id: str) -> None:
        self.refused.append(node_id)


class Node:
    def __init__(self, mesh: Mesh, rec: Recorder, port: int) -> None:
        self.mesh, self.rec, self.port = mesh, rec, port
        self.address = f"127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def nodes():
    """Yields start(node_id, epoch=1, port=0, **mesh_options) -> Node."""
    started: list[Node] = []

    async def start(node_id: str, epoch: int = 1, port: int = 0, **options) -> Node:
        rec = Recorder()
        mesh = Mesh(node_id, epoch, rec, **{**FAST, **options})
        node = Node(mesh, rec, await mesh.listen("127.0.0.1", port))
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            await node.mesh.close()
    assert [n.mesh.connections for n in started] == [0] * len(started)
    await no_tasks_left()


async def no_tasks_left() -> None:
    # asyncio's accept path finishes a short task per connection: give it a moment
    await wait_for(lambda: not asyncio.all_tasks() - {asyncio.current_task()}, timeout=10,
                   message="no tasks left")


def connect(*members: Node) -> None:
    """Tell every node about all of them (itself included: set_peers must ignore it)."""
    peers = {n.mesh.node_id: n.address for n in members}
    for node in members:
        node.mesh.set_peers(peers)


def encode(frame: mesh_pb2.MeshFrame) -> bytes:
    payload = frame.SerializeToString()
    return struct.pack(">I", len(payload)) + payload


def hello(node_id: str, epoch: int = 1, protocol: int = 1) -> bytes:
    return encode(mesh_pb2.MeshFrame(hello=mesh_pb2.Hello(node_id=node_id, epoch=epoch,
                                                          protocol=protocol)))


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def mesh_warnings():
    handler = LogRecords()
    logger = logging.getLogger("switchboard.router.mesh")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


class SilentPeer(asyncio.Protocol):
    """Completes the handshake as node `z`, then neither reads nor answers (a hung process)."""
    transports: list[asyncio.Transport]

    def connection_made(self, transport) -> None:
        transport.write(hello("z"))
        transport.pause_reading()
        self.transports.append(transport)


@contextlib.asynccontextmanager
async def silent_peer():
    """Yields the address of a SilentPeer server."""
    transports: list[asyncio.Transport] = []
    protocol = type("Silent", (SilentPeer,), {"transports": transports})
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for transport in transports:
            transport.abort()
        await asyncio.sleep(0)  # let the aborted transports finish


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    """True when the peer closes the connection (EOF or reset) within timeout."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except ConnectionError:
        pass
    return True


async def read_frame(reader: asyncio.StreamReader) -> mesh_pb2.MeshFrame:
    (size,) = struct.unpack(">I", await reader.readexactly(4))
    frame = mesh_pb2.MeshFrame()
    frame.ParseFromString(await reader.readexactly(size))
    return frame


# ---------------------------------------------------------------------- scenarios
async def test_three_nodes_link_each_pair_once_and_carry_frames_in_order():
    async with nodes() as start:
        a, b, c = [await start(n) for n in "abc"]
        connect(a, b, c)
        for node in (a, b, c):
            await wait_for(lambda: len(node.mesh.links) == 2, message=f"{node.mesh.node_id} up")

        big = random.Random(1).randbytes(MIB)
        sends = [mesh_pb2.MeshFrame(forward_send=mesh_pb2.ForwardSend(
            request_id=i, user_id="u1", device_id="d1", chat_id="c1", client_msg_id=f"m{i}",
            body=big if i == 3 else b"x" * i, media_ids=["p"] * (i % 3))) for i in range(10)]
        results = [mesh_pb2.MeshFrame(send_result=mesh_pb2.SendResult(
            request_id=i, message=client_pb2.Message(chat_id="c1", seq=i + 1, body=b"y" * i),
            duplicate=i % 2 == 0)) for i in range(10)]
        delivers = [mesh_pb2.MeshFrame(deliver=mesh_pb2.Deliver(
            chat_id="c1", user_ids=["u1", "u2"], messages=[client_pb2.Message(
                chat_id="c1", seq=i, body=big if i == 5 else b"z")])) for i in range(8)]
        for frame in sends:
            a.mesh.link("b").send(frame)
        for frame in results:
            b.mesh.link("a").send(frame)
        for frame in delivers:
            c.mesh.link("a").send_encoded(frame.SerializeToString())

        await wait_for(lambda: len(b.rec.frames["a"]) == len(sends))
        await wait_for(lambda: len(a.rec.frames["b"]) == len(results))
        await wait_for(lambda: len(a.rec.frames["c"]) == len(delivers))
        assert b.rec.frames["a"] == sends
        assert a.rec.frames["b"] == results
        assert a.rec.frames["c"] == delivers
        for node in (a, b, c):
            others = sorted(set("abc") - {node.mesh.node_id})
            assert sorted(node.rec.events) == [("up", n, 1) for n in others]
            assert node.mesh.connections == 2
        link = a.mesh.link("b")
        assert link.frames_out >= 11 and link.bytes_out > MIB  # Hello + sends (+ heartbeats)


async def test_a_turn_of_sends_leaves_in_one_write():
    async with nodes() as start:
        # heartbeats go on a fixed rhythm, busy or not: none may be due during this turn
        quiet = dict(heartbeat_interval=10.0, link_timeout=30.0)
        a, b = await start("a", **quiet), await start("b", **quiet)
        connect(a, b)
        await wait_for(lambda: a.mesh.link("b") and b.mesh.link("a"))
        link = a.mesh.link("b")
        writes, frames_out = link.writes, link.frames_out
        for i in range(1000):
            link.send(mesh_pb2.MeshFrame(receipt_note=mesh_pb2.ReceiptNote(
                chat_id="c", user_id="u", delivered_seq=i)))
        await asyncio.sleep(0)  # the flush scheduled by the first send runs before we resume
        assert link.writes == writes + 1
        assert link.frames_out == frames_out + 1000
        await wait_for(lambda: len(b.rec.frames["a"]) == 1000)
        assert [f.receipt_note.delivered_seq for f in b.rec.frames["a"]] == list(range(1000))


async def test_restarted_peer_is_redialled_with_its_new_epoch():
    async with nodes() as start:
        a, b = await start("a"), await start("b", epoch=1)
        connect(a, b)
        await wait_for(lambda: a.rec.events == [("up", "b", 1)])
        await b.mesh.close()
        await wait_for(lambda: a.rec.events == [("up", "b", 1), ("down", "b", 1)])
        await asyncio.sleep(FAST["backoff_max"])  # a few refused dials in between
        b2 = await start("b", epoch=2, port=b.port)
        await wait_for(lambda: len(a.rec.events) == 3)
        assert a.rec.events[2] == ("up", "b", 2)
        assert a.mesh.link("b").peer_epoch == 2
        # b2 takes the link up when a's Hello arrives, which may be after a's own link_up
        await wait_for(lambda: b2.rec.events == [("up", "a", 1)])
        assert b.rec.events == [("up", "a", 1)]  # no link_down once close() started


async def test_changed_address_is_redialled():
    async with nodes() as start:
        a, b = await start("a"), await start("b")
        connect(a, b)
        await wait_for(lambda: a.mesh.link("b"))
        b2 = await start("b", epoch=2)  # the same node id somewhere else
        a.mesh.set_peers({"b": b2.address})
        assert a.rec.events == [("up", "b", 1), ("down", "b", 1)]  # before set_peers returned
        await wait_for(lambda: a.rec.events[-1:] == [("up", "b", 2)])
        await wait_for(lambda: b.rec.events == [("up", "a", 1), ("down", "a", 1)])


async def test_heartbeats_keep_an_idle_link_up():
    async with nodes() as start:
        a, b = await start("a"), await start("b")
        connect(a, b)
        await wait_for(lambda: a.mesh.link("b") and b.mesh.link("a"))
        ab, ba = a.mesh.link("b"), b.mesh.link("a")
        # each heartbeat follows heartbeat_interval of silence: 30 of them span 5 link_timeouts
        await wait_for(lambda: ab.frames_in >= 30 and ba.frames_in >= 30, timeout=10)
        assert (a.mesh.link("b"), b.mesh.link("a")) == (ab, ba)
        assert a.rec.events == [("up", "b", 1)] and b.rec.events == [("up", "a", 1)]
        assert not a.rec.frames and not b.rec.frames  # heartbeats are not handed on


async def test_a_stalled_process_keeps_its_links():
    """A process that did not run for several link_timeouts (a GC pause, CPU starvation) must
    not take its own lateness for the peers' silence."""
    async with nodes() as start:
        a, b = await start("a"), await start("b")
        connect(a, b)
        await wait_for(lambda: a.mesh.link("b") and b.mesh.link("a"))
        ab, ba = a.mesh.link("b"), b.mesh.link("a")
        time.sleep(4 * FAST["link_timeout"])  # the whole event loop stops
        seen = ab.frames_in, ba.frames_in
        await wait_for(lambda: ab.frames_in > seen[0] and ba.frames_in > seen[1],
                       message="heartbeats flowing again")
        assert (a.mesh.link("b"), b.mesh.link("a")) == (ab, ba)
        assert a.rec.events == [("up", "b", 1)] and b.rec.events == [("up", "a", 1)]


async def test_a_hung_peer_is_dropped_after_link_timeout():
    async with nodes() as start, silent_peer() as address:
        a = await start("a")
        a.mesh.set_peers({"z": address})
        await wait_for(lambda: a.rec.events[:1] == [("up", "z", 1)])
        up_at = asyncio.get_running_loop().time()
        await wait_for(lambda: a.rec.events[1:2] == [("down", "z", 1)], timeout=10)
        elapsed = asyncio.get_running_loop().time() - up_at
        assert FAST["link_timeout"] * 0.8 <= elapsed  # not before link_timeout (later: load)
        await wait_for(lambda: a.rec.events[2:3] == [("up", "z", 1)])  # and redialled


async def test_the_detector_drops_a_hung_peer_long_before_the_ceiling():
    """With a short acceptable pause, a peer whose heartbeats never come is dropped once its
    silence is improbable for the heartbeat interval, not at link_timeout (30 s here)."""
    async with nodes() as start, silent_peer() as address:
        a = await start("a", link_timeout=30, acceptable_pause=0.1)
        with mesh_warnings() as warnings:
            a.mesh.set_peers({"z": address})
            await wait_for(lambda: a.mesh.link("z"))
            link = a.mesh.link("z")
            await wait_for(lambda: link.loss is not None, timeout=10)
        assert link.loss is LinkLoss.SILENT
        assert a.mesh.lost[LinkLoss.SILENT] >= 1
        assert any("phi" in w and "ceiling 30" in w for w in warnings), warnings
        a.mesh.set_peers({})


async def test_a_peer_whose_process_is_gone_is_reported_refused_on_both_sides():
    """b closes (as a killed process's kernel would: FIN, then nothing listens): a, which
    dialled b, learns it from its redial; c, which b dialled, from its probe of b's address."""
    async with nodes() as start:
        a, b, c = await start("a"), await start("b"), await start("c")
        connect(a, b, c)
        await wait_for(lambda: all(len(n.mesh.links) == 2 for n in (a, b, c)))
        await b.mesh.close()
        await wait_for(lambda: "b" in a.rec.refused and "b" in c.rec.refused)
        assert a.mesh.lost[LinkLoss.CLOSED] == c.mesh.lost[LinkLoss.CLOSED] == 1
        assert not b.rec.refused and not a.mesh.lost[LinkLoss.SILENT]


async def test_a_peer_that_stops_reading_is_dropped_at_the_buffer_limit():
    async with nodes() as start, silent_peer() as address:
        a = await start("a", max_buffer_bytes=MIB, link_timeout=5)
        a.mesh.set_peers({"z": address})
        await wait_for(lambda: a.mesh.link("z"))
        link = a.mesh.link("z")
        chunk = mesh_pb2.MeshFrame(push=mesh_pb2.Push(frame=b"p" * MIB)).SerializeToString()
        with mesh_warnings() as warnings:
            for _ in range(32):  # more than the kernel's socket buffers take
                link.send_encoded(chunk)
            await wait_for(lambda: ("down", "z", 1) in a.rec.events)
        assert any("peer not reading" in w for w in warnings)
        a.mesh.set_peers({})


async def test_hostile_input_closes_only_that_connection():
    async with nodes() as start:
        a, b = await start("a"), await start("b", max_frame_bytes=MIB)
        connect(a, b)
        await wait_for(lambda: a.mesh.link("b") and b.mesh.link("a"))
        ab, ba = a.mesh.link("b"), b.mesh.link("a")
        hostile = {
            "garbage": b"GET / HTTP/1.1\r\nHost: mesh\r\n\r\n",
            "undecodable": struct.pack(">I", 8) + b"\xff" * 8,
            "oversized": struct.pack(">I", MIB + 1),
            "not a Hello": encode(mesh_pb2.MeshFrame(heartbeat=mesh_pb2.Heartbeat())),
            "protocol 2": hello("d", protocol=2),
            "names the listener": hello("b"),
            "silence": b"",
        }
        with mesh_warnings() as warnings:
            for name, data in hostile.items():
                reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
                first = await read_frame(reader)  # the listener still serves: its Hello
                assert first.hello.node_id == "b" and first.hello.protocol == 1, name
                writer.write(data)
                assert await closed_by_peer(reader), name
                writer.close()
        assert len(warnings) == len(hostile)
        await wait_for(lambda: b.mesh.connections == 1)
        # a well-behaved stranger is still accepted (membership lags), and nothing else moved
        reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
        await read_frame(reader)
        writer.write(hello("d", epoch=7))
        await wait_for(lambda: b.mesh.link("d"))
        writer.close()
        await wait_for(lambda: b.rec.events[-1] == ("down", "d", 7))
        assert (a.mesh.link("b"), b.mesh.link("a")) == (ab, ba)
        assert a.rec.events == [("up", "b", 1)]
        assert b.rec.events == [("up", "a", 1), ("up", "d", 7), ("down", "d", 7)]


async def test_a_dial_answered_by_another_node_never_comes_up():
    async with nodes() as start:
        a, c = await start("a"), await start("c")
        with mesh_warnings() as warnings:
            a.mesh.set_peers({"b": c.address})  # a stale address: c listens there now
            await wait_for(lambda: sum("Hello names c" in w for w in warnings) >= 3)
        assert a.rec.events == [] and c.rec.events == []  # c never saw a Hello from a
        assert a.mesh.links == {} and c.mesh.links == {}


async def test_a_removed_peer_is_closed_and_not_redialled():
    async with nodes() as start:
        a, b = await start("a"), await start("b")
        connect(a, b)
        await wait_for(lambda: a.mesh.link("b") and b.mesh.link("a"))
        a.mesh.set_peers({})
        assert a.rec.events == [("up", "b", 1), ("down", "b", 1)]  # before set_peers returned
        assert a.mesh.link("b") is None
        await wait_for(lambda: b.rec.events == [("up", "a", 1), ("down", "a", 1)])
        # absence can only be watched: many backoff periods pass without a new link
        await asyncio.sleep(5 * FAST["backoff_max"])
        assert len(a.rec.events) == 2 and len(b.rec.events) == 2
        assert a.mesh.connections == b.mesh.connections == 0


async def test_newest_connection_from_a_node_replaces_its_link():
    async with nodes() as start:
        b = await start("b")
        first_r, first_w = await asyncio.open_connection("127.0.0.1", b.port)
        await read_frame(first_r)
        first_w.write(hello("a", epoch=1))
        await wait_for(lambda: b.mesh.link("a"))
        second_r, second_w = await asyncio.open_connection("127.0.0.1", b.port)
        await read_frame(second_r)
        second_w.write(hello("a", epoch=2))
        await wait_for(lambda: len(b.rec.events) == 3)
        assert b.rec.events == [("up", "a", 1), ("down", "a", 1), ("up", "a", 2)]
        assert await closed_by_peer(first_r)
        second_w.close()
        first_w.close()
        await wait_for(lambda: b.rec.events[-1] == ("down", "a", 2))


async def test_close_is_idempotent_and_leaves_nothing_behind():
    async with nodes() as start:
        a, b, c = [await start(n) for n in "abc"]
        connect(a, b, c)
        for node in (a, b, c):
            await wait_for(lambda: len(node.mesh.links) == 2)
        a.mesh.link("b").send(mesh_pb2.MeshFrame(kick=mesh_pb2.Kick(user_id="u")))
        await asyncio.gather(a.mesh.close(), a.mesh.close())
        await a.mesh.close()
        assert a.mesh.links == {} and a.mesh.connections == 0
        assert [e for e in a.rec.events if e[0] == "down"] == []
        assert [f.kick.user_id for f in b.rec.frames["a"]] == ["u"]  # queued before close: sent
        for node in (b, c):
            await wait_for(lambda: ("down", "a", 1) in node.rec.events)
        a.mesh.set_peers({"b": b.address})  # after close: ignored
        for node in (b, c):
            await node.mesh.close()
        assert (b.mesh.connections, c.mesh.connections) == (0, 0)
        assert asyncio.all_tasks() - {asyncio.current_task()} == set()



async def test_close_while_a_dial_completes_stops_the_dialer():
    """A close that cancels the dialer in the very turn its connection completes: the cancel
    must not be lost (asyncio.wait_for on 3.11 returned the connection and swallowed it, and
    close waited for that dialer forever)."""
    loop = asyncio.get_running_loop()
    connecting = asyncio.Event()
    release = asyncio.Event()
    real_connect = loop.create_connection

    async def connect_then_hold(*args, **kwargs):
        connected = await real_connect(*args, **kwargs)
        connecting.set()
        await release.wait()
        return connected

    async with nodes() as start:
        a, b = await start("a"), await start("b")
        loop.create_connection = connect_then_hold
        try:
            connect(a, b)
            await connecting.wait()
            release.set()  # the dial completes in the next turn, which is also when close cancels
            await asyncio.wait_for(a.mesh.close(), 10)
        finally:
            del loop.create_connection


class Slammer(asyncio.Protocol):
    """Accepts and resets at once: a peer restarting over and over."""

    def connection_made(self, transport) -> None:
        transport.abort()


async def test_close_while_dials_complete_never_hangs():
    """A dial whose connection completes or fails just as the mesh closes: the dialer must
    still stop (asyncio.wait_for on 3.11 swallowed that cancel) and a half-made connection
    whose transport uvloop closes without connection_lost must not be waited for forever."""
    server = await asyncio.get_running_loop().create_server(Slammer, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    rng = random.Random(5)
    try:
        for _ in range(150):
            mesh = Mesh("a", 1, Recorder(), **{**FAST, "backoff_min": 0.0001,
                                               "backoff_max": 0.0002})
            mesh.set_peers({"b": address})
            await asyncio.sleep(rng.uniform(0, 0.004))
            async with asyncio.timeout(5 * FAST["link_timeout"]):
                await mesh.close()
            assert mesh.connections == 0 and mesh.links == {}
    finally:
        server.close()
        await server.wait_closed()
    await no_tasks_left()


# ---------------------------------------------------------------------- the parser alone
def test_reader_reassembles_frames_cut_anywhere():
    rng = random.Random(7)
    frames = [mesh_pb2.MeshFrame(forward_send=mesh_pb2.ForwardSend(
        request_id=i, body=rng.randbytes(rng.choice([0, 1, 100, 70000])))) for i in range(200)]
    frames.append(mesh_pb2.MeshFrame())  # empty payload: a frame with no body
    stream = b"".join(encode(f) for f in frames)
    for cut in (1, 3, 4096, None):
        reader, out, pos = FrameReader(MIB), [], 0
        while pos < len(stream):
            step = cut or rng.randint(1, 200000)
            reader.feed(stream[pos:pos + step])
            pos += step
            while (frame := reader.next()) is not None:
                out.append(frame)
        assert out == frames, cut


def test_reader_refuses_an_oversized_length_before_its_payload():
    reader = FrameReader(1000)
    reader.feed(struct.pack(">I", 1001))
    with pytest.raises(MeshProtocolError, match="1001 bytes"):
        reader.next()


SCENARIO_DEADLINE = 60.0
SCENARIOS = [f for name, f in sorted(globals().items())
             if name.startswith("test_") and inspect.iscoroutinefunction(f)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__[5:])
def test_on_uvloop(scenario):
    # a deadline inside the loop: a stuck scenario fails with its own traceback instead of
    # waiting for pytest-timeout, whose signal cannot always interrupt uvloop's run
    async def bounded() -> None:
        async with asyncio.timeout(SCENARIO_DEADLINE):  # same task: its leak check holds
            await scenario()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(bounded())
