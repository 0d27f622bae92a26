"""Database wiring: one engine per app, one session per request joined to pyramid_tm's transaction.

``request.db`` is created lazily and registered with zope.sqlalchemy, so the request's
transaction commits it after the view returns and aborts it on any error: a view never
commits by hand. Code outside a request (tasks, the relay, the CLI) uses
:func:`kloyst.db.session_scope`, which gives the same guarantees with its own transaction
manager.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import transaction
import zope.sqlalchemy
from zope.sqlalchemy.datamanager import STATUS_CHANGED
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from kloyst.db.base import Base, TenantScoped, Timestamped, utcnow, new_id
from kloyst.db import tenancy

__all__ = ["Base", "TenantScoped", "Timestamped", "utcnow", "new_id", "make_engine", "session_scope",
           "tenancy", "includeme"]

log = logging.getLogger(__name__)


def make_engine(url: str, echo: bool = False) -> Engine:
    """Create the engine; SQLite gets foreign keys, WAL and a busy timeout so the embedded default behaves."""
    kwargs: dict = {"echo": echo, "future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no branch - runs per connection
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
    return engine


def make_session_factory(engine: Engine) -> sessionmaker:
    factory = sessionmaker(bind=engine, expire_on_commit=False, class_=tenancy.ScopedSession)
    tenancy.install(factory)
    return factory


@contextlib.contextmanager
def session_scope(session_factory: sessionmaker, *, vendor_id=tenancy.UNSET,
                  manager: transaction.TransactionManager | None = None) -> Iterator[Session]:
    """A session in its own transaction for work outside a request: commit on success, abort on error.

    ``vendor_id`` sets the tenant scope exactly as a request does; pass
    :data:`kloyst.db.tenancy.ALL_VENDORS` for platform-wide work such as the outbox relay.
    Pass ``manager`` to register after-commit hooks on the same transaction.
    """
    manager = manager or transaction.TransactionManager(explicit=True)
    session = session_factory()
    zope.sqlalchemy.register(session, transaction_manager=manager, initial_state=STATUS_CHANGED)
    tenancy.set_scope(session, vendor_id)
    manager.begin()
    try:
        yield session
        manager.commit()
    except BaseException:
        manager.abort()
        raise
    finally:
        session.close()


def _request_db(request) -> Session:
    session = request.registry["kloyst.session_factory"]()
    # "changed" from the start: otherwise zope.sqlalchemy silently rolls back writes made with
    # plain SQL (session.execute(text(...))), which it cannot see.
    zope.sqlalchemy.register(session, transaction_manager=request.tm, initial_state=STATUS_CHANGED)
    # The scope is decided once the caller is known; until then tenant-owned tables are off limits.
    tenancy.set_resolver(session, lambda: request.tenant_scope)

    def _close(_request):
        session.close()

    request.add_finished_callback(_close)
    return session


def includeme(config) -> None:
    settings = config.get_settings()
    engine = make_engine(settings["kloyst.database.url"], echo=settings["kloyst.database.echo"])
    config.registry["kloyst.engine"] = engine
    config.registry["kloyst.session_factory"] = make_session_factory(engine)
    config.include("pyramid_tm")
    config.add_request_method(_request_db, "db", reify=True)
