"""``kloyst wallet check``: 0 and a summary when every wallet agrees with its ledger, 1 and the details when not."""

import pytest
from sqlalchemy import update

from kloyst.accounts.models import Vendor
from kloyst.cli import main
from kloyst_plugins.wallet.ledger import Ledger
from kloyst_plugins.wallet.records import WALLET

@pytest.fixture
def funded(committed_db):
    vendor = Vendor(name="Checked Co")
    committed_db.add(vendor)
    committed_db.flush()
    ledger = Ledger(committed_db.connection(), vendor.id)
    ledger.topup(1_000, idempotency_key="seed")
    ledger.hold(300, idempotency_key="h", reference="campaign:x")
    committed_db.commit()
    return vendor


def test_a_consistent_ledger_passes(cli_ini, funded, capsys):
    assert main(["wallet", "check", cli_ini]) == 0
    assert "ok: 1 wallets, 1 holds agree with their ledger" in capsys.readouterr().out


def test_a_wallet_changed_outside_the_ledger_is_reported_and_fails(cli_ini, funded, committed_db, capsys):
    committed_db.execute(update(WALLET).where(WALLET.c.vendor_id == funded.id).values(balance_micros=1_500))
    committed_db.commit()
    assert main(["wallet", "check", cli_ini]) == 1
    err = capsys.readouterr().err
    assert f"vendor {funded.id}: balance 1500 but the ledger sums to 1000" in err
    committed_db.execute(update(WALLET).where(WALLET.c.vendor_id == funded.id).values(balance_micros=1_000))
    committed_db.commit()  # leave it consistent for the invariant check after the test
