"""Quote arithmetic against hand-computed figures of the development card (USD, micro-units).

Rates used: Brazil marketing 0.0625; India utility 0.0014 (−5 % from message 100,001: 0.00133);
Rest of Asia Pacific (AU) utility 0.0113; Rest of Africa (GH, KE) utility 0.0040 (−5 %: 0.0038);
Other marketing 0.0604.
"""

from __future__ import annotations

import datetime as dt

import pytest

from kloyst.db import utcnow
from kloyst.errors import Conflict, Unprocessable
from kloyst_plugins.pricing import snapshots
from kloyst_plugins.pricing.models import PricingRate, PricingSnapshot, Quotation, SnapshotInUse
from kloyst_plugins.pricing.services import mark_accepted, quotation_unit_prices
from kloyst_plugins.wallet.ledger import Ledger

PERCENT = 1_000_000  # one percent in millionths of a percent


def lines(quotation) -> list[tuple]:
    return [(i.country, i.market, i.quantity, i.rate_micros, i.unit_price_micros, i.amount_micros)
            for i in quotation.items]


def test_list_rate_times_recipients_without_any_fee_rule(vendor, service):
    quotation = service(vendor).quote({"BR": 10}, "MARKETING")

    assert lines(quotation) == [("BR", "Brazil", 10, 62_500, 62_500, 625_000)]
    assert (quotation.subtotal_micros, quotation.fees_micros, quotation.total_micros) == (625_000, 0, 625_000)
    assert quotation.currency == "USD" and quotation.recipients == 10


def test_a_quantity_crossing_a_tier_edge_is_split_into_one_item_per_band(vendor, service):
    quotation = service(vendor).quote({"IN": 150_000}, "UTILITY")

    assert [(i.quantity, i.tier_from, i.tier_to, i.discount_micropercent, i.unit_price_micros)
            for i in quotation.items] == [(100_000, 1, 100_000, 0, 1_400),
                                          (50_000, 100_001, 500_000, -5 * PERCENT, 1_330)]
    assert quotation.total_micros == 100_000 * 1_400 + 50_000 * 1_330 == 206_500_000


def test_markup_and_per_message_fee_apply_to_each_band_price(vendor, service, fee_rule):
    fee_rule(markup_micropercent=10 * PERCENT, fee_micros=500)

    quotation = service(vendor).quote({"IN": 150_000}, "UTILITY")

    # 0.0014 × 1.10 + 0.0005 = 0.00204; 0.00133 × 1.10 + 0.0005 = 0.001963
    assert [i.unit_price_micros for i in quotation.items] == [2_040, 1_963]
    assert quotation.subtotal_micros == 206_500_000
    assert quotation.total_micros == 100_000 * 2_040 + 50_000 * 1_963 == 302_150_000
    assert quotation.fees_micros == 302_150_000 - 206_500_000
    assert quotation.rules == ["platform_fees"]


def test_unit_prices_round_half_up_to_a_whole_micro_and_items_sum_exactly(vendor, service, fee_rule):
    fee_rule(markup_micropercent=12_500_000)  # 12.5 %

    quotation = service(vendor).quote({"AU": 3}, "UTILITY")

    assert [i.unit_price_micros for i in quotation.items] == [12_713]  # 11,300 × 1.125 = 12,712.5
    assert quotation.total_micros == 3 * 12_713


def test_a_minimum_charge_tops_a_small_quote_up(vendor, service, fee_rule):
    fee_rule(minimum_micros=5_000_000)

    quotation = service(vendor).quote({"BR": 10}, "MARKETING")

    assert quotation.minimum_topup_micros == 5_000_000 - 625_000
    assert quotation.total_micros == 5_000_000
    assert quotation.adjustments == [{"rule": "platform_fees", "description": "Minimum charge top-up",
                                      "amount": "4.375000"}]
    prices = quotation_unit_prices(quotation)
    assert prices == {"BR": [(10, 62_500)]}
    assert sum(q * unit for bands in prices.values() for q, unit in bands) == (
        quotation.total_micros - quotation.minimum_topup_micros)


def test_a_quote_above_the_minimum_has_no_top_up(vendor, service, fee_rule):
    fee_rule(minimum_micros=500_000)
    assert service(vendor).quote({"BR": 10}, "MARKETING").minimum_topup_micros == 0


def test_a_vendors_own_fee_rules_replace_the_global_ones_for_that_vendor_only(pricing_vendor, service, fee_rule):
    alice, bob = pricing_vendor("Alice"), pricing_vendor("Bob")
    fee_rule(markup_micropercent=10 * PERCENT)
    fee_rule(fee_micros=1_000, vendor=bob)

    assert service(alice).quote({"BR": 1}, "MARKETING").total_micros == 68_750  # 62,500 × 1.10
    assert service(bob).quote({"BR": 1}, "MARKETING").total_micros == 63_500  # 62,500 + 1,000, no markup


def test_fee_rules_outside_their_validity_window_or_inactive_do_not_apply(vendor, service, fee_rule):
    now = utcnow()
    fee_rule(markup_micropercent=50 * PERCENT, valid_from=now + dt.timedelta(days=1))
    fee_rule(markup_micropercent=50 * PERCENT, valid_from=now - dt.timedelta(days=30),
             valid_to=now - dt.timedelta(days=1))
    fee_rule(markup_micropercent=50 * PERCENT, active=False)
    fee_rule(markup_micropercent=50 * PERCENT, currency="EUR")

    assert service(vendor).quote({"BR": 1}, "MARKETING").total_micros == 62_500


def test_accepted_quotations_of_this_month_count_toward_the_tiers(vendor, service):
    earlier = service(vendor).quote({"IN": 80_000}, "UTILITY")
    mark_accepted(earlier)

    quotation = service(vendor).quote({"IN": 50_000}, "UTILITY")

    assert [(i.quantity, i.unit_price_micros) for i in quotation.items] == [(20_000, 1_400), (30_000, 1_330)]


def test_quotes_not_accepted_or_accepted_last_month_do_not_count(vendor, service, db):
    service(vendor).quote({"IN": 80_000}, "UTILITY")  # never accepted
    old = mark_accepted(service(vendor).quote({"IN": 90_000}, "UTILITY"))
    old.accepted_at = utcnow().replace(day=1) - dt.timedelta(days=1)
    db.flush()

    quotation = service(vendor).quote({"IN": 50_000}, "UTILITY")

    assert [(i.quantity, i.unit_price_micros) for i in quotation.items] == [(50_000, 1_400)]


def test_another_vendors_volume_never_moves_my_tier(pricing_vendor, service):
    alice, bob = pricing_vendor("Alice"), pricing_vendor("Bob")
    mark_accepted(service(alice).quote({"IN": 100_000}, "UTILITY"))

    assert [i.unit_price_micros for i in service(bob).quote({"IN": 10}, "UTILITY").items] == [1_400]


def test_countries_of_one_market_share_its_tier_progression(vendor, service):
    quotation = service(vendor).quote({"KE": 60_000, "GH": 60_000}, "UTILITY")

    assert [(i.country, i.quantity, i.unit_price_micros) for i in quotation.items] == [
        ("GH", 60_000, 4_000), ("KE", 40_000, 4_000), ("KE", 20_000, 3_800)]


def test_numbers_of_no_known_country_are_priced_as_other(vendor, service):
    quotation = service(vendor).quote({None: 2, "BR": 1}, "MARKETING")

    assert lines(quotation) == [("BR", "Brazil", 1, 62_500, 62_500, 62_500),
                                (None, "Other", 2, 60_400, 60_400, 120_800)]


def test_the_quote_shows_whether_the_wallet_covers_it(vendor, service, fund):
    fund(vendor, 1_000_000)

    enough = service(vendor).quote({"BR": 16}, "MARKETING")  # 1.000000
    short = service(vendor).quote({"BR": 17}, "MARKETING")  # 1.062500

    assert (enough.wallet_available_micros, enough.wallet_sufficient) == (1_000_000, True)
    assert (short.wallet_available_micros, short.wallet_sufficient) == (1_000_000, False)


def test_a_vendor_whose_wallet_currency_has_no_card_gets_422(pricing_vendor, service, db):
    euro = pricing_vendor("Euro")
    Ledger(db.connection(), euro.vendor_id, default_currency="EUR").wallet()

    with pytest.raises(Unprocessable) as caught:
        service(euro).quote({"BR": 1}, "MARKETING")
    assert caught.value.code == "no_pricing_snapshot"


@pytest.mark.parametrize(("counts", "category", "code"), [
    ({"BR": 0}, "MARKETING", "empty_audience"), ({}, "UTILITY", "empty_audience"),
    ({"BR": 1}, "SERVICE", "invalid_category")])
def test_empty_audiences_and_unquotable_categories_are_refused(vendor, service, counts, category, code):
    with pytest.raises(Unprocessable) as caught:
        service(vendor).quote(counts, category)
    assert caught.value.code == code


def test_a_quote_expires_after_the_configured_ttl_and_cannot_be_accepted_then(vendor, service, db):
    quotation = service(vendor).quote({"BR": 1}, "MARKETING")
    assert quotation.expires_at - quotation.created_at == pytest.approx(dt.timedelta(hours=24),
                                                                        abs=dt.timedelta(seconds=5))
    quotation.expires_at = utcnow() - dt.timedelta(seconds=1)
    db.flush()

    with pytest.raises(Conflict) as caught:
        mark_accepted(quotation)
    assert caught.value.code == "quotation_expired"
    assert quotation.status == "EXPIRED"


def test_accepting_twice_keeps_the_first_acceptance(vendor, service):
    quotation = mark_accepted(service(vendor).quote({"BR": 1}, "MARKETING"))
    first = quotation.accepted_at
    assert mark_accepted(quotation).accepted_at == first


def _card_with_brazil_marketing(rate: str) -> bytes:
    text = (snapshots.SEED / "Pricing.csv").read_text()
    return text.replace("Brazil,$US,0.0625,", f"Brazil,$US,{rate},").encode()


def test_a_newer_snapshot_never_changes_an_existing_quote(vendor, service, db, card):
    before = service(vendor).quote({"BR": 10}, "MARKETING")
    newer = snapshots.create(db, pricing=_card_with_brazil_marketing("0.0700"), tiers=None,
                             effective_from=utcnow() - dt.timedelta(seconds=1), note="price rise")
    db.commit()

    after = service(vendor).quote({"BR": 10}, "MARKETING")
    db.expire_all()
    kept = db.get(Quotation, before.id)

    assert (kept.snapshot_id, kept.total_micros, [i.unit_price_micros for i in kept.items]) == (
        card.id, 625_000, [62_500])
    assert (after.snapshot_id, after.total_micros) == (newer.id, 700_000)


def test_a_snapshot_effective_in_the_future_does_not_apply_yet(vendor, service, db, card):
    snapshots.create(db, pricing=_card_with_brazil_marketing("0.0700"), tiers=None,
                     effective_from=utcnow() + dt.timedelta(days=1))
    assert service(vendor).quote({"BR": 1}, "MARKETING").snapshot_id == card.id


def test_a_snapshot_used_by_a_quote_refuses_changes_to_its_rates(vendor, service, db, card):
    service(vendor).quote({"BR": 1}, "MARKETING")
    rate = db.query(PricingRate).filter_by(snapshot_id=card.id, market="Brazil", category="MARKETING").one()

    rate.rate_micros = 1
    with pytest.raises(SnapshotInUse):
        db.flush()


def test_a_snapshot_used_by_a_quote_refuses_to_be_deleted(vendor, service, db, card):
    service(vendor).quote({"BR": 1}, "MARKETING")

    db.delete(db.get(PricingSnapshot, card.id))
    with pytest.raises(SnapshotInUse):
        db.flush()


def test_an_unused_snapshot_may_still_be_corrected(db, card):
    rate = db.query(PricingRate).filter_by(snapshot_id=card.id, market="Brazil", category="MARKETING").one()
    rate.rate_micros = 62_000
    db.flush()
    assert db.get(PricingRate, rate.id).rate_micros == 62_000


def test_the_worked_example_of_docs_pricing_md(vendor, service, fee_rule):
    fee_rule(markup_micropercent=10 * PERCENT, fee_micros=500, minimum_micros=5_000_000)

    quotation = service(vendor).quote({"IN": 150_000, "KE": 10}, "UTILITY")
    small = service(vendor).quote({"BR": 10}, "MARKETING")

    assert [i.unit_price_micros for i in quotation.items] == [2_040, 1_963, 4_900]
    assert (quotation.subtotal_micros, quotation.fees_micros, quotation.minimum_topup_micros,
            quotation.total_micros) == (206_540_000, 95_659_000, 0, 302_199_000)
    assert (small.minimum_topup_micros, small.total_micros) == (4_307_500, 5_000_000)
