"""Reference twin of switchboard.core._native.sqlitebatch.BatchCommitter, for tests only: the
same batch commit through Python's sqlite3 module, one execute per statement (what
store_sqlite.py ran before the native committer)."""
from __future__ import annotations

import sqlite3

from switchboard.core.model import NewMessage


class BatchError(Exception):
    pass


class BatchCommitter:
    def __init__(self, path: str, sql: tuple[str, ...], pragmas: str, busy_timeout_ms: int) -> None:
        (self._begin, self._commit, self._rollback, self._head, self._insert, self._set_head,
         self._cursor, self._delivered, self._read) = sql
        self._conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
        self._conn.executescript(pragmas)

    def close(self) -> None:
        self._conn.close()

    def commit(self, messages: list[NewMessage], media: list[bytes | None], cursors: dict,
               delivered: dict, reads: dict) -> list[int]:
        conn = self._conn
        heads: dict[str, int] = {}
        moved: set[str] = set()
        sent: dict[tuple[str, str], int] = {}
        seqs = []
        try:
            conn.execute(self._begin)
            for m, blob in zip(messages, media):
                head = heads.get(m.chat_id)
                if head is None:
                    row = conn.execute(self._head, (m.chat_id,)).fetchone()
                    head = 0 if row is None else row[0]
                seq = head + 1
                if conn.execute(self._insert, (m.chat_id, seq, m.server_id, m.sender_user,
                                               m.sender_device, m.client_msg_id, m.body, blob,
                                               m.created_at_ms)).rowcount:
                    heads[m.chat_id] = seq
                    moved.add(m.chat_id)
                    sent[(m.chat_id, m.sender_user)] = seq
                    seqs.append(seq)
                else:
                    heads[m.chat_id] = head
                    seqs.append(0)
            conn.executemany(self._set_head, [(chat, heads[chat]) for chat in moved])
            conn.executemany(self._cursor, [(u, d, c, s) for (u, d, c), s in cursors.items()])
            conn.executemany(self._delivered, [(c, u, s) for (c, u), s in delivered.items()])
            conn.executemany(self._read, [(c, u, s, s) for (c, u), s in reads.items()])
            conn.executemany(self._read, [(c, u, s, s) for (c, u), s in sent.items()])
            conn.execute(self._commit)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute(self._rollback)
            raise BatchError(f"commit: {exc}") from exc
        return seqs
