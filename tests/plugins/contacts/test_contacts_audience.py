"""Audiences: sources are united, excluded labels and opted-out contacts are always taken out, per vendor."""

import uuid

import pytest
from pydantic import ValidationError

from kloyst.db import tenancy
from kloyst_plugins.contacts.audience import Audience, audience_query, count_by_country
from kloyst_plugins.contacts.models import ContactAuditLog


@pytest.fixture
def people(testapp, vendor, add_contact):
    made = {
        "gb_vip": add_contact(vendor, "+447400100001", labels=["vip", "uk"]),
        "gb": add_contact(vendor, "+447400100002", labels=["uk"]),
        "us_vip": add_contact(vendor, "+12015550101", labels=["vip", "us"]),
        "us": add_contact(vendor, "+12015550102", labels=["us", "staff"]),
        "in_vip": add_contact(vendor, "+919876500001", labels=["vip"]),
    }
    testapp.post(f"/v1/contacts/{made['in_vip']['id']}/opt-out", headers=vendor.headers)
    return {key: uuid.UUID(value["id"]) for key, value in made.items()}


def _recipients(db, vendor, audience):
    with tenancy.unscoped(db):
        rows = db.execute(audience_query(audience, vendor_id=vendor.vendor_id, dialect="postgresql")).all()
    return {row.id for row in rows}


def test_all_reaches_everyone_but_the_opted_out(db, vendor, people):
    assert _recipients(db, vendor, Audience(all=True)) == set(people.values()) - {people["in_vip"]}


def test_any_included_label_selects_and_any_excluded_label_removes(db, vendor, people):
    audience = Audience(labels_include=["vip", "us"], labels_exclude=["staff"])
    assert _recipients(db, vendor, audience) == {people["gb_vip"], people["us_vip"]}


def test_explicit_contacts_and_an_import_job_add_to_the_labels(db, vendor, people):
    job = uuid.uuid4()
    db.add(ContactAuditLog(vendor_id=vendor.vendor_id, contact_id=people["gb"], action="create", source="import",
                           import_job_id=job))
    db.flush()
    audience = Audience(labels_include=["nobody"], import_job_id=job, contact_ids=[people["us"], people["in_vip"]])
    assert _recipients(db, vendor, audience) == {people["gb"], people["us"]}  # opted out even when named


def test_another_vendors_contacts_are_never_in_an_audience(db, accounts, enable_plugin, vendor, people):
    other = accounts.vendor("Other Co")
    enable_plugin(other, "contacts")
    assert _recipients(db, other, Audience(all=True, contact_ids=list(people.values()))) == set()


def test_counts_by_country_of_the_number(db, vendor, people):
    with tenancy.unscoped(db):
        assert count_by_country(db, Audience(all=True), vendor_id=vendor.vendor_id) == {"GB": 2, "US": 2}


def test_an_audience_needs_a_source_and_clean_labels():
    with pytest.raises(ValidationError, match="choose who receives it"):
        Audience(labels_exclude=["x"])
    with pytest.raises(ValidationError, match="unexpected|Extra inputs"):
        Audience(all=True, everyone=True)
    assert Audience(all=True, labels_include=[" vip ", "vip"]).labels_include == ["vip"]

