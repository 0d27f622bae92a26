"""Central tenant scoping: every ORM statement on a tenant-owned model is filtered to one vendor.

Views never filter by ``vendor_id``. A session carries a *scope*:

- a vendor id: SELECT/UPDATE/DELETE on any :class:`~kloyst.db.base.TenantScoped` model get
  ``vendor_id = :vid`` added (``with_loader_criteria``, which also reaches relationships and
  joined eager loads), and new rows get that vendor stamped on them (a row stamped with a
  different vendor is refused at flush);
- :data:`ALL_VENDORS`: explicitly platform-wide (relay, reconciler, platform admin work);
- :data:`UNSET`: nobody decided; touching a tenant-owned model raises :class:`TenancyError`
  rather than silently reading every vendor's rows.

A request session resolves its scope lazily from ``request.tenant_scope`` (the caller's
vendor), so public routes that never touch tenant data never need a caller.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

from sqlalchemy import Table, event, inspect
from sqlalchemy.sql.elements import ClauseElement, TextClause
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker, with_loader_criteria
from sqlalchemy.sql.util import find_tables

from kloyst.db.base import Base, TenantScoped


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


UNSET = _Marker("UNSET")
ALL_VENDORS = _Marker("ALL_VENDORS")

_SCOPE = "kloyst.tenant_scope"
_RESOLVER = "kloyst.tenant_resolver"


class TenancyError(RuntimeError):
    """A tenant-owned table was touched without a tenant scope, or a row crossed tenants."""


def set_scope(session: Session, scope) -> None:
    session.info[_SCOPE] = scope


def set_resolver(session: Session, resolver: Callable[[], object]) -> None:
    session.info[_RESOLVER] = resolver


def current_scope(session: Session):
    scope = session.info.get(_SCOPE, UNSET)
    if scope is UNSET and (resolver := session.info.get(_RESOLVER)) is not None:
        scope = resolver()
        if scope is not UNSET:
            session.info[_SCOPE] = scope
    return scope


@contextlib.contextmanager
def unscoped(session: Session) -> Iterator[Session]:
    """Run a block platform-wide (e.g. looking a user up by email at login), then restore the scope."""
    previous = session.info.get(_SCOPE, UNSET)
    session.info[_SCOPE] = ALL_VENDORS
    try:
        yield session
    finally:
        session.info[_SCOPE] = previous


def _tenant_tables() -> frozenset[str]:
    return frozenset(m.local_table.name for m in Base.registry.mappers
                     if issubclass(m.class_, TenantScoped) and isinstance(m.local_table, Table))


def _touches_tenant_tables(state: ORMExecuteState) -> bool:
    if any(issubclass(m.class_, TenantScoped) for m in state.all_mappers):
        return True
    if not isinstance(state.statement, ClauseElement):  # every statement is one; if not, assume the worst
        return True
    tables = find_tables(state.statement, include_joins=True, include_selects=True, include_crud=True)
    names = _tenant_tables()
    return any(getattr(t, "name", None) in names for t in tables)


def _is_orm_statement(state: ORMExecuteState) -> bool:
    return bool(state.all_mappers) or state.statement._propagate_attrs.get("compile_state_plugin") == "orm"


CALLER_SCOPED = "kloyst_tenant_scoped_by_caller"


def caller_scoped(statement):
    """Mark a Core statement that filters on ``vendor_id`` itself (set-based bulk work).

    Core statements bypass the ORM's criteria, so under a vendor scope they are refused
    unless marked with this; the mark is greppable, and reviewing one means checking that
    the statement names the vendor in every tenant table it touches.
    """
    return statement.execution_options(**{CALLER_SCOPED: True})


def _scope_statement(state: ORMExecuteState) -> None:
    if isinstance(state.statement, TextClause) or state.execution_options.get(CALLER_SCOPED):
        return  # hand-written or explicitly marked SQL names its vendor itself
    scope = current_scope(state.session)
    if scope is ALL_VENDORS:
        return
    if isinstance(scope, uuid.UUID):
        if not _touches_tenant_tables(state):
            return
        if not _is_orm_statement(state):
            raise TenancyError("a Core statement on a tenant-owned table escapes tenant scoping; use the ORM "
                               "entity (select(Model)), or filter vendor_id yourself and mark the statement "
                               "with kloyst.db.tenancy.caller_scoped(statement)")
        if state.is_insert:
            raise TenancyError("ORM INSERT statements on tenant-owned tables are not scoped; add objects to "
                               "the session (their vendor is stamped) or use tenancy.unscoped() deliberately")
        if (state.is_update or state.is_delete) and state.is_executemany:
            raise TenancyError("bulk UPDATE/DELETE by primary key skips tenant criteria; use a WHERE clause")
        # Added to every statement that names a tenant table, not only those whose entities are
        # tenant-owned: the criterion also reaches tables named only in FROM (``count(*)``),
        # subqueries and joined loads.
        state.statement = state.statement.options(
            with_loader_criteria(TenantScoped, lambda cls: cls.vendor_id == scope, include_aliases=True))
        return
    if (state.is_select or state.is_update or state.is_delete or state.is_insert) and _touches_tenant_tables(state):
        raise TenancyError("tenant-owned data queried without a tenant scope; "
                           "authenticate the request or use kloyst.db.tenancy.unscoped() deliberately")


def _stamp_new_rows(session: Session, _flush_context, _instances) -> None:
    scope = None
    for obj in session.dirty:
        if isinstance(obj, TenantScoped):
            history = inspect(obj).attrs.vendor_id.history
            if history.deleted and history.added and history.deleted[0] is not None:
                raise TenancyError(f"a {type(obj).__name__} cannot move to another vendor")
    for obj in session.new:
        if not isinstance(obj, TenantScoped):
            continue
        if scope is None:
            scope = current_scope(session)
        if isinstance(scope, uuid.UUID):
            if obj.vendor_id is None:
                obj.vendor_id = scope
            elif obj.vendor_id != scope:
                raise TenancyError(f"refusing to write a {type(obj).__name__} of another vendor")
        elif scope is UNSET and obj.vendor_id is None:
            raise TenancyError(f"a new {type(obj).__name__} has no vendor and the session has no tenant scope")


class ScopedSession(Session):
    """A session whose ``get`` honours the tenant scope even when the row is already in the identity map.

    ``Session.get`` answers from the identity map without running SQL, so a row loaded
    earlier inside ``unscoped()`` would otherwise come back under a vendor scope.
    """

    def get(self, entity, ident, **kw):
        obj = super().get(entity, ident, **kw)
        if isinstance(obj, TenantScoped):
            scope = current_scope(self)
            if isinstance(scope, uuid.UUID) and obj.vendor_id != scope:
                return None
        return obj


def install(factory: sessionmaker) -> None:
    """Attach the scoping listeners to every session the factory makes (built with :class:`ScopedSession`)."""
    event.listen(factory, "do_orm_execute", _scope_statement)
    event.listen(factory, "before_flush", _stamp_new_rows)
