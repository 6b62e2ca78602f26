# C-level interface of the shared timer wheel, so other Cython modules can schedule and
# advance without going through Python attribute lookups. Semantics: timerwheel.pyx.

cdef struct _Slot:
    # Due times parallel to the slot's Python list of items (same index); n mirrors the list's
    # length so that C-level scans never touch Python objects.
    double* dues
    Py_ssize_t n
    Py_ssize_t cap

cdef struct _Fired:
    # One entry collected by advance(): its due and its index in the collection order,
    # which breaks ties so that equal dues come out in schedule order.
    double due
    Py_ssize_t idx


cdef class TimerWheel:
    cdef double _tick
    cdef Py_ssize_t _nslots
    cdef double _now
    cdef long long _cursor
    cdef Py_ssize_t _count
    cdef list _items
    cdef _Slot* _slots
    cdef _Fired* _fired
    cdef Py_ssize_t _fired_cap
    cdef double _next_due
    cdef bint _next_due_known

    cpdef schedule(self, object item, double due)
    cpdef list advance(self, double now)

    cdef long long _tick_of(self, double t) noexcept
    cdef Py_ssize_t _slot_of(self, long long t) noexcept
    cdef int _reserve_slot(self, Py_ssize_t s, Py_ssize_t n) except -1
    cdef void _shrink_slot(self, Py_ssize_t s, Py_ssize_t n) noexcept
    cdef int _reserve_fired(self, Py_ssize_t n) except -1
    cdef double _find_next_due(self) noexcept
