"""Hashed timer wheel shared by every connection of a process.

Why: a loop.call_later handle per connection costs a TimerHandle object and a heap push on every
re-arm; with heartbeat, idle, pre-auth and retransmit deadlines for ~20k connections per process
that dominates timer memory and loop work. Deadlines here are lazy: an entry is never cancelled,
its owner re-checks its own deadline when it fires and schedules again if it moved.

Layout (what one pending entry costs): the wheel has `slots` slots; slot i holds the entries whose
placement tick number t satisfies t % slots == i. A slot is a Python list of items plus a C array
of their due times at the same indices, so an entry is one list pointer and one C double, 16
bytes (plus the amortised growth slack of both arrays, at most 2x). Keeping items in Python lists
lets the cyclic GC see them (connections refer back to the service that owns the wheel); keeping
dues in C lets advance() skip entries of later revolutions without touching Python objects.

Placement: tick number = floor(due / tick), clamped to +-2**61 so that it fits a C long long; an
entry due before the cursor (the tick of the last advance) goes to the cursor's slot. Entries due
one or more revolutions ahead share a slot with nearer ones and keep their absolute due, so they
are skipped until their revolution comes. Only two properties are relied on: the tick number is
monotone in the due time, and every pending entry sits at a tick number >= the cursor. Firing
compares absolute dues (`due <= now`), so results are exact whatever the tick rounding.

advance(now) walks the slots from the cursor to the tick of `now`, at most one revolution (a
longer gap visits every slot once and fires by due), collects what is due, and orders it by due
with ties broken by collection order. Equal dues always share a slot, where entries stay in
schedule order, so ties come out in schedule order.
"""
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport INFINITY, floor, isfinite
from libc.stdlib cimport qsort

# Tick numbers are clamped to this range so that the difference of two of them fits a long long.
cdef double _TICK_LIMIT = 2.0 ** 61
# Smallest capacity of a slot's due array once allocated; shrinking never goes below it.
cdef Py_ssize_t _SLOT_MIN_CAP = 4
# A collection buffer grown past this (entries) by a burst is released after the advance.
cdef Py_ssize_t _FIRED_KEEP = 1024


cdef int _cmp_fired(const void* a, const void* b) noexcept nogil:
    cdef const _Fired* x = <const _Fired*>a
    cdef const _Fired* y = <const _Fired*>b
    if x.due < y.due:
        return -1
    if x.due > y.due:
        return 1
    return (x.idx > y.idx) - (x.idx < y.idx)


cdef class TimerWheel:
    """TimerWheel(tick, slots=512, now=0.0): lazy deadlines for many items on one clock.

    tick: seconds per slot (> 0); slots: slots per revolution (>= 2); now: the starting time on
    the caller's clock. schedule(item, due) adds one independent entry (an item may have many);
    advance(now) returns, in non-decreasing due order (ties: schedule order), every item whose
    due <= now and that was not returned before; a `now` earlier than the last one returns [].
    len() is the number of pending entries; next_due is the earliest pending due or None.
    """

    def __cinit__(self, double tick, int slots=512, double now=0.0):
        # Allocation lives in __cinit__ because Cython runs it exactly once per object, so a
        # second __init__ call can never leak or reset the C arrays.
        if not (tick > 0.0 and isfinite(tick)):
            raise ValueError(f"tick must be a finite number > 0, got {tick!r}")
        if slots < 2:
            raise ValueError(f"slots must be >= 2, got {slots!r}")
        if not isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        self._slots = <_Slot*>PyMem_Malloc(slots * sizeof(_Slot))
        if self._slots == NULL:
            raise MemoryError()
        cdef Py_ssize_t s
        for s in range(slots):
            self._slots[s].dues = NULL
            self._slots[s].n = 0
            self._slots[s].cap = 0
        self._nslots = slots
        self._tick = tick
        self._now = now
        self._cursor = self._tick_of(now)
        self._count = 0
        self._items = [[] for _ in range(slots)]
        self._fired = NULL
        self._fired_cap = 0
        self._next_due = INFINITY
        self._next_due_known = False

    def __dealloc__(self):
        cdef Py_ssize_t s
        if self._slots != NULL:
            for s in range(self._nslots):
                PyMem_Free(self._slots[s].dues)
            PyMem_Free(self._slots)
        PyMem_Free(self._fired)

    def __len__(self):
        return self._count

    @property
    def next_due(self):
        """Earliest pending due (exact), or None when nothing is pending.

        Cached: schedule() keeps it current, advance() only drops it when something fired, and
        it is recomputed on the next read (one revolution walk at most, then a full scan)."""
        if self._count == 0:
            return None
        if not self._next_due_known:
            self._next_due = self._find_next_due()
            self._next_due_known = True
        return self._next_due

    cpdef schedule(self, object item, double due):
        """Add one entry for `item` due at absolute time `due`; there is no cancel."""
        if not isfinite(due):
            raise ValueError(f"due must be finite, got {due!r}")
        cdef long long t = self._tick_of(due)
        if t < self._cursor:
            t = self._cursor
        cdef Py_ssize_t s = self._slot_of(t)
        cdef _Slot* slot = &self._slots[s]
        self._reserve_slot(s, slot.n + 1)
        (<list>self._items[s]).append(item)
        slot.dues[slot.n] = due
        slot.n += 1
        if self._count == 0 or (self._next_due_known and due < self._next_due):
            self._next_due = due
            self._next_due_known = True
        self._count += 1

    cpdef list advance(self, double now):
        """Return the items due at or before `now` not returned yet, by due then schedule order."""
        if not isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        if now < self._now:
            return []
        cdef long long target = self._tick_of(now)
        if self._count == 0 or (self._next_due_known and self._next_due > now):
            self._now = now
            self._cursor = target
            return []
        cdef long long gap = target - self._cursor
        cdef Py_ssize_t walk = self._nslots if gap >= self._nslots else <Py_ssize_t>gap + 1
        cdef list fired = []
        cdef list items
        cdef _Slot* slot
        cdef double* dues
        cdef double d
        cdef double last = -INFINITY
        cdef bint ordered = True
        cdef Py_ssize_t nfired = 0
        cdef Py_ssize_t k, s, i, j, n
        for k in range(walk):
            s = self._slot_of(self._cursor + k)
            slot = &self._slots[s]
            n = slot.n
            dues = slot.dues
            j = 0
            while j < n and dues[j] > now:
                j += 1
            if j == n:
                continue
            self._reserve_fired(nfired + n - j)
            items = <list>self._items[s]
            # Entries before j stay where they are; from j on, due ones are collected and the
            # rest are compacted down to j, keeping their relative (schedule) order.
            for i in range(j, n):
                d = dues[i]
                if d <= now:
                    fired.append(items[i])
                    self._fired[nfired].due = d
                    self._fired[nfired].idx = nfired
                    nfired += 1
                    if d < last:
                        ordered = False
                    last = d
                else:
                    items[j] = items[i]
                    dues[j] = d
                    j += 1
            del items[j:]
            slot.n = j
            self._shrink_slot(s, j)
        self._count -= nfired
        self._now = now
        self._cursor = target
        if nfired:
            self._next_due_known = False
        if not ordered:
            qsort(self._fired, nfired, sizeof(_Fired), _cmp_fired)
            fired = [fired[self._fired[k].idx] for k in range(nfired)]
        if self._fired_cap > _FIRED_KEEP:
            PyMem_Free(self._fired)
            self._fired = NULL
            self._fired_cap = 0
        return fired

    cdef long long _tick_of(self, double t) noexcept:
        cdef double x = floor(t / self._tick)
        if x > _TICK_LIMIT:
            x = _TICK_LIMIT
        elif x < -_TICK_LIMIT:
            x = -_TICK_LIMIT
        return <long long>x

    cdef Py_ssize_t _slot_of(self, long long t) noexcept:
        # cdivision is on, so % follows C and is negative for negative tick numbers.
        cdef Py_ssize_t s = <Py_ssize_t>(t % self._nslots)
        if s < 0:
            s += self._nslots
        return s

    cdef int _reserve_slot(self, Py_ssize_t s, Py_ssize_t n) except -1:
        cdef _Slot* slot = &self._slots[s]
        if n <= slot.cap:
            return 0
        cdef Py_ssize_t cap = slot.cap * 2 if slot.cap else _SLOT_MIN_CAP
        if cap < n:
            cap = n
        cdef double* dues = <double*>PyMem_Realloc(slot.dues, cap * sizeof(double))
        if dues == NULL:
            raise MemoryError()
        slot.dues = dues
        slot.cap = cap
        return 0

    cdef void _shrink_slot(self, Py_ssize_t s, Py_ssize_t n) noexcept:
        # Gives back what a burst left behind, as the slot's Python list does on its own.
        cdef _Slot* slot = &self._slots[s]
        if slot.cap <= _SLOT_MIN_CAP or n * 4 >= slot.cap:
            return
        cdef Py_ssize_t cap = n * 2 if n * 2 > _SLOT_MIN_CAP else _SLOT_MIN_CAP
        cdef double* dues = <double*>PyMem_Realloc(slot.dues, cap * sizeof(double))
        if dues != NULL:
            slot.dues = dues
            slot.cap = cap

    cdef int _reserve_fired(self, Py_ssize_t n) except -1:
        if n <= self._fired_cap:
            return 0
        cdef Py_ssize_t cap = self._fired_cap * 2 if self._fired_cap else 64
        if cap < n:
            cap = n
        cdef _Fired* fired = <_Fired*>PyMem_Realloc(self._fired, cap * sizeof(_Fired))
        if fired == NULL:
            raise MemoryError()
        self._fired = fired
        self._fired_cap = cap
        return 0

    cdef double _find_next_due(self) noexcept:
        # Walking one revolution from the cursor, the first slot holding an entry placed for the
        # tick being visited (tick number <= that tick) has the earliest due: every other pending
        # entry sits at a later tick number, and tick numbers are monotone in the due.
        cdef double best = INFINITY
        cdef double d
        cdef long long t
        cdef _Slot* slot
        cdef Py_ssize_t k, i
        for k in range(self._nslots):
            t = self._cursor + k
            slot = &self._slots[self._slot_of(t)]
            for i in range(slot.n):
                d = slot.dues[i]
                if d < best and self._tick_of(d) <= t:
                    best = d
            if best != INFINITY:
                return best
        # Everything is at least one revolution away: a plain scan is exact.
        for k in range(self._nslots):
            slot = &self._slots[k]
            for i in range(slot.n):
                if slot.dues[i] < best:
                    best = slot.dues[i]
        return best
