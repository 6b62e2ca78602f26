"""Consistent-hash ring: which node owns a chat, computed alike by every node of the cluster.

Why a ring: when a node joins or leaves, only the chats between it and its neighbours change
owner (about 1/N of them), so an ownership move is a small, bounded event instead of a reshuffle.

Why vnodes: one point per node gives arcs of very unequal length (a node's share of the key space
varies by ~100%). Each node instead gets weight * vnodes points; its share is then the sum of that
many arcs, so its relative spread falls as 1/sqrt(points): ~8% for 160 points. The cost is memory,
12 bytes per point per process, and build time (a sort of all points).

Determinism: ownership is part of the cluster protocol, so every process on every machine must
compute the same ring from the same members. Nothing here depends on the process (Python's hash()
is salted per process and is never used), on the machine (bytes are hashed one at a time and
integers are serialised little-endian by hand, so endianness does not matter) or on the order the
members are given in (nodes are sorted by id, equal points are ordered by node index).

The hash, which must not change without changing every node at once (it would move most chats):
    ring_hash(b) = fmix64(fnv1a64(b))
fnv1a64 is FNV-1a over the bytes (offset 0xcbf29ce484222325, prime 0x100000001b3); fmix64 is
MurmurHash3's 64-bit finaliser. FNV-1a alone is cheap but mixes its last bytes poorly, which
matters for keys that differ only at the end ("chat-17", "chat-18"); fmix64 is a bijection with
full avalanche, so it adds no collisions and spreads such keys over the whole ring.
    key point          = ring_hash(utf8(key))
    point j of a node  = ring_hash(utf8(node_id) + le32(j)),  0 <= j < weight * vnodes
(the fixed-width suffix keeps distinct (node_id, j) pairs distinct byte strings). A key is owned
by the node of the first point >= its point, wrapping past the largest point to the first.

The ring is immutable once built, so lookups need no lock and owner_index() runs without the GIL.
"""
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport qsort

DEFAULT_VNODES = 160

cdef uint64_t _FNV_OFFSET = 0xcbf29ce484222325ULL
cdef uint64_t _FNV_PRIME = 0x100000001b3ULL
# Point indices, node indices and the point count are stored as uint32.
cdef Py_ssize_t _MAX_POINTS = 0xFFFFFFFF


cdef struct _Point:
    uint64_t point
    uint32_t node


cdef inline uint64_t _fnv1a(uint64_t h, const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * _FNV_PRIME
    return h


cdef inline uint64_t _fmix64(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


cdef uint64_t ring_hash(const char* data, Py_ssize_t n) noexcept nogil:
    return _fmix64(_fnv1a(_FNV_OFFSET, <const uint8_t*>data, n))


cdef int _cmp_points(const void* a, const void* b) noexcept nogil:
    cdef const _Point* x = <const _Point*>a
    cdef const _Point* y = <const _Point*>b
    if x.point != y.point:
        return -1 if x.point < y.point else 1
    return (x.node > y.node) - (x.node < y.node)


def key_hash(str key not None):
    """The ring position (0 <= h < 2**64) of `key`: ring_hash of its UTF-8 bytes."""
    cdef Py_ssize_t n
    cdef const char* data = PyUnicode_AsUTF8AndSize(key, &n)
    return ring_hash(data, n)


cdef class HashRing:
    """HashRing(members, epoch, vnodes=160): the owner of any key among weighted nodes.

    members: iterable of (node_id: str, weight: int >= 1) with distinct, non-empty ids, in any
    order; vnodes: points per unit of weight (>= 1); epoch: the ring's version number, carried
    but not interpreted (ownership depends on the members and vnodes only), so that owners can
    fence work and messages decided under an older ring.
    nodes: the node ids sorted by code point; weights: their weights, in the same order.
    Raises ValueError for an empty membership, duplicate or empty ids, weights or vnodes < 1.
    """

    def __cinit__(self, members, long long epoch, Py_ssize_t vnodes=DEFAULT_VNODES):
        # Building lives in __cinit__, which Cython runs exactly once per object: a ring cannot
        # be rebuilt in place, so a lookup never sees it change and its arrays never leak.
        if vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {vnodes!r}")
        pairs = []
        for node_id, weight in members:
            if not isinstance(node_id, str):
                raise TypeError(f"node id must be a str, got {node_id!r}")
            if not isinstance(weight, int):
                raise TypeError(f"weight of {node_id!r} must be an int, got {weight!r}")
            if not node_id:
                raise ValueError("node id must not be empty")
            if weight < 1:
                raise ValueError(f"weight of {node_id!r} must be >= 1, got {weight!r}")
            pairs.append((node_id, weight))
        if not pairs:
            raise ValueError("a ring needs at least one member")
        pairs.sort()
        cdef Py_ssize_t i
        for i in range(1, len(pairs)):
            if pairs[i][0] == pairs[i - 1][0]:
                raise ValueError(f"duplicate node id {pairs[i][0]!r}")
        total = sum(weight for _, weight in pairs) * vnodes
        if total > _MAX_POINTS:
            raise ValueError(f"{total} ring points is more than {_MAX_POINTS}")
        self.nodes = tuple(node_id for node_id, _ in pairs)
        self.weights = tuple(weight for _, weight in pairs)
        self.vnodes = vnodes
        self.epoch = epoch
        self._npoints = total
        self._fill(pairs)

    cdef int _fill(self, list pairs) except -1:
        cdef _Point* tmp = <_Point*>PyMem_Malloc(self._npoints * sizeof(_Point))
        if tmp == NULL:
            raise MemoryError()
        cdef bytes node_bytes
        cdef uint64_t base, h
        cdef uint8_t le[4]
        cdef Py_ssize_t node, count, j, k = 0
        try:
            for node in range(len(pairs)):
                node_bytes = (<str>pairs[node][0]).encode("utf-8")
                base = _fnv1a(_FNV_OFFSET, <const uint8_t*><const char*>node_bytes,
                              len(node_bytes))
                count = <Py_ssize_t>pairs[node][1] * self.vnodes
                for j in range(count):
                    le[0] = j & 0xFF
                    le[1] = (j >> 8) & 0xFF
                    le[2] = (j >> 16) & 0xFF
                    le[3] = (j >> 24) & 0xFF
                    tmp[k].point = _fmix64(_fnv1a(base, le, 4))
                    tmp[k].node = <uint32_t>node
                    k += 1
            qsort(tmp, self._npoints, sizeof(_Point), _cmp_points)
            # Lookups binary-search the points alone: a dense uint64 array halves the cache
            # lines touched compared with searching the 16-byte (point, node) records.
            self._points = <uint64_t*>PyMem_Malloc(self._npoints * sizeof(uint64_t))
            self._node_of = <uint32_t*>PyMem_Malloc(self._npoints * sizeof(uint32_t))
            if self._points == NULL or self._node_of == NULL:
                raise MemoryError()
            for k in range(self._npoints):
                self._points[k] = tmp[k].point
                self._node_of[k] = tmp[k].node
        finally:
            PyMem_Free(tmp)
        return 0

    def __dealloc__(self):
        PyMem_Free(self._points)
        PyMem_Free(self._node_of)

    def __repr__(self):
        return (f"{type(self).__name__}(nodes={len(self.nodes)}, points={self._npoints}, "
                f"epoch={self.epoch})")

    cdef Py_ssize_t _successor(self, uint64_t h) noexcept nogil:
        # Index of the first point >= h, or 0 past the last one (the ring wraps).
        cdef Py_ssize_t lo = 0
        cdef Py_ssize_t hi = self._npoints
        cdef Py_ssize_t mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._points[mid] < h:
                lo = mid + 1
            else:
                hi = mid
        return 0 if lo == self._npoints else lo

    cdef Py_ssize_t owner_index(self, const char* key, Py_ssize_t n) noexcept nogil:
        return self._node_of[self._successor(ring_hash(key, n))]

    def owner(self, str key not None):
        """The node id that owns `key`."""
        cdef Py_ssize_t n
        # Borrowed: the UTF-8 form is the str's own data (ASCII) or cached on it, so a lookup
        # creates no Python object besides, at most once per str, that cache.
        cdef const char* data = PyUnicode_AsUTF8AndSize(key, &n)
        return self.nodes[self.owner_index(data, n)]

    def owners(self, str key not None, Py_ssize_t n):
        """Up to n distinct node ids in ring order from `key`: the owner first, then the nodes
        that would own it if those before were gone (replicas, hand-off targets)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        cdef Py_ssize_t nnodes = len(self.nodes)
        cdef Py_ssize_t want = n if n < nnodes else nnodes
        cdef list result = []
        if want == 0:
            return result
        cdef Py_ssize_t size
        cdef const char* data = PyUnicode_AsUTF8AndSize(key, &size)
        cdef uint8_t* seen = <uint8_t*>PyMem_Calloc(nnodes, 1)
        if seen == NULL:
            raise MemoryError()
        cdef Py_ssize_t i = self._successor(ring_hash(data, size))
        cdef Py_ssize_t node
        try:
            while True:
                node = self._node_of[i]
                if not seen[node]:
                    seen[node] = 1
                    result.append(self.nodes[node])
                    if len(result) == want:
                        return result
                i += 1
                if i == self._npoints:
                    i = 0
        finally:
            PyMem_Free(seen)
