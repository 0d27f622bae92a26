"""The pricing plugin: metadata and hook implementations."""

from __future__ import annotations

from pathlib import Path

from kloyst.config import Setting
from kloyst.plugins import PluginMeta, hookimpl

plugin_meta = PluginMeta(description="Meta rate cards, volume tiers, platform fees and quotations with PDFs.",
                         requires=("contacts", "wallet"))
model_modules = ("kloyst_plugins.pricing.models",)


@hookimpl
def kloyst_settings():
    return [Setting("pricing.quote_ttl_seconds", "PRICING_QUOTE_TTL_SECONDS", 24 * 3600, int,
                    help="How long a quotation stays valid (seconds); an expired one cannot launch a campaign.")]


@hookimpl
def kloyst_migration_dirs():
    return [str(Path(__file__).with_name("migrations") / "versions")]


@hookimpl
def kloyst_routes(config):
    config.include(".views")
    config.include(".views_admin")


@hookimpl
def kloyst_tasks():
    from kloyst_plugins.pricing import tasks

    return list(tasks.TASKS)


@hookimpl
def kloyst_cli_commands(subparsers):
    from kloyst_plugins.pricing import cli

    cli.add_commands(subparsers)


@hookimpl
def kloyst_pricing_rules():
    from kloyst_plugins.pricing.fees import PlatformFees

    return [PlatformFees()]


@hookimpl
def kloyst_demo_data(db, vendor_id):
    from kloyst_plugins.pricing.snapshots import load_development_card

    load_development_card(db)
