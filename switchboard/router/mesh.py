"""Mesh transport: the TCP links between gateway nodes (docs/cluster.md, "Mesh links").

Each frame is a 4-byte big-endian length and one serialized MeshFrame (proto/v1/mesh.proto).

Why this shape:

* One connection per node pair, dialled by the node whose id sorts lower: two nodes never race
  to build two links, and exactly one side redials after a drop.
* The newest connection from a node wins. A peer that restarted, or that noticed a dead link
  before we did, dials again while we may still hold its old link; waiting for the old one to
  time out would only delay the peer's return.
* The dialler checks the acceptor's Hello before it sends its own. A dial to a stale address
  (another node listens there now) is refused before that node sees a link come up, so a wrong
  address costs nobody a ring change.
* Writes are batched per event-loop turn: everything sent to a peer during one turn (the
  SendResults of a writer flush, the Deliver frames of a commit) leaves in one write(2).
* Heartbeats every heartbeat_interval on every up link, judged by a phi-accrual failure
  detector (failure_detector.py): a peer that hangs (SIGSTOP, a host gone without a RST) is
  dropped once its silence is improbable given its own heartbeat history, so a peer on a busy
  host, whose heartbeats have been arriving late, gets more slack than a punctual one; never
  within acceptable_pause, always after link_timeout (the hard ceiling, which alone judges a
  connection still in its handshake). One timer per Mesh checks every connection; frames only
  update timestamps.
* Why a link went down is told (`Link.loss`): silent (the detector's verdict), closed (the peer
  closed or reset it, or broke the framing) or local. After a closed link the dialling side
  redials at once and the accepting side probes the peer's address (a connection that only
  waits for the Hello a live node sends first); a dial or probe that is refused (nothing
  listens there: the process is gone) is reported (`MeshHandler.peer_refused`), so the owner
  can tell a blip from a death (membership.py).
* Broken or hostile input (an oversized length, bytes that are no MeshFrame, a bad Hello) and a
  peer that stops reading (our write buffer past max_buffer_bytes) close that one connection
  with a warning; nothing raises into the event loop.
* Who may join (mesh_auth.py): with a shared `secret`, the Hellos are a challenge-response and a
  link is up only once each side checked the other's proof; with `tls`, every connection is
  TLS with a certificate required of both sides. A peer that fails either is refused, with a
  warning naming its address and why, and counted (`refused`). TLS on accepted connections is
  started here (loop.start_tls) rather than by the server, whose handshake failures asyncio
  would not report.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import random
import socket
import ssl
import struct
from collections.abc import KeysView, Mapping
from typing import Protocol

from google.protobuf.message import DecodeError

from switchboard.core.tasks import TaskGroup
from switchboard.proto.v1 import mesh_pb2

from . import mesh_auth
from .failure_detector import PhiAccrualDetector
from .mesh_auth import MeshTls

log = logging.getLogger(__name__)

PROTOCOL = 1
FEATURES = mesh_pb2.FEATURE_LOCATED_REPLACED  # what this release reads beyond PROTOCOL
CLOSE_WAIT = 1.0  # s Mesh.close gives a closing link to write what it holds
_LENGTH = struct.Struct(">I")
_HEARTBEAT = mesh_pb2.MeshFrame(heartbeat=mesh_pb2.Heartbeat()).SerializeToString()


class MeshHandler(Protocol):
    """What the mesh tells its owner (the cluster router). Every call is made on the event loop,
    synchronously, from a transport callback or from inside Mesh.set_peers / Link.close (so
    link_down can fire before those return). Guarantees, per link: link_up first, then its frames
    in arrival order, then link_down at most once (never after Mesh.close() started); nothing
    after link_down. Per node id at most one link is up at a time: when a new connection
    replaces a link, the old link's link_down comes before the new one's link_up. An exception
    raised by a callback is logged and does not affect the link."""

    def link_up(self, link: Link) -> None: ...

    def link_down(self, link: Link) -> None: ...

    def frame(self, link: Link, frame: mesh_pb2.MeshFrame) -> None:
        """Every frame but Hello and Heartbeat, including ones whose body this version does not
        know (WhichOneof("body") is None): the handler decides what to ignore."""

    def peer_refused(self, node_id: str) -> None:
        """A dial or probe to a peer whose link went down was refused: nothing listens at its
        address any more."""


class MeshProtocolError(Exception):
    """The peer broke the framing: the connection is closed."""


class FrameReader:
    """Splits a link's byte stream into MeshFrames. No I/O, so tests can feed it input cut at
    any point."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._max = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[:self._pos]  # once per read, not once per frame
            self._pos = 0
        self._buf += data

    def next(self) -> mesh_pb2.MeshFrame | None:
        """The next whole frame, or None until more bytes arrive. Raises MeshProtocolError."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        (size,) = _LENGTH.unpack_from(buf, pos)
        if size > self._max:
            raise MeshProtocolError(f"frame of {size} bytes (limit {self._max})")
        end = pos + 4 + size
        if len(buf) < end:
            return None
        frame = mesh_pb2.MeshFrame()
        view = memoryview(buf)[pos + 4:end]
        try:
            frame.ParseFromString(view)
        except DecodeError as exc:
            raise MeshProtocolError(f"undecodable frame: {exc}") from None
        finally:
            view.release()  # the buffer must stay resizable
        self._pos = end
        return frame


class LinkLoss(enum.Enum):
    """Why a link went down."""
    SILENT = "silent"  # the failure detector (or link_timeout) gave up on the peer
    CLOSED = "closed"  # the peer closed or reset it, broke the framing, or dialled anew
    LOCAL = "local"    # this node closed it (peer removed, address changed, mesh closing)


class LinkState(enum.Enum):
    HANDSHAKE = enum.auto()  # connected (TLS, if on, done or under way), waiting for the Hello
    PROVING = enum.auto()    # the dialler sent its proof, waiting for the acceptor's
    UP = enum.auto()         # both sides checked, handed to the handler
    CLOSED = enum.auto()     # closing or closed: nothing more goes in or out


class Link(asyncio.Protocol):
    """One TCP connection to a peer node; the handler only ever sees it up. `node_id` and
    `peer_epoch` and `features` (what the peer reads beyond the protocol: mesh.proto's
    Feature bits) come from the peer's Hello. Counters: frames_out, frames_in, bytes_out,
    bytes_in, and writes (transport writes, one per event-loop turn with output). `loss`: why
    it went down (None while it is not)."""

    def __init__(self, mesh: Mesh, dialled: str | None) -> None:
        self.node_id = dialled or ""
        self.peer_epoch = 0
        self.features = 0
        self.frames_out = self.frames_in = self.bytes_out = self.bytes_in = self.writes = 0
        self._mesh = mesh
        self._dialled = dialled
        self._state = LinkState.HANDSHAKE
        self._went_up = False
        self.loss: LinkLoss | None = None
        self._reader = FrameReader(mesh._max_frame_bytes)
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self._last_beat = self._loop.time()
        self._detector = mesh._detector(self._last_beat)  # also the last time anything came in
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._nonce = b""          # ours, sent in our Hello (with a secret)
        self._peer_nonce = b""

    def __repr__(self) -> str:
        return f"<Link {self.node_id or '?'} {self._peer} {self._state.name}>"

    # ------------------------------------------------------------------ API
    def send(self, frame: mesh_pb2.MeshFrame) -> None:
        self.send_encoded(frame.SerializeToString())

    def send_encoded(self, payload: bytes) -> None:
        """Queue one serialized MeshFrame; it leaves with everything queued this turn. Dropped
        once the link is down: link_down has told the handler already."""
        if self._state is LinkState.UP:
            self._queue(payload)

    def close(self) -> None:
        """Close after writing what is queued; link_down fires before this returns."""
        self._shut("closed locally", abort=False, loss=LinkLoss.LOCAL)

    # ------------------------------------------------------------------ output
    def _queue(self, payload: bytes) -> None:
        self._out.append(_LENGTH.pack(len(payload)))
        self._out.append(payload)
        self._out_bytes += 4 + len(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Runs as a loop callback: nothing may raise out of it. uvloop's transport refuses
        writes (RuntimeError) once its handle closed, which can come before is_closing() says
        so and before connection_lost reaches us; such a link is gone, so it is shut."""
        self._flush_scheduled = False
        out, self._out = self._out, []
        size, self._out_bytes = self._out_bytes, 0
        transport = self._transport
        if not out or transport is None or transport.is_closing():
            return
        try:
            transport.writelines(out)
        except (RuntimeError, OSError) as exc:
            self._transport = None
            self._shut(f"write failed: {exc}", abort=False)
            return
        self.writes += 1
        self._mesh.writes += 1
        self.frames_out += len(out) // 2
        self.bytes_out += size
        buffered = transport.get_write_buffer_size()
        if buffered > self._mesh._max_buffer_bytes:
            self._shut(f"peer not reading: {buffered} bytes buffered", abort=True, warn=True)

    # ------------------------------------------------------------------ transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        mesh = self._mesh
        if self._state is LinkState.CLOSED or mesh._stopping:
            transport.abort()
            return
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._last_beat = self._loop.time()
        self._detector.alive(self._last_beat)
        mesh._opened(self)
        if self._dialled is not None:
            return  # the acceptor speaks first, the dialler checks it
        if mesh._tls is not None and transport.get_extra_info("sslcontext") is None:
            mesh._tasks.spawn(self._start_tls(transport))
        else:
            self._greet()

    async def _start_tls(self, transport: asyncio.BaseTransport) -> None:
        mesh = self._mesh
        try:
            self._transport = await self._loop.start_tls(
                transport, self, mesh._tls.server, server_side=True,
                ssl_handshake_timeout=mesh._link_timeout)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self._shut(f"TLS handshake failed: {exc!r}", abort=True, warn=True, refused=True)
            return
        if self._state is LinkState.HANDSHAKE:
            self._greet()

    def _greet(self) -> None:
        """The acceptor's Hello: with a secret it carries the challenge."""
        if self._mesh._secret:
            self._nonce = mesh_auth.nonce()
        self._queue(self._mesh._hello(self._nonce))

    def data_received(self, data: bytes) -> None:
        if self._state is LinkState.CLOSED:
            return
        self.bytes_in += len(data)
        self._mesh.reads += 1
        self._detector.alive(self._loop.time())
        reader = self._reader
        reader.feed(data)
        while self._state is not LinkState.CLOSED:
            try:
                frame = reader.next()
            except MeshProtocolError as exc:
                self._shut(str(exc), abort=True, warn=True,
                           refused=self._state is not LinkState.UP)
                return
            if frame is None:
                return
            self.frames_in += 1
            self._receive(frame)

    def abandon(self) -> None:
        """The dial that made this link failed or was cancelled: release it as lost. uvloop
        may have called connection_made and then closed the transport without ever calling
        connection_lost; a second connection_lost from asyncio later changes nothing."""
        if not self._lost.done():
            if self._transport is not None:
                self._transport.abort()
            self.connection_lost(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._shut(f"connection lost: {exc}" if exc else "connection closed by peer",
                   abort=False)
        self._mesh._forget(self)
        if not self._lost.done():
            self._lost.set_result(None)

    # ------------------------------------------------------------------ state machine
    def _receive(self, frame: mesh_pb2.MeshFrame) -> None:
        kind = frame.WhichOneof("body")
        state = self._state
        if state is LinkState.UP:
            if kind == "heartbeat":
                self._detector.heartbeat(self._loop.time())
                return
            if kind not in ("hello", "hello_proof"):
                try:
                    self._mesh._handler.frame(self, frame)
                except Exception:
                    log.exception("mesh handler failed on %s from %s", kind, self.node_id)
                return
            self._shut(f"{kind} on a link that is up", abort=True, warn=True)
        elif state is LinkState.HANDSHAKE and kind == "hello":
            self._handshake(frame.hello)
        elif state is LinkState.PROVING and kind == "hello_proof":
            self._proved(frame.hello_proof)
        else:
            self._shut(f"{kind} during the handshake ({state.name})", abort=True, warn=True,
                       refused=True)

    def _handshake(self, hello: mesh_pb2.Hello) -> None:
        mesh = self._mesh
        secret = mesh._secret
        if hello.protocol != PROTOCOL:
            problem = f"Hello with protocol {hello.protocol}, expected {PROTOCOL}"
        elif not hello.node_id or hello.node_id == mesh.node_id:
            problem = f"Hello names node {hello.node_id!r}"
        elif self._dialled is not None and hello.node_id != self._dialled:
            problem = f"dialled {self._dialled}, Hello names {hello.node_id}"
        elif secret and len(hello.nonce) != mesh_auth.NONCE_BYTES:
            problem = "no challenge or proof in the Hello: the peer has no mesh secret"
        elif not secret and hello.nonce:
            problem = "the peer asks for a proof: this node has no mesh secret"
        elif secret and self._dialled is None and not mesh_auth.proof_matches(
                mesh_auth.dial_proof(secret, self._nonce, hello.nonce, hello.node_id,
                                     mesh.node_id), hello.proof):
            problem = "wrong proof: the peer holds another mesh secret"
        else:
            self.node_id = hello.node_id
            self.peer_epoch = hello.epoch
            self.features = hello.features
            self._peer_nonce = hello.nonce
            if self._dialled is None:  # the acceptor: the dialler is proven (or no secret)
                if secret:
                    self._queue(mesh_pb2.MeshFrame(hello_proof=mesh_pb2.HelloProof(
                        proof=mesh_auth.accept_proof(secret, self._nonce, hello.nonce,
                                                     mesh.node_id, hello.node_id)))
                                .SerializeToString())
                mesh._up(self)
            elif secret:  # the dialler answers the challenge, then waits for the acceptor's
                self._nonce = mesh_auth.nonce()
                self._queue(mesh._hello(self._nonce, mesh_auth.dial_proof(
                    secret, hello.nonce, self._nonce, mesh.node_id, hello.node_id)))
                self._state = LinkState.PROVING
            else:
                self._queue(mesh._hello())
                mesh._up(self)
            return
        self._shut(problem, abort=True, warn=True, refused=True)

    def _proved(self, proof: mesh_pb2.HelloProof) -> None:
        mesh = self._mesh
        expected = mesh_auth.accept_proof(mesh._secret, self._peer_nonce, self._nonce,
                                          self.node_id, mesh.node_id)
        if mesh_auth.proof_matches(expected, proof.proof):
            mesh._up(self)
        else:
            self._shut("wrong proof from the acceptor: it holds another mesh secret",
                       abort=True, warn=True, refused=True)

    def _shut(self, reason: str, *, abort: bool, warn: bool = False,
              refused: bool = False, loss: LinkLoss = LinkLoss.CLOSED) -> None:
        """Leave once: close the transport (abort skips writing what is queued) and tell the
        mesh, which fires link_down if the link was up. `refused`: the peer failed the
        handshake (counted)."""
        if self._state is LinkState.CLOSED:
            return
        was_up = self._state is LinkState.UP
        self._state = LinkState.CLOSED
        self.loss = loss
        if refused:
            self._mesh.refused += 1
        if warn:
            log.warning("mesh connection %s (%s) %s: %s", self.node_id or "?", self._peer,
                        "refused" if refused else "closed", reason)
        transport = self._transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                self._flush()
                transport.close()
        self._mesh._link_closed(self, was_up, reason)


class _Dialer:
    """Keeps a link to one higher-id peer: dial, wait for the link to end, back off, again."""

    def __init__(self, mesh: Mesh, node_id: str, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self.link: Link | None = None
        self.stopped = False
        self.task = mesh._tasks.spawn(self._run(mesh, node_id, host.strip("[]"), int(port)))

    def stop(self, reason: str) -> None:
        self.stopped = True
        self.task.cancel()
        if self.link is not None:
            self.link._shut(reason, abort=False, loss=LinkLoss.LOCAL)

    async def _run(self, mesh: Mesh, node_id: str, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        delay = mesh._backoff_min
        failures = 0
        while not (self.stopped or mesh._stopping):
            link = self.link = Link(mesh, node_id)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
                # arrives as the connection completes or fails, and this loop would dial on
                # after Mesh.close() or stop() (which then waits for it forever)
                async with asyncio.timeout(mesh._link_timeout):
                    if mesh._tls is None:
                        await loop.create_connection(lambda: link, host, port)
                    else:
                        await loop.create_connection(lambda: link, host, port,
                                                     ssl=mesh._tls.client, server_hostname=host,
                                                     ssl_handshake_timeout=mesh._link_timeout)
            except BaseException as exc:
                link.abandon()
                if not isinstance(exc, OSError):  # TimeoutError is one
                    raise
                failures += 1
                if isinstance(exc, ConnectionRefusedError):
                    mesh._refused(node_id)
                if isinstance(exc, ssl.SSLError):  # its certificate is not one the CA signed
                    mesh.refused += 1
                    log.warning("mesh connection %s (%s) refused: TLS handshake failed: %r",
                                node_id, self.address, exc)
                else:
                    log.log(logging.INFO if failures == 1 else logging.DEBUG,
                            "dialling %s at %s failed (%d in a row): %r", node_id,
                            self.address, failures, exc)
            else:
                await asyncio.shield(link._lost)
                if link._went_up:
                    delay, failures = mesh._backoff_min, 0
            self.link = None
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, mesh._backoff_max)


class Mesh:
    """This node's links to the other nodes. See the module docstring for the rules."""

    def __init__(self, node_id: str, epoch: int, handler: MeshHandler, *,
                 heartbeat_interval: float = 1.0, link_timeout: float = 10.0,
                 phi_threshold: float = 8.0, acceptable_pause: float = 2.0,
                 backoff_min: float = 0.05, backoff_max: float = 2.0,
                 max_frame_bytes: int = 16 * 1024 * 1024,
                 max_buffer_bytes: int = 64 * 1024 * 1024, secret: bytes = b"",
                 tls: MeshTls | None = None) -> None:
        """`secret`: the shared mesh secret (b"": none); `tls`: TLS on every link.
        `phi_threshold`, `acceptable_pause`: the failure detector's (docs/cluster.md); its
        minimum standard deviation is a tenth of the heartbeat interval."""
        self.node_id = node_id
        self.epoch = epoch  # the router updates it when the node registers anew
        self.refused = 0    # connections refused at the handshake (wrong or no proof, TLS)
        self.writes = self.reads = 0  # over every link: writes (one per turn with output), reads
        self._secret = secret
        self._tls = tls
        self._handler = handler
        self._heartbeat_interval = heartbeat_interval
        self._link_timeout = link_timeout
        self._phi_threshold = phi_threshold
        self._acceptable_pause = acceptable_pause
        self.lost = dict.fromkeys(LinkLoss, 0)  # up links that went down, by why
        self._tick_every = min(heartbeat_interval, link_timeout) / 4
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._max_frame_bytes = max_frame_bytes
        self._max_buffer_bytes = max_buffer_bytes
        self._links: dict[str, Link] = {}    # node id -> up link
        self._conns: set[Link] = set()       # every open connection, whatever its state
        self._peers: dict[str, str] = {}
        self._dialers: dict[str, _Dialer] = {}
        self._tasks = TaskGroup()  # the dialers, TLS handshakes and probes
        self._server: asyncio.AbstractServer | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._tick_due = 0.0
        self._stopping = False
        self._stopped: asyncio.Event | None = None

    # ------------------------------------------------------------------ API
    async def listen(self, host: str, port: int) -> int:
        """Accept peers on host:port (0: any free port); returns the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Link(self, None), host, port)
        return self._server.sockets[0].getsockname()[1]

    def set_peers(self, peers: Mapping[str, str]) -> None:
        """Every other member, node id -> "host:port". Keeps a dialer for each member whose id
        sorts above ours (redialled when its address changes); closes the links of members
        listed before and not now, whichever side dialled. Links accepted from nodes never
        listed stay: membership lags behind the nodes that dial us."""
        if self._stopping:
            return
        peers = {n: a for n, a in peers.items() if n != self.node_id}
        for node_id in self._peers.keys() - peers.keys():
            reason = "no longer a peer"
            dialer = self._dialers.pop(node_id, None)
            if dialer is not None:
                dialer.stop(reason)
            link = self._links.get(node_id)
            if link is not None:
                link._shut(reason, abort=False, loss=LinkLoss.LOCAL)
        for node_id, address in peers.items():
            if node_id < self.node_id:
                continue
            dialer = self._dialers.get(node_id)
            if dialer is not None and dialer.address == address:
                continue
            if dialer is not None:
                dialer.stop(f"address changed to {address}")
            self._dialers[node_id] = _Dialer(self, node_id, address)
        self._peers = peers

    def link(self, node_id: str) -> Link | None:
        return self._links.get(node_id)

    @property
    def links(self) -> dict[str, Link]:
        """node id -> up link (a copy)."""
        return dict(self._links)

    def linked(self) -> KeysView[str]:
        """The ids of the nodes with an up link (a live view: do not change links while
        iterating)."""
        return self._links.keys()

    def broadcast(self, frame: mesh_pb2.MeshFrame) -> None:
        """One frame to every peer with an up link, serialised once."""
        if self._links:
            payload = frame.SerializeToString()
            for link in self._links.values():
                link.send_encoded(payload)

    @property
    def connections(self) -> int:
        """Open TCP connections, up or not (handshaking, closing): 0 after close()."""
        return len(self._conns)

    async def close(self) -> None:
        """Stop listening and dialling, close every connection after writing what is queued
        (aborting those that do not finish within CLOSE_WAIT: a peer that does not read now is
        leaving too, or hung, and must not hold up this node's drain). No link_down from here
        on."""
        if self._stopped is not None:
            await self._stopped.wait()
            return
        self._stopped = asyncio.Event()
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for link in list(self._conns):
            link._shut("mesh closing", abort=False, loss=LinkLoss.LOCAL)
        await self._tasks.cancel()
        self._dialers.clear()
        if self._conns:
            lost = {link._lost: link for link in self._conns}
            _, stuck = await asyncio.wait(lost, timeout=min(CLOSE_WAIT, self._link_timeout))
            for future in stuck:
                lost[future].abandon()
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    # ------------------------------------------------------------------ links
    def _hello(self, nonce: bytes = b"", proof: bytes = b"") -> bytes:
        return mesh_pb2.MeshFrame(hello=mesh_pb2.Hello(
            node_id=self.node_id, epoch=self.epoch, protocol=PROTOCOL, nonce=nonce,
            proof=proof, features=FEATURES)).SerializeToString()

    def _detector(self, started_at: float) -> PhiAccrualDetector:
        return PhiAccrualDetector(
            expected_interval=self._heartbeat_interval, threshold=self._phi_threshold,
            acceptable_pause=self._acceptable_pause,
            min_std_deviation=self._heartbeat_interval / 10, started_at=started_at)

    def _refused(self, node_id: str) -> None:
        if self._stopping:
            return
        try:
            self._handler.peer_refused(node_id)
        except Exception:
            log.exception("mesh handler failed on peer_refused of %s", node_id)

    async def _probe(self, node_id: str, address: str) -> None:
        """Whether a live mesh listens at a peer's address, after it closed a link this node
        had accepted from it (the dialling side learns the same from its redial). A live node
        speaks first on a new connection (its Hello), so a probe connects, reads one byte and
        leaves, as an ordinary client the peer drops without a warning. A process being killed
        may still accept for a moment and then reset: that probe is tried again, until one is
        refused (reported), one is answered, the link is back, or link_timeout passed."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        tls = {} if self._tls is None else {"ssl": self._tls.client, "server_hostname": host}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._link_timeout
        while not self._stopping and node_id not in self._links and loop.time() < deadline:
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    reader, writer = await asyncio.open_connection(host, int(port), **tls)
                    try:
                        if await reader.read(1):
                            return  # it answered: alive (its dialler is on its way back)
                    finally:
                        writer.close()
            except ConnectionRefusedError:
                log.info("probe of %s at %s refused", node_id, address)
                self._refused(node_id)
                return
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                log.debug("probe of %s at %s: %r", node_id, address, exc)
            await asyncio.sleep(self._backoff_min)

    def _up(self, link: Link) -> None:
        old = self._links.get(link.node_id)
        if old is not None:
            old._shut(f"replaced by a new connection ({link._peer})", abort=False)
            if link._state is LinkState.CLOSED:  # closed from the old link's link_down
                return
        link._state = LinkState.UP
        link._went_up = True
        self._links[link.node_id] = link
        log.info("mesh link %s -> %s up (%s %s, peer epoch %d)", self.node_id, link.node_id,
                 "dialled" if link._dialled else "accepted from", link._peer, link.peer_epoch)
        try:
            self._handler.link_up(link)
        except Exception:
            log.exception("mesh handler failed on link_up of %s", link.node_id)

    def _link_closed(self, link: Link, was_up: bool, reason: str) -> None:
        if not was_up:
            return
        if self._links.get(link.node_id) is link:
            del self._links[link.node_id]
        log.info("mesh link %s -> %s down (%s): %s", self.node_id, link.node_id,
                 link.loss.value, reason)
        if self._stopping:
            return
        self.lost[link.loss] += 1
        try:
            self._handler.link_down(link)
        except Exception:
            log.exception("mesh handler failed on link_down of %s", link.node_id)
        address = self._peers.get(link.node_id)
        if (link.loss is LinkLoss.CLOSED and link._dialled is None and address is not None
                and not self._stopping):
            self._tasks.spawn(self._probe(link.node_id, address))

    def _opened(self, link: Link) -> None:
        self._conns.add(link)
        if self._tick is None:
            self._arm(asyncio.get_running_loop())

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tick_due = loop.time() + self._tick_every
        self._tick = loop.call_later(self._tick_every, self._check)

    def _forget(self, link: Link) -> None:
        self._conns.discard(link)

    def _check(self) -> None:
        """Heartbeat up links, drop the ones the detector gives up on and any connection
        silent past link_timeout; runs while any connection is open.

        A tick that runs a whole period late means this process was not running (CPU
        starvation, a long GC pause, SIGSTOP): what the peers sent meanwhile may still be
        unread in the sockets (uvloop runs due timers before it polls), so that tick judges
        nobody silent; the next one, after the reads, does."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        on_time = now - self._tick_due < self._tick_every
        for link in list(self._conns):
            up = link._state is LinkState.UP
            silence = link._detector.silence(now)
            if on_time and (silence > self._link_timeout
                            or (up and link._detector.suspects(now))):
                if link._state is LinkState.CLOSED:  # a graceful close the peer never finished
                    link.abandon()
                else:
                    link._shut(f"nothing received for {silence:.1f}s (phi "
                               f"{link._detector.phi(now):.1f}, threshold "
                               f"{self._phi_threshold}, ceiling {self._link_timeout}s)",
                               abort=True, warn=True, loss=LinkLoss.SILENT)
            elif up and now - link._last_beat >= self._heartbeat_interval:
                # every interval, busy or idle: the peer's detector learns our rhythm from them
                link._last_beat = now
                link._queue(_HEARTBEAT)
        if self._conns:
            self._arm(loop)
        else:
            self._tick = None
