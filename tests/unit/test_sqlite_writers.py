"""The embedded default's SQLite engine (kloyst.db.sqlite), and which database URLs make_engine accepts.

Each SQLite test runs two or more threads on one database file, the way the API, the relay
and the workers share it in the embedded default.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from kloyst.config import ConfigurationError
from kloyst.db import DatabaseBusy, NestedWriteError, make_engine
from kloyst.db.sqlite import READ_ONLY, WriterLock


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/kloyst.sqlite")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        conn.exec_driver_sql("CREATE TABLE turn (seq INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT NOT NULL)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
    yield engine
    engine.dispose()


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


def count(engine) -> int:
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        return conn.execute(text("SELECT n FROM counter")).scalar_one()


def increment(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE counter SET n = n + 1"))


def test_a_transaction_that_reads_then_writes_never_fails_when_another_writer_came_first(engine, pool):
    # Deferred, this is SQLITE_BUSY_SNAPSHOT: the reader's snapshot is stale once the other commits, and its
    # write fails at once with "database is locked". As a writer from its BEGIN, it goes first and the other waits.
    with engine.begin() as conn:
        seen = conn.execute(text("SELECT n FROM counter")).scalar_one()
        other = pool.submit(increment, engine)
        time.sleep(0.2)
        assert not other.done(), "the other writer waits for its turn"
        conn.execute(text("UPDATE counter SET n = :n"), {"n": seen + 10})
    other.result(5)
    assert count(engine) == 11


def test_writers_take_turns_in_the_order_they_arrived(engine, pool):
    # SQLite's own busy handler would let them in in whatever order their polls happen to fall.
    def write(who: str) -> None:
        with engine.begin() as mine:
            mine.execute(text("INSERT INTO turn (who) VALUES (:who)"), {"who": who})

    waiting = []
    with engine.begin() as conn:
        conn.execute(text("UPDATE counter SET n = 0"))
        for who in "abcdefgh":
            waiting.append(pool.submit(write, who))
            time.sleep(0.05)  # each arrives after the one before it
    for future in waiting:
        future.result(5)
    with engine.connect() as conn:
        assert [row[0] for row in conn.execute(text("SELECT who FROM turn ORDER BY seq"))] == list("abcdefgh")


def test_reading_never_waits_for_the_writer(engine, pool):
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.begin() as conn:
            conn.execute(text("UPDATE counter SET n = 7"))
            holding.set()
            release.wait(10)

    held = pool.submit(hold)
    assert holding.wait(5)
    started = time.monotonic()
    assert count(engine) == 0  # the last committed value: WAL readers see a snapshot
    assert time.monotonic() - started < 0.2
    release.set()
    held.result(5)
    assert count(engine) == 7


def test_a_second_transaction_of_the_thread_that_holds_the_write_lock_reads_and_refuses_to_write_at_once(engine):
    with engine.begin() as first:
        first.execute(text("UPDATE counter SET n = 1"))
        started = time.monotonic()
        with engine.connect() as second:
            assert second.execute(text("SELECT n FROM counter")).scalar_one() == 0
            with pytest.raises(NestedWriteError, match="write lock in another transaction"):
                second.execute(text("UPDATE counter SET n = 2"))
        assert time.monotonic() - started < 0.5, "it fails at once instead of waiting for itself"
    assert count(engine) == 1
    increment(engine)  # the refused connection went back to the pool able to write
    assert count(engine) == 2


def test_a_read_only_transaction_cannot_write(engine):
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, \
            pytest.raises(OperationalError, match="readonly"):
        conn.execute(text("UPDATE counter SET n = 5"))
    increment(engine)
    assert count(engine) == 1


def test_the_write_lock_is_given_up_however_a_transaction_ends(engine, pool):
    with pytest.raises(RuntimeError, match="the transaction's work failed"), engine.begin() as conn:
        conn.execute(text("UPDATE counter SET n = 100"))
        raise RuntimeError("the transaction's work failed")
    conn = engine.connect()
    conn.execute(text("UPDATE counter SET n = 200"))
    conn.close()  # back to the pool mid-transaction: rolled back, and the lock with it
    started = time.monotonic()
    pool.submit(increment, engine).result(5)
    assert time.monotonic() - started < 0.5
    assert count(engine) == 1


def test_a_writer_that_waits_too_long_is_told_who_holds_the_lock():
    lock = WriterLock()
    holder, waiter = object(), object()
    lock.acquire(holder)
    failure = []
    thread = threading.Thread(target=lambda: failure.append(_waits(lock, waiter)), name="the-waiter")
    thread.start()
    thread.join(5)
    assert isinstance(failure[0], DatabaseBusy)
    assert "MainThread" in str(failure[0])
    lock.release(holder)
    lock.acquire(waiter, timeout=0.1)  # a waiter that gave up is out of the line
    lock.release(waiter)


def _waits(lock: WriterLock, connection) -> Exception | None:
    try:
        lock.acquire(connection, timeout=0.2)
    except DatabaseBusy as exc:
        return exc
    return None


def test_a_connection_that_does_not_hold_the_lock_cannot_release_it():
    lock = WriterLock()
    holder = object()
    lock.acquire(holder)
    lock.release(object())
    assert lock.held_by_this_thread()
    lock.release(holder)
    assert not lock.held_by_this_thread()


def test_the_embedded_database_is_in_wal_mode_with_foreign_keys(engine):
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert isinstance(conn.connection.dbapi_connection, sqlite3.Connection)


@pytest.mark.parametrize("url", ["postgresql://kloyst:secret@127.0.0.1:5432/kloyst",
                                 "postgres://kloyst:secret@127.0.0.1:5432/kloyst"])
def test_a_plain_postgresql_url_means_psycopg2(url):
    engine = make_engine(url)
    try:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg2"
    finally:
        engine.dispose()


def test_a_driver_that_is_not_installed_is_named_in_one_line_without_the_password():
    with pytest.raises(ConfigurationError) as refused:
        make_engine("postgresql+psycopg://kloyst:secret@127.0.0.1:5432/kloyst")
    message = str(refused.value)
    assert "DATABASE_URL" in message and "postgresql+psycopg://" in message and "psycopg" in message
    assert "secret" not in message and "\n" not in message


def test_a_url_that_is_not_a_database_url_is_refused_in_one_line():
    with pytest.raises(ConfigurationError, match="DATABASE_URL.*not a database URL"):
        make_engine("not a url")


def test_a_request_waiting_to_write_goes_ahead_of_background_writers_but_not_of_other_requests():
    lock = WriterLock()
    holder = object()
    lock.acquire(holder)
    served: list[str] = []

    def wait(name: str, urgent: bool) -> threading.Thread:
        connection = object()

        def take() -> None:
            lock.acquire(connection, timeout=5, urgent=urgent)
            served.append(name)
            lock.release(connection)

        thread = threading.Thread(target=take, name=name)
        thread.start()
        deadline = time.monotonic() + 5
        while len(lock._waiters) < len(started) + 1 and time.monotonic() < deadline:  # in line before the next
            time.sleep(0.005)
        started.append(thread)
        return thread

    started: list[threading.Thread] = []
    for name, urgent in [("chunk-1", False), ("chunk-2", False), ("request-1", True), ("request-2", True)]:
        wait(name, urgent)
    lock.release(holder)
    for thread in started:
        thread.join(5)
    assert served == ["request-1", "request-2", "chunk-1", "chunk-2"]
