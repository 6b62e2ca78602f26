"""The SQLite store's group commit in C, with the GIL released for all of SQLite's work.

Why: a committed batch is the store's hottest path (one INSERT per message, a head per chat,
upserts per watermark). Through Python's sqlite3 module every statement is Python work on the
writer thread, holding the GIL that the event loop needs; here the batch is read into C arrays
with the GIL held, every statement runs without it (prepared once, bound in place), and the
result comes back as one array of seqs.

Semantics are store_sqlite.py's Python commit for a batch without membership events (those
take the Python path, which applies them in the same transaction), with that module's SQL
passed in when the committer is built: BEGIN IMMEDIATE; per message in order, the chat's head
(read once per chat per batch), an INSERT with seq = head + 1 (no event) that only the dedup
index may absorb (a duplicate keeps its original and gets seq 0 here, for the caller to look
up); then each moved head, the cursors, and one max-upsert of (delivered, read, public read)
per watermark: delivered (unless a cursor of the batch carries it: a user's delivered watermark
is read as the max of the stored one and its devices' cursors), private and public reads, and
each sender's own (you have read what you wrote; in public if the message says so); COMMIT.
Any failure rolls the whole batch back and raises BatchError. The property tests run random
histories through this and the Python commit and compare results and tables.

Which SQLite: the process's own libsqlite3.so.0, the very library Python's sqlite3 module uses,
so both connections share one SQLite in the process (two copies would not see each other's
POSIX locks on the same file). Its C API is declared here rather than taken from sqlite3.h, so
the build needs no SQLite development package.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

cdef extern from *:
    """
    typedef struct sqlite3 sqlite3;
    typedef struct sqlite3_stmt sqlite3_stmt;
    int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs);
    int sqlite3_close_v2(sqlite3 *db);
    int sqlite3_busy_timeout(sqlite3 *db, int ms);
    int sqlite3_exec(sqlite3 *db, const char *sql, void *callback, void *arg, char **errmsg);
    int sqlite3_prepare_v2(sqlite3 *db, const char *sql, int n, sqlite3_stmt **stmt,
                           const char **tail);
    int sqlite3_bind_text(sqlite3_stmt *stmt, int i, const char *text, int n, void (*free)(void *));
    int sqlite3_bind_blob(sqlite3_stmt *stmt, int i, const void *blob, int n, void (*free)(void *));
    int sqlite3_bind_int64(sqlite3_stmt *stmt, int i, long long value);
    int sqlite3_bind_null(sqlite3_stmt *stmt, int i);
    int sqlite3_step(sqlite3_stmt *stmt);
    int sqlite3_reset(sqlite3_stmt *stmt);
    int sqlite3_finalize(sqlite3_stmt *stmt);
    long long sqlite3_column_int64(sqlite3_stmt *stmt, int i);
    int sqlite3_changes(sqlite3 *db);
    int sqlite3_get_autocommit(sqlite3 *db);
    const char *sqlite3_errmsg(sqlite3 *db);
    #define SB_SQLITE_OK 0
    #define SB_SQLITE_ROW 100
    #define SB_SQLITE_DONE 101
    #define SB_OPEN_FLAGS (0x00000002 | 0x00000004 | 0x00008000)
    """
    ctypedef struct sqlite3
    ctypedef struct sqlite3_stmt
    int sqlite3_open_v2(const char* filename, sqlite3** db, int flags, const char* vfs) nogil
    int sqlite3_close_v2(sqlite3* db) nogil
    int sqlite3_busy_timeout(sqlite3* db, int ms) nogil
    int sqlite3_exec(sqlite3* db, const char* sql, void* callback, void* arg, char** errmsg) nogil
    int sqlite3_prepare_v2(sqlite3* db, const char* sql, int n, sqlite3_stmt** stmt,
                           const char** tail) nogil
    int sqlite3_bind_text(sqlite3_stmt* stmt, int i, const char* text, int n, void* free) nogil
    int sqlite3_bind_blob(sqlite3_stmt* stmt, int i, const void* blob, int n, void* free) nogil
    int sqlite3_bind_int64(sqlite3_stmt* stmt, int i, long long value) nogil
    int sqlite3_bind_null(sqlite3_stmt* stmt, int i) nogil
    int sqlite3_step(sqlite3_stmt* stmt) nogil
    int sqlite3_reset(sqlite3_stmt* stmt) nogil
    int sqlite3_finalize(sqlite3_stmt* stmt) nogil
    long long sqlite3_column_int64(sqlite3_stmt* stmt, int i) nogil
    int sqlite3_changes(sqlite3* db) nogil
    int sqlite3_get_autocommit(sqlite3* db) nogil
    const char* sqlite3_errmsg(sqlite3* db) nogil
    int SB_SQLITE_OK, SB_SQLITE_ROW, SB_SQLITE_DONE, SB_OPEN_FLAGS


class BatchError(Exception):
    """The batch was rolled back (nothing of it is stored)."""


# a string's UTF-8 bytes, borrowed from the str (valid while the batch holds the str)
cdef struct _Text:
    const char* p
    int n

cdef struct _Message:
    _Text chat, user, device, client_msg_id
    const char* body
    int body_n
    const char* media   # NULL: no media ids
    int media_n
    long long server_id, created_at_ms
    Py_ssize_t chat_index
    Py_ssize_t sent_index   # -1: no sender (no watermark of its own)
    bint public_read
    long long seq       # out: the seq stored, 0 for a duplicate

cdef struct _Mark:
    # a cursor (a, b, c -> delivered) or a receipt raise ((a, b) -> delivered, read, public)
    _Text a, b, c
    long long delivered, read, public

cdef enum:
    # statements, in the order of the SQL passed in
    BEGIN = 0
    COMMIT = 1
    ROLLBACK = 2
    HEAD = 3
    INSERT = 4
    SET_HEAD = 5
    CURSOR = 6
    RAISE = 7
    STATEMENTS = 8


cdef int _text(object s, _Text* t) except -1:
    cdef Py_ssize_t n
    t.p = PyUnicode_AsUTF8AndSize(s, &n)
    if n > 0x7FFFFFFF:
        raise ValueError("string too long for SQLite")
    t.n = <int>n
    return 0


cdef inline int _bind_text(sqlite3_stmt* stmt, int i, _Text* t) noexcept nogil:
    return sqlite3_bind_text(stmt, i, t.p, t.n, NULL)


cdef inline int _run(sqlite3_stmt* stmt) noexcept nogil:
    """Step a statement that returns no row; SQLITE_OK or the error."""
    cdef int rc = sqlite3_step(stmt)
    sqlite3_reset(stmt)
    return SB_SQLITE_OK if rc == SB_SQLITE_DONE else rc


cdef class BatchCommitter:
    """BatchCommitter(path, sql, pragmas, busy_timeout_ms): its own write connection to the
    SQLite file at `path` (opened with `pragmas`, a script run once) and the batch commit.
    `sql` holds the statements named by the enum above, in that order. Use from one thread."""
    cdef sqlite3* db
    cdef sqlite3_stmt* stmts[STATEMENTS]

    def __cinit__(self, str path not None, tuple sql not None, str pragmas not None,
                  int busy_timeout_ms):
        if len(sql) != STATEMENTS:
            raise ValueError(f"{STATEMENTS} statements expected, got {len(sql)}")
        cdef bytes encoded = path.encode()
        if sqlite3_open_v2(encoded, &self.db, SB_OPEN_FLAGS, NULL) != SB_SQLITE_OK:
            error = self._error("open")
            sqlite3_close_v2(self.db)
            self.db = NULL
            raise error
        sqlite3_busy_timeout(self.db, busy_timeout_ms)
        cdef bytes script = pragmas.encode()
        if sqlite3_exec(self.db, script, NULL, NULL, NULL) != SB_SQLITE_OK:
            raise self._error("pragmas")
        cdef bytes statement
        for i, text in enumerate(sql):
            statement = (<str>text).encode()
            if sqlite3_prepare_v2(self.db, statement, len(statement), &self.stmts[i],
                                  NULL) != SB_SQLITE_OK:
                raise self._error(f"prepare {text!r}")

    def __dealloc__(self):
        self.close()

    def close(self):
        """Finalize the statements and close the connection (idempotent)."""
        cdef int i
        for i in range(STATEMENTS):
            if self.stmts[i] != NULL:
                sqlite3_finalize(self.stmts[i])
                self.stmts[i] = NULL
        if self.db != NULL:
            sqlite3_close_v2(self.db)
            self.db = NULL

    cdef object _error(self, str what):
        message = sqlite3_errmsg(self.db).decode("utf-8", "replace") if self.db else "no memory"
        return BatchError(f"{what}: {message}")

    def commit(self, list messages not None, list media not None, dict cursors not None,
               dict delivered not None, dict reads not None, dict public_reads not None):
        """Commit one batch: `messages` are NewMessages without an event, `media[i]` the
        stored form of message i's media ids (bytes, or None for none); cursors map (user,
        device, chat) -> seq, delivered, reads and public_reads (chat, user) -> seq. Returns the
        seq stored for each message (0: a duplicate, stored before). Raises BatchError (rolled
        back) on any failure."""
        if self.db == NULL:
            raise BatchError("the committer is closed")
        cdef Py_ssize_t n = len(messages)
        chats: dict = {}
        senders: dict = {}
        cdef _Message* rows = <_Message*>PyMem_Calloc(n + 1, sizeof(_Message))
        cdef _Mark* marks = NULL
        cdef long long* heads = NULL
        cdef unsigned char* moved = NULL
        cdef long long* sent = NULL
        cdef Py_ssize_t n_cursors = len(cursors), n_raises = (len(delivered) + len(reads)
                                                               + len(public_reads))
        cdef Py_ssize_t n_marks, n_chats, n_senders, i, k
        cdef int rc
        keep = []  # strings and bytes the C arrays borrow from
        try:
            if rows == NULL:
                raise MemoryError()
            for i in range(n):
                _read_message(messages[i], media[i], &rows[i], chats, senders, keep)
            n_chats = len(chats)
            n_senders = len(senders)
            n_marks = n_cursors + n_raises + n_senders
            marks = <_Mark*>PyMem_Calloc(n_marks + 1, sizeof(_Mark))
            heads = <long long*>PyMem_Calloc(n_chats + 1, sizeof(long long))
            moved = <unsigned char*>PyMem_Calloc(n_chats + 1, 1)
            sent = <long long*>PyMem_Calloc(2 * n_senders + 1, sizeof(long long))
            if marks == NULL or heads == NULL or moved == NULL or sent == NULL:
                raise MemoryError()
            k = 0
            carried = {}  # (chat, user) -> its highest cursor in this batch
            for (user, device, chat), seq in cursors.items():
                _mark(&marks[k], user, device, chat, seq, 0, 0, keep)
                k += 1
                if seq > carried.get((chat, user), -1):
                    carried[chat, user] = seq
            for key, seq in delivered.items():
                if seq > carried.get(key, -1):
                    _mark(&marks[k], key[0], key[1], None, seq, 0, 0, keep)
                    k += 1
            for (chat, user), seq in reads.items():
                _mark(&marks[k], chat, user, None, seq, seq, 0, keep)
                k += 1
            for (chat, user), seq in public_reads.items():
                _mark(&marks[k], chat, user, None, seq, seq, seq, keep)
                k += 1
            n_raises = k - n_cursors
            for (chat, user) in senders:
                _mark(&marks[k], chat, user, None, 0, 0, 0, keep)
                k += 1
            with nogil:
                rc = _run(self.stmts[BEGIN])
                if rc == SB_SQLITE_OK:
                    rc = self._write(rows, n, heads, moved, n_chats, sent, marks, n_cursors,
                                     n_raises, n_senders)
                if rc == SB_SQLITE_OK:
                    rc = _run(self.stmts[COMMIT])
            if rc != SB_SQLITE_OK:
                error = self._error("commit")
                if not sqlite3_get_autocommit(self.db):
                    _run(self.stmts[ROLLBACK])
                raise error
            return [rows[i].seq for i in range(n)]
        finally:
            PyMem_Free(rows)
            PyMem_Free(marks)
            PyMem_Free(heads)
            PyMem_Free(moved)
            PyMem_Free(sent)

    cdef int _write(self, _Message* rows, Py_ssize_t n, long long* heads, unsigned char* moved,
                    Py_ssize_t n_chats, long long* sent, _Mark* marks, Py_ssize_t n_cursors,
                    Py_ssize_t n_raises, Py_ssize_t n_senders) noexcept nogil:
        """Every statement between BEGIN and COMMIT, without the GIL; SQLITE_OK or the error
        of the first that failed. sent[2 * s] is sender s's last new seq, sent[2 * s + 1] its
        last new seq read in public."""
        cdef sqlite3_stmt* stmt
        cdef _Message* m
        cdef _Mark* mark
        cdef Py_ssize_t i, c, k
        cdef long long seq
        cdef int rc
        for c in range(n_chats):
            heads[c] = -1
        for i in range(n):
            m = &rows[i]
            c = m.chat_index
            if heads[c] < 0:
                stmt = self.stmts[HEAD]
                _bind_text(stmt, 1, &m.chat)
                rc = sqlite3_step(stmt)
                if rc == SB_SQLITE_ROW:
                    heads[c] = sqlite3_column_int64(stmt, 0)
                    rc = SB_SQLITE_DONE
                else:
                    heads[c] = 0
                sqlite3_reset(stmt)
                if rc != SB_SQLITE_DONE:
                    return rc
            seq = heads[c] + 1
            stmt = self.stmts[INSERT]
            _bind_text(stmt, 1, &m.chat)
            sqlite3_bind_int64(stmt, 2, seq)
            sqlite3_bind_int64(stmt, 3, m.server_id)
            _bind_text(stmt, 4, &m.user)
            _bind_text(stmt, 5, &m.device)
            _bind_text(stmt, 6, &m.client_msg_id)
            sqlite3_bind_blob(stmt, 7, m.body, m.body_n, NULL)
            if m.media == NULL:
                sqlite3_bind_null(stmt, 8)
            else:
                sqlite3_bind_blob(stmt, 8, m.media, m.media_n, NULL)
            sqlite3_bind_int64(stmt, 9, m.created_at_ms)
            sqlite3_bind_null(stmt, 10)
            rc = _run(stmt)
            if rc != SB_SQLITE_OK:
                return rc
            if sqlite3_changes(self.db):
                heads[c] = seq
                moved[c] = 1
                m.seq = seq
                if m.sent_index >= 0:
                    sent[2 * m.sent_index] = seq
                    if m.public_read:
                        sent[2 * m.sent_index + 1] = seq
            else:
                m.seq = 0
        # moved heads: one upsert per chat
        for i in range(n):
            c = rows[i].chat_index
            if moved[c] == 1:
                moved[c] = 2
                stmt = self.stmts[SET_HEAD]
                _bind_text(stmt, 1, &rows[i].chat)
                sqlite3_bind_int64(stmt, 2, heads[c])
                rc = _run(stmt)
                if rc != SB_SQLITE_OK:
                    return rc
        for i in range(n_cursors):
            mark = &marks[i]
            stmt = self.stmts[CURSOR]
            _bind_text(stmt, 1, &mark.a)
            _bind_text(stmt, 2, &mark.b)
            _bind_text(stmt, 3, &mark.c)
            sqlite3_bind_int64(stmt, 4, mark.delivered)
            rc = _run(stmt)
            if rc != SB_SQLITE_OK:
                return rc
        for i in range(n_cursors, n_cursors + n_raises):
            rc = self._raise(&marks[i])
            if rc != SB_SQLITE_OK:
                return rc
        for k in range(n_senders):
            if sent[2 * k]:  # the sender's own watermarks: you have read what you wrote
                mark = &marks[n_cursors + n_raises + k]
                mark.delivered = mark.read = sent[2 * k]
                mark.public = sent[2 * k + 1]
                rc = self._raise(mark)
                if rc != SB_SQLITE_OK:
                    return rc
        return SB_SQLITE_OK

    cdef inline int _raise(self, _Mark* mark) noexcept nogil:
        """One (chat, user) max-upsert of (delivered, read, public read)."""
        cdef sqlite3_stmt* stmt = self.stmts[RAISE]
        _bind_text(stmt, 1, &mark.a)
        _bind_text(stmt, 2, &mark.b)
        sqlite3_bind_int64(stmt, 3, mark.delivered)
        sqlite3_bind_int64(stmt, 4, mark.read)
        sqlite3_bind_int64(stmt, 5, mark.public)
        return _run(stmt)


cdef int _read_message(object msg, object media, _Message* m, dict chats, dict senders,
                       list keep) except -1:
    chat_id = msg.chat_id
    user = msg.sender_user
    device = msg.sender_device
    client_msg_id = msg.client_msg_id
    body = msg.body
    keep.append((chat_id, user, device, client_msg_id, body, media))
    _text(chat_id, &m.chat)
    _text(user, &m.user)
    _text(device, &m.device)
    _text(client_msg_id, &m.client_msg_id)
    if PyBytes_GET_SIZE(body) > 0x7FFFFFFF:
        raise ValueError("body too long for SQLite")
    m.body = PyBytes_AS_STRING(body)
    m.body_n = <int>PyBytes_GET_SIZE(body)
    if media is None:
        m.media = NULL
    else:
        m.media = PyBytes_AS_STRING(media)
        m.media_n = <int>PyBytes_GET_SIZE(media)
    m.server_id = msg.server_id
    m.created_at_ms = msg.created_at_ms
    m.public_read = msg.public_read
    m.chat_index = chats.setdefault(chat_id, len(chats))
    m.sent_index = senders.setdefault((chat_id, user), len(senders)) if user else -1
    return 0


cdef int _mark(_Mark* mark, a, b, c, long long delivered, long long read, long long public,
               list keep) except -1:
    keep.append((a, b, c))
    _text(a, &mark.a)
    _text(b, &mark.b)
    if c is not None:
        _text(c, &mark.c)
    mark.delivered = delivered
    mark.read = read
    mark.public = public
    return 0
