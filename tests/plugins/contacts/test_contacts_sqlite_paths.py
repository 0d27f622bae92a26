"""SQLite (the embedded default) takes portable paths for label filters and bulk changes, with the same results."""

import os

import pytest
from sqlalchemy import select

from kloyst.accounts.models import Vendor
from kloyst.crypto import FieldCipher, MobileHasher
from kloyst.db import Base, make_engine, make_session_factory, session_scope, tenancy
from kloyst_plugins.contacts import bulk, filters
from kloyst_plugins.contacts.models import Contact, ContactAuditLog, ContactSource
from kloyst_plugins.contacts.phones import normalize
from kloyst_plugins.contacts.schemas import ContactFilter
from kloyst_plugins.contacts.services import Actor, ContactService

ACTOR = Actor(ContactSource.API)


@pytest.fixture
def sqlite(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'contacts.sqlite'}")
    # outbox_event: single-contact writes record their domain events (a bare engine: every event is written).
    tables = [Base.metadata.tables[name] for name in ("vendor", "contact", "contact_audit_log", "outbox_event")]
    Base.metadata.create_all(engine, tables=tables)
    factory = make_session_factory(engine)
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        vendor = Vendor(name="Embedded")
        db.add(vendor)
        db.flush()
        vendor_id = vendor.id
    yield factory, vendor_id
    engine.dispose()


def test_portable_label_filter_and_bulk_changes(sqlite):
    factory, vendor_id = sqlite
    hasher = MobileHasher("sqlite-test-hash-key")
    with session_scope(factory, vendor_id=vendor_id) as db:
        service = ContactService(db, vendor_id=vendor_id, cipher=FieldCipher({"k": os.urandom(32)}), hasher=hasher)
        for i, labels in enumerate((["a"], ["b", "a"], [], ["c", "x", "b"])):
            service.create(normalize(f"+4474001007{i:02d}"), actor=ACTOR, labels=labels)

    def where(**flt):
        return filters.conditions(ContactFilter(**flt), vendor_id=vendor_id, hasher=hasher, dialect="sqlite")

    with session_scope(factory, vendor_id=vendor_id) as db:
        assert len(db.scalars(select(Contact).where(*where(label=["a"]))).all()) == 2
        assert len(db.scalars(select(Contact).where(*where(label=["a", "b"]))).all()) == 1
        result = bulk.apply(db, vendor_id=vendor_id, action="label", labels=["b", "c"], where=where(), actor=ACTOR)
        assert result.as_json() == {"matched": 4, "changed": 3}
    with session_scope(factory, vendor_id=vendor_id) as db:
        by_number = {c.mobile_hash: c.labels for c in db.scalars(select(Contact))}
        assert sorted(by_number.values()) == sorted([["a", "b", "c"], ["b", "a", "c"], ["b", "c"], ["c", "x", "b"]])
        result = bulk.apply(db, vendor_id=vendor_id, action="delete", labels=[], where=where(label=["x"]),
                            actor=ACTOR)
        assert result.changed == 1
    with session_scope(factory, vendor_id=vendor_id) as db:
        actions = sorted(r.action for r in db.scalars(select(ContactAuditLog)))
        assert actions == ["create"] * 4 + ["delete"] + ["update"] * 3
        assert db.scalar(select(Contact).where(*where(label=["x"]))) is None
