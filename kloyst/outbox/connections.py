"""Short transactions on plain connections, for the outbox's SQL-only loops.

The relay and the reconciler are SQL through and through; the ORM's unit of work would only
add cost on Kloyst's hottest loop, so they take a connection, run a few statements and
commit. Kept apart from both so that each can use it without importing the other.
"""

from __future__ import annotations

from kloyst.db.sqlite import READ_ONLY


class Transaction:
    """A short transaction on a plain connection.

    Normally a fresh pooled connection. Under the test fixtures the session factory is
    bound to one connection inside an outer transaction; a savepoint on it is used then,
    so the test sees the relay's work and rolls it back afterwards. A ``read_only`` one
    always rolls back (the metrics' scrape-time reads: their ``SET LOCAL`` ends with it), and
    on SQLite it takes no write lock (:mod:`kloyst.db.sqlite`).
    """

    def __init__(self, registry, *, read_only: bool = False) -> None:
        self.registry = registry
        self.read_only = read_only

    def __enter__(self):
        bind = self.registry["kloyst.session_factory"].kw.get("bind")
        if bind is not None and hasattr(bind, "begin_nested") and bind.in_transaction():
            self._conn, self._own = bind, False
            self._tx = bind.begin_nested()
        else:
            self._conn, self._own = self.registry["kloyst.engine"].connect(), True
            if self.read_only:
                self._conn = self._conn.execution_options(**{READ_ONLY: True})
            self._tx = self._conn.begin()
        return self._conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and not self.read_only:
                self._tx.commit()
            else:
                self._tx.rollback()
        finally:
            if self._own:
                self._conn.close()
