"""The wallet check on a timer (kloyst_plugins/wallet/check.py): what it finds is logged and exported as gauges that
KloystWalletCheckFailing and KloystWalletCheckNotRunning page on."""

from __future__ import annotations

import logging
import time

from sqlalchemy import text

from kloyst import metrics as kmetrics
from kloyst import testing
from kloyst_plugins.wallet.check import service, WalletCheck
from kloyst_plugins.wallet.ledger import Ledger


def _gauges(registry) -> dict[str, float]:
    samples = {}
    for family in WalletCheck.of(registry).collect():
        for sample in family.samples:
            samples[sample.name] = sample.value
    return samples


def _shift_balance(registry, vendor_id, micros: int) -> None:
    with registry["kloyst.engine"].begin() as connection:
        connection.execute(text("UPDATE wallet SET balance_micros = balance_micros + :d WHERE vendor_id = :v"),
                           {"d": micros, "v": vendor_id})


def test_nothing_is_exported_before_the_first_check_finished(registry):
    assert WalletCheck(registry).collect()[0].samples == []


def test_a_wallet_that_disagrees_with_its_ledger_is_logged_and_counted(committed_db, registry, caplog):
    vendor = testing.AccountFactory(committed_db, registry["kloyst.access_tokens"]).vendor("Checked Co")
    Ledger(committed_db.connection(), vendor.vendor_id).topup(5_000_000, idempotency_key="check:topup")
    committed_db.commit()
    check = WalletCheck.of(registry)

    assert check.run_once() == []
    before = time.time()
    assert _gauges(registry)["kloyst_wallet_check_violations"] == 0.0

    _shift_balance(registry, vendor.vendor_id, +1)  # money written outside the ledger
    try:
        with caplog.at_level(logging.ERROR, logger="kloyst_plugins.wallet.check"):
            problems = check.run_once()
    finally:
        _shift_balance(registry, vendor.vendor_id, -1)  # the suite checks every wallet after each wallet test

    assert len(problems) == 1 and str(vendor.vendor_id) in problems[0]
    assert any(str(vendor.vendor_id) in record.getMessage() for record in caplog.records)
    gauges = _gauges(registry)
    assert gauges["kloyst_wallet_check_violations"] == 1.0
    assert gauges["kloyst_wallet_check_last_success_timestamp_seconds"] >= before


def test_the_check_runs_on_its_timer_and_stops_when_asked(registry, monkeypatch):
    monkeypatch.setitem(registry.settings, "wallet.check_interval_seconds", 0.05)
    timer = service(registry).start()
    try:
        deadline = time.monotonic() + 10
        while not WalletCheck.of(registry).collect()[0].samples and time.monotonic() < deadline:
            time.sleep(0.05)
        assert WalletCheck.of(registry).collect()[0].samples, "no check finished within 10 s"
    finally:
        timer.stop(5)
    assert not timer.is_alive()


def test_the_check_is_served_with_the_shared_gauges(registry):
    names = {info.name for info in kmetrics.of(registry).catalogue() if info.shared}
    assert {"kloyst_wallet_check_violations", "kloyst_wallet_check_last_success_timestamp_seconds"} <= names
