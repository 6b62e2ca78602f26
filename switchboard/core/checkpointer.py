"""The SQLite store's WAL checkpoints, off the commit path, on a thread of their own.

Why: left to SQLite (`wal_autocheckpoint`, 1,000 pages by default), the checkpoint runs inside
whichever COMMIT pushes the WAL past the threshold: that commit copies the WAL's pages into the
database and fsyncs the database file before it returns, and every message queued behind it
waits. A chat commit rewrites a few pages per chat it touches (the messages' leaves, the dedup
index, heads, cursors, receipts: ~450 pages for 400 messages over 100 chats), so at load the
threshold was crossed every other commit, each time in front of a batch's SendAcks.

Here the writer connections run with `wal_autocheckpoint = 0` and this thread does the work:

* after commits (`committed()`, which the store calls after each write, wakes it at most once
  per pass) it waits `interval`, then runs a PASSIVE checkpoint on its own connection: it
  copies what the WAL holds and fsyncs the database while the writer goes on committing (a
  page rewritten by several commits of the interval is copied once);
* once the WAL holds `restart_pages` or more, it takes the file's write lock (the flock every
  writer queues on before BEGIN IMMEDIATE) for a RESTART checkpoint: the PASSIVE just before
  left only the frames of the last moments to copy, and afterwards the next commit writes the
  WAL from its start again, so the file stops growing (a WAL that is never restarted grows
  without bound while commits keep coming);
* after `idle` seconds without a commit it TRUNCATEs the WAL, under the write lock too: a quiet
  store has everything in the database file and a WAL of 0 bytes.

Durability does not depend on it: with `synchronous = FULL` every COMMIT fsyncs the WAL, and a
WAL not yet checkpointed is replayed by the next open. A checkpoint that fails (disk full, a
reader of another process holding the WAL) is logged and tried again after the next commit.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import AbstractContextManager
from typing import Callable

log = logging.getLogger(__name__)

INTERVAL_S = 0.1
RESTART_PAGES = 4096
IDLE_S = 5.0
OPEN_TIMEOUT_S = 10.0  # the pragmas at open, while other processes may be writing
BUSY_TIMEOUT_S = 0.0  # then no wait with the write lock held: a WAL still being read is
# restarted at a later pass (a process stopped while it holds the lock stops every writer)


class Checkpointer:
    """Checkpoints the WAL of the SQLite file at `path` on its own thread and connection.
    `write_locked()` is the file's writers' lock (a context manager). Counters: `passive`,
    `restarts`, `truncates`, `failures`, and `last_wal_pages` (the WAL's size at the last
    checkpoint)."""

    def __init__(self, path: str, write_locked: Callable[[], AbstractContextManager],
                 pragmas: str, *, interval: float = INTERVAL_S,
                 restart_pages: int = RESTART_PAGES, idle: float = IDLE_S) -> None:
        self._write_locked = write_locked
        self.interval = interval
        self.restart_pages = restart_pages
        self.idle = idle
        self._conn = sqlite3.connect(path, timeout=OPEN_TIMEOUT_S, isolation_level=None,
                                     check_same_thread=False)
        self._conn.executescript(pragmas)  # synchronous = FULL: a checkpoint syncs what it copies
        self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._committed = threading.Event()
        self._stopping = threading.Event()
        self.passive = self.restarts = self.truncates = self.failures = 0
        self.last_wal_pages = 0
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A commit added to the WAL (from any thread, once the commit returned; cheap when
        already woken: a commit made before the pass clears the flag is in the WAL it copies)."""
        if not self._committed.is_set():
            self._committed.set()

    def close(self) -> None:
        """Stop the thread (a pass under way finishes first) and close its connection."""
        self._stopping.set()
        self._committed.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        stopping, committed = self._stopping, self._committed
        pending = False  # the WAL holds frames no TRUNCATE has emptied since
        while not stopping.is_set():
            if not committed.wait(self.idle if pending else None):
                pending = self._checkpoint("TRUNCATE", locked=True) is None
                continue
            if stopping.wait(self.interval):
                break
            committed.clear()
            pending = True
            pages = self._checkpoint("PASSIVE")
            if pages is not None and pages >= self.restart_pages:
                self._checkpoint("RESTART", locked=True)

    def _checkpoint(self, mode: str, *, locked: bool = False) -> int | None:
        """One checkpoint; the WAL's pages when it began, or None when it failed or (RESTART,
        TRUNCATE) found the WAL still in use: it is tried again later."""
        try:
            if locked:
                with self._write_locked():
                    busy, pages, _ = self._run_checkpoint(mode)
            else:
                busy, pages, _ = self._run_checkpoint(mode)
        except (sqlite3.Error, OSError) as exc:
            self.failures += 1
            log.warning("WAL checkpoint (%s) failed: %r", mode, exc)
            return None
        self.last_wal_pages = pages
        if mode == "PASSIVE":
            self.passive += 1
        elif busy:
            self.failures += 1
            log.debug("WAL checkpoint (%s) found the WAL in use; trying again later", mode)
            return None
        elif mode == "RESTART":
            self.restarts += 1
        else:
            self.truncates += 1
        return pages

    def _run_checkpoint(self, mode: str) -> tuple[int, int, int]:
        """(busy, the WAL's pages, pages copied), as SQLite reports them."""
        return self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
