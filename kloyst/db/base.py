"""The declarative base every model (core or plugin) derives from, and the shared column mixins.

One ``MetaData`` for the whole application means alembic's autogenerate comparison sees
every table, whichever plugin owns it, and a test can prove models and migrations agree.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, MetaData, Table, TypeDecorator, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact), plain JSON elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator):
    """``DateTime(timezone=True)`` that always gives back aware UTC datetimes.

    PostgreSQL does this natively; SQLite (the embedded default) stores no zone and returns
    naive values, which cannot be compared with ``utcnow()``. Values are normalised to UTC
    on the way in and marked UTC on the way out, on every dialect.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise ValueError(f"naive datetime {value!r}: Kloyst stores aware UTC datetimes only")
            value = value.astimezone(dt.timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict: JSONType, list: JSONType, uuid.UUID: Uuid}

    if TYPE_CHECKING:
        # Every Kloyst model maps one Table, never a select or a join: saying so types Model.__table__
        # for insert(), update(), delete() and .name (SQLAlchemy declares it as any FromClause).
        __table__: ClassVar[Table]


class Timestamped:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())


class TenantScoped:
    """Mixin for every tenant-owned model: the ``vendor_id`` column that central scoping filters on.

    Deriving from this mixin is all a model needs: :mod:`kloyst.db.tenancy` adds the
    ``vendor_id = <caller's vendor>`` criterion to every SELECT, UPDATE and DELETE that
    touches the model and stamps the vendor on new rows, so no view filters by hand.
    """

    @declared_attr
    def vendor_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), index=True, nullable=False)
