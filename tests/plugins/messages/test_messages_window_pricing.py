"""Meta's ``pricing`` in status webhooks settles the money: a utility template delivered inside an open
customer-service window is held in full and given back when Meta says it is free; a category Meta charges
differently is settled at that category's price; free-form service messages cost nothing and hold nothing.

Every scenario runs on PostgreSQL and on the embedded default (SQLite, one process): a message queued as
``POST /v1/messages`` queues it, then Meta's status webhook — signed, posted to the webhook route, drained —
adopts the message (Meta accepted it: captured) and carries its ``pricing``. The wallets must agree with
their ledger afterwards (``kloyst wallet check``'s invariants).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

import pytest
import webtest
from messaging_support import LANGUAGE, RECIPIENT, Messaging, SendingVendor
from sqlalchemy import select

from kloyst import testing
from kloyst.db import session_scope, tenancy, utcnow
from kloyst.webhooks import WEBHOOK_PATH
from kloyst.webhooks.drainer import drain_once
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.messages.models import MessageLog
from kloyst_plugins.messages.services import MessageService, TemplateSend
from kloyst_plugins.pricing.api import SERVICE, QuotationService
from kloyst_plugins.pricing.models import PlatformFeeRule
from kloyst_plugins.wallet.audit import invariant_violations
from kloyst_plugins.wallet.ledger import Ledger
from kloyst_plugins.wallet.records import ENTRY

FUNDS = 100_000_000


@dataclass
class Env:
    """One deployment: its registry and the HTTP app Meta posts to. Sessions are short, one at a time, as the
    embedded default's single writer wants them."""

    registry: object
    app: webtest.TestApp

    @contextlib.contextmanager
    def session(self):
        """A platform-wide session, committed and closed at the end of the block."""
        with self.registry["kloyst.session_factory"]() as db:
            tenancy.set_scope(db, tenancy.ALL_VENDORS)
            yield db
            db.commit()

    def price(self, vendor_id, category: str, country: str = "US") -> int:
        with session_scope(self.registry["kloyst.session_factory"], vendor_id=vendor_id) as db:
            return QuotationService(db, vendor_id=vendor_id, registry=self.registry,
                                    enqueue=None).message_price(country, category)


@pytest.fixture(params=["postgresql", "sqlite"])
def env(request):
    if request.param == "postgresql":
        request.getfixturevalue("committed_db")  # its tables are emptied afterwards
        env = Env(request.getfixturevalue("registry"), webtest.TestApp(request.getfixturevalue("wsgi_app")))
    else:
        config = request.getfixturevalue("embedded_config")
        env = Env(config.registry, webtest.TestApp(config.make_wsgi_app()))
    yield env
    with env.session() as db:
        assert invariant_violations(db.connection()) == []


def _vendor(env: Env, name: str, *, last_inbound_at: dt.datetime | None = None) -> tuple[SendingVendor, Contact]:
    with env.session() as db:
        building = Messaging(db, env.registry)
        vendor = building.sending_vendor(name)
        contact = building.contact(vendor.vendor_id, RECIPIENT, name="Ann")
        if last_inbound_at is not None:
            db.get(Contact, contact.id).last_inbound_at = last_inbound_at
        return vendor, contact


def _queue(env: Env, vendor: SendingVendor, contact: Contact) -> uuid.UUID:
    """Queue one template to the contact in a real transaction, as ``POST /v1/messages`` does."""
    with session_scope(env.registry["kloyst.session_factory"], vendor_id=vendor.vendor_id) as session:
        return MessageService.for_registry(session, env.registry, vendor_id=vendor.vendor_id).queue(TemplateSend(
            phone_number_id=vendor.number.id, template_name=vendor.template.name, template_language=LANGUAGE,
            contact_id=contact.id, body=["Ann", "A-1"], use_parameters=True)).message.id


def _status(message_id: uuid.UUID, wamid: str, word: str, pricing: dict | None) -> dict:
    status = {"id": wamid, "status": word, "timestamp": str(int(time.time())), "recipient_id": RECIPIENT[1:],
              "biz_opaque_callback_data": str(message_id)}
    if pricing is not None:
        status["pricing"] = pricing
    return status


def _meta_reports(env: Env, vendor: SendingVendor, *statuses: dict) -> None:
    """Post a status webhook signed as Meta signs it, then let the drainer apply it."""
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": vendor.waba.meta_waba_id, "time": int(time.time()), "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100000",
                         "phone_number_id": vendor.number.meta_phone_number_id},
            "statuses": list(statuses)}}]}]}, separators=(",", ":")).encode()
    secret = testing.TEST_SETTINGS["kloyst.meta.app_secret"]
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    env.app.post(WEBHOOK_PATH, body, headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature})
    drain_once(env.registry)


def _pricing(category: str, kind: str = "regular", billable: bool | None = None) -> dict:
    pricing = {"pricing_model": "PMP", "category": category, "type": kind}
    if billable is not None:
        pricing["billable"] = billable
    return pricing


def _message(env: Env, message_id: uuid.UUID) -> MessageLog:
    with env.session() as db:
        message = db.get(MessageLog, message_id)
        db.expunge(message)
        return message


def _ledger(env: Env, vendor_id) -> list[tuple[str, int]]:
    """Each entry's kind and what it changed (balance + held), in order."""
    with env.session() as db:
        return [(kind, delta) for kind, delta in db.execute(
            select(ENTRY.c.kind, ENTRY.c.balance_delta_micros + ENTRY.c.held_delta_micros)
            .where(ENTRY.c.vendor_id == vendor_id).order_by(ENTRY.c.seq))]


def _balance(env: Env, vendor_id) -> tuple[int, int]:
    with env.session() as db:
        state = Ledger(db.connection(), vendor_id).wallet()
        return state.balance_micros, state.held_micros


def test_a_utility_template_in_an_open_window_is_held_in_full_and_given_back_when_meta_says_free(env):
    vendor, contact = _vendor(env, "Window Co", last_inbound_at=utcnow() - dt.timedelta(hours=23, minutes=59))
    price = env.price(vendor.vendor_id, "UTILITY")
    message_id = _queue(env, vendor, contact)
    message = _message(env, message_id)
    assert price > 0 and message.price_micros == price and message.hold_id is not None  # the safe rule
    assert _balance(env, vendor.vendor_id) == (FUNDS, price)

    wamid = f"wamid.{uuid.uuid4().hex}"
    _meta_reports(env, vendor, _status(message_id, wamid, "sent",
                                       _pricing("utility", "free_customer_service", billable=False)))
    _meta_reports(env, vendor, _status(message_id, wamid, "delivered",
                                       _pricing("utility", "free_customer_service", billable=False)))

    message = _message(env, message_id)
    assert (message.status, message.wamid, message.billable) == ("DELIVERED", wamid, False)
    assert _ledger(env, vendor.vendor_id) == [("TOPUP", FUNDS), ("HOLD", price), ("CAPTURE", -2 * price),
                                              ("REFUND", price)]
    assert _balance(env, vendor.vendor_id) == (FUNDS, 0)


def test_meta_s_type_decides_even_without_the_deprecated_billable_and_a_free_entry_point_is_free(env):
    vendor, contact = _vendor(env, "Entry Point Co")
    price = env.price(vendor.vendor_id, "UTILITY")
    message_id = _queue(env, vendor, contact)
    _meta_reports(env, vendor, _status(message_id, f"wamid.{uuid.uuid4().hex}", "sent",
                                       _pricing("utility", "free_entry_point")))
    assert [kind for kind, _ in _ledger(env, vendor.vendor_id)] == ["TOPUP", "HOLD", "CAPTURE", "REFUND"]
    assert _balance(env, vendor.vendor_id) == (FUNDS, 0)
    assert price > 0


def test_a_utility_template_meta_charges_as_marketing_costs_the_marketing_price(env):
    vendor, contact = _vendor(env, "Recategorised Co")
    utility, marketing = env.price(vendor.vendor_id, "UTILITY"), env.price(vendor.vendor_id, "MARKETING")
    assert marketing > utility
    message_id = _queue(env, vendor, contact)
    wamid = f"wamid.{uuid.uuid4().hex}"
    _meta_reports(env, vendor, _status(message_id, wamid, "sent", _pricing("marketing")))
    _meta_reports(env, vendor, _status(message_id, wamid, "delivered", _pricing("marketing")))  # once only

    assert _ledger(env, vendor.vendor_id) == [("TOPUP", FUNDS), ("HOLD", utility), ("CAPTURE", -2 * utility),
                                              ("ADJUSTMENT", utility - marketing)]
    assert _balance(env, vendor.vendor_id) == (FUNDS - marketing, 0)
    assert _message(env, message_id).pricing_category == "marketing"


def test_a_template_meta_charges_in_its_own_category_costs_what_was_held(env):
    vendor, contact = _vendor(env, "Regular Co", last_inbound_at=utcnow() - dt.timedelta(hours=24, minutes=1))
    price = env.price(vendor.vendor_id, "UTILITY")
    message_id = _queue(env, vendor, contact)
    wamid = f"wamid.{uuid.uuid4().hex}"
    _meta_reports(env, vendor, _status(message_id, wamid, "sent", _pricing("utility", billable=True)),
                  _status(message_id, wamid, "delivered", _pricing("utility", billable=True)))
    assert [kind for kind, _ in _ledger(env, vendor.vendor_id)] == ["TOPUP", "HOLD", "CAPTURE"]
    assert _balance(env, vendor.vendor_id) == (FUNDS - price, 0)


def test_a_message_meta_reports_free_and_then_failed_is_refunded_once(env):
    vendor, contact = _vendor(env, "Failed Co")
    message_id = _queue(env, vendor, contact)
    wamid = f"wamid.{uuid.uuid4().hex}"
    _meta_reports(env, vendor, _status(message_id, wamid, "sent", _pricing("utility", "free_customer_service")))
    failed = _status(message_id, wamid, "failed", None)
    failed["errors"] = [{"code": 131026, "title": "Message undeliverable"}]
    _meta_reports(env, vendor, failed)
    assert [kind for kind, _ in _ledger(env, vendor.vendor_id)] == ["TOPUP", "HOLD", "CAPTURE", "REFUND"]
    assert _balance(env, vendor.vendor_id) == (FUNDS, 0)


def test_a_free_form_service_message_costs_nothing_whatever_the_platform_fees(env):
    vendor, _ = _vendor(env, "Service Co")
    with env.session() as db:
        db.add(PlatformFeeRule(vendor_id=vendor.vendor_id, currency="USD", markup_micropercent=10_000_000,
                               per_message_fee_micros=5_000, minimum_charge_micros=1_000_000,
                               valid_from=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)))
    with session_scope(env.registry["kloyst.session_factory"], vendor_id=vendor.vendor_id) as session:
        service = MessageService.for_registry(session, env.registry, vendor_id=vendor.vendor_id)
        assert service.unit_price("US", SERVICE) == 0
        assert service.unit_price("US", "service") == 0
        assert service.unit_price("US", "UTILITY") > 5_000  # the fee rule is in force for templates
