"""The device session in C (switchboard/core/session.py says what it does; its pure-Python twin
is tests/reference/session_model.py): a picows listener whose every frame, Send, Ack, SendAck
and Deliver runs here without a Python call of its own, until the port is needed.

Why a picows listener: picows calls a cdef listener's on_ws_frame directly (its C vtable), and
the frame's payload is read where picows parsed it, in its read buffer, without a bytes object.
Output is appended to a C buffer per session and written once per loop turn (`flush`): the
frames a connection gets in one turn (SendAcks, Delivers, receipts) cost one write.

The numbers of the protocol that this module writes (close codes, error codes) are those of
proto/codes.py and client.proto; tests/unit/test_native_wire.py checks that they agree.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport INFINITY
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from picows.picows cimport MemoryBuffer, WSFrame, WSListener, WSTransport

from .acks cimport AckBatch

from .wire cimport (KIND_ACK, KIND_SEND, Buf, Chunk, Scan, buf_append, buf_free, decode_ack,
                    decode_send, deliver_frames, put_error, put_send_ack, put_sync_complete,
                    put_ws_frame, scan_frame)
from .wire import floors_frame

from switchboard.core.backlog import visible_above
from switchboard.core.model import Period, next_visible, range_end

# States (core/session.py State)
cdef enum:
    AWAIT_AUTH = 0
    ADMITTING = 1
    OPEN = 2
    CLOSING = 3
    CLOSED = 4

# WebSocket opcodes
cdef enum:
    OP_CONTINUATION = 0x0
    OP_TEXT = 0x1
    OP_BINARY = 0x2
    OP_CLOSE = 0x8
    OP_PING = 0x9
    OP_PONG = 0xA

# Close codes (proto/codes.py Close) and error codes (client.proto ErrorCode) written here
CLOSE_CODES = {"PROTOCOL_ERROR": 1002, "UNSUPPORTED_DATA": 1003, "MESSAGE_TOO_BIG": 1009,
               "MALFORMED": 4000, "UNAUTHENTICATED": 4001, "AUTH_TIMEOUT": 4002,
               "SLOW_CONSUMER": 4008, "IDLE_TIMEOUT": 4009, "FLOOD": 4029}
ERROR_CODES = {"INVALID_ARGUMENT": 2, "ACK_INVALID": 8, "ALREADY_AUTHENTICATED": 11}
cdef enum:
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    MESSAGE_TOO_BIG = 1009
    MALFORMED = 4000
    UNAUTHENTICATED = 4001
    AUTH_TIMEOUT = 4002
    SLOW_CONSUMER = 4008
    IDLE_TIMEOUT = 4009
    FLOOD = 4029
    INVALID_ARGUMENT = 2
    ACK_INVALID = 8
    ALREADY_AUTHENTICATED = 11

PAGE = 128               # messages per store read of a pump
MAX_EARLY_FRAMES = 16    # frames held while the device is being admitted
CLOSE_GRACE = 2.0        # s a closed connection waits for the peer's CLOSE
cdef Py_ssize_t _PAGE = PAGE
cdef Py_ssize_t _MAX_EARLY = MAX_EARLY_FRAMES
cdef double _GRACE = CLOSE_GRACE
cdef bytes PING_FRAME = b"\x89\x00"
cdef bytes PONG_FRAME = b"\x8a\x00"
# One completed future per event loop, in place of each transport's own `disconnected_future`
# (~0.15 KiB per connection): picows completes it at the disconnect and awaits it only in
# wait_disconnected(), which a server never calls (the session hears on_ws_disconnected).
cdef object _resolved = None


class ClosedPort:
    """The port of every session whose socket is gone (`disconnected`). A closed connection
    must be freed by reference counting, not left for the cyclic collector: the server freezes
    long-lived objects and collects them only when the frozen heap has doubled (collector.py),
    so under connection churn cyclic garbage piles up until then. A session that kept its
    connection as its port would be such a cycle (the connection holds its session), so it
    lets go; and whatever reaches it late (a commit settling, a store read returning, a
    timer, a buffer draining) finds a port that does nothing."""
    __slots__ = ()

    def decode(self, payload):
        return None

    def buffered(self):
        return 0

    def _nothing(self, *args):
        return None

    connected = disconnected = authenticate = submit = cursor = request = pump = _nothing
    load_backlog = load_cursors = wants_flush = closing = echo_close = disconnect = _nothing
    resumed = _nothing


CLOSED_PORT = ClosedPort()


cdef class SessionConfig:
    """The limits and timers every session of a gateway shares (one object, C fields)."""
    cdef readonly double frames_per_second, frame_burst
    cdef readonly Py_ssize_t max_frame_bytes, delivery_window, outbound_buffer_bytes
    cdef readonly double auth_timeout, heartbeat_interval, idle_timeout, retransmit_after
    cdef readonly bint sees_every_commit

    def __init__(self, *, double frames_per_second, double frame_burst,
                 Py_ssize_t max_frame_bytes, Py_ssize_t delivery_window,
                 Py_ssize_t outbound_buffer_bytes, double auth_timeout,
                 double heartbeat_interval, double idle_timeout, double retransmit_after,
                 bint sees_every_commit=True):
        self.frames_per_second = frames_per_second
        self.frame_burst = frame_burst
        self.max_frame_bytes = max_frame_bytes
        self.delivery_window = delivery_window
        self.outbound_buffer_bytes = outbound_buffer_bytes
        self.auth_timeout = auth_timeout
        self.heartbeat_interval = heartbeat_interval
        self.idle_timeout = idle_timeout
        self.retransmit_after = retransmit_after
        self.sees_every_commit = sees_every_commit


cdef class SessionStats:
    """Counters every session of a gateway bumps (the gateway's /metrics reads them)."""
    cdef public long long frames_in, bytes_in, frames_out, bytes_out, sends, acks, deliveries
    cdef public long long retransmits, sync_pages, slow_consumers


# Stream.ranges when a membership event named the user: read the ranges again before sending
# (compared by identity)
STALE = (Period(0, 0),)


@cython.final
cdef class Stream:
    """Delivery state of one chat on one connection. `ranges`: None while everything above
    `acked` is visible to the user (the common case), else the user's membership periods that
    reach above it, or STALE."""
    cdef public long long acked, sent, head
    cdef public object ranges

    def __cinit__(self, long long acked, long long head, ranges=None):
        self.acked = acked
        self.sent = acked
        self.head = head
        self.ranges = ranges


cdef bint _foreseen(object ranges, long long seq) except -1:
    """Whether the known ranges start or end at `seq` (a membership event of the user there)."""
    return (ranges is not None and ranges is not STALE
            and any(p.left_seq == seq or p.joined_seq == seq - 1 for p in ranges))


cdef bint _ended(Stream stream) except -1:
    """The user's last range of the chat ended and the device acked all of it: the stream has
    nothing left to do (a re-add offers the chat anew)."""
    ranges = stream.ranges
    return (ranges is not None and ranges is not STALE and stream.acked == stream.sent
            and next_visible(ranges, stream.acked) is None)


cdef bint _names(list messages, str user) except -1:
    """Whether a membership event among `messages` names `user`."""
    for m in messages:
        if m.event is not None and user in m.event.users:
            return True
    return False


@cython.final
cdef class SyncRun:
    """An ongoing sync: which chats must reach which seq before SyncComplete goes out."""
    cdef readonly uint32_t request_id
    cdef readonly dict targets
    cdef readonly long long messages
    cdef readonly bint loading
    # chats with no stream yet that got live messages while the backlog loaded: (first, last)
    cdef dict pending

    def __cinit__(self, uint32_t request_id):
        self.request_id = request_id
        self.targets = {}
        self.pending = {}
        self.loading = True


cdef class Session(WSListener):
    """Session(port, config, stats, timers, acks=, user="", device=""): see core/session.py."""
    cdef readonly object port
    cdef readonly SessionConfig config
    cdef readonly SessionStats stats
    cdef AckBatch acks                   # the gateway's: delivered acks, handed on per loop turn
    cdef object timers
    cdef readonly WSTransport transport
    cdef readonly int state
    cdef readonly str user, device
    cdef readonly dict streams
    cdef readonly long long inflight, retransmits
    cdef readonly double last_rx, last_progress, timer_due, closing_at, stalled_since
    cdef readonly bint pinged, pumping
    cdef bint held_back                  # the pump stopped on a backed-up output
    cdef double tokens, stamp            # the frame flood bucket
    cdef readonly SyncRun sync
    cdef list early                      # frames that came while ADMITTING, decoded
    cdef list fragments                  # a fragmented message being reassembled
    cdef Py_ssize_t fragment_bytes
    cdef dict own_sends                  # chat -> highest seq SendAck'ed here
    cdef readonly object resolving       # cluster: chats offered with no stream yet
    cdef dict resolving_batch
    cdef set pumped                      # chats read in this round of the pump
    cdef Buf out

    def __init__(self, port, SessionConfig config not None, SessionStats stats not None, timers,
                 *, AckBatch acks not None, str user not None="", str device not None=""):
        self.port = port
        self.config = config
        self.stats = stats
        self.acks = acks
        self.timers = timers
        self.state = AWAIT_AUTH
        self.user = user
        self.device = device
        self.streams = {}
        self.timer_due = INFINITY

    def __dealloc__(self):
        buf_free(&self.out)

    # ------------------------------------------------------------------ picows
    cpdef on_ws_connected(self, WSTransport transport):
        self.transport = transport
        # What an idle connection keeps of picows: not the upgrade request (its headers, the
        # token among them; the port has read what it needs) nor the 101 response (its header
        # map, ~0.6 KiB: written already), not the listener proxy (picows's own pings use it,
        # and they are off: the timer wheel pings), and not a 1 KiB frame buffer for sends:
        # frames are written from this session's own output, picows only frames the rare
        # CLOSE itself (its buffer grows when it does); nor a future of its own to say it
        # disconnected (_resolved).
        global _resolved
        transport.request = None
        transport.response = None
        transport.listener_proxy = None
        transport._write_buffer = MemoryBuffer(0)
        loop = transport.disconnected_future.get_loop()
        if _resolved is None or _resolved.get_loop() is not loop:
            _resolved = loop.create_future()
            _resolved.set_result(None)
        transport.disconnected_future = _resolved
        self.connected(self.timers.now())
        self.port.connected()

    cpdef on_ws_disconnected(self, WSTransport transport):
        port = self.port  # disconnected() lets go of it
        port.disconnected(self.disconnected())

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        self._receive(<int>frame.msg_type, frame.fin, frame.payload_ptr, frame.payload_size,
                      self.timers.now())

    cpdef pause_writing(self):
        self.check_outbound()

    cpdef resume_writing(self):
        self.resumed()

    # ------------------------------------------------------------------ lifecycle in
    def connected(self, double now):
        """The upgrade is done. With a user (token in the header) the device is admitted next
        (the port calls `open`); without, an Auth frame must come within auth_timeout."""
        self.last_rx = now
        self.tokens = self.config.frame_burst
        self.stamp = now
        if self.user:
            self.state = ADMITTING
            self.early = []
        else:
            self._arm(now + self.config.auth_timeout)

    def authenticated(self, str user not None, str device not None):
        """The Auth frame's token was good: admission next."""
        self.user = user
        self.device = device
        self.state = ADMITTING
        self.early = []

    def open(self, bytes welcome not None):
        """Admitted: Welcome goes out, heartbeats start, the automatic sync starts, and the
        frames held meanwhile are handled in order."""
        if self.state != ADMITTING:
            return
        self.state = OPEN
        # the automatic sync exists before the Welcome is written, so the port may hold the
        # Welcome until the snapshot is read (the gateway: one write with what it brings);
        # a new session has no streams, so there is nothing to rewind or floor
        self.sync = SyncRun(0)
        self.send_frame(welcome)
        self._arm(self.last_rx + self.config.heartbeat_interval)
        self.port.load_backlog(self.sync)
        early, self.early = self.early, None
        for kind, rid, fields, problem in early or ():
            if self.state != OPEN:
                break
            self._dispatch(kind, rid, fields, problem, self.timers.now())

    cpdef close(self, int code, str reason):
        """Send a CLOSE; the peer's CLOSE ends the connection, and a peer that does not answer
        (or does not read) is cut off after CLOSE_GRACE."""
        if self.state >= CLOSING:
            return
        prev = self.state
        self.state = CLOSING
        self.stalled_since = 0.0
        self.closing_at = self.timers.now() + _GRACE
        self.timer_due = INFINITY
        self._arm(self.closing_at)
        self.port.closing(prev, code, reason)

    def disconnected(self):
        """The socket is gone; returns the state it was in. The port becomes CLOSED_PORT:
        the connection holds its session, so a session that held its connection would leave
        both to the cyclic collector (ClosedPort says why that matters). The transport goes
        too: the timer wheel keeps a closed session until its entry comes due (up to
        heartbeat_interval), and picows's and uvloop's transports are most of what it would
        keep alive meanwhile."""
        prev = self.state
        self.state = CLOSED
        self.stalled_since = 0.0
        buf_free(&self.out)
        self.port = CLOSED_PORT
        self.transport = None
        return prev

    def take_output(self):
        """The frames buffered since the last call, in order (without a transport)."""
        data = PyBytes_FromStringAndSize(self.out.data, self.out.size)
        buf_free(&self.out)
        return data

    @property
    def pending_output(self):
        return self.out.size

    cpdef flush(self):
        """Write the buffered frames to the transport in one write."""
        if self.out.size == 0 or self.transport is None:
            return
        data = PyBytes_FromStringAndSize(self.out.data, self.out.size)
        buf_free(&self.out)
        self.transport.underlying_transport.write(data)
        self.check_outbound()
        # A pump that stopped on this buffer (write_blocked), and answers that wait for room in
        # it (the port's stall), go on now that the socket took it: resume_writing comes only
        # when the transport paused, which a write the socket takes at once never makes it do.
        if (self.held_back or self.stalled_since) and not self.write_blocked():
            if self.stalled_since:
                self.port.resumed()
            if self.held_back:
                self.held_back = False
                self._maybe_pump()

    # ------------------------------------------------------------------ frames in
    def receive(self, int opcode, bint fin, bytes payload not None, double now):
        """One WebSocket frame from the device, without picows (tests)."""
        self._receive(opcode, fin, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), now)

    cdef int _receive(self, int opcode, bint fin, char* p, Py_ssize_t n, double now) except -1:
        if self.state >= CLOSING:
            if opcode == OP_CLOSE:  # the peer completed our close handshake
                self.port.disconnect(True)
            return 0
        self.last_rx = now
        self.pinged = False
        if opcode == OP_BINARY or opcode == OP_CONTINUATION:
            if self._flooding(now):  # every WebSocket frame counts, fragments too
                self.close(FLOOD, "too many frames")
            elif opcode == OP_BINARY and fin and self.fragments is None:
                self._on_message(p, n, now)
            else:
                self._on_fragment(opcode, fin, PyBytes_FromStringAndSize(p, n), now)
        elif opcode == OP_PING:
            if self._flooding(now):
                self.close(FLOOD, "too many frames")
            else:
                self._pong(p, n)
        elif opcode == OP_CLOSE:
            self.port.echo_close((<uint8_t>p[0] << 8 | <uint8_t>p[1]) if n >= 2 else 0)
        elif opcode == OP_TEXT:
            self.close(UNSUPPORTED_DATA, "binary frames only")
        return 0

    cdef bint _flooding(self, double now) noexcept:
        """The frame token bucket: True when this frame is one too many."""
        cdef SessionConfig config = self.config
        cdef double tokens = self.tokens + (now - self.stamp) * config.frames_per_second
        if tokens > config.frame_burst:
            tokens = config.frame_burst
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return False
        self.tokens = tokens
        return True

    cdef int _on_fragment(self, int opcode, bint fin, bytes payload, double now) except -1:
        """RFC 6455 fragmentation: a first frame without FIN, continuation frames up to one
        with FIN (picows hands control frames in between over separately); its size counts
        across fragments."""
        if (opcode == OP_BINARY) != (self.fragments is None):
            self.close(PROTOCOL_ERROR, "continuation frame outside a fragmented message"
                       if self.fragments is None else "new message inside a fragmented one")
            return 0
        if self.fragments is None:
            self.fragments = []
        self.fragments.append(payload)
        self.fragment_bytes += len(payload)
        if self.fragment_bytes > self.config.max_frame_bytes:
            self.close(MESSAGE_TOO_BIG, "message over max_frame_bytes")
        elif fin:
            message = b"".join(self.fragments)
            self.fragments = None
            self.fragment_bytes = 0
            self._on_message(PyBytes_AS_STRING(message), len(message), now)
        return 0

    cdef int _on_message(self, const char* p, Py_ssize_t n, double now) except -1:
        cdef SessionStats stats = self.stats
        cdef Scan scan
        cdef object fields = None
        stats.frames_in += 1
        stats.bytes_in += n
        scan_frame(p, n, &scan)
        if scan.kind == KIND_SEND:
            fields = decode_send(scan.body, scan.body_len)
            kind = "send"
        elif scan.kind == KIND_ACK:
            fields = decode_ack(scan.body, scan.body_len)
            kind = "ack"
        if fields is None:
            decoded = self.port.decode(PyBytes_FromStringAndSize(p, n))
            if decoded is None:
                self.close(MALFORMED, "not a ClientFrame")
                return 0
            kind, rid, fields, problem = decoded
        else:
            rid = scan.request_id
            problem = None
        if self.state == ADMITTING:
            if len(self.early) >= _MAX_EARLY:
                self.close(FLOOD, "too many frames before Welcome")
            else:
                self.early.append((kind, rid, fields, problem))
            return 0
        return self._dispatch(kind, rid, fields, problem, now)

    cdef int _dispatch(self, kind, uint32_t rid, fields, problem, double now) except -1:
        if problem is not None:
            if self.state == AWAIT_AUTH:
                self.close(UNAUTHENTICATED, "invalid token" if kind == "auth" else "auth required")
            else:
                self._error(rid, INVALID_ARGUMENT, problem, 0, "", "")
        elif self.state == AWAIT_AUTH:
            if kind == "auth":
                self.port.authenticate(fields)
            else:
                self.close(UNAUTHENTICATED, "auth required")
        elif kind == "send":
            client_msg_id, chat_id, body, media_ids, e2e = fields
            self.port.submit(rid, chat_id, client_msg_id, body, media_ids, e2e, now)
        elif kind == "ack":
            self._on_ack(rid, fields, now)
        elif kind == "sync":
            self._start_sync(rid)
        elif kind == "auth":
            self._error(rid, ALREADY_AUTHENTICATED, "already authenticated", 0, "", "")
        else:
            self.port.request(kind, fields)
        return 0

    # ------------------------------------------------------------------ sends
    def send_acked(self, uint32_t rid, message, bint duplicate):
        """The send `rid` is durable: its SendAck, and the device now holds that seq."""
        if self.state >= CLOSING:
            return
        cdef str chat_id = message.chat_id
        cdef long long seq = message.seq
        self.stats.sends += 1
        if self.own_sends is None:
            self.own_sends = {}
        if seq > self.own_sends.get(chat_id, 0):
            self.own_sends[chat_id] = seq
        cdef Py_ssize_t before = self._begin_output()
        put_send_ack(&self.out, rid, message.client_msg_id, chat_id, seq, message.server_id,
                     message.created_at_ms, duplicate)
        self._count_output(before)

    def send_failed(self, uint32_t rid, int code, str detail not None, uint32_t retry_after_ms,
                    str chat_id not None, str client_msg_id not None):
        if self.state < CLOSING:
            self._error(rid, code, detail, retry_after_ms, chat_id, client_msg_id)

    cdef int _error(self, uint32_t rid, int code, str detail, uint32_t retry_after_ms,
                    str chat_id, str client_msg_id) except -1:
        cdef Py_ssize_t before = self._begin_output()
        put_error(&self.out, rid, code, detail, retry_after_ms, chat_id, client_msg_id)
        return self._count_output(before)

    # ------------------------------------------------------------------ acks
    cdef int _on_ack(self, uint32_t rid, list items, double now) except -1:
        cdef Stream stream
        cdef long long seq, own
        cdef bint progressed = False
        cdef object invalid = None
        self.stats.acks += 1
        for chat_id, seq in items:
            stream = self.streams.get(chat_id)
            if stream is None or seq > stream.head:
                own = self.own_sends.get(chat_id, 0) if self.own_sends else 0
                if seq > own:
                    invalid = (chat_id, seq)
                    continue
                # the device counts its own SendAcks as held (protocol 8.3) and acks them
                if stream is None:
                    self.acks.put(self.user, self.device, chat_id, seq)
                    continue
                stream.head = seq
            if seq > stream.acked:
                if seq > stream.sent:  # acks what was sent before a retransmit rewind
                    self.inflight -= stream.sent - stream.acked
                    stream.sent = seq
                else:
                    self.inflight -= seq - stream.acked
                stream.acked = seq
                self.acks.put(self.user, self.device, chat_id, seq)
                progressed = True
                if stream.ranges is not None and _ended(stream):
                    del self.streams[chat_id]
        if progressed:
            self.last_progress = now
            self._maybe_pump()
        if invalid is not None:
            self._error(rid, ACK_INVALID, f"seq {invalid[1]} was neither delivered nor "
                        "acknowledged on this connection", 0, invalid[0], "")
        return 0

    # ------------------------------------------------------------------ delivery
    cpdef offer(self, str chat_id, list messages, list chunks):
        """Fresh messages of one chat (seq order), with their shared encoded Deliver frames."""
        if self.state != OPEN:
            return
        cdef Stream stream = self.streams.get(chat_id)
        cdef long long first = messages[0].seq
        cdef long long last = messages[len(messages) - 1].seq
        cdef SyncRun sync
        cdef Chunk chunk
        cdef Py_ssize_t i, n = len(messages)
        cdef bint own = False
        cdef bint events = False
        if stream is None:
            sync = self.sync
            if sync is not None and sync.loading:
                known = sync.pending.get(chat_id)
                sync.pending[chat_id] = (min(first, known[0]) if known else first, last)
                return
            if not self.config.sees_every_commit:
                self._resolve(chat_id, first, last)
                return
            # one node sees every commit, so the first offer continues what the device has
            stream = Stream(first - 1, last)
            self.streams[chat_id] = stream
        if last <= stream.sent:
            return
        if last > stream.head:
            stream.head = last
        for i in range(n):
            if messages[i].event is not None:
                events = True
                break
        if events and _names(messages, self.user):
            stream.ranges = STALE  # the user's range of the chat changes here: read it again
        if (first > stream.sent + 1 or self.inflight + n > self.config.delivery_window
                or stream.ranges is not None):
            self._maybe_pump()
            return
        for i in range(n):
            if self._is_own(messages[i]):
                own = True
                break
        # a membership event that does not name this user (the set-up of a large group: every
        # other member) goes out in the shared frames too; one naming it returned above
        if first <= stream.sent or own:
            if not self._deliver(stream, [m for m in messages if m.seq > stream.sent]):
                self._maybe_pump()
        else:
            for chunk in chunks:
                self._advance(stream, chunk.last_seq)
                self._write_framed(chunk.frame)
                self.stats.deliveries += chunk.count
        self._check_sync()

    cdef inline bint _is_own(self, message) except -1:
        return message.sender_device == self.device and message.sender_user == self.user

    cdef bint _deliver(self, Stream stream, list messages) except -1:
        """Send `messages` (contiguous after stream.sent), leaving out this device's own.
        Stops between frames when the output is backed up; False when it did. Stops after a
        membership event naming this user that its known ranges do not foresee: what follows
        may not be visible to it."""
        cdef Chunk chunk
        cdef Py_ssize_t i
        for i in range(len(messages)):
            m = messages[i]
            if (m.event is not None and self.user in m.event.users
                    and not _foreseen(stream.ranges, m.seq)):
                messages = messages[:i + 1]
                stream.ranges = STALE
                break
        cdef list others = [m for m in messages if not self._is_own(m)]
        last = messages[len(messages) - 1]
        cdef long long last_seq = last.seq
        if not others and stream.acked == stream.sent:
            # only this device's own sends, nothing else outstanding: its SendAcks were its copy
            stream.sent = stream.acked = last_seq
            self.port.cursor(last.chat_id, last_seq)
            return True
        for i, chunk in enumerate(deliver_frames(others, self.config.max_frame_bytes)):
            if i and self.write_blocked():
                return False
            self._advance(stream, chunk.last_seq)
            self._write_framed(chunk.frame)
            self.stats.deliveries += chunk.count
        if last_seq > stream.sent:
            self._advance(stream, last_seq)
        return True

    cdef int _advance(self, Stream stream, long long sent) except -1:
        if self.inflight == 0:
            self.last_progress = self.timers.now()
            self._arm(self.last_progress + self.config.retransmit_after)
        self.inflight += sent - stream.sent
        if self.sync is not None:
            self.sync.messages += sent - stream.sent
        stream.sent = sent
        return 0

    def recheck_chat(self, str chat_id):
        """The user was removed from the chat: read its range again before sending more."""
        cdef Stream stream = self.streams.get(chat_id)
        if stream is not None:
            stream.ranges = STALE

    # ------------------------------------------------------------------ pump
    cdef int _maybe_pump(self) except -1:
        cdef Stream stream
        if self.pumping or self.state != OPEN or self.inflight >= self.config.delivery_window:
            return 0
        for stream in self.streams.values():
            if stream.sent < stream.head:
                self.pumping = True
                self.port.pump()
                break
        return 0

    def next_read(self):
        """The next range the pump should read (chat, after seq, at most n; n == 0: the
        user's membership periods of the chat instead, for `periods`), or None: nothing is
        behind, the window is full or the output is backed up. Chats take turns."""
        cdef Stream stream
        cdef long long room, limit
        if self.state != OPEN:
            return None
        if self.write_blocked():
            self.held_back = True  # the flush that empties the buffer starts the pump again
            return None
        room = self.config.delivery_window - self.inflight
        if room <= 0:
            return None
        if self.pumped is None:
            self.pumped = set()
        for again in (False, True):
            if again:
                self.pumped.clear()
            for chat_id, stream in list(self.streams.items()):
                if stream.sent < stream.head and chat_id not in self.pumped:
                    self.pumped.add(chat_id)
                    if stream.ranges is STALE:
                        return chat_id, stream.sent, 0
                    limit = min(room, _PAGE)
                    if stream.ranges is not None:
                        limit = self._within_ranges(chat_id, stream, limit)
                        if limit <= 0:
                            continue
                    return chat_id, stream.sent, limit
        return None

    cdef long long _within_ranges(self, str chat_id, Stream stream, long long limit) except -1:
        """How many seqs after `sent` may go out now: up to the end of the range `sent` is in.
        At the end of a range, cross the gap to the next once everything is acked (and tell the
        device the new floor); after the last range, the stream is done."""
        ranges = stream.ranges
        following = next_visible(ranges, stream.sent)
        if following is None:  # past the last range: nothing more, ever (unless re-added)
            stream.head = stream.sent
            if _ended(stream):
                del self.streams[chat_id]
            return 0
        if following > stream.sent + 1:
            if stream.acked < stream.sent:
                return 0  # the acks bring the pump back
            stream.acked = stream.sent = following - 1
            self._send_floors([(chat_id, stream.acked)])
            stream.ranges = visible_above(ranges, stream.acked)  # None: plain again
            if stream.ranges is None:
                return limit
        end = range_end(ranges, following)
        return limit if end is None else min(limit, end - stream.sent)

    def periods(self, str chat_id, periods):
        """The store's answer to a next_read of the user's periods of `chat_id`."""
        cdef Stream stream = self.streams.get(chat_id)
        if self.state == OPEN and stream is not None and stream.ranges is STALE:
            stream.ranges = visible_above(periods, stream.acked)

    cdef int _send_floors(self, list floors) except -1:
        """Tell the device where delivery of these chats continues (protocol 8.3)."""
        if floors:
            self._write_framed(floors_frame(floors))
        return 0

    def rows(self, str chat_id, long long after, list rows):
        """The store's answer to next_read's (chat_id, after, ...)."""
        self.stats.sync_pages += 1
        cdef Stream stream = self.streams.get(chat_id)
        if self.state != OPEN or stream is None or stream.sent != after:
            return  # the stream moved (or went) while the store read: read again
        if not rows or rows[0].seq != after + 1:
            # the store has nothing past `sent`: `head` came from a stale hint
            stream.head = stream.sent
            return
        self._deliver(stream, rows)

    def pump_stopped(self):
        self.pumping = False
        self.pumped = None
        self._check_sync()

    cpdef bint write_blocked(self) except -1:
        """More than a frame waits for the socket: hold back what can wait."""
        return self.out.size + self._buffered() > self.config.max_frame_bytes

    cdef Py_ssize_t _buffered(self) except -1:
        if self.transport is not None:
            return self.transport.underlying_transport.get_write_buffer_size()
        return self.port.buffered()

    def resumed(self):
        """The transport's buffer drained (resume_writing)."""
        self.port.resumed()
        self._maybe_pump()

    # ------------------------------------------------------------------ sync
    cdef int _start_sync(self, uint32_t request_id) except -1:
        """A Sync replays each chat from `acked`. The device asks for one when it sees a gap; if
        its watermark is below where this connection resumes (the gap is one it may never fill)
        the floors tell it to move up (protocol 8.3)."""
        cdef Stream stream
        for stream in self.streams.values():
            self.inflight -= stream.sent - stream.acked
            stream.sent = stream.acked
        self._send_floors([(chat_id, stream.acked) for chat_id, stream in self.streams.items()
                           if stream.acked])
        self.sync = SyncRun(request_id)
        self.port.load_backlog(self.sync)
        return 0

    def backlog_loaded(self, sync, list backlog):
        """The sync snapshot `sync` asked for (an older sync's is ignored)."""
        cdef SyncRun run = self.sync
        cdef Stream stream
        if run is not sync or self.state != OPEN:
            return
        self._adopt(backlog)
        for row in backlog:
            run.targets[row.chat_id] = row.head
        for chat_id, (first, last) in run.pending.items():
            stream = self.streams.get(chat_id)
            if stream is not None:
                if last > stream.head:
                    stream.head = last
            elif self.config.sees_every_commit:
                # every commit after the snapshot was offered here: the first continues it
                self.streams[chat_id] = Stream(first - 1, last)
            else:
                # the snapshot may predate commits whose pushes this node missed (their owner
                # died, or had not seen this connection yet): what precedes `first` comes from
                # the cursor read after these offers, never from the guess first - 1
                self._resolve(chat_id, first, last)
        run.pending.clear()
        run.loading = False
        self._maybe_pump()
        self._check_sync()

    cdef int _adopt(self, list backlog) except -1:
        """Streams from the store's view: a chat behind its head starts at the device's cursor,
        or where the user's range starts again (the device is told: a floor); a stream that
        exists already only learns the new head and the ranges."""
        cdef Stream stream
        cdef list floors = []
        for row in backlog:
            stream = self.streams.get(row.chat_id)
            if stream is None:
                self.streams[row.chat_id] = Stream(row.cursor, row.head, row.periods)
                if row.jumped:
                    floors.append((row.chat_id, row.cursor))
                continue
            if row.head > stream.head:
                stream.head = row.head
            if row.periods is not None and stream.ranges is None:
                stream.ranges = row.periods
        return self._send_floors(floors)

    cdef int _check_sync(self) except -1:
        cdef SyncRun run = self.sync
        cdef Stream stream
        if run is None or run.loading or self.state != OPEN:
            return 0
        for chat_id, target in run.targets.items():
            stream = self.streams.get(chat_id)
            if stream is not None and stream.sent < target:
                return 0
        self.sync = None
        cdef Py_ssize_t before = self._begin_output()
        put_sync_complete(&self.out, run.request_id, len(run.targets), run.messages)
        return self._count_output(before)

    # ------------------------------------------------------------------ cluster: cursors
    cdef int _resolve(self, str chat_id, long long first, long long last) except -1:
        """A cluster node can miss a push (a registry lookup that did not see this session, a
        link that was down), so a chat's first offer may not continue what the device has:
        start the stream at the device's stored cursor instead and fill from the store."""
        if self.resolving is None:
            self.resolving = {}
            self.port.load_cursors()
        known = self.resolving.get(chat_id)
        self.resolving[chat_id] = ((min(first, known[0]), max(last, known[1])) if known
                                   else (first, last))
        return 0

    def catch_up(self):
        """Compare every chat with the store (cluster: pushes to this node may have been
        lost). True: read the cursors now (`cursor_read_begin` ...)."""
        if self.state != OPEN or self.resolving is not None:
            return False
        self.resolving = {}
        return True

    def cursor_read_begin(self):
        """Before each cursor read: True to read. Offers that arrive during a read wait for
        the next one: their commits may be newer than what the read saw."""
        if self.resolving is None or self.state != OPEN:
            return False
        self.resolving_batch, self.resolving = self.resolving, {}
        return True

    def cursors_loaded(self, list backlog):
        """The cursors read; True: offers came meanwhile, read again."""
        if self.state != OPEN:
            return False
        self._adopt(backlog)
        for chat_id, (_, last) in self.resolving_batch.items():
            if chat_id not in self.streams:
                # not in the backlog: the device's cursor is at or past the head already
                self.streams[chat_id] = Stream(last, last)
        self.resolving_batch = None
        return bool(self.resolving)

    def cursor_reads_end(self):
        self.resolving = None
        self._maybe_pump()

    # ------------------------------------------------------------------ timers
    cdef int _arm(self, double due) except -1:
        if due < self.timer_due:
            self.timer_due = due
            self.timers.schedule(self, due)
        return 0

    def stall(self, double now):
        """Answers wait for the outbound buffer to drain: a reader that does not make room
        within retransmit_after is a slow consumer."""
        if not self.stalled_since:
            self.stalled_since = now
            self._arm(now + self.config.retransmit_after)

    def unstall(self):
        self.stalled_since = 0.0

    def on_timer(self, double now):
        if self.state == CLOSED or now < self.timer_due:
            return  # a stale entry: a nearer deadline is already armed
        self.timer_due = INFINITY
        cdef SessionConfig config = self.config
        cdef double idle, due
        if self.state == CLOSING:
            if now >= self.closing_at:
                self.port.disconnect(False)
            else:
                self._arm(self.closing_at)
            return
        if self.state == AWAIT_AUTH:
            self.close(AUTH_TIMEOUT, "no auth in time")
            return
        if self.stalled_since and now - self.stalled_since >= config.retransmit_after:
            if self.write_blocked():
                self.slow_consumer()
                return
            # the socket took the buffer without the transport pausing (no resume_writing came):
            # the reader made room after all
            self.stalled_since = 0.0
            self.port.resumed()
        idle = now - self.last_rx
        if idle >= config.idle_timeout:
            self.close(IDLE_TIMEOUT, "idle")
            return
        if idle >= config.heartbeat_interval and not self.pinged:
            self.pinged = True
            self._write_control(PING_FRAME)
            # the next look one interval on: by then the answer is in, and the next ping
            # goes out an interval after it
            due = min(now + config.heartbeat_interval, self.last_rx + config.idle_timeout)
        elif self.pinged:
            due = self.last_rx + config.idle_timeout
        else:
            due = self.last_rx + config.heartbeat_interval
        if self.inflight > 0:
            if now - self.last_progress >= config.retransmit_after:
                self._retransmit(now)
            due = min(due, self.last_progress + config.retransmit_after)
        if self.stalled_since:
            due = min(due, self.stalled_since + config.retransmit_after)
        self._arm(due)

    cdef int _pong(self, const char* p, Py_ssize_t n) except -1:
        """The answer to the device's WebSocket ping, its payload echoed (RFC 6455 5.5.3). The
        session answers, not picows, so that the ping counts as activity: a device that pings
        on its own is not pinged as well."""
        if n == 0:
            return self._write_control(PONG_FRAME)
        cdef Buf frame
        frame.data = NULL
        frame.size = frame.cap = 0
        try:
            put_ws_frame(&frame, OP_PONG, p, n)
            return self._write_control(PyBytes_FromStringAndSize(frame.data, frame.size))
        finally:
            buf_free(&frame)

    cdef int _write_control(self, bytes frame) except -1:
        """A ping or pong. An idle connection (nothing buffered) writes it to the socket at
        once: no flush turn, no Python call of the session's; otherwise it goes behind the
        output."""
        if self.out.size or self.transport is None:
            return self._write_framed(frame)
        if self.state >= CLOSING:
            return 0
        socket = self.transport.underlying_transport
        if socket.is_closing():  # gone; its disconnect is on its way
            return 0
        self.stats.frames_out += 1
        self.stats.bytes_out += PyBytes_GET_SIZE(frame)
        socket.write(frame)
        return 0

    cdef int _retransmit(self, double now) except -1:
        cdef Stream stream
        for stream in self.streams.values():
            if stream.sent > stream.acked:
                self.retransmits += stream.sent - stream.acked
                self.stats.retransmits += stream.sent - stream.acked
                stream.sent = stream.acked
        self.inflight = 0
        self.last_progress = now
        return self._maybe_pump()

    # ------------------------------------------------------------------ output
    cpdef send_frame(self, bytes data):
        """An encoded ServerFrame to the device."""
        if self.state >= CLOSING:
            return
        cdef Py_ssize_t before = self._begin_output()
        put_ws_frame(&self.out, OP_BINARY, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        self._count_output(before)

    cdef inline Py_ssize_t _begin_output(self) except -1:
        if self.out.size == 0:
            self.port.wants_flush()
        return self.out.size

    cdef int _count_output(self, Py_ssize_t before) except -1:
        """After a frame went into the output: counters, and the cap."""
        self.stats.frames_out += 1
        self.stats.bytes_out += self.out.size - before
        if self.out.size > self.config.outbound_buffer_bytes:
            self.slow_consumer()
        return 0

    cdef int _write_framed(self, bytes frame) except -1:
        """A complete WebSocket frame to the output, in order."""
        if self.state >= CLOSING:
            return 0
        cdef Py_ssize_t before = self._begin_output()
        buf_append(&self.out, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame))
        return self._count_output(before)

    cpdef check_outbound(self):
        """After a write: a device whose unread output passed the cap is a slow consumer."""
        if self._buffered() + self.out.size > self.config.outbound_buffer_bytes:
            self.slow_consumer()

    cpdef slow_consumer(self):
        if self.state < CLOSING:
            self.stats.slow_consumers += 1
            self.close(SLOW_CONSUMER, "slow consumer: reconnect and sync")


def offer_each(dict by_user not None, list users not None, Py_ssize_t start, Py_ssize_t end,
               str chat_id not None, list messages not None, list chunks not None):
    """The fan-out's loop: one commit offered to the session of every connected device of
    users[start:end] (by_user: user -> its connection, whose `session` it is, or {device: its
    connection} for a user with several devices here), with no Python frame per recipient: a
    group of 10,000 runs it 10,000 times per message."""
    cdef Py_ssize_t i
    cdef Session session
    cdef object devices
    for i in range(max(start, 0), min(end, len(users))):
        devices = by_user.get(users[i])
        if devices is None:
            continue
        if type(devices) is dict:
            # a copy: an offer may close a slow connection, which unregisters it
            for conn in tuple((<dict>devices).values()):
                session = conn.session
                session.offer(chat_id, messages, chunks)
        else:
            session = devices.session
            session.offer(chat_id, messages, chunks)
