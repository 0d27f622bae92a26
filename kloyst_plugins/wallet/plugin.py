"""The wallet plugin: metadata and hook implementations."""

from __future__ import annotations

from kloyst.api import hookimpl, PluginMeta, Setting
from kloyst_plugins.wallet import check
from kloyst_plugins.wallet.check import INTERVAL, WalletCheck

plugin_meta = PluginMeta(description="A prepaid wallet per vendor: append-only ledger, holds, captures, top-ups.")
model_modules = ("kloyst_plugins.wallet.models",)


@hookimpl
def kloyst_settings():
    from kloyst_plugins.wallet.ledger import parse_currency

    return [
        Setting("wallet.default_currency", "WALLET_DEFAULT_CURRENCY", "USD", parse_currency,
                help="ISO 4217 currency of a vendor's wallet when it is first opened (existing wallets keep "
                     "theirs)."),
        INTERVAL,
    ]


@hookimpl
def kloyst_routes(config):
    from kloyst_plugins.wallet.ledger import configure_default_currency

    configure_default_currency(config.registry["kloyst.engine"], config.registry.settings["wallet.default_currency"])
    config.include(".views")


@hookimpl
def kloyst_cli_commands(subparsers):
    from kloyst_plugins.wallet import cli

    cli.add_commands(subparsers)


@hookimpl
def kloyst_messages_settled(conn, settled):
    from kloyst_plugins.wallet.settlement import settle_messages

    settle_messages(conn, settled)


@hookimpl
def kloyst_demo_data(db, vendor_id):
    from kloyst_plugins.wallet.ledger import Ledger

    # Enough to quote and launch a demo campaign on the development rate card (make run).
    Ledger(db.connection(), vendor_id).topup(100_000_000, idempotency_key="demo:starting-balance",
                                             note="starting balance of the embedded demo vendor")


@hookimpl
def kloyst_metrics(registry):
    from kloyst_plugins.wallet.metrics import WalletGauges

    return [WalletGauges(registry), WalletCheck.of(registry)]


@hookimpl
def kloyst_background_services(registry, mode):
    """The wallet check on its timer, beside the relay (OUTBOX; ALL on the embedded default)."""
    if mode not in ("OUTBOX", "ALL") or registry.settings[INTERVAL.key] <= 0:
        return []
    return [check.service(registry).start()]
