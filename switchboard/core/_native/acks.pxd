# C-level interface of the gateway's ack batch, so sessions add acks without a Python call.
# Semantics: acks.pyx.

cdef class AckBatch:
    cdef dict cursors
    cdef dict by_chat
    cdef object on_ready
    cdef bint ready

    cdef int put(self, str user, str device, str chat, long long seq) except -1
