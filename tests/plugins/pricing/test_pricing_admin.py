"""Platform admins load rate cards as Meta's CSV files and manage fee rules; vendors may not."""

from __future__ import annotations

import argparse

import pytest
from sqlalchemy import func, select

from kloyst.accounts.models import Role
from kloyst.plugins import build_plugin_manager
from kloyst_plugins.pricing import cli, markets, snapshots
from kloyst_plugins.pricing.models import PricingMarket, PricingRate, PricingSnapshot, PricingTier

PRICING = (snapshots.SEED / "Pricing.csv").read_bytes()
TIERS = (snapshots.SEED / "Tier Pricing.csv").read_bytes()


@pytest.fixture
def admin(accounts, db):
    account = accounts.platform_admin()
    db.commit()
    return account


def upload(testapp, account, pricing: bytes = PRICING, tiers: bytes | None = TIERS, status: int = 201,
           effective_from: str = "2026-01-01", note: str = "Q1 card"):
    files = [("pricing", "Pricing.csv", pricing)] + ([("tiers", "Tier Pricing.csv", tiers)] if tiers else [])
    return testapp.post("/v1/admin/pricing/snapshots", {"effective_from": effective_from, "note": note},
                        upload_files=files, headers=account.headers, status=status).json


def count(db, model) -> int:
    return db.scalar(select(func.count()).select_from(model))


def test_an_admin_uploads_metas_files_and_gets_a_snapshot_with_rates_tiers_and_markets(testapp, admin, db):
    snapshot = upload(testapp, admin)["snapshot"]

    assert (snapshot["currency"], snapshot["note"], snapshot["in_use"]) == ("USD", "Q1 card", False)
    assert snapshot["effective_from"].startswith("2026-01-01T00:00:00")
    assert snapshot["rates"]["Brazil"] == {"MARKETING": "0.062500", "UTILITY": "0.006800",
                                           "AUTHENTICATION": "0.006800", "SERVICE": "0.000000"}
    assert {t["market"] for t in snapshot["tiers"]} == set(markets.MARKETS)
    assert sum(snapshot["markets"].values()) == len(markets.default_mapping())
    listed = testapp.get("/v1/admin/pricing/snapshots", headers=admin.headers).json["items"]
    assert snapshot["id"] in [s["id"] for s in listed]
    fetched = testapp.get(f"/v1/admin/pricing/snapshots/{snapshot['id']}", headers=admin.headers).json
    assert fetched["snapshot"]["rates"] == snapshot["rates"]


@pytest.mark.parametrize("content, problem", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01", "no header row"),  # lone \r: once a crash
    (b'Market,Currency\n"' + b"x" * 200_000 + b'"\n', "not a CSV file"),  # beyond the csv module's field limit
])
def test_a_file_that_is_not_a_rate_card_at_all_is_a_422_not_a_crash(testapp, admin, db, content, problem):
    before = count(db, PricingSnapshot)

    error = upload(testapp, admin, content, None, status=422)["error"]

    assert error["code"] == "invalid_rate_card"
    assert problem in error["details"]["fields"][0]["problem"]
    assert count(db, PricingSnapshot) == before


def test_a_card_with_bad_rows_is_refused_whole_listing_every_problem(testapp, admin, db):
    before = [count(db, m) for m in (PricingSnapshot, PricingRate, PricingTier, PricingMarket)]
    pricing = PRICING.replace(b"Brazil,$US,0.0625", b"Brazil,$US,abc").replace(b"Chile,$US,0.0889",
                                                                               b"Chile,$US,-1")
    tiers = TIERS.replace(b"India,$US,1,", b"Narnia,$US,1,")

    error = upload(testapp, admin, pricing, tiers, status=422)["error"]

    assert error["code"] == "invalid_rate_card"
    problems = error["details"]["fields"]
    assert {(p["field"], p["line"]) for p in problems} >= {("pricing", 9), ("pricing", 10)}
    assert any(p["field"] == "tiers" and "Narnia" in p["problem"] for p in problems)
    assert [count(db, m) for m in (PricingSnapshot, PricingRate, PricingTier, PricingMarket)] == before


def test_the_same_card_and_date_twice_is_a_409_naming_the_snapshot(testapp, admin):
    first = upload(testapp, admin)["snapshot"]
    error = upload(testapp, admin, status=409)["error"]
    assert error["details"]["id"] == first["id"]


def test_a_missing_pricing_file_or_a_bad_date_is_422(testapp, admin):
    testapp.post("/v1/admin/pricing/snapshots", {"note": "x"}, upload_files=[("tiers", "t.csv", TIERS)],
                 headers=admin.headers, status=422)
    error = upload(testapp, admin, effective_from="next tuesday", status=422)["error"]
    assert error["details"]["fields"][0]["field"] == "effective_from"


def test_an_unused_snapshot_can_be_deleted_and_a_used_one_cannot(testapp, admin, vendor, service, card):
    unused = upload(testapp, admin)["snapshot"]
    testapp.delete(f"/v1/admin/pricing/snapshots/{unused['id']}", headers=admin.headers, status=204)
    service(vendor).quote({"BR": 1}, "MARKETING")

    error = testapp.delete(f"/v1/admin/pricing/snapshots/{card.id}", headers=admin.headers, status=409).json
    assert error["error"]["code"] == "snapshot_in_use"
    assert testapp.get(f"/v1/admin/pricing/snapshots/{card.id}", headers=admin.headers).json["snapshot"]["in_use"]


def test_fee_rules_are_created_listed_and_patched_by_admins(testapp, admin, vendor, service):
    made = testapp.post_json("/v1/admin/pricing/fee-rules",
                             {"name": "standard", "markup_percent": "10", "per_message_fee": "0.0005",
                              "minimum_charge": "5"}, headers=admin.headers, status=201).json["fee_rule"]
    assert (made["markup_percent"], made["per_message_fee"], made["minimum_charge"], made["vendor_id"]) == (
        "10", "0.000500", "5.000000", None)
    assert service(vendor).quote({"BR": 100}, "MARKETING").total_micros == 100 * (68_750 + 500)

    patched = testapp.patch_json(f"/v1/admin/pricing/fee-rules/{made['id']}", {"markup_percent": "12.5",
                                                                                "active": False},
                                 headers=admin.headers).json["fee_rule"]
    assert (patched["markup_percent"], patched["active"]) == ("12.5", False)
    assert [r["id"] for r in testapp.get("/v1/admin/pricing/fee-rules", headers=admin.headers).json["items"]] == [
        made["id"]]
    assert service(vendor).quote({"BR": 100}, "MARKETING").total_micros == 100 * 62_500


def test_fee_rule_values_are_validated(testapp, admin):
    for body in ({"markup_percent": 10.5}, {"per_message_fee": "-1"}, {"minimum_charge": "0.0000001"},
                 {"valid_from": "2026-01-02T00:00:00Z", "valid_to": "2026-01-01T00:00:00Z"},
                 {"valid_from": "2026-01-02T00:00:00"}):
        testapp.post_json("/v1/admin/pricing/fee-rules", body, headers=admin.headers, status=422)


def test_a_fee_rule_for_a_vendor_that_does_not_exist_is_a_422_not_a_crash(testapp, admin):
    body = {"vendor_id": "b340942e-3fde-1e62-9d7c-a8f03bd49b84", "currency": "USD", "markup_percent": "5"}
    error = testapp.post_json("/v1/admin/pricing/fee-rules", body, headers=admin.headers, status=422).json["error"]
    assert error["details"]["fields"] == [{"field": "vendor_id", "problem": "no such vendor"}]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/admin/pricing/snapshots"), ("POST", "/v1/admin/pricing/snapshots"),
    ("GET", "/v1/admin/pricing/snapshots/x"), ("DELETE", "/v1/admin/pricing/snapshots/x"),
    ("GET", "/v1/admin/pricing/fee-rules"), ("POST", "/v1/admin/pricing/fee-rules"),
    ("PATCH", "/v1/admin/pricing/fee-rules/x")])
def test_admin_routes_are_refused_to_vendor_owners_even_with_pricing_on(testapp, vendor, accounts, method, path):
    testapp.request(path, method=method, headers=vendor.headers, status=403)
    member = accounts.user(vendor.vendor, role=Role.MEMBER)
    testapp.request(path, method=method, headers=member.headers, status=403)


def test_loading_the_development_card_twice_gives_the_same_snapshot(db):
    first = snapshots.load_development_card(db)
    assert snapshots.load_development_card(db).id == first.id
    assert db.scalar(select(func.count()).select_from(PricingSnapshot)) == 1


def test_the_development_card_prices_every_country_phonenumbers_knows(db):
    snapshot = snapshots.load_development_card(db)
    mapped = dict(db.execute(select(PricingMarket.country, PricingMarket.market)
                             .where(PricingMarket.snapshot_id == snapshot.id)).all())
    priced = set(db.scalars(select(PricingRate.market).where(PricingRate.snapshot_id == snapshot.id,
                                                             PricingRate.category == "MARKETING")))
    import phonenumbers

    assert set(phonenumbers.SUPPORTED_REGIONS) <= set(mapped)
    assert set(mapped.values()) <= priced
    assert (mapped["US"], mapped["CA"], mapped["ZW"], mapped["PR"], mapped["FJ"]) == (
        "North America", "North America", "Rest of Africa", "Rest of Latin America", "Other")


def test_the_cli_parses_load_card_with_files_and_a_date():
    parser = argparse.ArgumentParser(prog="kloyst")
    build_plugin_manager().for_plugins("kloyst_cli_commands", ["pricing"])(
        subparsers=parser.add_subparsers(dest="command"))

    args = parser.parse_args(["pricing", "load-card", "staging.ini", "--pricing", "P.csv", "--tiers", "T.csv",
                              "--effective-from", "2026-01-01"])

    assert args.handler is cli.cmd_load_card
    assert (args.pricing, args.tiers, args.effective_from.isoformat()) == ("P.csv", "T.csv",
                                                                           "2026-01-01T00:00:00+00:00")
    assert parser.parse_args(["pricing", "load-card", "development.ini", "--development"]).development is True
