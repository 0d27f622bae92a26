"""Revision 0004_vendor_plugin_settings up and down, on PostgreSQL and on SQLite (the embedded default).

Up: every existing row is an enabled plugin. Down: the rows of disabled plugins go (before it, a
row meant "enabled"), the others stay; up again works.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
import sqlalchemy as sa
from alembic import command

from kloyst import testing
from kloyst.db import make_engine, migrate
from kloyst.plugins import build_plugin_manager

REVISION, PREVIOUS = "0004_vendor_plugin_settings", "0003_process_heartbeat"


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'kloyst.db'}")
        yield engine
        engine.dispose()
        return
    name = f"{testing.database_prefix()}_mig_{os.getpid()}"
    engine = make_engine(testing.create_database(name))
    yield engine
    engine.dispose()
    testing.drop_database(name)


def _columns(engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("vendor_plugin")}


def _migrate(pm, engine, direction: str, revision: str) -> None:
    with engine.begin() as connection:
        getattr(command, direction)(migrate.alembic_config(pm, str(engine.url), connection), revision)


def test_the_revision_goes_up_and_down_keeping_enabled_rows(engine, kloyst_extra_plugins):
    pm = build_plugin_manager(kloyst_extra_plugins)
    _migrate(pm, engine, "upgrade", PREVIOUS)
    assert "enabled" not in _columns(engine)
    vendor = uuid.uuid4()
    now = dt.datetime.now(dt.timezone.utc)
    vendors = sa.table("vendor", sa.column("id", sa.Uuid()), sa.column("name", sa.String()),
                       sa.column("status", sa.String()), sa.column("created_at", sa.DateTime(timezone=True)),
                       sa.column("updated_at", sa.DateTime(timezone=True)))
    with engine.begin() as c:
        c.execute(vendors.insert().values(id=vendor, name="V", status="active", created_at=now, updated_at=now))
    table = sa.table("vendor_plugin", sa.column("id", sa.Uuid()), sa.column("vendor_id", sa.Uuid()),
                     sa.column("plugin", sa.String()), sa.column("enabled_at", sa.DateTime(timezone=True)),
                     sa.column("settings", sa.JSON()), sa.column("enabled", sa.Boolean()))
    with engine.begin() as c:
        c.execute(table.insert(), [{"id": uuid.uuid4(), "vendor_id": vendor, "plugin": p, "settings": {"k": p},
                                    "enabled_at": now} for p in ("kept", "dropped")])

    _migrate(pm, engine, "upgrade", REVISION)
    assert {"enabled", "disabled_at"} <= _columns(engine)
    with engine.begin() as c:
        assert c.execute(sa.select(table.c.plugin, table.c.enabled).order_by(table.c.plugin)).all() == [
            ("dropped", True), ("kept", True)]  # every row before the revision was an enabled plugin
        c.execute(table.update().where(table.c.plugin == "dropped").values(enabled=False))

    _migrate(pm, engine, "downgrade", PREVIOUS)
    assert "enabled" not in _columns(engine) and "disabled_at" not in _columns(engine)
    with engine.begin() as c:
        rows = c.execute(sa.select(table.c.plugin, table.c.settings)).all()
    assert rows == [("kept", {"k": "kept"})]  # a row meant "enabled" again: the disabled one is gone

    _migrate(pm, engine, "upgrade", "heads")
    assert migrate.current(pm, engine) == migrate.heads(pm, engine)
    assert migrate.model_drift(pm, engine) == []
