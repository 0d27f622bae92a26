"""Revision contacts_0003 (BSUIDs, usernames, optional numbers) on a populated table, on PostgreSQL and on SQLite.

Existing contacts keep every value and their inbound messages keep their contact (on SQLite the
table is not rebuilt, so no ``ON DELETE SET NULL`` runs); afterwards a contact may have a BSUID and
no number, never neither; a BSUID is unique per vendor. Down and up again works while every contact
has a number, and down is refused with the reason when one has none.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
import sqlalchemy as sa
from alembic import command

from kloyst import testing
from kloyst.db import make_engine, make_session_factory, migrate, session_scope, tenancy
from kloyst.plugins import build_plugin_manager
from kloyst_plugins.messages.models import InboundMessage
from kloyst_plugins.waba.models import PhoneNumber, Waba

REVISION, PREVIOUS = "contacts_0003", "contacts_0002"


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'kloyst.db'}")
        yield engine
        engine.dispose()
        return
    name = f"{testing.database_prefix()}_bsuid_{os.getpid()}"
    engine = make_engine(testing.create_database(name))
    yield engine
    engine.dispose()
    testing.drop_database(name)


def _migrate(pm, engine, direction: str, revision: str) -> None:
    with engine.begin() as connection:
        getattr(command, direction)(migrate.alembic_config(pm, str(engine.url), connection), revision)


NOW = dt.datetime.now(dt.timezone.utc)
VENDORS = sa.table("vendor", sa.column("id", sa.Uuid()), sa.column("name", sa.String()),
                   sa.column("status", sa.String()), sa.column("created_at", sa.DateTime(timezone=True)),
                   sa.column("updated_at", sa.DateTime(timezone=True)))


def _contact(vendor, **values) -> dict:
    return {"id": uuid.uuid4(), "vendor_id": vendor, "enc_kid": "k", "labels": [], "attributes": {}, "source": "api",
            "opted_out": False, "created_at": NOW, "updated_at": NOW, **values}


CONTACTS = sa.table("contact", *(sa.column(name, sa.Uuid()) for name in ("id", "vendor_id")),
                    *(sa.column(name, sa.LargeBinary()) for name in ("mobile_hash", "mobile_enc", "bsuid_hash",
                                                                      "bsuid_enc", "username_enc")),
                    *(sa.column(name, sa.String()) for name in ("enc_kid", "country", "source")),
                    *(sa.column(name, sa.JSON()) for name in ("labels", "attributes")),
                    sa.column("opted_out", sa.Boolean()),
                    *(sa.column(name, sa.DateTime(timezone=True)) for name in ("created_at", "updated_at")))


def _contacts(engine):
    return CONTACTS


def test_the_revision_keeps_a_populated_table_and_lets_a_contact_be_known_by_bsuid_alone(engine,
                                                                                         kloyst_extra_plugins):
    pm = build_plugin_manager(kloyst_extra_plugins)
    _migrate(pm, engine, "upgrade", "heads")
    _migrate(pm, engine, "downgrade", PREVIOUS)
    vendor = uuid.uuid4()
    existing = [_contact(vendor, mobile_hash=os.urandom(32), mobile_enc=os.urandom(40), country="GB", labels=["vip"])
                for _ in range(50)]
    with engine.begin() as c:
        c.execute(VENDORS.insert().values(id=vendor, name="V", status="active", created_at=NOW, updated_at=NOW))
        c.execute(_contacts(engine).insert(), existing)
        number = c.execute(sa.text("SELECT id FROM phone_number")).first()  # none: inbound rows need no number FK
        assert number is None
    _migrate(pm, engine, "upgrade", "heads")
    table = _contacts(engine)
    with engine.begin() as c:
        rows = {row.id: row for row in c.execute(sa.select(table))}
        assert len(rows) == 50
        for before in existing:
            row = rows[before["id"]]
            assert (bytes(row.mobile_hash), bytes(row.mobile_enc), row.country, row.labels) == (
                before["mobile_hash"], before["mobile_enc"], "GB", ["vip"])
            assert row.bsuid_hash is None and row.username_enc is None
        bsuid_hash = os.urandom(32)
        c.execute(table.insert().values(**_contact(vendor, bsuid_hash=bsuid_hash, bsuid_enc=b"x", country="US")))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as c:  # neither a number nor a BSUID
        c.execute(table.insert().values(**_contact(vendor)))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as c:  # the vendor's BSUID is taken
        c.execute(table.insert().values(**_contact(vendor, bsuid_hash=bsuid_hash, bsuid_enc=b"y")))
    with pytest.raises(Exception, match="known only by their BSUID"):
        _migrate(pm, engine, "downgrade", PREVIOUS)
    with engine.begin() as c:
        c.execute(table.delete().where(table.c.mobile_hash.is_(None)))
    _migrate(pm, engine, "downgrade", PREVIOUS)
    assert "bsuid_hash" not in {column["name"] for column in sa.inspect(engine).get_columns("contact")}
    _migrate(pm, engine, "upgrade", "heads")
    assert migrate.model_drift(pm, engine) == []


def test_inbound_messages_keep_their_contact_through_the_revision_on_sqlite(tmp_path, kloyst_extra_plugins):
    """The rebuild SQLite usually needs would run inbound_message's ON DELETE SET NULL; the in-place edit does not."""
    engine = make_engine(f"sqlite:///{tmp_path / 'kloyst.db'}")
    pm = build_plugin_manager(kloyst_extra_plugins)
    _migrate(pm, engine, "upgrade", "heads")
    _migrate(pm, engine, "downgrade", PREVIOUS)
    vendor, contact = uuid.uuid4(), _contact(uuid.UUID(int=0), mobile_hash=os.urandom(32), mobile_enc=b"m")
    contact["vendor_id"] = vendor
    with engine.begin() as c:
        c.execute(VENDORS.insert().values(id=vendor, name="V", status="active", created_at=NOW, updated_at=NOW))
        c.execute(_contacts(engine).insert().values(**contact))
    with session_scope(make_session_factory(engine), vendor_id=tenancy.ALL_VENDORS) as db:
        waba = Waba(vendor_id=vendor, meta_waba_id="1", name="W", access_token_enc=b"x", enc_kid="k")
        db.add(waba)
        db.flush()
        number = PhoneNumber(vendor_id=vendor, waba_id=waba.id, meta_phone_number_id="2", display_phone_number="+1")
        db.add(number)
        db.flush()
        db.add(InboundMessage(vendor_id=vendor, wamid="wamid.1", phone_number_id=number.id, contact_id=contact["id"],
                              sender_hash=b"h", type="text", content_enc=b"c", enc_kid="k", opt_out=False, sent_at=NOW))
    _migrate(pm, engine, "upgrade", "heads")
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT contact_id FROM inbound_message")).scalar() == contact["id"].hex
        assert c.execute(sa.text("PRAGMA foreign_key_check")).all() == []
    engine.dispose()
