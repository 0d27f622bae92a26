"""Fixtures for the pricing plugin's tests: the development card, vendors with pricing on, contacts by country."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
from sqlalchemy import insert

from kloyst.db import tenancy
from kloyst.plugins.models import VendorPlugin
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.pricing import snapshots
from kloyst_plugins.pricing.models import PlatformFeeRule
from kloyst_plugins.pricing.services import QuotationService
from kloyst_plugins.wallet.ledger import Ledger


@pytest.fixture
def card(db):
    """The development card (USD), loaded."""
    snapshot = snapshots.load_development_card(db)
    db.commit()
    return snapshot


@pytest.fixture
def pricing_vendor(accounts, enable_plugin, card):
    """``pricing_vendor(name)``: a vendor (its owner signs requests) with contacts, wallet and pricing enabled."""

    def make(name: str = "Pricing Co"):
        account = accounts.vendor(name)
        for plugin in ("contacts", "wallet", "pricing"):
            enable_plugin(account, plugin)
        return account

    return make


@pytest.fixture
def vendor(pricing_vendor):
    return pricing_vendor()


@pytest.fixture
def requested_tasks():
    """The tasks the ``service`` fixture's services asked for, ``[(name, kwargs)]``, recorded instead of sent."""
    return []


@pytest.fixture
def service(db, registry, requested_tasks):
    """``service(account)``: a QuotationService for that vendor (on the test's platform session)."""

    def make(account) -> QuotationService:
        return QuotationService(db, vendor_id=account.vendor_id, registry=registry,
                                enqueue=lambda name, **kwargs: requested_tasks.append((name, kwargs)))

    return make


@pytest.fixture
def fund(db):
    """``fund(account, micros)``: top the vendor's wallet up."""

    def topup(account, micros: int) -> None:
        Ledger(db.connection(), account.vendor_id).topup(micros, idempotency_key=f"test:{uuid.uuid4()}")
        db.commit()

    return topup


@pytest.fixture
def fee_rule(db):
    """``fee_rule(markup=…, fee=…, minimum=…, vendor=…, valid_from=…, valid_to=…, active=…)`` (micro-units)."""

    def add(*, markup_micropercent: int = 0, fee_micros: int = 0, minimum_micros: int = 0, vendor=None,
            valid_from: dt.datetime | None = None, valid_to: dt.datetime | None = None, active: bool = True,
            currency: str = "USD") -> PlatformFeeRule:
        rule = PlatformFeeRule(vendor_id=getattr(vendor, "vendor_id", vendor), currency=currency,
                               markup_micropercent=markup_micropercent, per_message_fee_micros=fee_micros,
                               minimum_charge_micros=minimum_micros, active=active,
                               valid_from=valid_from or dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
                               valid_to=valid_to)
        db.add(rule)
        db.commit()
        return rule

    return add


@pytest.fixture
def add_contacts(db):
    """``add_contacts(account, {"BR": 3, None: 1}, labels=[…], opted_out=False)``: contacts in bulk (one INSERT)."""

    def add(account, counts: dict, *, labels: list[str] | None = None, opted_out: bool = False) -> None:
        rows = [{"id": uuid.uuid4(), "vendor_id": account.vendor_id, "mobile_hash": os.urandom(32),
                 "mobile_enc": b"not-a-real-ciphertext", "enc_kid": "test", "country": country,
                 "labels": list(labels or []), "attributes": {}, "opted_out": opted_out, "source": "api"}
                for country, n in counts.items() for _ in range(n)]
        with tenancy.unscoped(db):
            db.execute(insert(Contact), rows)
        db.commit()

    return add


@pytest.fixture
def plugin_settings(db):
    """``plugin_settings(account, "example", {...})``: the vendor's settings for an enabled plugin."""

    def put(account, plugin: str, settings: dict) -> None:
        with tenancy.unscoped(db):
            row = db.query(VendorPlugin).filter_by(vendor_id=account.vendor_id, plugin=plugin).one()
            row.settings = settings
        db.commit()

    return put
