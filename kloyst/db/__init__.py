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
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from kloyst.config import ConfigurationError
from kloyst.db.base import Base, TenantScoped, Timestamped, utcnow, new_id
from kloyst.db import sqlite, tenancy
from kloyst.db.sqlite import DatabaseBusy, NestedWriteError

__all__ = ["Base", "TenantScoped", "Timestamped", "utcnow", "new_id", "make_engine", "session_scope",
           "read_only_connection", "tenancy", "includeme", "DatabaseBusy", "NestedWriteError"]

log = logging.getLogger(__name__)


def make_engine(url: str, echo: bool = False) -> Engine:
    """Create the engine for ``kloyst.database.url``.

    SQLite follows :mod:`kloyst.db.sqlite` (WAL, one writer at a time, never a thread waiting
    for itself). A plain ``postgresql://`` or ``postgres://`` URL means psycopg2, the driver
    Kloyst installs (SQLAlchemy would pick psycopg 3, which it does not). A driver that is
    not installed stops start-up with one line naming it.
    """
    parsed = _database_url(url)
    kwargs: dict = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = sqlite.connect_args()
        if parsed.database not in (None, "", ":memory:"):
            # Every thread of the embedded default may hold a connection (HTTP threads, workers, the loops).
            kwargs.update(pool_size=16, max_overflow=48)
    else:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
    try:
        engine = create_engine(parsed, **kwargs)
    except (ImportError, NoSuchModuleError) as exc:
        raise ConfigurationError(f"kloyst.database.url (DATABASE_URL): the driver of {parsed.drivername}:// cannot "
                                 f"be loaded ({exc}); use sqlite:///… or postgresql://…") from None
    if engine.dialect.name == "sqlite":
        sqlite.install(engine)
    return engine


def _database_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError("kloyst.database.url (DATABASE_URL) is not a database URL: use sqlite:///… or "
                                 "postgresql://user:password@host/database") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def make_session_factory(engine: Engine) -> sessionmaker:
    factory = sessionmaker(bind=engine, expire_on_commit=False, class_=tenancy.ScopedSession)
    tenancy.install(factory)
    return factory


@contextlib.contextmanager
def session_scope(session_factory: sessionmaker, *, vendor_id=tenancy.UNSET,
                  manager: transaction.TransactionManager | None = None, read_only: bool = False) -> Iterator[Session]:
    """A session in its own transaction for work outside a request: commit on success, abort on error.

    ``vendor_id`` sets the tenant scope exactly as a request does; pass
    :data:`kloyst.db.tenancy.ALL_VENDORS` for platform-wide work such as the outbox relay.
    Pass ``manager`` to register after-commit hooks on the same transaction. A ``read_only``
    scope only reads: on SQLite it takes no write lock and a write in it fails (see
    :mod:`kloyst.db.sqlite`), so slow reads — an export, the data a PDF is rendered from —
    never hold up a writer.
    """
    manager = manager or transaction.TransactionManager(explicit=True)
    session = session_factory()
    zope.sqlalchemy.register(session, transaction_manager=manager, initial_state=STATUS_CHANGED)
    tenancy.set_scope(session, vendor_id)
    manager.begin()
    try:
        if read_only:
            _read_only(session)
        yield session
        manager.commit()
    except BaseException:
        manager.abort()
        raise
    finally:
        session.close()


def read_only_connection(engine: Engine) -> Connection:
    """A connection whose transactions only read: on SQLite they take no write lock and cannot write.

    For checks and reports that read a lot (``kloyst wallet check``): beside a running
    ``kloyst run`` on the embedded default they never hold up its writers (:mod:`kloyst.db.sqlite`).
    """
    return engine.connect().execution_options(**{sqlite.READ_ONLY: True})


def _read_only(session: Session) -> None:
    """Begin ``session``'s transaction read-only (SQLite; PostgreSQL needs no such care)."""
    bind = session.get_bind()
    if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
        session.connection(execution_options={sqlite.READ_ONLY: True})


def _request_db(request) -> Session:
    # A person waits for this answer: on SQLite its writes go ahead of the background writers' (kloyst.db.sqlite).
    sqlite.serving_requests()
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
