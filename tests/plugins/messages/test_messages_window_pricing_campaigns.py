"""A campaign's quote counts recipients whose customer-service window is open only as an estimate; the launch
holds the whole total. On PostgreSQL and on the embedded default (SQLite), through the HTTP API."""

from __future__ import annotations

import datetime as dt

from messaging_support import Messaging
from sqlalchemy import select, update
from test_messages_window_pricing import env, Env  # noqa: F401 (env is a fixture)

from kloyst import testing
from kloyst.db import utcnow
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.wallet.ledger import Ledger
from kloyst_plugins.wallet.records import HOLD

VARIABLES = {"1": {"field": "name", "default": "there"}, "2": {"value": "A-1"}}


def _campaign_vendor(where: Env, name: str, category: str):
    """A vendor with campaigns on, a template of ``category`` and four US contacts: two written in the last day."""
    now = utcnow()
    with where.session() as db:
        building = Messaging(db, where.registry)
        vendor = building.sending_vendor(name)
        template = building.template(vendor.waba, name=f"{category.lower()}_note", category=category)
        testing.enable_plugin(db, vendor.vendor_id, "campaigns")
        contacts = [building.contact(vendor.vendor_id, f"+1202555{index:04d}", name=f"C{index}")
                    for index in range(4)]
        for contact, last in zip(contacts, (now - dt.timedelta(hours=23, minutes=59),
                                            now - dt.timedelta(hours=3),
                                            now - dt.timedelta(hours=24, minutes=1), None)):
            db.execute(update(Contact).where(Contact.id == contact.id).values(last_inbound_at=last))
    return vendor, template


def _quote(where: Env, vendor, template) -> tuple[dict, dict]:
    campaign = where.app.post_json("/v1/campaigns", {
        "name": "Order notes", "template_id": str(template.id), "phone_number_id": str(vendor.number.id),
        "audience": {"all": True}, "variables": VARIABLES}, headers=vendor.headers, status=201).json["campaign"]
    answer = where.app.post_json(f"/v1/campaigns/{campaign['id']}/quote", {}, headers=vendor.headers).json
    return campaign, answer["quotation"]


def test_a_utility_campaign_quote_estimates_open_windows_and_the_launch_holds_the_whole_total(env):  # noqa: F811
    vendor, template = _campaign_vendor(env, "Utility Campaign Co", "UTILITY")
    unit = env.price(vendor.vendor_id, "UTILITY")
    campaign, quotation = _quote(env, vendor, template)
    assert quotation["recipients"] == 4
    assert quotation["estimated_free_in_window"] == {"recipients": 2, "amount": f"{2 * unit / 10**6:.6f}"}
    assert quotation["total"] == f"{4 * unit / 10**6:.6f}"

    launched = env.app.post_json(f"/v1/campaigns/{campaign['id']}/launch", {}, headers=vendor.headers,
                                 status=202).json["campaign"]
    assert launched["held"] == quotation["total"]
    with env.session() as db:
        [held] = db.execute(select(HOLD.c.amount_micros).where(HOLD.c.reference == f"campaign:{campaign['id']}"))
        assert held[0] == 4 * unit
        assert Ledger(db.connection(), vendor.vendor_id).wallet().held_micros == 4 * unit


def test_a_marketing_campaign_quote_estimates_nothing_free(env):  # noqa: F811
    vendor, template = _campaign_vendor(env, "Marketing Campaign Co", "MARKETING")
    _, quotation = _quote(env, vendor, template)
    assert quotation["estimated_free_in_window"] == {"recipients": 0, "amount": "0.000000"}
    assert quotation["total"] == f"{4 * env.price(vendor.vendor_id, 'MARKETING') / 10**6:.6f}"
