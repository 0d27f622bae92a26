"""The customer-service window in pricing: open for 24 hours after the customer's last message (23:59 open,
24:00 and 24:01 closed), counted per country for a quote's estimate — never a lower total — and free-form
service messages priced at nothing."""

from __future__ import annotations

import datetime as dt
import io
import os
import uuid

import pytest
from pypdf import PdfReader
from sqlalchemy import insert

from kloyst.db import tenancy, utcnow
from kloyst.accounts.models import Vendor
from kloyst_plugins.contacts.api import Audience
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.pricing import pdf
from kloyst_plugins.pricing.api import (CUSTOMER_SERVICE_WINDOW, SERVICE, in_window_by_country, window_closes_at,
                                        window_open)
from kloyst_plugins.pricing.models import PricingSnapshot

T = dt.datetime(2026, 12, 5, 9, 30, tzinfo=dt.timezone.utc)  # the customer's last message
MINUTE = dt.timedelta(minutes=1)


@pytest.mark.parametrize(("after", "is_open"), [
    (dt.timedelta(0), True),
    (dt.timedelta(hours=23, minutes=59), True),
    (dt.timedelta(hours=23, minutes=59, seconds=59), True),
    (dt.timedelta(hours=24), False),
    (dt.timedelta(hours=24, minutes=1), False),
], ids=["at-the-message", "23:59", "23:59:59", "24:00", "24:01"])
def test_the_window_is_open_for_24_hours_after_the_last_inbound_message(after, is_open):
    assert window_open(T, T + after) is is_open


def test_a_contact_who_never_wrote_has_no_window():
    assert window_open(None, T) is False and window_closes_at(None) is None
    assert window_closes_at(T) == T + CUSTOMER_SERVICE_WINDOW == T + dt.timedelta(hours=24)


def _contacts(db, vendor_id, rows: list[tuple[str | None, dt.datetime | None]], *, opted_out: bool = False) -> None:
    """Contacts ``(country, last_inbound_at)`` of the vendor, in one INSERT."""
    with tenancy.unscoped(db):
        db.execute(insert(Contact), [
            {"id": uuid.uuid4(), "vendor_id": vendor_id, "mobile_hash": os.urandom(32),
             "mobile_enc": b"not-a-real-ciphertext", "enc_kid": "test", "country": country, "labels": [],
             "attributes": {}, "opted_out": opted_out, "source": "api", "last_inbound_at": last}
            for country, last in rows])
    db.commit()


EDGES = [("BR", T - dt.timedelta(hours=23, minutes=59)),  # open
         ("BR", T - dt.timedelta(hours=24, minutes=1)),  # closed
         ("BR", T - dt.timedelta(hours=24)),  # closed: exactly 24 h
         ("IN", T - dt.timedelta(hours=1)),  # open
         ("IN", None),  # never wrote
         (None, T - MINUTE)]  # open, a number of no known country


def test_an_audience_is_counted_in_window_per_country_at_the_edges_on_postgresql(db, vendor):
    _contacts(db, vendor.vendor_id, EDGES)
    _contacts(db, vendor.vendor_id, [("BR", T - MINUTE)], opted_out=True)  # never in an audience
    counted = in_window_by_country(db, Audience(all=True), vendor_id=vendor.vendor_id, at=T)
    assert counted == {"BR": 1, "IN": 1, None: 1}


def test_an_audience_is_counted_in_window_the_same_on_the_embedded_default(embedded_config):
    with embedded_config.registry["kloyst.session_factory"]() as db:
        tenancy.set_scope(db, tenancy.ALL_VENDORS)
        vendor = Vendor(name="Embedded Window Co")
        db.add(vendor)
        db.commit()
        _contacts(db, vendor.id, EDGES)
        assert in_window_by_country(db, Audience(all=True), vendor_id=vendor.id, at=T) == {"BR": 1, "IN": 1,
                                                                                           None: 1}
        assert in_window_by_country(db, Audience(all=True), vendor_id=vendor.id,
                                    at=T + dt.timedelta(hours=23)) == {None: 1}


def test_a_service_message_is_priced_at_nothing_and_a_template_at_its_full_price(vendor, service, fee_rule):
    fee_rule(markup_micropercent=10_000_000, fee_micros=1_000, minimum_micros=5_000_000)
    quotation = service(vendor)
    assert quotation.message_price("BR", SERVICE) == 0
    assert quotation.message_price("BR", "service") == 0
    assert quotation.message_price("BR", "UTILITY") == quotation.price({"BR": 1}, "UTILITY").items_micros > 0


def _quote(testapp, account, category: str) -> dict:
    return testapp.post_json("/v1/quotations", {"category": category, "audience": {"all": True}},
                             headers=account.headers, status=201).json["quotation"]


def test_a_utility_quote_shows_open_windows_as_an_estimate_and_still_totals_every_recipient(testapp, db, vendor):
    now = utcnow()
    _contacts(db, vendor.vendor_id, [("BR", now - dt.timedelta(hours=23, minutes=59)),
                                     ("BR", now - dt.timedelta(hours=24, minutes=1)), ("BR", None),
                                     ("IN", now - dt.timedelta(hours=2))])
    utility = _quote(testapp, vendor, "UTILITY")
    assert utility["recipients"] == 4
    assert [(i["country"], i["quantity"], i["unit_price"]) for i in utility["items"]] == [
        ("BR", 3, "0.006800"), ("IN", 1, "0.001400")]
    assert utility["total"] == "0.021800"  # every recipient, as held at launch
    assert utility["estimated_free_in_window"] == {"recipients": 2, "amount": "0.008200"}

    marketing = _quote(testapp, vendor, "MARKETING")  # charged inside the window too: nothing to estimate
    assert marketing["estimated_free_in_window"] == {"recipients": 0, "amount": "0.000000"}
    listed = testapp.get("/v1/quotations", headers=vendor.headers).json["items"]
    assert {q["estimated_free_in_window"]["recipients"] for q in listed} == {0, 2}


def test_the_quotation_pdf_names_the_estimate_as_a_note_not_a_deduction(db, registry, vendor, service):
    quotation = service(vendor).quote({"BR": 3}, "UTILITY", in_window={"BR": 2, "IN": 5})
    db.commit()
    assert (quotation.estimated_free_in_window, quotation.estimated_free_in_window_micros) == (2, 13_600)
    content = pdf.render(quotation, db.get(PricingSnapshot, quotation.snapshot_id), "Window Co", registry.settings)
    text = " ".join("\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages).split())
    assert "Estimate, not deducted: 2 recipients had an open customer-service window" in text
    assert "the total is held in full" in text
    plain = service(vendor).quote({"BR": 3}, "UTILITY")
    assert pdf.in_window_note(plain) == ()
