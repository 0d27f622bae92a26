"""The example plugin's pricing rule applies to a vendor that enabled ``example``, and to no other."""

from __future__ import annotations

import pytest

from kloyst.db import tenancy
from kloyst.plugins.models import VendorPlugin
from kloyst_plugins.pricing import snapshots
from kloyst_plugins.pricing.services import QuotationService

BRAZIL_MARKETING = 62_500  # the development card's list rate, in micro-USD


@pytest.fixture
def vendor(accounts, enable_plugin, db):
    """``vendor(name, *plugins, settings=None)``: a vendor with pricing (and its requirements) plus ``plugins``."""
    snapshots.load_development_card(db)

    def make(name: str, *plugins: str, settings: dict | None = None):
        account = accounts.vendor(name)
        for plugin in ("contacts", "wallet", "pricing", *plugins):
            enable_plugin(account, plugin)
        if settings is not None:
            with tenancy.unscoped(db):
                db.query(VendorPlugin).filter_by(vendor_id=account.vendor_id, plugin="example").one().settings = (
                    settings)
            db.commit()
        return account

    return make


def quote(db, registry, account):
    # The quotation's PDF task is not what these tests are about: its request goes nowhere.
    service = QuotationService(db, vendor_id=account.vendor_id, registry=registry, enqueue=lambda name, **kw: None)
    return service.quote({"BR": 10}, "MARKETING")


def test_a_labelled_vendor_with_example_enabled_gets_ten_percent_off(db, registry, vendor):
    partner = vendor("Partner", "example", settings={"label": "partner"})

    quotation = quote(db, registry, partner)

    assert [i.unit_price_micros for i in quotation.items] == [BRAZIL_MARKETING * 9 // 10]
    assert quotation.total_micros == 10 * 56_250
    assert quotation.rules == ["platform_fees", "example_label_discount"]


def test_a_vendor_without_the_example_plugin_pays_the_list_rate(db, registry, vendor):
    plain = vendor("Plain")

    quotation = quote(db, registry, plain)

    assert [i.unit_price_micros for i in quotation.items] == [BRAZIL_MARKETING]
    assert "example_label_discount" not in quotation.rules


def test_example_enabled_without_a_label_gives_no_discount(db, registry, vendor):
    unlabelled = vendor("Unlabelled", "example", settings={})

    quotation = quote(db, registry, unlabelled)

    assert [i.unit_price_micros for i in quotation.items] == [BRAZIL_MARKETING]
    assert "example_label_discount" in quotation.rules
