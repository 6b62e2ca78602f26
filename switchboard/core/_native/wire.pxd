# C-level interface of the hot frames' codec, for the native session. Semantics: wire.pyx.

from libc.stdint cimport uint32_t, uint64_t


# A growable byte buffer that encoded WebSocket frames are appended to.
cdef struct Buf:
    char* data
    Py_ssize_t size
    Py_ssize_t cap

cdef int buf_reserve(Buf* b, Py_ssize_t extra) except -1
cdef void buf_free(Buf* b) noexcept
cdef int buf_append(Buf* b, const char* p, Py_ssize_t n) except -1

# What scan_frame found in a ClientFrame: the body's field number (0: none) and the span of
# its bytes, or kind FALLBACK when only the protobuf library may decide.
cdef struct Scan:
    int kind
    uint32_t request_id
    const char* body
    Py_ssize_t body_len

cdef enum:
    FALLBACK = -1
    KIND_AUTH = 2
    KIND_SEND = 3
    KIND_ACK = 4
    KIND_SYNC = 5

cdef int scan_frame(const char* p, Py_ssize_t n, Scan* out) noexcept nogil
# Send's fields, or None when only the protobuf library may decide.
cdef tuple decode_send(const char* p, Py_ssize_t n)
# Ack's items [(chat_id, seq), ...], or None when only the protobuf library may decide.
cdef list decode_ack(const char* p, Py_ssize_t n)

# ServerFrames, each appended to b as one WebSocket binary frame.
cdef int put_send_ack(Buf* b, uint32_t request_id, str client_msg_id, str chat_id, uint64_t seq,
                      uint64_t server_id, uint64_t created_at_ms, bint duplicate) except -1
cdef int put_error(Buf* b, uint32_t request_id, int code, str detail, uint32_t retry_after_ms,
                   str chat_id, str client_msg_id) except -1
cdef int put_sync_complete(Buf* b, uint32_t request_id, uint32_t chats, uint64_t messages) except -1
cdef int put_ws_frame(Buf* b, int opcode, const char* payload, Py_ssize_t n) except -1


cdef class Chunk:
    # Deliver frames of `count` messages up to `last_seq`, as one WebSocket frame.
    cdef readonly long long last_seq
    cdef readonly Py_ssize_t count
    cdef readonly bytes frame

cpdef list deliver_frames(list rows, Py_ssize_t max_frame_bytes)
