"""The pricing plugin: metadata and hook implementations."""

from __future__ import annotations

import logging

from kloyst.api import as_list, hookimpl, PluginMeta, Setting
from kloyst_plugins.pricing import pdf
from kloyst_plugins.pricing.fonts import DEFAULT_FONT_DIRS

log = logging.getLogger(__name__)

plugin_meta = PluginMeta(description="Meta rate cards, volume tiers, platform fees and quotations with PDFs.",
                         requires=("contacts", "templates", "wallet"))
model_modules = ("kloyst_plugins.pricing.models",)


def as_lines(value) -> tuple[str, ...]:
    """An address: one line per ini continuation line, or ``;``-separated in one line (an environment variable)."""
    if isinstance(value, (list, tuple)):
        value = "\n".join(str(line) for line in value)
    return tuple(" ".join(line.split()) for line in str(value or "").replace(";", "\n").splitlines() if line.strip())


@hookimpl
def kloyst_settings():
    return [
        Setting("pricing.quote_ttl_seconds", "PRICING_QUOTE_TTL_SECONDS", 24 * 3600, int,
                help="How long a quotation stays valid (seconds); an expired one cannot launch a campaign."),
        Setting("pricing.issuer_name", "PRICING_ISSUER_NAME", "",
                help="The business that issues quotations, printed at the top of every quotation PDF; without it "
                     "PDFs fail."),
        Setting("pricing.issuer_address", "PRICING_ISSUER_ADDRESS", (), as_lines,
                help="The issuer's postal address on quotation PDFs: ini continuation lines, or lines separated "
                     "by ';'."),
        Setting("pricing.font_dirs", "PRICING_FONT_DIRS", list(DEFAULT_FONT_DIRS), as_list,
                help="Folders searched for the fonts quotation PDFs embed (Debian's fonts-noto-core, "
                     "fonts-noto-color-emoji and fonts-wqy-microhei install them under /usr/share/fonts)."),
    ]


@hookimpl
def kloyst_routes(config):
    config.include(".views")


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


@hookimpl
def kloyst_background_services(registry, mode):
    """Nothing runs beside the modes, but a process that renders PDFs says at start what would fail them.

    Missing fonts or a missing issuer make every quotation PDF FAILED (with the same message); one
    line at start-up tells the operator before the first vendor finds out. It does not stop the
    process: everything else works without PDFs, and ``make run`` must start on a bare machine.
    """
    if mode in ("WORKER", "ALL"):
        for problem in pdf.setup_problems(registry.settings):
            log.warning("quotation PDFs will fail: %s", problem)
    return []
