"""Money at the edges: every amount a client sends has a documented maximum, a balance can never be credited past
what BIGINT micro-units hold (a clear 422, never a 500), and the OpenAPI document declares amounts as the decimal
strings the API reads."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from kloyst.accounts.models import Vendor
from kloyst.db import make_engine, migrate, new_id, utcnow
from kloyst.money import MAX_AMOUNT_TEXT, MAX_BALANCE_MICROS
from kloyst.plugins import build_plugin_manager
from kloyst_plugins.wallet.audit import invariant_violations
from kloyst_plugins.wallet.ledger import BalanceLimitExceeded, Ledger

BIGINT_MAX = 2**63 - 1
ABOVE_MAXIMUM = "1000000000000"


def topup(testapp, admin, vendor, amount, key, status=201):
    return testapp.post_json(f"/v1/admin/vendors/{vendor.vendor_id}/wallet/topups", {"amount": amount},
                             headers={**admin.headers, "Idempotency-Key": key}, status=status)


def adjust(testapp, admin, vendor, amount, key, status=201):
    return testapp.post_json(f"/v1/admin/vendors/{vendor.vendor_id}/wallet/adjustments",
                             {"amount": amount, "note": "correction"},
                             headers={**admin.headers, "Idempotency-Key": key}, status=status)


def balance(testapp, vendor) -> str:
    return testapp.get("/v1/wallet", headers=vendor.headers).json["wallet"]["balance"]


def test_the_largest_balance_leaves_bigint_room_for_any_one_more_amount():
    assert MAX_BALANCE_MICROS + MAX_BALANCE_MICROS < BIGINT_MAX


def test_repeated_maximum_topups_are_refused_with_a_422_naming_the_amount_never_a_500(testapp, admin, vendor):
    topup(testapp, admin, vendor, MAX_AMOUNT_TEXT, "max-1")
    for attempt in range(2, 10):  # the 9th used to overflow BIGINT and answer 500
        error = topup(testapp, admin, vendor, MAX_AMOUNT_TEXT, f"max-{attempt}", status=422).json["error"]
        assert error["code"] == "balance_limit_exceeded"
        assert error["details"]["fields"][0]["field"] == "amount"
        assert error["details"]["maximum_balance"] == MAX_AMOUNT_TEXT
        assert error["details"]["balance"] == MAX_AMOUNT_TEXT
    assert balance(testapp, vendor) == MAX_AMOUNT_TEXT


def test_a_topup_that_would_cross_the_maximum_balance_is_refused_and_one_that_reaches_it_is_not(
        testapp, admin, vendor):
    topup(testapp, admin, vendor, "999999999000", "most")
    error = topup(testapp, admin, vendor, "1000", "too-much", status=422).json["error"]
    assert "at most 999.999999 more" in error["message"]
    topup(testapp, admin, vendor, "999.999999", "exactly-enough")
    assert balance(testapp, vendor) == MAX_AMOUNT_TEXT


def test_a_positive_adjustment_past_the_maximum_balance_is_refused_like_a_topup(testapp, admin, vendor):
    topup(testapp, admin, vendor, MAX_AMOUNT_TEXT, "full")
    error = adjust(testapp, admin, vendor, "0.000001", "over", status=422).json["error"]
    assert error["code"] == "balance_limit_exceeded"
    adjust(testapp, admin, vendor, "-1", "down")  # debits are bounded by the balance, not by the maximum
    assert balance(testapp, vendor) == "999999999998.999999"


@pytest.mark.parametrize(("path", "body"), [
    ("topups", {"amount": ABOVE_MAXIMUM}),
    ("adjustments", {"amount": ABOVE_MAXIMUM, "note": "too much"}),
    ("adjustments", {"amount": "-" + ABOVE_MAXIMUM, "note": "too little"}),
])
def test_an_amount_above_the_documented_maximum_is_a_422_naming_the_field(testapp, admin, vendor, path, body):
    error = testapp.post_json(f"/v1/admin/vendors/{vendor.vendor_id}/wallet/{path}", body,
                              headers={**admin.headers, "Idempotency-Key": f"big-{path}-{body['amount']}"},
                              status=422).json["error"]
    [problem] = error["details"]["fields"]
    assert problem["field"] == "amount" and MAX_AMOUNT_TEXT in problem["problem"]


def test_a_threshold_above_the_maximum_is_a_422_naming_the_field(testapp, vendor):
    error = testapp.patch_json("/v1/wallet", {"low_balance_threshold": ABOVE_MAXIMUM}, headers=vendor.headers,
                               status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "low_balance_threshold"


def _resolve(document, schema):
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _body_property(document, path, method, name):
    body = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return _resolve(document, _resolve(document, body)["properties"][name])


@pytest.mark.parametrize(("path", "method", "name"), [
    ("/v1/admin/vendors/{id}/wallet/topups", "post", "amount"),
    ("/v1/admin/vendors/{id}/wallet/adjustments", "post", "amount"),
    ("/v1/wallet", "patch", "low_balance_threshold"),
])
def test_openapi_declares_request_amounts_as_bounded_decimal_strings(testapp, path, method, name):
    document = testapp.get("/v1/openapi.json").json
    schema = _body_property(document, path, method, name)
    assert schema["type"] == "string"
    assert schema["pattern"].endswith(r"[0-9]{1,12}(\.[0-9]{1,6})?$")
    assert schema["x-maximum"] == MAX_AMOUNT_TEXT and MAX_AMOUNT_TEXT in schema["description"]


@pytest.fixture
def sqlite_conn(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'bounds.sqlite'}")
    migrate.upgrade(build_plugin_manager([]), engine)
    with engine.connect() as conn, conn.begin() as outer:
        vendor_id = new_id()
        conn.execute(sa.insert(Vendor.__table__).values(id=vendor_id, name="Embedded", created_at=utcnow(),
                                                        updated_at=utcnow()))
        yield conn, vendor_id
        outer.rollback()
    engine.dispose()


def test_the_balance_cap_holds_on_sqlite_too(sqlite_conn):
    conn, vendor_id = sqlite_conn
    ledger = Ledger(conn, vendor_id)
    ledger.topup(MAX_BALANCE_MICROS, idempotency_key="full")
    with pytest.raises(BalanceLimitExceeded):
        ledger.topup(1, idempotency_key="one-more")
    assert ledger.wallet().balance_micros == MAX_BALANCE_MICROS
    assert invariant_violations(conn) == []


def test_wallet_check_reports_a_single_message_hold_settled_twice(sqlite_conn):
    conn, vendor_id = sqlite_conn
    ledger = Ledger(conn, vendor_id)
    ledger.topup(1_000, idempotency_key="t")
    pending = ledger.hold(100, idempotency_key="pending", reference=f"message:{new_id()}")
    settled = ledger.hold(100, idempotency_key="settled", reference=f"message:{new_id()}")
    ledger.capture(settled.id, 100, idempotency_key="c")
    twice = ledger.hold(100, idempotency_key="twice", reference=f"message:{new_id()}")
    ledger.capture(twice.id, 60, idempotency_key="c1")
    ledger.release(twice.id, 40, idempotency_key="r1")
    [problem] = [line.replace("-", "") for line in invariant_violations(conn)]  # SQLite shows ids as hex
    assert f"hold {twice.id.hex} of a single message: 1 capture(s) and 1 release(s)" in problem
    assert pending.id.hex not in problem and settled.id.hex not in problem


MONEY_WORDS = ("amount", "balance", "held", "available", "threshold", "price", "fee", "charge", "total", "cost",
               "subtotal")


def _properties(node):
    """Every ``(property name, schema)`` anywhere in the document."""
    if isinstance(node, dict):
        yield from node.get("properties", {}).items()
        for value in node.values():
            yield from _properties(value)
    elif isinstance(node, list):
        for item in node:
            yield from _properties(item)


def test_no_amount_of_money_anywhere_in_openapi_is_declared_an_integer_or_a_number(testapp):
    document = testapp.get("/v1/openapi.json").json
    numeric = sorted({key for key, schema in _properties(document) if isinstance(schema, dict)
                      and any(word in key.lower() for word in MONEY_WORDS)
                      and schema.get("type") in ("integer", "number")})
    assert numeric == []


@pytest.mark.parametrize("given", [50, "5e1", " 50", "50.", "0x32"])
def test_an_amount_that_is_not_a_decimal_string_as_documented_is_a_422(testapp, vendor, given):
    error = testapp.patch_json("/v1/wallet", {"low_balance_threshold": given}, headers=vendor.headers,
                               status=422).json["error"]
    assert error["details"]["fields"][0]["field"] == "low_balance_threshold"
