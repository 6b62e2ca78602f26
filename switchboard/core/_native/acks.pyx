"""Delivered acks of every session of a gateway, gathered in C and handed on together.

In a group of 10,000 every member acks every message: one Python call per ack (the cursor, the
delivered watermark, the receipt note) was ~5 us each on the event loop, 50 ms per message.
Sessions `put` their acks here instead (a C call, two dict updates keeping the highest seq per
key); the first ack after a `take` calls `on_ready` (the gateway schedules the hand-off a few
ms later), and `take` hands the writer and the receipts all of those acks as
dicts they adopt or merge whole (`raise_all`, `raise_by_chat`). Twin:
tests/reference/acks_model.py.

The users' delivered watermarks are kept once, per chat ({chat: {user: seq}}): the receipts take
each chat's dict in one call, and the writer, which stores them keyed (chat, user), merges them
with `raise_by_chat`. A second dict keyed (chat, user), kept beside it for the writer to adopt
whole, cost every ack its upkeep, about what the writer's merge costs, and a writer still
holding acks (they wait up to its ack_delay) merged it key by key anyway: keeping one measured
faster (bench/micro/test_acks.py, a 10,000-member message's acks: 7.1 against 8.7 ms to a fresh
writer, 8.8 against 11.4 ms to one holding acks; best of 40 rounds on a loaded machine).
"""
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.object cimport PyObject


cdef inline int _raise(dict into, object key, object seq) except -1:
    """Keep the higher seq of `into[key]` and `seq`."""
    cdef PyObject* held = PyDict_GetItem(into, key)
    if held == NULL or <long long>(<object>held) < <long long>seq:
        PyDict_SetItem(into, key, seq)
    return 0


cdef class AckBatch:
    """AckBatch(on_ready): `put(user, device, chat, seq)` a device's ack; `take()` returns
    (cursors {(user, device, chat): seq}, by_chat {chat: {user: seq}}), each the highest seq
    per key since the last take, and starts afresh."""

    def __init__(self, on_ready):
        self.on_ready = on_ready
        self.cursors = {}
        self.by_chat = {}

    cdef int put(self, str user, str device, str chat, long long seq) except -1:
        cdef object boxed = seq  # one int object for both dicts
        cdef dict users
        cdef PyObject* found
        _raise(self.cursors, (user, device, chat), boxed)
        found = PyDict_GetItem(self.by_chat, chat)
        if found == NULL:
            users = {}
            PyDict_SetItem(self.by_chat, chat, users)
        else:
            users = <dict>found
        _raise(users, user, boxed)
        if not self.ready:
            self.ready = True
            self.on_ready()
        return 0

    def add(self, str user not None, str device not None, str chat not None, long long seq):
        """`put` from Python (the sessions' pure-Python twin, tests)."""
        self.put(user, device, chat, seq)

    def take(self):
        batch = (self.cursors, self.by_chat)
        self.cursors = {}
        self.by_chat = {}
        self.ready = False
        return batch


def raise_all(dict into not None, dict source not None):
    """Merge watermarks: each key of `source` into `into`, keeping the higher seq."""
    for key, seq in source.items():
        _raise(into, key, seq)


def raise_by_chat(dict into not None, dict by_chat not None):
    """Merge per-chat watermarks {chat: {user: seq}} into `into`, keyed (chat, user), keeping
    the higher seq."""
    for chat, users in by_chat.items():
        for user, seq in (<dict?>users).items():
            _raise(into, (chat, user), seq)
