"""The webhook committer behind PgBouncer in transaction pooling leaves nothing on the server connection it used.

In ``pool_mode = transaction`` a client holds a server connection for one transaction only, and the
next transaction on it may be anyone's. A session ``SET statement_timeout`` (what the committer once
sent on its autocommit connection) would stay on that server connection and cancel another client's
long query, while the committer's own next statement could run elsewhere without it. With a pool of
one server connection every client here shares it, so whatever a client leaves behind, the next one
sees. The committer's bound (``statement_timeout`` and ``lock_timeout``) must still apply to its own
statement.
"""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool

from kloyst.db import make_engine, utcnow
from kloyst.testing import pgbouncer
from kloyst.testing.processes import eventually
from kloyst.webhooks import committer as committer_module
from kloyst.webhooks import deliveries
from kloyst.webhooks.committer import GroupCommitter


@pytest.fixture(scope="module")
def bouncer(kloyst_database, tmp_path_factory):
    """PgBouncer in transaction pooling with one server connection for the test database."""
    with pgbouncer.running(tmp_path_factory.mktemp("pgbouncer"), kloyst_database, pool_size=1) as running:
        yield running


@pytest.fixture
def pooled(bouncer, kloyst_database):
    """Kloyst's engine for the test database, connected through the PgBouncer."""
    engine = make_engine(bouncer.url(kloyst_database))
    yield engine
    engine.dispose()


@pytest.fixture
def forget(kloyst_database):
    """Bodies to delete from ``webhook_delivery`` after the test (they are committed, and the database is shared)."""
    bodies: list[bytes] = []
    yield bodies
    direct = sa.create_engine(kloyst_database, poolclass=NullPool)
    with direct.begin() as connection:
        connection.execute(sa.text("DELETE FROM webhook_delivery WHERE dedupe_key = ANY(:keys)"),
                           {"keys": [deliveries.dedupe_key(body) for body in bodies]})
    direct.dispose()


def another_clients_settings(bouncer, kloyst_database) -> tuple[str, str]:
    """``statement_timeout`` and ``lock_timeout`` as a new client of the PgBouncer finds them."""
    other = sa.create_engine(bouncer.url(kloyst_database), poolclass=NullPool)
    try:
        with other.connect() as connection:
            return (connection.exec_driver_sql("SHOW statement_timeout").scalar_one(),
                    connection.exec_driver_sql("SHOW lock_timeout").scalar_one())
    finally:
        other.dispose()


def delivery() -> bytes:
    return f'{{"object":"whatsapp_business_account","entry":[],"test":"{uuid.uuid4()}"}}'.encode()


def test_the_committer_leaves_no_timeout_on_the_pooled_server_connection(bouncer, pooled, kloyst_database, forget,
                                                                         monkeypatch):
    monkeypatch.setattr(committer_module, "IDLE_SECONDS", 2.0)  # its thread ends, and closes its connection, soon
    defaults = another_clients_settings(bouncer, kloyst_database)
    committer = GroupCommitter({"kloyst.session_factory": sessionmaker(bind=pooled)}, timeout_seconds=2.5)
    forget.extend(delivery() for _ in range(3))
    for body in forget:  # the committer thread keeps its connection from one group to the next
        assert committer.submit(body, utcnow()) is True
    # Its connection is still open (it idles for a minute before giving it back); the server connection is not.
    assert another_clients_settings(bouncer, kloyst_database) == defaults == ("0", "0")
    with pooled.connect() as connection:
        stored = connection.execute(sa.text("SELECT count(*) FROM webhook_delivery WHERE dedupe_key = ANY(:keys)"),
                                    {"keys": [deliveries.dedupe_key(body) for body in forget]}).scalar_one()
    assert stored == 3
    eventually(lambda: committer._thread, lambda thread: thread is None, "the idle committer thread to end", 10,
               pause=0.1)
    assert another_clients_settings(bouncer, kloyst_database) == ("0", "0")


def test_a_bounded_store_through_the_pool_gives_up_on_a_lock_and_leaves_no_timeout_behind(bouncer, pooled,
                                                                                          kloyst_database):
    direct = sa.create_engine(kloyst_database, poolclass=NullPool)  # the lock holder must not take the one server
    holder = direct.connect()
    holder.begin()
    holder.exec_driver_sql("LOCK TABLE webhook_delivery IN SHARE MODE")  # the insert waits; readers do not
    try:
        with pooled.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="canceling statement due to (statement|lock) timeout"):
                deliveries.store(connection, [(delivery(), utcnow())], next_attempt_at=utcnow(), timeout_ms=300)
            assert time.monotonic() - started < 2
    finally:
        holder.rollback()
        holder.close()
        direct.dispose()
    assert another_clients_settings(bouncer, kloyst_database) == ("0", "0")
