"""Contacts known by a WhatsApp business-scoped user id (BSUID), a number, or both, through /v1/contacts.

The BSUID, parent BSUID and username are stored sealed (the BSUIDs with a keyed hash for look-up,
unique per vendor), shown to the vendor that owns them, looked up by ``?bsuid=``, audited as
"changed" only, exported, and a contact always keeps a number or a BSUID.
"""

import csv
import io
import os

import pytest
from sqlalchemy import select

from kloyst.accounts.models import Vendor
from kloyst.crypto import FieldCipher, MobileHasher
from kloyst.db import Base, make_engine, make_session_factory, session_scope, tenancy
from kloyst_plugins.contacts import filters
from kloyst_plugins.contacts.models import Contact, ContactAuditLog, ContactSource
from kloyst_plugins.contacts.phones import normalize
from kloyst_plugins.contacts.schemas import ContactFilter
from kloyst_plugins.contacts.services import Actor, ContactService, Identity

BSUID = "US.13491208655302741918"
PARENT = "US.ENT.11815799212886844830"
MOBILE = "+447400123456"


def _create(testapp, vendor, status=201, **body):
    answer = testapp.post_json("/v1/contacts", body, headers=vendor.headers, status=status).json
    return answer.get("contact", answer)


def test_a_contact_may_be_known_by_its_bsuid_alone(testapp, db, vendor):
    contact = _create(testapp, vendor, bsuid=BSUID, parent_bsuid=PARENT, username="ann.sells", name="Ann")
    assert contact["mobile"] is None and contact["calling_code"] is None
    assert (contact["bsuid"], contact["parent_bsuid"], contact["username"]) == (BSUID, PARENT, "ann.sells")
    assert contact["country"] == "US"  # the BSUID's prefix
    got = testapp.get(f"/v1/contacts/{contact['id']}", headers=vendor.headers).json["contact"]
    assert got == contact
    db.expire_all()
    with tenancy.unscoped(db):
        row = db.get(Contact, contact["id"])
    assert BSUID.encode() not in row.bsuid_enc and b"ann.sells" not in row.username_enc
    assert row.mobile_hash is None and len(row.bsuid_hash) == 32


def test_a_contact_needs_a_number_or_a_bsuid(testapp, vendor):
    error = _create(testapp, vendor, status=422, name="Nobody")["error"]
    assert "mobile" in error["message"] and "bsuid" in error["message"]


@pytest.mark.parametrize("bsuid", ["13491208655302741918", "us.1349", "US-1349", "US." + "1" * 129, "US.12 34"])
def test_a_malformed_bsuid_is_422_showing_the_shape(testapp, vendor, bsuid):
    error = _create(testapp, vendor, status=422, bsuid=bsuid)["error"]
    assert "bsuid" in error["message"]


def test_a_second_contact_with_the_same_bsuid_is_409_naming_the_first(testapp, vendor):
    first = _create(testapp, vendor, bsuid=BSUID)
    error = _create(testapp, vendor, status=409, bsuid=BSUID, mobile=MOBILE)["error"]
    assert error["code"] == "duplicate_contact" and error["details"]["contact_id"] == first["id"]


def test_the_same_bsuid_at_two_vendors_is_two_contacts(testapp, accounts, enable_plugin, vendor):
    other = accounts.vendor("Other Co")
    enable_plugin(other, "contacts")
    assert _create(testapp, vendor, bsuid=BSUID)["id"] != _create(testapp, other, bsuid=BSUID)["id"]


def test_patch_adds_a_number_to_a_bsuid_contact_and_refuses_to_clear_its_only_id(testapp, vendor):
    contact = _create(testapp, vendor, bsuid=BSUID)
    url = f"/v1/contacts/{contact['id']}"
    error = testapp.patch_json(url, {"bsuid": None}, headers=vendor.headers, status=422).json["error"]
    assert error["code"] == "contact_identity_required"
    patched = testapp.patch_json(url, {"mobile": MOBILE, "username": "ann"}, headers=vendor.headers).json["contact"]
    assert (patched["mobile"], patched["bsuid"], patched["username"], patched["country"]) == (MOBILE, BSUID, "ann",
                                                                                              "GB")
    cleared = testapp.patch_json(url, {"bsuid": None, "username": None}, headers=vendor.headers).json["contact"]
    assert (cleared["bsuid"], cleared["username"], cleared["mobile"]) == (None, None, MOBILE)
    audit = testapp.get(f"{url}/audit", headers=vendor.headers).json["items"]
    assert [entry["changes"].get("bsuid") for entry in audit] == [["changed", None], None, [None, "changed"]]
    assert BSUID not in str(audit)


def test_list_finds_a_contact_by_bsuid_and_by_parent_bsuid(testapp, vendor):
    wanted = _create(testapp, vendor, bsuid=BSUID, parent_bsuid=PARENT)
    _create(testapp, vendor, mobile=MOBILE)
    found = testapp.get("/v1/contacts", {"bsuid": BSUID}, headers=vendor.headers).json["items"]
    assert [c["id"] for c in found] == [wanted["id"]]
    by_parent = testapp.get("/v1/contacts", {"bsuid": PARENT}, headers=vendor.headers).json["items"]
    assert [c["id"] for c in by_parent] == [wanted["id"]]
    assert testapp.get("/v1/contacts", {"bsuid": "US.1"}, headers=vendor.headers).json["items"] == []
    assert testapp.get("/v1/contacts", {"bsuid": "nope"}, headers=vendor.headers, status=422)


def test_the_export_carries_the_bsuid_columns(testapp, vendor):
    _create(testapp, vendor, bsuid=BSUID, username="ann.sells")
    _create(testapp, vendor, mobile=MOBILE)
    text = testapp.get("/v1/contacts/export", {"format": "csv"}, headers=vendor.headers).body.decode("utf-8")
    newest, oldest = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    assert (oldest["mobile"], oldest["bsuid"], oldest["username"]) == ("", BSUID, "ann.sells")
    assert (newest["mobile"], newest["bsuid"]) == ("'" + MOBILE, "")


def test_bulk_delete_audits_which_ids_the_contact_had_without_showing_them(testapp, db, vendor):
    contact = _create(testapp, vendor, bsuid=BSUID, username="ann")
    deleted = testapp.post_json("/v1/contacts/bulk", {"action": "delete", "filter": {"bsuid": BSUID}},
                                headers=vendor.headers).json
    assert deleted["changed"] == 1
    db.expire_all()
    with tenancy.unscoped(db):
        [row] = db.scalars(select(ContactAuditLog).where(ContactAuditLog.contact_id == contact["id"],
                                                         ContactAuditLog.action == "delete")).all()
    assert row.changes["bsuid"] == ["changed", None] and row.changes["username"] == ["changed", None]
    assert "mobile" not in row.changes and "name" not in row.changes


@pytest.fixture
def sqlite(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'contacts.sqlite'}")
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


def test_identify_links_and_looks_up_by_bsuid_on_sqlite(sqlite):
    factory, vendor_id = sqlite
    hasher, cipher = MobileHasher("sqlite-bsuid-key"), FieldCipher({"k": os.urandom(32)})
    actor = Actor(ContactSource.WEBHOOK)
    with session_scope(factory, vendor_id=vendor_id) as db:
        service = ContactService(db, vendor_id=vendor_id, cipher=cipher, hasher=hasher)
        created, _ = service.identify(Identity(bsuid=BSUID, username="ann"), actor=actor)
        again, _ = service.identify(Identity(phone=normalize(MOBILE), bsuid=BSUID, parent_bsuid=PARENT), actor=actor)
        assert again.id == created.id
        assert service.decrypt_mobile(again) == MOBILE and service.decrypt_parent_bsuid(again) == PARENT
        assert service.identify(Identity(bsuid="US.404"), actor=actor, create=False) == (None, None)
        assert service.opt_out_by_bsuid(BSUID, actor=actor).opted_out is True
    with session_scope(factory, vendor_id=vendor_id) as db:
        where = filters.conditions(ContactFilter(bsuid=PARENT), vendor_id=vendor_id, hasher=hasher, dialect="sqlite")
        [found] = db.scalars(select(Contact).where(*where)).all()
        assert found.id == created.id
