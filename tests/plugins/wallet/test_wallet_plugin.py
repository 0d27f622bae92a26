"""The wallet plugin's wiring: its setting, and the default currency reaching wallets opened anywhere."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from kloyst import config as kconfig
from kloyst.accounts.models import Vendor
from kloyst.db import make_engine, new_id, utcnow
from kloyst_plugins.wallet import plugin
from kloyst_plugins.wallet.ledger import Ledger, configure_default_currency
from kloyst_plugins.wallet.models import Wallet


def _resolve(environ):
    return kconfig.resolve({}, tuple(plugin.kloyst_settings()), environ)["wallet.default_currency"]


def test_the_default_currency_is_usd_and_the_environment_can_change_it():
    assert _resolve({}) == "USD"
    assert _resolve({"WALLET_DEFAULT_CURRENCY": " eur "}) == "EUR"


def test_a_currency_that_is_not_an_iso_code_stops_start_up_naming_the_variable():
    with pytest.raises(kconfig.ConfigurationError, match="WALLET_DEFAULT_CURRENCY"):
        _resolve({"WALLET_DEFAULT_CURRENCY": "euros"})


def test_a_configured_engine_opens_wallets_in_its_currency(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    Vendor.__table__.create(engine)
    Wallet.__table__.create(engine)
    configure_default_currency(engine, "GBP")
    with engine.begin() as conn:
        vendor_id = new_id()
        conn.execute(sa.insert(Vendor.__table__).values(id=vendor_id, name="V", created_at=utcnow(),
                                                        updated_at=utcnow()))
        assert Ledger(conn, vendor_id).wallet().currency == "GBP"
    engine.dispose()


def test_configuring_the_application_registers_its_engines_currency(registry):
    from kloyst_plugins.wallet import records

    assert records._CURRENCY_BY_ENGINE[registry["kloyst.engine"]] == registry.settings["wallet.default_currency"]
