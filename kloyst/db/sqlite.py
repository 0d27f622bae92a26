"""The embedded default's SQLite: one writer at a time, in line, and never a thread waiting for itself.

Why this module exists: in the embedded default one process runs the API, the outbox relay
and its reconciler, the webhook committer and drainer, the sender and the task workers, all
on one SQLite file, and SQLite lets one transaction write at a time. Left to itself that
goes wrong in three ways, and each froze the whole process (issue 14: a ``POST /v1/contacts``
took 25.6 s while a quotation PDF task waited on a lock its own thread held):

* a transaction that starts reading (``BEGIN`` is deferred) and then writes must upgrade
  its lock; if another connection committed in between, the upgrade fails at once with
  "database is locked" (``SQLITE_BUSY_SNAPSHOT``), and no waiting helps;
* a thread whose transaction holds the write lock and opens a second one on another
  connection to write (a task claiming its row "in a short transaction of its own")
  waits for itself until the busy timeout, and every other writer waits behind it;
* SQLite's busy handler polls, sleeping up to 100 ms between tries, so writers that queue
  up are served late and in no order.

The rules, enforced here for every connection of a SQLite engine (:func:`install`):

1. **WAL.** Readers never wait for the writer, and the writer never waits for readers.
2. **A writer says so first.** Every transaction begins ``BEGIN IMMEDIATE``, taking the
   write lock before it reads anything, so it can never fail to upgrade. Transactions
   declared read-only (:data:`READ_ONLY`: ``session_scope(read_only=True)``,
   ``Transaction(read_only=True)``) begin deferred, take no lock, and run with
   ``PRAGMA query_only``, so a write in one fails at once instead of upgrading.
3. **One writer at a time, requests first.** Before ``BEGIN IMMEDIATE`` a transaction takes
   this process's :class:`WriterLock`, handed to the next waiter the moment the holder commits
   or rolls back (no polling): first come first served, except that a thread serving an HTTP
   request (:func:`serving_requests`) goes ahead of the background loops and tasks waiting —
   a person waits for the answer, an import chunk does not. SQLite's own busy timeout
   (:data:`BUSY_TIMEOUT_SECONDS`) is then left to other processes, such as a ``kloyst``
   command run beside ``kloyst run``.
4. **Never waiting for itself.** A thread that already holds the write lock and begins a
   transaction on another connection gets a read-only one: reading works (WAL), and a write
   there fails at once with :class:`NestedWriteError`, which says what to change.
5. **Short write transactions.** Holding the lock is cheap only when it is short, so the
   loops write in milliseconds, a task's transaction takes the lock only when the task first
   touches ``ctx.db`` (:mod:`kloyst.outbox.delivery`), and slow work — rendering a PDF,
   calling Meta — is done before that, reading through a read-only scope. A holder that kept
   the lock longer than :data:`SLOW_HOLD_SECONDS` is logged with its thread's name.

PostgreSQL needs none of this (row locks, MVCC); nothing here is installed on it.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time

from sqlalchemy import event
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

# The execution option that marks a connection's transactions read-only (no write lock, PRAGMA query_only).
READ_ONLY = "kloyst_read_only"
# How long a writer waits for its turn, in this process and (SQLite's busy timeout) for other processes.
BUSY_TIMEOUT_SECONDS = 5.0
# A write lock held longer than this is logged: every other writer of the process waited that long.
SLOW_HOLD_SECONDS = 1.0


class DatabaseBusy(RuntimeError):
    """A writer waited :data:`BUSY_TIMEOUT_SECONDS` for its turn: some transaction holds the write lock too long."""


class NestedWriteError(RuntimeError):
    """A thread that holds the write lock tried to write in a second transaction, which would wait for itself."""


_thread_role = threading.local()


def serving_requests() -> None:
    """Say that the calling thread serves HTTP requests: its writes go ahead of background writers'."""
    _thread_role.interactive = True


def _interactive() -> bool:
    return getattr(_thread_role, "interactive", False)


class WriterLock:
    """This process's turn to write on one SQLite database: FIFO (requests first), handed straight to the next.

    It records which thread holds it and for which DBAPI connection, so a second transaction
    of the same thread is recognised (rule 4) and only the holder's commit releases it.
    """

    def __init__(self) -> None:
        self._state = threading.Lock()
        self._waiters: collections.deque = collections.deque()  # (wake-up lock, thread id, connection, urgent)
        self._thread: int | None = None
        self._connection: object | None = None
        self._since = 0.0

    def held_by_this_thread(self) -> bool:
        return self._thread == threading.get_ident()

    def acquire(self, connection, timeout: float = BUSY_TIMEOUT_SECONDS, *, urgent: bool = False) -> None:
        """Wait for this process's turn to write; an ``urgent`` waiter (a request) goes behind the urgent ones
        already waiting but ahead of every other."""
        me = threading.get_ident()
        with self._state:
            if self._thread is None and not self._waiters:
                self._take(me, connection)
                return
            wake = threading.Lock()
            wake.acquire()
            entry = (wake, me, connection, urgent)
            if urgent:
                ahead = next((i for i, waiting in enumerate(self._waiters) if not waiting[3]), len(self._waiters))
                self._waiters.insert(ahead, entry)
            else:
                self._waiters.append(entry)
            holder = self._thread
        if wake.acquire(timeout=timeout):
            return  # handed over by release(): already recorded as ours
        with self._state:
            if entry not in self._waiters:
                return  # handed over just as the wait ran out
            self._waiters.remove(entry)
        raise DatabaseBusy(f"waited {timeout:.0f} s for the embedded database's write lock (held by thread "
                           f"{_thread_name(holder)}): a transaction holds it too long")

    def release(self, connection) -> None:
        """End ``connection``'s turn (a no-op for a connection that does not hold it)."""
        with self._state:
            if self._connection is not connection:
                return
            held = time.monotonic() - self._since
            holder = self._thread
            if self._waiters:
                wake, thread, waiting, _urgent = self._waiters.popleft()
                self._take(thread, waiting)
                wake.release()
            else:
                self._thread = self._connection = None
        if held > SLOW_HOLD_SECONDS:
            log.warning("thread %s held the embedded database's write lock for %.1f s; every other writer waited: "
                        "keep write transactions short (docs/operations.md)", _thread_name(holder), held)

    def _take(self, thread: int, connection) -> None:
        self._thread, self._connection, self._since = thread, connection, time.monotonic()


def _thread_name(ident: int | None) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread.name
    return str(ident)


class Connection(sqlite3.Connection):
    """The DBAPI connection of a SQLite engine: gives up the write lock when its transaction ends.

    Released after ``COMMIT`` or ``ROLLBACK`` has returned (SQLAlchemy's own commit event fires
    before), so the next writer never finds SQLite's lock still taken. The pool's rollback on
    check-in and ``close`` release it too, so no code path can keep it.
    """

    writer: WriterLock | None = None
    reading = False  # in a read-only transaction: PRAGMA query_only is on until it ends
    nested = False  # read-only because this thread holds the write lock on another connection

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._ended()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._ended()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.writer is not None:
                self.writer.release(self)

    def _ended(self) -> None:
        try:
            if self.reading:
                self.execute("PRAGMA query_only = OFF")
                self.reading = self.nested = False
        finally:
            if self.writer is not None:
                self.writer.release(self)


def connect_args() -> dict:
    """What ``sqlite3.connect`` is given: Kloyst's connection class, any thread, SQLite's own busy timeout."""
    return {"factory": Connection, "check_same_thread": False, "timeout": BUSY_TIMEOUT_SECONDS}


def install(engine: Engine) -> WriterLock:
    """Apply the rules of this module to ``engine`` (built with :func:`connect_args`); returns its lock."""
    writer = WriterLock()
    memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.writer = writer
        # sqlite3 must not begin transactions itself (it would BEGIN deferred before a write): _begin does.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        if not memory:
            dbapi_connection.execute("PRAGMA journal_mode = WAL")
        dbapi_connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        dbapi_connection = connection.connection.dbapi_connection
        # A pool reset after an AUTOCOMMIT checkout puts sqlite3's own transaction control back: take it again.
        if dbapi_connection.isolation_level is not None:
            dbapi_connection.isolation_level = None
        read_only = bool(options.get(READ_ONLY))
        nested = not read_only and writer.held_by_this_thread()
        if read_only or nested:
            dbapi_connection.execute("PRAGMA query_only = ON")
            dbapi_connection.reading, dbapi_connection.nested = True, nested
            dbapi_connection.execute("BEGIN")
            return
        if dbapi_connection.reading:  # a read-only transaction whose end could not reset the flag
            dbapi_connection.execute("PRAGMA query_only = OFF")
            dbapi_connection.reading = dbapi_connection.nested = False
        writer.acquire(dbapi_connection, urgent=_interactive())
        try:
            dbapi_connection.execute("BEGIN IMMEDIATE")
        except BaseException:
            writer.release(dbapi_connection)
            raise

    @event.listens_for(engine, "handle_error")
    def _explain(context) -> None:
        error = context.original_exception
        if not (isinstance(error, sqlite3.OperationalError) and "readonly" in str(error)) or context.connection is None:
            return
        try:
            nested = context.connection.connection.dbapi_connection.nested
        except Exception:  # a closed or invalidated connection: nothing to explain
            return
        if nested:
            raise NestedWriteError(
                "this thread already holds the embedded database's write lock in another transaction, so a write "
                "in a second one would wait for itself: write in the first transaction, or finish it before "
                "starting the second (docs/operations.md, \"The embedded default's SQLite\")"
            ) from context.original_exception

    return writer
