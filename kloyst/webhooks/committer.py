"""Group commit for the webhook receiver: a delivery is committed to the database before Meta gets its 200.

Why: a 200 tells Meta to forget a delivery, so nothing about it may then live only in
memory or in Redis (issue 13: a Redis inbox flushed mid-campaign lost 3,143 deliveries
Meta had been answered 200 for). The 200 follows the commit that holds the delivery.

How, and why it stays fast: request threads hand ``(raw body, received_at)`` to this
process's :class:`GroupCommitter` and wait. One committer thread takes *everything*
waiting, writes it with one multi-row ``INSERT … ON CONFLICT (dedupe_key) DO NOTHING``
(:func:`kloyst.webhooks.deliveries.store`) that is a transaction of its own, and so
commits — with ``synchronous_commit`` as configured (on): that commit is the durability.
Then it releases every request of the group: 200 when the commit returned, 503 for all of
them when it raised. No request waits for a timer, only for the commit in flight; while one
commit runs the next group gathers, so under load many requests share one commit (a group
is at most the request threads waiting, ``WEBHOOK_HTTP_THREADS`` per server) and a lone
request is committed at once.

Bounded: a request waits at most ``kloyst.webhooks.commit_timeout_seconds`` and then
answers 503 — Meta retries anything but a 2xx, so a 503 loses nothing. On PostgreSQL the
group's statement runs under the same ``statement_timeout`` and ``lock_timeout``, so a
locked table fails the group (and stores none of it) instead of holding the committer; they
are set for that statement alone, so nothing of them stays on the server connection (safe
behind PgBouncer in transaction pooling). A group may still commit just after its requests
gave up; Meta's retry of those bodies is then a no-op (``dedupe_key``). The wait stays under
waitress's 5 s shutdown grace, so on SIGTERM every request in hand is committed and answered
before the process stops.

Handing over: when this process runs a drainer (:mod:`kloyst.webhooks.drainer`, attached
with :meth:`GroupCommitter.attach`), the new rows are stored already claimed by it
(``next_attempt_at`` a lease ahead) and handed to it in memory, which saves a claim
``UPDATE`` per delivery. Otherwise they are stored due, for any drainer's poll.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from kloyst.db import utcnow
from kloyst.webhooks import deliveries
from kloyst.webhooks.deliveries import Delivery

if TYPE_CHECKING:  # the drainer is attached at run time; it does not import this module either
    from kloyst.webhooks.drainer import Drainer

log = logging.getLogger(__name__)

IDLE_SECONDS = 60.0  # a committer thread with nothing to commit this long ends; the next delivery starts another


class _Waiting:
    """One request's delivery, from hand-in until its group's commit ended.

    The request waits on a plain lock, held from creation until the committer releases it: one
    futex, cheaper than an ``Event`` (a condition, and a new lock for every wait) on the hottest path.
    """

    __slots__ = ("body", "received_at", "_pending", "stored", "taken")

    def __init__(self, body: bytes, received_at: dt.datetime) -> None:
        self.body = body
        self.received_at = received_at
        self._pending = threading.Lock()
        self._pending.acquire()
        self.stored = False  # set before finish(): the group's commit returned
        self.taken = False  # in a group being committed (under the committer's lock)

    def finish(self, stored: bool) -> None:
        self.stored = stored
        self._pending.release()

    def wait(self, seconds: float) -> bool:
        """True once finished, False when ``seconds`` passed first."""
        return self._pending.acquire(timeout=seconds)


class GroupCommitter:
    """This process's committer of webhook deliveries (one per receiver, so one per application)."""

    def __init__(self, registry, timeout_seconds: float) -> None:
        self.registry = registry
        self.timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._waiting: list[_Waiting] = []
        self._thread: threading.Thread | None = None
        self._drainer: Drainer | None = None

    def attach(self, drainer) -> None:
        """Hand this process's new deliveries to ``drainer`` (its ``accepts``/``hand_over``/``wake``)."""
        self._drainer = drainer

    def detach(self, drainer) -> None:
        """Stop handing deliveries to ``drainer``; from now on they are stored due."""
        if self._drainer is drainer:
            self._drainer = None

    def submit(self, body: bytes, received_at: dt.datetime) -> bool:
        """Wait until ``body`` is committed: True once it is, False when the commit failed or took too long."""
        item = _Waiting(body, received_at)
        with self._lock:
            self._waiting.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook-committer", daemon=True)
                self._thread.start()
            self._arrived.notify()
        if item.wait(self.timeout_seconds):
            return item.stored
        with self._lock:
            if not item.taken:  # never reached a group: nothing of it will be stored
                self._waiting.remove(item)
        if not item.stored:
            log.error("a webhook delivery was not committed within %.1f s; answering 503 so that Meta retries it",
                      self.timeout_seconds)
        return item.stored

    def _run(self) -> None:
        connection = _OwnConnection(self.registry, self.timeout_seconds)
        try:
            while True:
                with self._lock:
                    if not self._waiting:
                        self._arrived.wait(IDLE_SECONDS)
                    if not self._waiting:  # idle: end, and let the next submit start a thread
                        self._thread = None
                        return
                    limit = connection.group_limit()
                    group, self._waiting = self._waiting[:limit], self._waiting[limit:]
                    for item in group:
                        item.taken = True
                self._commit(group, connection)
        finally:
            connection.close()

    def _commit(self, group: list[_Waiting], connection: _OwnConnection) -> None:
        drainer = self._drainer
        in_hand = drainer is not None and drainer.accepts(len(group))
        now = utcnow()
        next_attempt_at = now + dt.timedelta(seconds=drainer.lease_seconds) if drainer is not None and in_hand else now
        stored = False
        try:
            fresh = connection.store([(item.body, item.received_at) for item in group], next_attempt_at)
            stored = True
        except Exception:  # every request of the group answers 503; Meta sends them again
            log.exception("committing %s webhook deliveries failed; answering 503 so that Meta retries them",
                          len(group))
            connection.close()  # a broken connection is not used again
        for item in group:
            item.finish(stored)
        if stored and drainer is not None:
            if in_hand:
                drainer.hand_over(fresh)
            else:
                drainer.wake()


class _OwnConnection:
    """A committer thread's connection, in autocommit, kept from group to group.

    A group is one statement: :func:`~kloyst.webhooks.deliveries.store` writes it as one
    multi-row ``INSERT`` (on SQLite up to the dialect's ``insertmanyvalues_page_size``, 1,000
    rows, and the committer never takes more). In autocommit that statement is its own
    transaction — when it returns it is committed (with ``synchronous_commit`` on, its WAL is
    on disk), and when it fails nothing of the group is stored — in one round trip instead of
    three (``BEGIN``, ``INSERT``, ``COMMIT``). That matters: the committer is one thread that
    every request waits for, and under load each of its round trips can wait its turn for a
    CPU and the GIL.

    Its own connection, not a pooled one per group: a checkout pings the server, one more
    round trip per group. On PostgreSQL each statement carries its own ``statement_timeout``
    and ``lock_timeout`` (``SET LOCAL`` in the same query string), so a locked table fails the
    group instead of holding the committer (its requests have answered 503 by then). Nothing is
    set for the session: behind PgBouncer in transaction pooling each statement may run on
    another server connection, and a session ``SET`` would stay on one that other clients get.
    Under the test fixtures the session factory is bound to the test's connection, inside the
    test's transaction: a savepoint on that one is used instead, so the test sees the rows and
    rolls them back.
    """

    def __init__(self, registry, timeout_seconds: float) -> None:
        self.registry = registry
        self.timeout_ms = int(timeout_seconds * 1000)
        self._connection: Connection | None = None

    def store(self, items: list[tuple[bytes, dt.datetime]], next_attempt_at: dt.datetime) -> list[Delivery]:
        """Store ``items`` in one statement, committed when this returns; the new deliveries."""
        bind = self.registry["kloyst.session_factory"].kw["bind"]
        if isinstance(bind, Connection):
            with bind.begin_nested():
                return deliveries.store(bind, items, next_attempt_at=next_attempt_at)
        if bind.dialect.name == "sqlite":
            # One writer at a time, in line (kloyst.db.sqlite): a statement in autocommit would bypass the
            # line and poll for SQLite's lock; BEGIN, INSERT and COMMIT cost no round trips here.
            with bind.begin() as connection:
                return deliveries.store(connection, items, next_attempt_at=next_attempt_at)
        if self._connection is None:
            self._connection = bind.connect().execution_options(isolation_level="AUTOCOMMIT")
        return deliveries.store(self._connection, items, next_attempt_at=next_attempt_at, timeout_ms=self.timeout_ms)

    def group_limit(self) -> int:
        """The most deliveries one statement stores on every database."""
        bind = self.registry["kloyst.session_factory"].kw["bind"]
        return bind.dialect.insertmanyvalues_page_size

    def close(self) -> None:
        """Give the connection back to the pool (a broken one is discarded by it)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
