"""The cross-tenant route walk, reusable by plugin authors.

Walks every registered route whose pattern takes an id, creates a row of the route's
model for vendor B, and calls every method of the route as vendor A with B's id: each
answer must be 404 and B's row must be untouched. Rows are built generically from the
model's columns (foreign keys are followed), so a new plugin's routes are covered without
writing a factory.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

import sqlalchemy as sa
from pyramid.interfaces import IRoutesMapper
from sqlalchemy import Table, inspect as sa_inspect

from kloyst.db import Base, tenancy

_PLACEHOLDER = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def placeholders(route) -> list[str]:
    """The names of a route's ``{placeholders}``."""
    return _PLACEHOLDER.findall(route.pattern)


def id_routes(registry) -> list:
    """Routes with at least one ``{placeholder}`` in their pattern."""
    mapper = registry.queryUtility(IRoutesMapper)
    return [route for route in mapper.get_routes() if _PLACEHOLDER.search(route.pattern)]


def route_permissions(registry, route_name: str) -> set:
    """The permissions of every view on the route (None when a view uses the default)."""
    permissions = set()
    for intr in registry.introspector.get_category("views"):
        view = intr["introspectable"]
        if view["route_name"] == route_name:
            related = [r for r in intr["related"] if r.category_name == "permissions"]
            permissions.add(related[0]["value"] if related else None)
    return permissions


def tenant_id_routes(registry) -> list:
    """Id routes a vendor can call: those whose views are all platform-admin only are not tenant data."""
    return [r for r in id_routes(registry) if route_permissions(registry, r.name) != {"platform.admin"}]


def route_methods(registry, route_name: str) -> list[str]:
    methods: set[str] = set()
    for intr in registry.introspector.get_category("views"):
        view = intr["introspectable"]
        if view["route_name"] != route_name:
            continue
        request_methods = view["request_methods"]
        if request_methods is None:
            methods.update({"GET", "POST", "PUT", "PATCH", "DELETE"})
        elif isinstance(request_methods, str):
            methods.add(request_methods)
        else:
            methods.update(request_methods)
    methods.discard("HEAD")
    return sorted(methods)


def _value_for(column, session, vendor_id, owner_id):
    if column.foreign_keys:
        fk = next(iter(column.foreign_keys))
        table = fk.column.table.name
        if table == "vendor":
            return vendor_id
        if table == "app_user":
            return owner_id
        model = _model_for_table(table)
        return make_row(session, model, vendor_id, owner_id).id
    kind = column.type.impl_instance if isinstance(column.type, sa.types.TypeDecorator) else column.type
    if isinstance(kind, sa.Enum):
        return kind.enums[0] if kind.enum_class is None else list(kind.enum_class)[0]
    if isinstance(kind, sa.Uuid):
        return uuid.uuid4()
    if isinstance(kind, sa.String):
        # Unique and shaped like an email, so unique and email-ish columns both accept it.
        return f"p{uuid.uuid4().hex[:12]}@example.com"[: kind.length or 100]
    if isinstance(kind, sa.Boolean):
        return False
    if isinstance(kind, (sa.Integer, sa.Numeric)):
        return 1
    if isinstance(kind, sa.DateTime):
        return dt.datetime.now(dt.timezone.utc)
    if isinstance(kind, sa.Date):
        return dt.date.today()
    if isinstance(kind, sa.LargeBinary):
        return uuid.uuid4().bytes * 2
    if isinstance(kind, sa.JSON):
        return {}
    raise TypeError(f"cannot invent a value for {column}")


def _model_for_table(table_name: str):
    for mapper in Base.registry.mappers:
        if isinstance(mapper.local_table, Table) and mapper.local_table.name == table_name:
            return mapper.class_
    raise LookupError(table_name)


def make_row(session, model, vendor_id: uuid.UUID, owner_id: uuid.UUID):
    """Insert a minimal valid ``model`` row owned by ``vendor_id``; required columns get invented values."""
    values = {}
    for column in sa_inspect(model).columns:
        if column.primary_key and column.autoincrement is True:
            continue
        needs_value = not column.nullable and column.default is None and column.server_default is None
        if column.name == "vendor_id" or (needs_value and not column.primary_key) or (
                column.primary_key and column.default is None):
            values[column.key] = _value_for(column, session, vendor_id, owner_id)
    # A check constraint may ask for one of several optional references (a phone number belongs to
    # its vendor's own WABA or to the shared one) or columns (a contact has a number or a BSUID): when
    # the minimal row is refused, try each in turn.
    checked = " ".join(str(c.sqltext) for c in model.__table__.constraints if isinstance(c, sa.CheckConstraint))
    optional = [c for c in sa_inspect(model).columns if c.nullable and c.key not in values and (
        c.foreign_keys or re.search(rf"\b{re.escape(c.name)}\b", checked))]
    attempts = [None, *optional]
    for index, extra in enumerate(attempts):
        attempt = dict(values)
        if extra is not None:
            attempt[extra.key] = _value_for(extra, session, vendor_id, owner_id)
        row = model(**attempt)
        try:
            with tenancy.unscoped(session), session.begin_nested():
                session.add(row)
                session.flush()
        except sa.exc.IntegrityError:
            if index == len(attempts) - 1:
                raise
            continue
        return row
    raise AssertionError("unreachable: the last attempt returns or raises")
