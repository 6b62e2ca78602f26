# C-level interface of the consistent-hash ring, so other Cython modules (mesh frame batching,
# fan-out grouping) can map a chat id to its owner node without Python calls. Semantics: ring.pyx.

from libc.stdint cimport uint32_t, uint64_t


cdef uint64_t ring_hash(const char* data, Py_ssize_t n) noexcept nogil


cdef class HashRing:
    # Vnode points in ascending order (ties by node index) and the node index of each point.
    cdef uint64_t* _points
    cdef uint32_t* _node_of
    cdef Py_ssize_t _npoints
    cdef readonly tuple nodes
    cdef readonly tuple weights
    cdef readonly Py_ssize_t vnodes
    cdef readonly long long epoch

    # Index into `nodes` of the owner of the n bytes at key (UTF-8 of the chat id).
    cdef Py_ssize_t owner_index(self, const char* key, Py_ssize_t n) noexcept nogil
    cdef Py_ssize_t _successor(self, uint64_t h) noexcept nogil
    cdef int _fill(self, list pairs) except -1
