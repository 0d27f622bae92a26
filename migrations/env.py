"""Alembic environment: Kloyst builds the Config (see kloyst/db/migrate.py), this file only runs it."""

from alembic import context
from sqlalchemy import create_engine

from kloyst.db import Base
from kloyst.db.migrate import import_models

config = context.config
import_models(config.attributes["plugin_manager"])
target_metadata = Base.metadata


def render_item(type_, obj, autogen_context):
    """Write Kloyst's column types as the plain SQLAlchemy types they are stored as."""
    from kloyst.db.base import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      render_item=render_item,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        run_migrations(conn)
    engine.dispose()
