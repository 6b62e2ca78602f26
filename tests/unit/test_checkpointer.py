"""The SQLite store's Checkpointer (core/checkpointer.py) over real SQLite files: the WAL stays
bounded while commits keep coming, a quiet WAL is emptied into the database, close stops the
thread, and what was committed survives a kill -9 with checkpoints under way."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from switchboard.core.checkpointer import Checkpointer
from switchboard.core.model import Batch, NewMessage
from switchboard.core.store_sqlite import PRAGMAS, SQLiteStore
from tests.support.waiting import wait_for

PAGE = 4096
ROW = b"x" * 3000  # about one page per row


def _writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.executescript(PRAGMAS)
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)")
    return conn


@contextmanager
def _no_lock():
    yield


def _commit(conn: sqlite3.Connection, first: int, rows: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(first + i, ROW) for i in range(rows)])
    conn.execute("COMMIT")


def _wal_size(path: Path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return 0


async def test_the_wal_is_restarted_while_commits_keep_coming(tmp_path):
    """Without a checkpoint inside the commits the WAL would hold every page ever written:
    here each round writes 40 pages, and the WAL file stays a few rounds long."""
    path = tmp_path / "bounded.db"
    conn = _writer(path)
    checkpointer = Checkpointer(str(path), _no_lock, PRAGMAS, interval=0.001, restart_pages=32)
    try:
        largest = 0
        for round_ in range(30):
            restarts = checkpointer.restarts
            for i in range(4):
                _commit(conn, (round_ * 4 + i) * 10, 10)
                checkpointer.committed()
                largest = max(largest, _wal_size(path))
            await wait_for(lambda: checkpointer.restarts > restarts,
                           message="a RESTART after the round")
        written = 30 * 40 * PAGE
        assert largest < 4 * 40 * PAGE < written / 5, (largest, written)
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1200
    finally:
        checkpointer.close()
        conn.close()


async def test_a_quiet_wal_is_truncated_into_the_database(tmp_path):
    """After `idle` without a commit the WAL is emptied: the database file alone (copied
    without its WAL) holds every committed row."""
    path = tmp_path / "quiet.db"
    conn = _writer(path)
    checkpointer = Checkpointer(str(path), _no_lock, PRAGMAS, interval=0.001, idle=0.05)
    try:
        for i in range(20):
            _commit(conn, i * 10, 10)
            checkpointer.committed()
        assert _wal_size(path) > 0
        await wait_for(lambda: checkpointer.truncates >= 1 and _wal_size(path) == 0,
                       message="the idle TRUNCATE")
        copy = tmp_path / "copy.db"
        shutil.copyfile(path, copy)  # the database file only, no -wal
        with sqlite3.connect(copy) as alone:
            assert alone.execute("SELECT count(*) FROM t").fetchone()[0] == 200
    finally:
        checkpointer.close()
        conn.close()


async def test_a_restart_takes_the_write_lock(tmp_path):
    """RESTART and TRUNCATE run under the file's write lock, so they queue with the writers
    instead of stalling one in SQLite's busy handler; a PASSIVE checkpoint never takes it."""
    path = tmp_path / "locked.db"
    conn = _writer(path)
    held = threading.Lock()
    taken = []

    @contextmanager
    def write_locked():
        with held:
            taken.append(time.monotonic())
            yield

    checkpointer = Checkpointer(str(path), write_locked, PRAGMAS, interval=0.001,
                                restart_pages=8, idle=3600)
    try:
        with held:  # a writer in the middle of its commit
            _commit(conn, 0, 20)
            checkpointer.committed()
            await wait_for(lambda: checkpointer.passive >= 1, message="the PASSIVE pass")
            assert checkpointer.restarts == 0 and not taken
        await wait_for(lambda: checkpointer.restarts == 1, message="the RESTART once let go")
        assert len(taken) == 1
    finally:
        checkpointer.close()
        conn.close()


async def test_close_stops_the_thread_idle_or_busy(tmp_path):
    path = tmp_path / "close.db"
    conn = _writer(path)
    idle = Checkpointer(str(path), _no_lock, PRAGMAS)
    idle.close()  # waiting for a first commit
    assert not idle._thread.is_alive()

    busy = Checkpointer(str(path), _no_lock, PRAGMAS, interval=0.001, restart_pages=4)
    for i in range(50):
        _commit(conn, i * 10, 10)
        busy.committed()
    busy.close()  # commits keep waking it
    assert not busy._thread.is_alive()
    conn.close()


async def test_the_store_checkpoints_on_its_own_thread_and_stops_it_on_close(tmp_path):
    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        for i in range(5):
            await store.commit(Batch([NewMessage("c", "alice", "phone", f"m{i}", b"hi", (),
                                                 i + 1, 1)]))
        await wait_for(lambda: store._checkpointer.passive >= 1, message="a checkpoint")
        assert any(t.name == "sqlite-checkpointer" for t in threading.enumerate())
    finally:
        await store.close()
    assert not any(t.name == "sqlite-checkpointer" for t in threading.enumerate())


CRASHING_WRITER = """
import sqlite3, sys
from contextlib import nullcontext
from switchboard.core.checkpointer import Checkpointer
from switchboard.core.store_sqlite import PRAGMAS
path = sys.argv[1]
conn = sqlite3.connect(path, isolation_level=None)
conn.executescript(PRAGMAS)
conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB)")
checkpointer = Checkpointer(path, nullcontext, PRAGMAS, interval=0.001, restart_pages=16)
i = 0
while True:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i * 4 + k, b"x" * 3000) for k in range(4)])
    conn.execute("COMMIT")
    checkpointer.committed()
    print(i, checkpointer.restarts, flush=True)
    i += 1
"""


async def test_every_acknowledged_commit_survives_kill9_with_checkpoints_under_way(tmp_path):
    path = tmp_path / "crash.db"
    child = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(path)],
                             stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    try:
        while True:  # until the checkpointer restarted the WAL a few times
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, "the writer ended on its own"
            acknowledged, restarts = map(int, line.split())
            if restarts >= 5:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    with sqlite3.connect(path) as reopened:
        ids = {row for row, in reopened.execute("SELECT id FROM t")}
    assert set(range((acknowledged + 1) * 4)) <= ids
