"""The protocol's hot frames in C: reading Send and Ack out of a ClientFrame, writing SendAck,
Error, SyncComplete and Deliver ServerFrames straight into a byte buffer as WebSocket frames.

Why: these are the frames of every message (a Send, a SendAck, a Deliver and part of an Ack),
and going through protobuf message objects costs microseconds per frame in object creation
alone. The wire format is client.proto's, exactly (docs/protocol.md): encoders write the bytes
the protobuf library would (fields by number, proto3 zero values left out, minimal varints),
and tests decode them with the library and compare byte for byte.

Reading is conservative: `scan_frame` and the body decoders accept the plain shape a client
sends (each field once, the types client.proto gives them, unknown fields skipped, UTF-8
strings, numbers in range) and answer FALLBACK / None for anything else, which then goes to the
protobuf library and gateway/wire.py's checks: duplicate or merged fields, a second oneof
member, groups, wrong wire types, 10-byte varints, invalid UTF-8, a seq past 2**63 - 1, bytes
that are not a ClientFrame at all. So every frame gets exactly the answer the library gives.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8, PyUnicode_GET_LENGTH
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    # the ASCII fast path: ASCII bytes are a valid str as they are
    object PyUnicode_FromKindAndData(int kind, const void* buffer, Py_ssize_t size)
    int PyUnicode_1BYTE_KIND

cdef uint64_t MAX_SEQ = 0x7FFFFFFFFFFFFFFFULL  # seqs are stored as signed 64-bit integers
cdef Py_ssize_t MESSAGE_OVERHEAD = 512  # what a Message costs beyond body and media, generously

# ServerFrame tags: (field number << 3) | 2
cdef uint8_t TAG_SEND_ACK = 0x1A
cdef uint8_t TAG_DELIVER = 0x22
cdef uint8_t TAG_SYNC_COMPLETE = 0x2A
cdef uint8_t TAG_ERROR = 0x4A
cdef uint8_t OPCODE_BINARY = 0x2


# ---------------------------------------------------------------------------------- buffer
cdef int buf_reserve(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t want = b.size + extra
    cdef Py_ssize_t cap
    cdef char* data
    if want <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 256
    while cap < want:
        cap *= 2
    data = <char*>PyMem_Realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef void buf_free(Buf* b) noexcept:
    PyMem_Free(b.data)
    b.data = NULL
    b.size = 0
    b.cap = 0


cdef int buf_append(Buf* b, const char* p, Py_ssize_t n) except -1:
    buf_reserve(b, n)
    memcpy(b.data + b.size, p, n)
    b.size += n
    return 0


# ---------------------------------------------------------------------------------- varints
cdef inline Py_ssize_t varint_size(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline char* put_varint(char* p, uint64_t v) noexcept nogil:
    while v >= 0x80:
        p[0] = <char>((v & 0x7F) | 0x80)
        v >>= 7
        p += 1
    p[0] = <char>v
    return p + 1


cdef inline int get_varint(const uint8_t* p, Py_ssize_t n, Py_ssize_t* pos,
                           uint64_t* out) noexcept nogil:
    """0, or -1 when truncated or 10 bytes and more (left to the library: only a uint64 past
    2**63 needs ten, and none of those is in range here)."""
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef Py_ssize_t i = pos[0]
    cdef uint8_t byte
    while i < n and shift < 63:
        byte = p[i]
        i += 1
        v |= (<uint64_t>(byte & 0x7F)) << shift
        if not byte & 0x80:
            pos[0] = i
            out[0] = v
            return 0
        shift += 7
    return -1


cdef inline int skip_field(const uint8_t* p, Py_ssize_t n, Py_ssize_t* pos,
                           int wire_type) noexcept nogil:
    """Skip an unknown field's value; -1 for what the library must judge (groups, bad types,
    truncation)."""
    cdef uint64_t v
    if wire_type == 0:
        return get_varint(p, n, pos, &v)
    if wire_type == 1:
        if pos[0] + 8 > n:
            return -1
        pos[0] += 8
        return 0
    if wire_type == 5:
        if pos[0] + 4 > n:
            return -1
        pos[0] += 4
        return 0
    if wire_type == 2:
        if get_varint(p, n, pos, &v) < 0 or v > <uint64_t>(n - pos[0]):
            return -1
        pos[0] += <Py_ssize_t>v
        return 0
    return -1


cdef inline int get_tag(const uint8_t* p, Py_ssize_t n, Py_ssize_t* pos, uint32_t* field,
                        int* wire_type) noexcept nogil:
    cdef uint64_t tag
    if get_varint(p, n, pos, &tag) < 0 or tag >> 3 == 0 or tag >> 3 > 0x1FFFFFFF:
        return -1
    field[0] = <uint32_t>(tag >> 3)
    wire_type[0] = <int>(tag & 7)
    return 0


cdef inline int get_span(const uint8_t* p, Py_ssize_t n, Py_ssize_t* pos, const char** start,
                         Py_ssize_t* length) noexcept nogil:
    cdef uint64_t v
    if get_varint(p, n, pos, &v) < 0 or v > <uint64_t>(n - pos[0]):
        return -1
    start[0] = <const char*>(p + pos[0])
    length[0] = <Py_ssize_t>v
    pos[0] += <Py_ssize_t>v
    return 0


# ---------------------------------------------------------------------------------- reading
cdef int scan_frame(const char* data, Py_ssize_t n, Scan* out) noexcept nogil:
    """The envelope of a ClientFrame: request_id and the one body field, for the plain shape
    (request_id at most once, exactly one length-delimited field besides it). Anything else
    (no body, unknown or repeated fields) is FALLBACK: the library decides."""
    cdef const uint8_t* p = <const uint8_t*>data
    cdef Py_ssize_t pos = 0
    cdef uint32_t field
    cdef int wire_type
    cdef uint64_t v
    cdef bint seen_rid = False
    out.kind = FALLBACK
    out.request_id = 0
    out.body = NULL
    out.body_len = 0
    cdef int kind = 0
    while pos < n:
        if get_tag(p, n, &pos, &field, &wire_type) < 0:
            return FALLBACK
        if field == 1:
            if wire_type != 0 or seen_rid or get_varint(p, n, &pos, &v) < 0 or v > 0xFFFFFFFFULL:
                return FALLBACK
            seen_rid = True
            out.request_id = <uint32_t>v
        elif wire_type == 2 and kind == 0:
            kind = <int>field
            if get_span(p, n, &pos, &out.body, &out.body_len) < 0:
                return FALLBACK
        else:
            return FALLBACK
    if kind == 0:
        return FALLBACK
    out.kind = kind
    return kind


cdef inline bint is_ascii(const char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if <uint8_t>p[i] >= 0x80:
            return False
    return True


cdef object utf8_str(const char* p, Py_ssize_t n):
    """The str of n UTF-8 bytes, or None when they are not valid UTF-8 (proto3 strings must
    be: the library refuses them, and wire.py names the field)."""
    if is_ascii(p, n):
        return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, p, n)
    try:
        return PyUnicode_DecodeUTF8(p, n, "strict")
    except UnicodeDecodeError:
        return None


cdef tuple decode_send(const char* data, Py_ssize_t n):
    """(client_msg_id, chat_id, body, media_ids, e2e) of a Send, or None."""
    cdef const uint8_t* p = <const uint8_t*>data
    cdef Py_ssize_t pos = 0
    cdef uint32_t field
    cdef int wire_type
    cdef const char* start
    cdef Py_ssize_t length
    cdef object client_msg_id = None
    cdef object chat_id = None
    cdef object body = None
    cdef object value
    cdef list media_ids = []
    cdef uint64_t flag
    cdef bint e2e = False
    while pos < n:
        if get_tag(p, n, &pos, &field, &wire_type) < 0:
            return None
        if field == 5:  # e2e, a bool: the last value on the wire wins, as in the library
            if wire_type != 0 or get_varint(p, n, &pos, &flag) < 0:
                return None
            e2e = flag != 0
        elif 1 <= field <= 4:
            if wire_type != 2 or get_span(p, n, &pos, &start, &length) < 0:
                return None
            if field == 3:
                if body is not None:
                    return None
                body = PyBytes_FromStringAndSize(start, length)
                continue
            value = utf8_str(start, length)
            if value is None:
                return None
            if field == 4:
                media_ids.append(value)
            elif field == 1:
                if client_msg_id is not None:
                    return None
                client_msg_id = value
            else:
                if chat_id is not None:
                    return None
                chat_id = value
        elif skip_field(p, n, &pos, wire_type) < 0:
            return None
    return (client_msg_id if client_msg_id is not None else "",
            chat_id if chat_id is not None else "",
            body if body is not None else b"", media_ids, e2e)


cdef object decode_chat_seq(const char* data, Py_ssize_t n):
    cdef const uint8_t* p = <const uint8_t*>data
    cdef Py_ssize_t pos = 0
    cdef uint32_t field
    cdef int wire_type
    cdef const char* start
    cdef Py_ssize_t length
    cdef object chat_id = None
    cdef uint64_t seq = 0
    cdef bint seen_seq = False
    while pos < n:
        if get_tag(p, n, &pos, &field, &wire_type) < 0:
            return None
        if field == 1:
            if wire_type != 2 or chat_id is not None or get_span(p, n, &pos, &start, &length) < 0:
                return None
            chat_id = utf8_str(start, length)
            if chat_id is None:
                return None
        elif field == 2:
            if wire_type != 0 or seen_seq or get_varint(p, n, &pos, &seq) < 0 or seq > MAX_SEQ:
                return None
            seen_seq = True
        elif skip_field(p, n, &pos, wire_type) < 0:
            return None
    return (chat_id if chat_id is not None else "", seq)


cdef list decode_ack(const char* data, Py_ssize_t n):
    """[(chat_id, seq), ...] of an Ack in wire order, or None."""
    cdef const uint8_t* p = <const uint8_t*>data
    cdef Py_ssize_t pos = 0
    cdef uint32_t field
    cdef int wire_type
    cdef const char* start
    cdef Py_ssize_t length
    cdef list items = []
    cdef object item
    while pos < n:
        if get_tag(p, n, &pos, &field, &wire_type) < 0:
            return None
        if field == 1:
            if wire_type != 2 or get_span(p, n, &pos, &start, &length) < 0:
                return None
            item = decode_chat_seq(start, length)
            if item is None:
                return None
            items.append(item)
        elif skip_field(p, n, &pos, wire_type) < 0:
            return None
    return items


def decode(bytes payload not None):
    """What the native session reads from `payload`: ("send", request_id, (client_msg_id,
    chat_id, body, media_ids, e2e)), ("ack", request_id, [(chat_id, seq), ...]), (kind number,
    request_id, None) for another body, or None: the protobuf library decides."""
    cdef Scan scan
    cdef object fields
    if scan_frame(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), &scan) == FALLBACK:
        return None
    if scan.kind == KIND_SEND:
        fields = decode_send(scan.body, scan.body_len)
        return None if fields is None else ("send", scan.request_id, fields)
    if scan.kind == KIND_ACK:
        fields = decode_ack(scan.body, scan.body_len)
        return None if fields is None else ("ack", scan.request_id, fields)
    return (scan.kind, scan.request_id, None)


# ---------------------------------------------------------------------------------- writing
cdef inline Py_ssize_t ws_header_size(Py_ssize_t n) noexcept nogil:
    if n < 126:
        return 2
    if n < 65536:
        return 4
    return 10


cdef inline char* put_ws_header(char* p, int opcode, Py_ssize_t n) noexcept nogil:
    cdef int i
    p[0] = <char>(0x80 | opcode)
    if n < 126:
        p[1] = <char>n
        return p + 2
    if n < 65536:
        p[1] = <char>126
        p[2] = <char>(n >> 8)
        p[3] = <char>(n & 0xFF)
        return p + 4
    p[1] = <char>127
    for i in range(8):
        p[2 + i] = <char>((<uint64_t>n >> (56 - 8 * i)) & 0xFF)
    return p + 10


cdef int put_ws_frame(Buf* b, int opcode, const char* payload, Py_ssize_t n) except -1:
    buf_reserve(b, ws_header_size(n) + n)
    cdef char* p = put_ws_header(b.data + b.size, opcode, n)
    memcpy(p, payload, n)
    b.size = (p + n) - b.data
    return 0


cdef inline Py_ssize_t len_field(Py_ssize_t n) noexcept nogil:
    """A length-delimited field with a one-byte tag, n bytes long."""
    return 1 + varint_size(<uint64_t>n) + n


cdef inline Py_ssize_t opt_bytes(Py_ssize_t n) noexcept nogil:
    return len_field(n) if n else 0


cdef inline Py_ssize_t opt_varint(uint64_t v) noexcept nogil:
    return 1 + varint_size(v) if v else 0


cdef inline char* put_bytes(char* p, uint8_t tag, const char* s, Py_ssize_t n) noexcept nogil:
    p[0] = <char>tag
    p = put_varint(p + 1, <uint64_t>n)
    memcpy(p, s, n)
    return p + n


cdef inline char* put_opt_bytes(char* p, uint8_t tag, const char* s, Py_ssize_t n) noexcept nogil:
    return put_bytes(p, tag, s, n) if n else p


cdef inline char* put_opt_varint(char* p, uint8_t tag, uint64_t v) noexcept nogil:
    if not v:
        return p
    p[0] = <char>tag
    return put_varint(p + 1, v)


cdef inline char* begin_frame(Buf* b, uint32_t request_id, uint8_t body_tag,
                              Py_ssize_t body_size) except NULL:
    """Reserve and start a WebSocket frame holding ServerFrame{request_id, body}; the caller
    writes the body's body_size bytes at the pointer returned."""
    cdef Py_ssize_t payload = opt_varint(request_id) + len_field(body_size)
    buf_reserve(b, ws_header_size(payload) + payload)
    cdef char* p = put_ws_header(b.data + b.size, OPCODE_BINARY, payload)
    p = put_opt_varint(p, 0x08, request_id)
    p[0] = <char>body_tag
    return put_varint(p + 1, <uint64_t>body_size)


cdef inline const char* utf8_of(str s, Py_ssize_t* n) except? NULL:
    return PyUnicode_AsUTF8AndSize(s, n)


cdef int put_send_ack(Buf* b, uint32_t request_id, str client_msg_id, str chat_id, uint64_t seq,
                      uint64_t server_id, uint64_t created_at_ms, bint duplicate) except -1:
    cdef Py_ssize_t cmid_n, chat_n
    cdef const char* cmid = utf8_of(client_msg_id, &cmid_n)
    cdef const char* chat = utf8_of(chat_id, &chat_n)
    cdef Py_ssize_t size = (opt_bytes(cmid_n) + opt_bytes(chat_n) + opt_varint(seq)
                            + opt_varint(server_id) + opt_varint(created_at_ms)
                            + (2 if duplicate else 0))
    cdef char* p = begin_frame(b, request_id, TAG_SEND_ACK, size)
    p = put_opt_bytes(p, 0x0A, cmid, cmid_n)
    p = put_opt_bytes(p, 0x12, chat, chat_n)
    p = put_opt_varint(p, 0x18, seq)
    p = put_opt_varint(p, 0x20, server_id)
    p = put_opt_varint(p, 0x28, created_at_ms)
    p = put_opt_varint(p, 0x30, duplicate)
    b.size = p - b.data
    return 0


cdef int put_error(Buf* b, uint32_t request_id, int code, str detail, uint32_t retry_after_ms,
                   str chat_id, str client_msg_id) except -1:
    cdef Py_ssize_t detail_n, chat_n, cmid_n
    cdef const char* detail_p = utf8_of(detail, &detail_n)
    cdef const char* chat = utf8_of(chat_id, &chat_n)
    cdef const char* cmid = utf8_of(client_msg_id, &cmid_n)
    cdef Py_ssize_t size = (opt_varint(<uint64_t>code) + opt_bytes(detail_n)
                            + opt_varint(retry_after_ms) + opt_bytes(chat_n) + opt_bytes(cmid_n))
    cdef char* p = begin_frame(b, request_id, TAG_ERROR, size)
    p = put_opt_varint(p, 0x08, <uint64_t>code)
    p = put_opt_bytes(p, 0x12, detail_p, detail_n)
    p = put_opt_varint(p, 0x18, retry_after_ms)
    p = put_opt_bytes(p, 0x22, chat, chat_n)
    p = put_opt_bytes(p, 0x2A, cmid, cmid_n)
    b.size = p - b.data
    return 0


cdef int put_sync_complete(Buf* b, uint32_t request_id, uint32_t chats,
                           uint64_t messages) except -1:
    cdef Py_ssize_t size = opt_varint(chats) + opt_varint(messages)
    cdef char* p = begin_frame(b, request_id, TAG_SYNC_COMPLETE, size)
    p = put_opt_varint(p, 0x08, chats)
    p = put_opt_varint(p, 0x10, messages)
    b.size = p - b.data
    return 0


# Python-visible forms of the encoders, for the tests and the micro benchmarks.
cdef bytes _taken(Buf* b):
    try:
        return PyBytes_FromStringAndSize(b.data, b.size)
    finally:
        buf_free(b)


def send_ack(uint32_t request_id, str client_msg_id not None, str chat_id not None, uint64_t seq,
             uint64_t server_id, uint64_t created_at_ms, bint duplicate):
    """SendAck as one WebSocket frame."""
    cdef Buf b = Buf(NULL, 0, 0)
    put_send_ack(&b, request_id, client_msg_id, chat_id, seq, server_id, created_at_ms, duplicate)
    return _taken(&b)


def error(uint32_t request_id, int code, str detail not None, uint32_t retry_after_ms=0,
          str chat_id not None="", str client_msg_id not None=""):
    """Error as one WebSocket frame."""
    cdef Buf b = Buf(NULL, 0, 0)
    put_error(&b, request_id, code, detail, retry_after_ms, chat_id, client_msg_id)
    return _taken(&b)


def sync_complete(uint32_t request_id, uint32_t chats, uint64_t messages):
    """SyncComplete as one WebSocket frame."""
    cdef Buf b = Buf(NULL, 0, 0)
    put_sync_complete(&b, request_id, chats, messages)
    return _taken(&b)


def ws_frame(int opcode, bytes payload not None):
    """`payload` as one server WebSocket frame (FIN, unmasked)."""
    cdef Buf b = Buf(NULL, 0, 0)
    put_ws_frame(&b, opcode, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
    return _taken(&b)


# ---------------------------------------------------------------------------------- Deliver
cdef struct _Row:
    # A StoredMessage's fields, borrowed from the row object for the two passes of encoding.
    const char* chat
    Py_ssize_t chat_n
    const char* user
    Py_ssize_t user_n
    const char* device
    Py_ssize_t device_n
    const char* cmid
    Py_ssize_t cmid_n
    const char* body
    Py_ssize_t body_n
    uint64_t seq
    uint64_t server_id
    uint64_t created
    void* media          # the media_ids tuple (borrowed)
    Py_ssize_t media_n   # its length
    const char* event    # the encoded MembershipEvent, NULL: none
    Py_ssize_t event_n
    Py_ssize_t cost      # body + media characters + MESSAGE_OVERHEAD: what chunking counts
    Py_ssize_t size      # the encoded Message


cdef class Chunk:
    """Deliver frames of `count` messages up to `last_seq`, as one WebSocket frame shared by
    every recipient."""

    def __cinit__(self, long long last_seq, Py_ssize_t count, bytes frame not None):
        self.last_seq = last_seq
        self.count = count
        self.frame = frame

    def __repr__(self):
        return f"Chunk(last_seq={self.last_seq}, count={self.count}, {len(self.frame)} bytes)"


cdef const char* _attr_str(object row, str name, Py_ssize_t* n, list keep) except NULL:
    value = getattr(row, name)
    keep.append(value)
    return PyUnicode_AsUTF8AndSize(value, n)


cdef int _read_row(object row, _Row* r, list keep) except -1:
    cdef Py_ssize_t size, n, i
    cdef object body, media, item
    r.chat = _attr_str(row, "chat_id", &r.chat_n, keep)
    r.user = _attr_str(row, "sender_user", &r.user_n, keep)
    r.device = _attr_str(row, "sender_device", &r.device_n, keep)
    r.cmid = _attr_str(row, "client_msg_id", &r.cmid_n, keep)
    body = row.body
    keep.append(body)
    r.body = PyBytes_AS_STRING(body)
    r.body_n = PyBytes_GET_SIZE(body)
    r.seq = row.seq
    r.server_id = row.server_id
    r.created = row.created_at_ms
    media = tuple(row.media_ids)
    keep.append(media)
    r.media = <void*>media
    r.media_n = len(media)
    r.cost = r.body_n + MESSAGE_OVERHEAD
    size = (opt_bytes(r.chat_n) + opt_varint(r.seq) + opt_varint(r.server_id)
            + opt_bytes(r.user_n) + opt_bytes(r.device_n) + opt_bytes(r.cmid_n)
            + opt_bytes(r.body_n) + opt_varint(r.created))
    event = row.event
    if event is None:
        r.event = NULL
        r.event_n = 0
    else:
        encoded = _encode_event(event)
        keep.append(encoded)
        r.event = PyBytes_AS_STRING(encoded)
        r.event_n = PyBytes_GET_SIZE(encoded)
        size += len_field(r.event_n)
        for item in event.users:
            r.cost += PyUnicode_GET_LENGTH(item) + 2
    for i in range(r.media_n):
        item = (<tuple>media)[i]
        r.cost += PyUnicode_GET_LENGTH(item)
        PyUnicode_AsUTF8AndSize(item, &n)
        size += len_field(n)
    r.size = size
    return 0


cdef char* _put_message(char* p, _Row* r):
    cdef Py_ssize_t i, n
    cdef const char* s
    p[0] = <char>0x0A
    p = put_varint(p + 1, <uint64_t>r.size)
    p = put_opt_bytes(p, 0x0A, r.chat, r.chat_n)
    p = put_opt_varint(p, 0x10, r.seq)
    p = put_opt_varint(p, 0x18, r.server_id)
    p = put_opt_bytes(p, 0x22, r.user, r.user_n)
    p = put_opt_bytes(p, 0x2A, r.device, r.device_n)
    p = put_opt_bytes(p, 0x32, r.cmid, r.cmid_n)
    p = put_opt_bytes(p, 0x3A, r.body, r.body_n)
    for i in range(r.media_n):
        s = PyUnicode_AsUTF8AndSize((<tuple>r.media)[i], &n)
        p = put_bytes(p, 0x42, s, n)
    p = put_opt_varint(p, 0x48, r.created)
    if r.event != NULL:
        p = put_bytes(p, 0x52, r.event, r.event_n)
    return p


cdef bytes _pb_varint(uint64_t v):
    cdef char scratch[10]
    return PyBytes_FromStringAndSize(scratch, put_varint(scratch, v) - scratch)


cdef bytes _pb_bytes(uint8_t tag, bytes data):
    return bytes((tag,)) + _pb_varint(len(data)) + data


cdef bytes _encode_event(object event):
    """A MembershipEvent (rare: membership changes), through Python objects."""
    cdef uint64_t action = int(event.action)
    out = b"" if not action else b"\x08" + _pb_varint(action)
    actor = (<str>event.actor).encode()
    if actor:
        out += _pb_bytes(0x12, actor)
    for user in event.users:
        out += _pb_bytes(0x1A, (<str>user).encode())
    return out


def floors_frame(list floors):
    """Deliver{floors} as one WebSocket frame: [(chat_id, seq), ...] (protocol 8.3)."""
    deliver = b""
    for chat_id, seq in floors:
        item = _pb_bytes(0x0A, (<str>chat_id).encode()) if chat_id else b""
        if seq:
            item += b"\x10" + _pb_varint(seq)
        deliver += _pb_bytes(0x12, item)
    return ws_frame(OPCODE_BINARY, _pb_bytes(TAG_DELIVER, deliver))


cdef Chunk _chunk(_Row* rows, Py_ssize_t first, Py_ssize_t end):
    cdef Py_ssize_t i, deliver = 0
    for i in range(first, end):
        deliver += len_field(rows[i].size)
    cdef Py_ssize_t payload = len_field(deliver)
    cdef Py_ssize_t total = ws_header_size(payload) + payload
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, total)
    cdef char* start = PyBytes_AS_STRING(frame)
    cdef char* p = put_ws_header(start, OPCODE_BINARY, payload)
    p[0] = <char>TAG_DELIVER
    p = put_varint(p + 1, <uint64_t>deliver)
    for i in range(first, end):
        p = _put_message(p, &rows[i])
    return Chunk(rows[end - 1].seq, end - first, frame)


cpdef list deliver_frames(list rows, Py_ssize_t max_frame_bytes):
    """Deliver frames for `rows` (StoredMessages of one chat, seq order), each within
    max_frame_bytes by the same count as the protocol promises (body + media + a generous
    overhead per message; one message at least per frame)."""
    cdef Py_ssize_t n = len(rows)
    cdef list chunks = []
    if n == 0:
        return chunks
    cdef _Row* parsed = <_Row*>PyMem_Malloc(n * sizeof(_Row))
    if parsed == NULL:
        raise MemoryError()
    cdef list keep = []
    cdef Py_ssize_t i, first = 0, size = 0
    try:
        for i in range(n):
            _read_row(rows[i], &parsed[i], keep)
        for i in range(n):
            if i > first and size + parsed[i].cost > max_frame_bytes:
                chunks.append(_chunk(parsed, first, i))
                first, size = i, 0
            size += parsed[i].cost
        chunks.append(_chunk(parsed, first, n))
    finally:
        PyMem_Free(parsed)
    return chunks


cdef uint8_t TAG_RECEIPT_UPDATE = 0x62  # ServerFrame.receipt_update = 12


cdef inline Py_ssize_t _member_size(Py_ssize_t user_n, uint64_t delivered,
                                    uint64_t read) noexcept nogil:
    return opt_bytes(user_n) + opt_varint(delivered) + opt_varint(read)


def receipt_update(str chat_id not None, dict members not None, uint64_t delivered_all,
                   uint64_t read_all):
    """ServerFrame{receipt_update} (not framed: it is pushed through the router): the members'
    receipts (user -> Receipt, sorted by user), as the protobuf library encodes them. A group
    of 10,000 has every member's entry encoded once per message for its sender."""
    cdef list users = sorted(members)
    cdef Py_ssize_t n = len(users), i, chat_n, user_n, size, body
    cdef const char* chat = utf8_of(chat_id, &chat_n)
    cdef uint64_t* seqs = <uint64_t*>PyMem_Malloc((2 * n + 1) * sizeof(uint64_t))
    if seqs == NULL:
        raise MemoryError()
    cdef Buf b = Buf(NULL, 0, 0)
    cdef char* p
    cdef const char* user
    try:
        body = opt_bytes(chat_n) + opt_varint(delivered_all) + opt_varint(read_all)
        for i in range(n):
            receipt = members[users[i]]
            seqs[2 * i] = receipt.delivered_seq
            seqs[2 * i + 1] = receipt.read_seq
            utf8_of(users[i], &user_n)
            body += len_field(_member_size(user_n, seqs[2 * i], seqs[2 * i + 1]))
        size = len_field(body)
        buf_reserve(&b, size)
        p = b.data
        p[0] = <char>TAG_RECEIPT_UPDATE
        p = put_varint(p + 1, <uint64_t>body)
        p = put_opt_bytes(p, 0x0A, chat, chat_n)
        for i in range(n):
            user = utf8_of(users[i], &user_n)
            p[0] = <char>0x12
            p = put_varint(p + 1, <uint64_t>_member_size(user_n, seqs[2 * i], seqs[2 * i + 1]))
            p = put_opt_bytes(p, 0x0A, user, user_n)
            p = put_opt_varint(p, 0x10, seqs[2 * i])
            p = put_opt_varint(p, 0x18, seqs[2 * i + 1])
        p = put_opt_varint(p, 0x18, delivered_all)
        p = put_opt_varint(p, 0x20, read_all)
        b.size = p - b.data
        return _taken(&b)
    finally:
        PyMem_Free(seqs)
