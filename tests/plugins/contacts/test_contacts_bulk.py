"""POST /v1/contacts/bulk: label, unlabel and delete by filter, set-based, with one audit row per changed contact."""

import uuid

import pytest
from sqlalchemy import select

from kloyst.accounts.models import Role
from kloyst_plugins.contacts.models import Contact, ContactAuditLog


def _audit(db, contact_id):
    return list(db.scalars(select(ContactAuditLog).where(ContactAuditLog.contact_id == uuid.UUID(contact_id))
                           .order_by(ContactAuditLog.created_at, ContactAuditLog.action)))


def _labels(testapp, account, contact):
    return testapp.get(f"/v1/contacts/{contact['id']}", headers=account.headers).json["contact"]["labels"]


@pytest.fixture
def three(vendor, add_contact):
    return (add_contact(vendor, "+447400100001", labels=["vip", "uk"]),
            add_contact(vendor, "+447400100002", labels=["uk"]),
            add_contact(vendor, "+12015550101", labels=["us"], name="Named"))


def test_label_adds_missing_labels_in_order_and_audits_only_changed_contacts(testapp, db, vendor, three):
    gb1, gb2, us = three
    result = testapp.post_json("/v1/contacts/bulk", {"action": "label", "labels": ["vip", "q3"],
                                                     "filter": {"label": ["uk"]}}, headers=vendor.headers).json
    assert result == {"action": "label", "matched": 2, "changed": 2}
    assert _labels(testapp, vendor, gb1) == ["vip", "uk", "q3"]
    assert _labels(testapp, vendor, gb2) == ["uk", "vip", "q3"]
    assert _labels(testapp, vendor, us) == ["us"]
    row = _audit(db, gb2["id"])[-1]
    assert (row.action, row.source, row.actor_user_id) == ("update", "api", vendor.user.id)
    assert row.changes == {"labels": [["uk"], ["uk", "vip", "q3"]]}
    assert [r.action for r in _audit(db, us["id"])] == ["create"]

    again = testapp.post_json("/v1/contacts/bulk", {"action": "label", "labels": ["vip", "q3"],
                                                    "filter": {"label": ["uk"]}}, headers=vendor.headers).json
    assert again == {"action": "label", "matched": 2, "changed": 0}
    assert len(_audit(db, gb1["id"])) == 2


def test_unlabel_removes_labels_from_matching_contacts(testapp, db, vendor, three):
    gb1, gb2, us = three
    result = testapp.post_json("/v1/contacts/bulk", {"action": "unlabel", "labels": ["uk", "us"], "filter": {}},
                               headers=vendor.headers).json
    assert result == {"action": "unlabel", "matched": 3, "changed": 3}
    assert [_labels(testapp, vendor, c) for c in three] == [["vip"], [], []]
    assert _audit(db, gb1["id"])[-1].changes == {"labels": [["vip", "uk"], ["vip"]]}


def test_bulk_delete_by_filter_deletes_and_audits_each_contact(testapp, db, vendor, three):
    gb1, gb2, us = three
    result = testapp.post_json("/v1/contacts/bulk", {"action": "delete", "filter": {"country": "US"}},
                               headers=vendor.headers).json
    assert result == {"action": "delete", "matched": 1, "changed": 1}
    testapp.get(f"/v1/contacts/{us['id']}", headers=vendor.headers, status=404)
    testapp.get(f"/v1/contacts/{gb1['id']}", headers=vendor.headers, status=200)
    row = _audit(db, us["id"])[-1]
    assert row.action == "delete" and row.actor_user_id == vendor.user.id
    assert row.changes == {"mobile": ["changed", None], "name": ["changed", None], "country": ["US", None],
                           "labels": [["us"], None], "attributes": [{}, None], "opted_out": [False, None]}


def test_bulk_delete_audit_reads_like_a_single_delete(testapp, db, vendor, add_contact):
    one = add_contact(vendor, "+447400100011", name="X", labels=["a"], attributes={"k": -1})
    two = add_contact(vendor, "+447400100012", name="X", labels=["a"], attributes={"k": -1})
    testapp.delete(f"/v1/contacts/{one['id']}", headers=vendor.headers, status=204)
    testapp.post_json("/v1/contacts/bulk", {"action": "delete", "filter": {"label": ["a"]}}, headers=vendor.headers)
    assert _audit(db, one["id"])[-1].changes == _audit(db, two["id"])[-1].changes


def test_bulk_never_touches_another_vendors_contacts(testapp, db, accounts, enable_plugin, vendor, three,
                                                     add_contact):
    other = accounts.vendor("Other")
    enable_plugin(other, "contacts")
    theirs = add_contact(other, "+447400100001", labels=["uk"])
    testapp.post_json("/v1/contacts/bulk", {"action": "label", "labels": ["mine"], "filter": {}},
                      headers=vendor.headers)
    testapp.post_json("/v1/contacts/bulk", {"action": "delete", "filter": {}}, headers=vendor.headers)
    assert _labels(testapp, other, theirs) == ["uk"]
    assert [r.action for r in _audit(db, theirs["id"])] == ["create"]
    assert db.scalar(select(Contact.id).where(Contact.vendor_id == vendor.vendor_id)) is None


def test_a_member_may_label_but_not_delete_by_filter(testapp, accounts, vendor, three):
    member = accounts.user(vendor.vendor, role=Role.MEMBER)
    testapp.post_json("/v1/contacts/bulk", {"action": "label", "labels": ["m"], "filter": {}},
                      headers=member.headers, status=200)
    error = testapp.post_json("/v1/contacts/bulk", {"action": "delete", "filter": {}}, headers=member.headers,
                              status=403).json["error"]
    assert error["code"] == "admin_required"
    admin = accounts.user(vendor.vendor, role=Role.ADMIN)
    testapp.post_json("/v1/contacts/bulk", {"action": "delete", "filter": {}}, headers=admin.headers, status=200)


@pytest.mark.parametrize("body", [
    {"action": "label", "filter": {}},
    {"action": "label", "labels": [], "filter": {}},
    {"action": "delete", "labels": ["x"], "filter": {}},
    {"action": "label", "labels": ["x"]},
    {"action": "explode", "filter": {}},
    {"action": "label", "labels": ["x"], "filter": {"phone": "+999123"}},
])
def test_malformed_bulk_requests_are_422(testapp, vendor, body):
    testapp.post_json("/v1/contacts/bulk", body, headers=vendor.headers, status=422)


def test_bulk_sql_matches_the_python_rule(testapp, vendor, add_contact):
    """The PostgreSQL statement and :func:`bulk.new_labels` (the SQLite path) agree on a mixed set."""
    from kloyst_plugins.contacts.bulk import new_labels

    cases = [["a"], ["b", "a"], [], ["c", "x", "b"], ["x"]]
    made = [add_contact(vendor, f"+4474001004{i:02d}", labels=labels) for i, labels in enumerate(cases)]
    for action, labels in (("label", ["b", "c", "b2"]), ("unlabel", ["a", "b2"])):
        before = [_labels(testapp, vendor, c) for c in made]
        testapp.post_json("/v1/contacts/bulk", {"action": action, "labels": labels, "filter": {}},
                          headers=vendor.headers)
        assert [_labels(testapp, vendor, c) for c in made] == [new_labels(b, action, labels) for b in before]
