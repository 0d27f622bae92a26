"""The audit trail and what is stored: every change audited, audit rows immutable, no plaintext number or name."""

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from kloyst.outbox import OutboxEvent
from kloyst_plugins.contacts.models import ContactAuditLog

MOBILE, NAME = "+447400123456", "Zebedee Quux-Plaintext"


def _audit_api(testapp, account, contact_id):
    return testapp.get(f"/v1/contacts/{contact_id}/audit", headers=account.headers).json["items"]


def test_every_change_has_an_audit_row_newest_first(testapp, vendor, add_contact):
    contact = add_contact(vendor, MOBILE, name="Ada", labels=["a"])
    url = f"/v1/contacts/{contact['id']}"
    testapp.patch_json(url, {"labels": ["a", "b"], "name": "Ada L."}, headers=vendor.headers)
    testapp.patch_json(url, {"mobile": "+12015550123"}, headers=vendor.headers)
    testapp.patch_json(url, {"labels": ["a", "b"]}, headers=vendor.headers)  # no change: no row
    rows = _audit_api(testapp, vendor, contact["id"])
    assert [r["action"] for r in rows] == ["update", "update", "create"]
    assert all(r["source"] == "api" and r["actor_user_id"] == str(vendor.user.id) for r in rows)
    assert rows[2]["changes"] == {"mobile": [None, "changed"], "name": [None, "changed"], "country": [None, "GB"],
                                  "labels": [None, ["a"]], "attributes": [None, {}], "opted_out": [None, False]}
    assert rows[1]["changes"] == {"labels": [["a"], ["a", "b"]], "name": ["changed", "changed"]}
    assert rows[0]["changes"] == {"mobile": ["changed", "changed"], "country": ["GB", "US"],
                                  "calling_code": [44, 1]}


def test_opt_out_and_opt_in_are_audited_and_told_as_events(testapp, db, vendor, add_contact, enable_plugin):
    enable_plugin(vendor, "probe")  # a plugin the vendor enabled wants the events (the probe wants every one)
    contact = add_contact(vendor, MOBILE)
    url = f"/v1/contacts/{contact['id']}"
    out = testapp.post(f"{url}/opt-out", headers=vendor.headers).json
    assert out["changed"] is True and out["contact"]["opted_out"] is True and out["contact"]["opted_out_at"]
    assert testapp.post(f"{url}/opt-out", headers=vendor.headers).json["changed"] is False  # idempotent
    back = testapp.post(f"{url}/opt-in", headers=vendor.headers).json
    assert back["contact"]["opted_out"] is False and back["contact"]["opted_out_at"] is None
    rows = _audit_api(testapp, vendor, contact["id"])
    assert [(r["action"], r["changes"]) for r in rows[:2]] == [("opt_in", {"opted_out": [True, False]}),
                                                               ("opt_out", {"opted_out": [False, True]})]
    events = [e.payload for e in db.scalars(select(OutboxEvent).where(OutboxEvent.vendor_id == vendor.vendor_id)
                                             .order_by(OutboxEvent.id))
              if e.payload.get("name", "").startswith("ContactOpted")]
    assert [e["name"] for e in events] == ["ContactOptedOut", "ContactOptedIn"]
    assert events[0]["payload"] == {"contact_id": contact["id"], "source": "api"}


def test_the_audit_keeps_the_trail_of_a_deleted_contact(testapp, db, vendor, add_contact):
    contact = add_contact(vendor, MOBILE, name=NAME)
    testapp.delete(f"/v1/contacts/{contact['id']}", headers=vendor.headers, status=204)
    rows = list(db.scalars(select(ContactAuditLog).where(ContactAuditLog.contact_id == uuid.UUID(contact["id"]))))
    assert sorted(r.action for r in rows) == ["create", "delete"]


def _table_text(db, table: str) -> str:
    """Every row of ``table`` as text, binary columns decoded leniently: what an attacker reading a dump sees."""
    rows = db.execute(sa.text(f"SELECT * FROM {table}")).all()
    parts = []
    for row in rows:
        for value in row:
            parts.append(bytes(value).decode("latin-1") if isinstance(value, bytes | memoryview) else str(value))
    return "\n".join(parts)


def test_no_plaintext_number_or_name_in_the_contact_or_audit_tables(testapp, db, vendor, add_contact):
    contact = add_contact(vendor, "07400 123456", default_country="GB", name=NAME)
    url = f"/v1/contacts/{contact['id']}"
    testapp.patch_json(url, {"mobile": "+1 201 555 0123", "name": NAME + " II"}, headers=vendor.headers)
    testapp.post(f"{url}/opt-out", headers=vendor.headers)
    testapp.post_json("/v1/contacts/bulk", {"action": "label", "labels": ["x"], "filter": {}}, headers=vendor.headers)
    testapp.post_json("/v1/contacts/bulk", {"action": "delete", "filter": {}}, headers=vendor.headers)
    add_contact(vendor, MOBILE, name=NAME)
    db.commit()
    for table in ("contact", "contact_audit_log"):
        dump = _table_text(db, table)
        assert dump, table
        for secret in ("447400123456", "7400123456", "7400 123456", "12015550123", "2015550123", "Zebedee",
                       "Plaintext"):
            assert secret not in dump, f"{secret!r} found in {table}"


def test_audit_rows_cannot_be_updated_even_with_raw_sql(db, vendor, add_contact):
    add_contact(vendor, MOBILE)
    with pytest.raises(sa.exc.DBAPIError, match="immutable"), db.begin_nested():
        db.execute(sa.text("UPDATE contact_audit_log SET action = 'forged'"))


def test_a_webhook_opts_a_contact_out_by_phone_through_the_service(registry, db, vendor, add_contact):
    from kloyst.db import session_scope
    from kloyst_plugins.contacts.models import ContactSource
    from kloyst_plugins.contacts.services import Actor, ContactService

    contact = add_contact(vendor, MOBILE)
    with session_scope(registry["kloyst.session_factory"], vendor_id=vendor.vendor_id) as session:
        service = ContactService(session, vendor_id=vendor.vendor_id, cipher=registry["kloyst.cipher"],
                                 hasher=registry["kloyst.mobile_hasher"])
        assert service.opt_out_by_phone("+12015550123", actor=Actor(ContactSource.WEBHOOK)) is None
        found = service.opt_out_by_phone(MOBILE, actor=Actor(ContactSource.WEBHOOK))
        assert str(found.id) == contact["id"] and found.opted_out
    row = db.scalars(select(ContactAuditLog).where(ContactAuditLog.contact_id == uuid.UUID(contact["id"]),
                                                   ContactAuditLog.action == "opt_out")).one()
    assert (row.source, row.actor_user_id) == ("webhook", None)


def test_the_service_refuses_a_session_scoped_to_another_vendor(registry, db, vendor):
    from kloyst.db import tenancy
    from kloyst_plugins.contacts.services import ContactService

    with pytest.raises(tenancy.TenancyError):
        ContactService(db, vendor_id=vendor.vendor_id, cipher=registry["kloyst.cipher"],
                       hasher=registry["kloyst.mobile_hasher"])
