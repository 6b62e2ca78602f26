"""A chat's receipt rollups kept as watermarks rise, and the receipt flush's work per member of a
large group, in C (switchboard/core/rollup.py says what and why; the pure-Python twin is
tests/reference/rollup_model.py).

In a group of 10,000 every member's ack moves its delivered watermark once per message, and the
flush that pushes them walks every one: the cached watermark raised, the kept rollup told, a
snapshot for the pushes, and each sender's view of it. In Python that was ~5 us per member, about
50 ms of the event loop per message; here each is a few dict operations without a Python frame.
"""
import heapq

from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

from switchboard.core.model import Receipt

cdef object _new_receipt = Receipt.__new__
cdef object _heappush = heapq.heappush
cdef object _heappop = heapq.heappop


cdef inline object _receipt(object delivered, object read, object public_read):
    """Receipt(delivered, read, public_read) without running the dataclass's Python __init__."""
    receipt = _new_receipt(Receipt)
    receipt.delivered_seq = delivered
    receipt.read_seq = read
    receipt.public_read_seq = public_read
    return receipt


cdef class RisingMin:
    """The minimum of a multiset of integers whose members only ever rise (0 when empty)."""
    cdef dict _counts
    cdef list _heap
    cdef readonly object low

    def __init__(self, values):
        cdef dict counts = {}
        for value in values:
            counts[value] = counts.get(value, 0) + 1
        self._counts = counts
        self._heap = list(counts)
        heapq.heapify(self._heap)
        self.low = self._heap[0] if self._heap else 0

    def rise(self, old, new):
        """One member held `old` (it must) and now holds `new` (not lower)."""
        self._rise(old, new)

    cdef int _rise(self, object old, object new) except -1:
        if <long long>new <= <long long>old:
            return 0
        cdef dict counts = self._counts
        cdef long long left = <long long>counts[old] - 1
        if left:
            counts[old] = left
        else:
            del counts[old]
        cdef PyObject* held = PyDict_GetItem(counts, new)
        if held == NULL:
            counts[new] = 1
            _heappush(self._heap, new)
        else:
            counts[new] = <long long><object>held + 1
        cdef list heap
        if not left and <long long>old == <long long>self.low:
            heap = self._heap
            while heap[0] not in counts:  # values nobody holds any more: dropped once each
                _heappop(heap)
            self.low = heap[0]
        return 0


cdef class Rollup:
    """(delivered to all, read by all) over a chat's current members, each counted from the seq
    it joined at; a member whose read receipts are off (`shown` false) counts as having read
    nothing since it joined, and reads count only as far as they were made in public."""
    cdef dict _shown, _delivered, _read
    cdef RisingMin _delivered_min, _read_min

    def __init__(self, members, receipts, shown):
        self._shown = dict(shown)
        self._delivered = {}
        self._read = {}
        for user, membership in members.items():
            joined = membership.joined_seq
            receipt = receipts.get(user)
            if receipt is None:
                self._delivered[user] = self._read[user] = joined
            else:
                self._delivered[user] = max(receipt.delivered_seq, joined)
                self._read[user] = max(receipt.public_read_seq if self._shown[user] else 0, joined)
        self._delivered_min = RisingMin(self._delivered.values())
        self._read_min = RisingMin(self._read.values())

    def raised(self, user, receipt):
        """The member's watermarks are now `receipt`'s (they never fall); others are ignored."""
        self._raised(user, receipt.delivered_seq, receipt.public_read_seq)

    cdef int _raised(self, object user, object delivered, object public_read) except -1:
        cdef PyObject* before = PyDict_GetItem(self._delivered, user)
        if before == NULL:
            return 0
        if <long long>delivered > <long long><object>before:
            self._delivered_min._rise(<object>before, delivered)  # before it is replaced
            self._delivered[user] = delivered
        if self._shown[user]:
            read_before = self._read[user]
            if <long long>public_read > <long long>read_before:
                self._read[user] = public_read
                self._read_min._rise(read_before, public_read)
        return 0

    @property
    def totals(self):
        """(delivered_all, read_all)."""
        return self._delivered_min.low, self._read_min.low


def raise_delivered(dict receipts not None, dict delivered not None, Rollup rollup,
                    bint fresh, long long lookback, dict changed not None,
                    set moved not None):
    """A flush's delivered watermarks from acks (user -> seq) into the chat's cached `receipts`
    (a member not cached yet gets Receipt(0, 0)), and into its kept `rollup` when there is one.
    Each member whose watermark moved (every one when the cache is `fresh`: the store may
    already hold the change) goes into `moved` and, as a snapshot, into `changed`. Returns the
    span (low, high] of seqs the moved watermarks now cover (from `lookback` below the new
    watermark when fresh), or None when none moved."""
    cdef long long seq, before, low = 0, high = 0
    cdef bint any_moved = False
    cdef PyObject* found
    for user, seq_value in delivered.items():
        found = PyDict_GetItem(receipts, user)
        if found == NULL:
            old = _receipt(0, 0, 0)
            receipts[user] = old
        else:
            old = <object>found
        seq = seq_value
        before = old.delivered_seq
        if seq <= before and not fresh:
            continue
        if seq > before:
            old.delivered_seq = seq_value
            if rollup is not None:
                rollup._raised(user, seq_value, old.public_read_seq)
        moved.add(user)
        changed[user] = _receipt(old.delivered_seq, old.read_seq, old.public_read_seq)
        if fresh:
            before = seq - lookback if seq > lookback else 0
        if not any_moved or before < low:
            low = before
        if not any_moved or seq > high:
            high = seq
        any_moved = True
    return (low, high) if any_moved else None


def readers(str target not None, dict changed not None, set delivered_moved not None,
            set public_moved not None):
    """The users of `changed` other than `target` whose watermarks `target` is to be told of
    and who have a public read to show: whether `target` may see it is asked only for them."""
    cdef list found = []
    for user, receipt in changed.items():
        if (user != target and (user in delivered_moved or user in public_moved)
                and receipt.public_read_seq > 0):
            found.append(user)
    return found


def visible_to(str target not None, dict changed not None, set delivered_moved not None,
               set public_moved not None, set hidden not None):
    """The changes a sender `target` is told of, as it may see them: its own watermarks as they
    are; another member's when its delivered or public read moved, with the read as 0 where it
    is `hidden` from the target (a hidden read alone is not told: its timing would say when
    they read)."""
    cdef dict visible = {}
    cdef bint is_hidden
    for user, receipt in changed.items():
        if user == target:  # your own devices always see your own watermarks
            visible[user] = _receipt(receipt.delivered_seq, receipt.read_seq, 0)
        elif user in delivered_moved:
            is_hidden = user in hidden
            visible[user] = _receipt(receipt.delivered_seq,
                                     0 if is_hidden else receipt.public_read_seq, 0)
        elif user in public_moved and user not in hidden:
            visible[user] = _receipt(receipt.delivered_seq, receipt.public_read_seq, 0)
    return visible
