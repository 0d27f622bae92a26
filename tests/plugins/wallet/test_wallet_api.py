"""The wallet HTTP API: vendors read and set the threshold, platform admins top up and adjust, idempotently."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import pytest

from kloyst.accounts.models import Role
from kloyst_plugins.wallet.ledger import Ledger


def topup(testapp, admin, vendor, amount, key, status=201, **body):
    return testapp.post_json(f"/v1/admin/vendors/{vendor.vendor_id}/wallet/topups", {"amount": amount, **body},
                             headers={**admin.headers, "Idempotency-Key": key}, status=status)


def adjust(testapp, admin, vendor, amount, key, note="correction", status=201):
    return testapp.post_json(f"/v1/admin/vendors/{vendor.vendor_id}/wallet/adjustments",
                             {"amount": amount, "note": note}, headers={**admin.headers, "Idempotency-Key": key},
                             status=status)


def test_every_wallet_route_is_404_while_the_plugin_is_off(testapp, owner):
    for path in ("/v1/wallet", "/v1/wallet/transactions", "/v1/wallet/statement.csv"):
        assert testapp.get(path, headers=owner.headers, status=404).json["error"]["code"] == "not_found"
    testapp.patch_json("/v1/wallet", {"low_balance_threshold": "1"}, headers=owner.headers, status=404)


def test_a_new_wallet_reads_as_zero_in_the_default_currency(testapp, vendor):
    wallet = testapp.get("/v1/wallet", headers=vendor.headers).json["wallet"]
    assert {k: wallet[k] for k in ("currency", "balance", "held", "available", "low_balance_threshold")} == {
        "currency": "USD", "balance": "0.000000", "held": "0.000000", "available": "0.000000",
        "low_balance_threshold": "0.000000"}


def test_owners_set_the_threshold_and_members_may_not(testapp, vendor, accounts):
    answer = testapp.patch_json("/v1/wallet", {"low_balance_threshold": "25.50"}, headers=vendor.headers).json
    assert answer["wallet"]["low_balance_threshold"] == "25.500000"
    assert answer["wallet"]["low_balance"] is True  # 0 available is below it
    member = accounts.user(vendor.vendor, role=Role.MEMBER)
    testapp.patch_json("/v1/wallet", {"low_balance_threshold": "1"}, headers=member.headers, status=403)
    bad = testapp.patch_json("/v1/wallet", {"low_balance_threshold": "-1"}, headers=vendor.headers, status=422)
    assert bad.json["error"]["details"]["fields"][0]["field"] == "low_balance_threshold"


def test_an_admin_topup_replayed_with_its_key_answers_the_same_and_credits_once(testapp, admin, vendor):
    first = topup(testapp, admin, vendor, "100.00", "bank-1", note="wire 77")
    again = topup(testapp, admin, vendor, "100.00", "bank-1", note="wire 77")

    assert again.json["entry"] == first.json["entry"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert first.json["entry"]["actor_user_id"] == str(admin.user.id)
    assert testapp.get("/v1/wallet", headers=vendor.headers).json["wallet"]["balance"] == "100.000000"


def test_the_same_key_with_another_amount_is_409_and_moves_nothing(testapp, admin, vendor):
    topup(testapp, admin, vendor, "100", "bank-1")
    refused = topup(testapp, admin, vendor, "101", "bank-1", status=409).json["error"]
    assert refused["code"] == "idempotency_key_reused"
    adjust(testapp, admin, vendor, "-5", "bank-1", status=409)  # a key names one request, whatever its kind
    assert testapp.get("/v1/wallet", headers=vendor.headers).json["wallet"]["balance"] == "100.000000"


@pytest.mark.parametrize("headers,body,field", [
    ({}, {"amount": "10"}, "Idempotency-Key"),
    ({"Idempotency-Key": "k"}, {"amount": "0"}, "amount"),
    ({"Idempotency-Key": "k"}, {"amount": 1.5}, "amount"),
    ({"Idempotency-Key": "k"}, {"amount": "1.0000001"}, "amount"),
])
def test_a_topup_without_a_key_or_with_a_bad_amount_is_422(testapp, admin, vendor, headers, body, field):
    refused = testapp.post_json(f"/v1/admin/vendors/{vendor.vendor_id}/wallet/topups", body,
                                headers={**admin.headers, **headers}, status=422).json["error"]
    assert refused["details"]["fields"][0]["field"] == field


def test_adjustments_need_a_note_and_cannot_overdraw(testapp, admin, vendor):
    topup(testapp, admin, vendor, "10", "t")
    missing = testapp.post_json(f"/v1/admin/vendors/{vendor.vendor_id}/wallet/adjustments", {"amount": "-1"},
                                headers={**admin.headers, "Idempotency-Key": "a0"}, status=422).json["error"]
    assert missing["details"]["fields"][0]["field"] == "note"
    refused = adjust(testapp, admin, vendor, "-10.01", "a1", status=402).json["error"]
    assert (refused["code"], refused["details"]["available"]) == ("insufficient_funds", "10.000000")
    entry = adjust(testapp, admin, vendor, "-2.5", "a2", note="chargeback").json["entry"]
    assert (entry["kind"], entry["amount"], entry["balance_change"], entry["note"]) == (
        "ADJUSTMENT", "2.500000", "-2.500000", "chargeback")
    wallet = testapp.get(f"/v1/admin/vendors/{vendor.vendor_id}/wallet", headers=admin.headers).json["wallet"]
    assert wallet["balance"] == "7.500000"


def test_admin_wallet_routes_are_for_platform_admins_and_real_vendors(testapp, admin, vendor):
    testapp.get(f"/v1/admin/vendors/{vendor.vendor_id}/wallet", headers=vendor.headers, status=403)
    topup(testapp, vendor, vendor, "10", "k", status=403)
    testapp.get(f"/v1/admin/vendors/{uuid.uuid4()}/wallet", headers=admin.headers, status=404)
    testapp.get("/v1/admin/vendors/not-an-id/wallet", headers=admin.headers, status=404)


@pytest.fixture
def history(db, vendor):
    """Five entries: a top-up, a hold, a capture, a release, a formula-looking adjustment note."""
    ledger = Ledger(db.connection(), vendor.vendor_id)
    ledger.topup(100_000_000, idempotency_key="t", note="=HYPERLINK(\"http://evil\")")
    hold = ledger.hold(30_000_000, idempotency_key="h", reference="campaign:1")
    ledger.capture(hold.id, 10_000_000, idempotency_key="c", message_id=uuid.uuid4())
    ledger.release(hold.id, 5_000_000, idempotency_key="r")
    ledger.adjust(-1_500_000, idempotency_key="a", actor_user_id=None, note="@SUM(A1:A9)")
    db.commit()
    return ledger


def test_transactions_page_newest_first_and_filter_by_kind(testapp, vendor, history):
    first = testapp.get("/v1/wallet/transactions", params={"limit": 3}, headers=vendor.headers).json
    assert [e["kind"] for e in first["items"]] == ["ADJUSTMENT", "RELEASE", "CAPTURE"]
    rest = testapp.get("/v1/wallet/transactions", params={"limit": 3, "cursor": first["next_cursor"]},
                       headers=vendor.headers).json
    assert ([e["kind"] for e in rest["items"]], rest["next_cursor"]) == (["HOLD", "TOPUP"], None)
    holds = testapp.get("/v1/wallet/transactions", params={"kind": "HOLD"}, headers=vendor.headers).json["items"]
    assert [(e["amount"], e["held_change"], e["reference"]) for e in holds] == [("30.000000", "30.000000",
                                                                                  "campaign:1")]
    tomorrow = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).date().isoformat()
    later = testapp.get("/v1/wallet/transactions", params={"from": tomorrow}, headers=vendor.headers).json
    assert later["items"] == []
    testapp.get("/v1/wallet/transactions", params={"cursor": "nonsense"}, headers=vendor.headers, status=422)


def test_another_vendor_sees_none_of_these_transactions(testapp, history, accounts, enable_plugin):
    other = accounts.vendor("Other")
    enable_plugin(other, "wallet")
    assert testapp.get("/v1/wallet/transactions", headers=other.headers).json["items"] == []


def _statement(testapp, vendor, **params):
    response = testapp.get("/v1/wallet/statement.csv", params=params, headers=vendor.headers)
    assert response.content_type == "text/csv"
    return list(csv.DictReader(io.StringIO(response.body.decode("utf-8-sig"))))


def test_the_statement_runs_the_balance_and_neutralises_formulas(testapp, vendor, history):
    rows = _statement(testapp, vendor)
    assert [(r["kind"], r["balance_change"], r["balance_after"]) for r in rows] == [
        ("OPENING_BALANCE", "", "0.000000"),
        ("TOPUP", "100.000000", "100.000000"),
        ("HOLD", "0.000000", "100.000000"),
        ("CAPTURE", "-10.000000", "90.000000"),
        ("RELEASE", "0.000000", "90.000000"),
        ("ADJUSTMENT", "-1.500000", "88.500000")]
    assert rows[1]["note"] == "'=HYPERLINK(\"http://evil\")"
    assert rows[5]["note"] == "'@SUM(A1:A9)"
    assert rows[3]["reference"] == "campaign:1" and rows[3]["currency"] == "USD"


def test_the_statement_of_a_later_period_opens_with_the_balance_before_it(testapp, vendor, history, monkeypatch):
    from kloyst_plugins.wallet import statement

    monkeypatch.setattr(statement, "BATCH", 2)  # several batches: the running balance carries across them
    now = dt.datetime.now(dt.timezone.utc)
    rows = _statement(testapp, vendor, **{"from": (now + dt.timedelta(minutes=1)).isoformat()})
    assert [(r["kind"], r["balance_after"]) for r in rows] == [("OPENING_BALANCE", "88.500000")]
    rows = _statement(testapp, vendor, **{"from": (now - dt.timedelta(days=1)).date().isoformat(),
                                          "to": now.date().isoformat()})
    assert [r["balance_after"] for r in rows] == ["0.000000", "100.000000", "100.000000", "90.000000", "90.000000",
                                                 "88.500000"]
    testapp.get("/v1/wallet/statement.csv", params={"from": "2026-02-01", "to": "2026-01-01"},
                headers=vendor.headers, status=422)
