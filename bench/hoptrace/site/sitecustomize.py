"""Debug-only hop trace, loaded into every Python process the bench starts while
`bench cluster --trace-hops` runs (this directory is put first on PYTHONPATH; bench/hoptrace
says why and reads the output). Does nothing unless HOPTRACE_DIR is set and the process is a
Switchboard server.

In a server it wraps, before the event loop starts, the functions a message passes on its way
(sender's gateway, chat owner, writer, fan-out, receiver's gateway) and records, per message,
the CLOCK_MONOTONIC time at each: a message is known by its body's 16-byte header (the bench's
message number and scheduled send time, bench/device.py), so the processes need no shared
state. Also recorded: how long mesh output waits for its flush, the SQLite write lock's wait
and hold, and how late a 5 ms timer fires (the event loop's lag: waiting for a core). Written to
HOPTRACE_DIR/<pid>.jsonl every 2 s (what is new since the last time) and at exit.
"""
import os
import sys

if os.environ.get("HOPTRACE_DIR") and "serve" in sys.argv:
    import asyncio
    import atexit
    import fcntl
    import json
    import threading
    import time
    from contextlib import contextmanager

    _now = time.monotonic_ns
    _hops: dict = {}
    _waits: dict = {"flush_delay": [], "lock_wait": [], "lock_hold": [], "loop_lag": []}

    def _record(hop: str, body: bytes) -> None:
        _hops.setdefault(hop, []).append((bytes(body[:16]).hex(), _now()))

    _dumping = threading.Lock()
    _written: dict = {}  # (kind, name) -> entries already appended to the file
    CHUNK = 2000  # entries per line: one line's encoding holds the GIL ~1 ms, not the loop's turn

    def _dump() -> None:
        """Append what was recorded since the last dump (the dumper thread and atexit take
        turns), a line per chunk: re-encoding everything every 2 s held the GIL for hundreds
        of ms once a run had recorded a few hundred thousand hops, which stalled the very
        server being traced."""
        path = os.path.join(os.environ["HOPTRACE_DIR"], f"{os.getpid()}.jsonl")
        with _dumping, open(path, "a") as out:
            if not _written:
                out.write(json.dumps({"cluster": os.environ.get("SWITCHBOARD_CLUSTER_ENABLED")
                                      == "true"}) + "\n")
                _written[("start", "")] = 0
            for kind, records in (("hop", _hops), ("wait", _waits)):
                for name, entries in list(records.items()):
                    done = _written.get((kind, name), 0)
                    new = entries[done:]
                    for i in range(0, len(new), CHUNK):
                        out.write(json.dumps({kind: name, "entries": new[i:i + CHUNK]}) + "\n")
                    _written[(kind, name)] = done + len(new)

    def _dump_often() -> None:
        while True:
            time.sleep(2)
            _dump()

    def _before(cls, name: str, record) -> None:
        original = getattr(cls, name)

        def wrapped(self, *args):
            record(*args)
            return original(self, *args)
        setattr(cls, name, wrapped)

    def _install() -> None:
        from switchboard.core import messaging, store_sqlite, writer
        from switchboard.gateway import hub
        from switchboard.router import cluster, fanout, forwarding, local, mesh

        def sent(send, done) -> None:
            if send.event is None:
                _record("sender", send.body)

        _before(cluster.MeshRouter, "submit_send", sent)
        _before(local.LocalRouter, "submit_send", sent)
        _before(forwarding.Forwarding, "on_forward_send",
                lambda link, req: _record("owner_in", req.body))
        _before(messaging.MessageService, "submit_send",
                lambda send, done: send.event is None and _record("service", send.body))
        _before(writer.CoalescingWriter, "submit",
                lambda msg, done: _record("queued", msg.body))
        _before(writer.CoalescingWriter, "_settle",
                lambda batch, *rest: [_record("committed", m.body) for m in batch.messages])
        _before(fanout.Fanout, "on_deliver",
                lambda link, d: [_record("receiver_in", m.body) for m in d.messages])
        deliver = hub.Hub.deliver

        def offered(self, chat_id, members, messages):
            for m in messages:  # to a receiver connected here, not the sender's own devices
                if any(user != m.sender_user and user in self._by_user for user in members):
                    _record("offered", m.body)
            deliver(self, chat_id, members, messages)
        hub.Hub.deliver = offered
        take = writer.CoalescingWriter._take

        def taken(self):
            batch, completions = take(self)
            for m in batch.messages:
                _record("commit", m.body)
            return batch, completions
        writer.CoalescingWriter._take = taken

        queue, flush = mesh.Link._queue, mesh.Link._flush

        def queued(self, payload):
            if not self._flush_scheduled:
                self._trace_first = _now()
            queue(self, payload)

        def flushed(self):
            if self._out:
                _waits["flush_delay"].append(_now() - self._trace_first)
            flush(self)
        mesh.Link._queue, mesh.Link._flush = queued, flushed

        @contextmanager
        def write_locked(write_lock):
            asked = _now()
            fcntl.flock(write_lock, fcntl.LOCK_EX)
            got = _now()
            _waits["lock_wait"].append(got - asked)
            try:
                yield
            finally:
                fcntl.flock(write_lock, fcntl.LOCK_UN)
                _waits["lock_hold"].append(_now() - got)
        store_sqlite._write_locked = write_locked

    async def _lag() -> None:
        while True:
            start = _now()
            await asyncio.sleep(0.005)
            _waits["loop_lag"].append(_now() - start - 5_000_000)

    def _traced(run):
        def start(main, *args, **kwargs):
            _install()

            async def both():
                lag = asyncio.ensure_future(_lag())
                try:
                    return await main
                finally:
                    lag.cancel()
            return run(both(), *args, **kwargs)
        return start

    import uvloop
    uvloop.run = _traced(uvloop.run)
    threading.Thread(target=_dump_often, daemon=True).start()
    atexit.register(_dump)
